"""A comparator for the login benchmark: a believed login's everyday work, written for speed.

pam_entry.py, unchanged but for the module name, loads this file in place of
pam_loader.py (login_cost.lean_entry). It does what pam_module does for a
Teleport login that nothing refuses, with the stock stanza's line (no
options): the default trust rule (a root-owned binary named teleport, run as
root, TELEPORT_LOGIN the PAM user), PAM_TTY set to ssh, the child's kind and
the loginuid read at acct_mgmt, AUDIT_GET before the records (no record when
audit is off or no daemon runs), and the three records with libaudit's
encoding. It has no options, refusal records, warnings, fail_closed, caps on
long values, namespace or dropped-root handling, and one flat set of closures:
what it costs is what that everyday work can cost at least (docs/benchmarks.md).

Its `lean=load` argument also imports pam_module.py, copied beside it, without
using it: what loading our module costs on its own.
"""

import _socket
import os
import sys

_PLAIN = bytes(range(0x21, 0x7F)).replace(b'"', b"")
_BARE = _PLAIN.translate(None, b"'=\\")
_HEX = b"0123456789ABCDEF"


def quoted(value: str) -> str:
    raw = value.encode("utf-8", "surrogateescape")[:1024]
    return raw.hex().upper() if raw.translate(None, _PLAIN) else '"' + raw.decode() + '"'


def bare(value: "str | None") -> str:
    if not value:
        return "?"
    raw = value.encode("utf-8", "surrogateescape")[:2048]
    if raw == b"?" or raw.translate(None, _BARE) or (len(raw) % 2 == 0 and not raw.translate(None, _HEX)):
        return raw.hex().upper()
    return raw.decode()


def read(path: str) -> bytes:
    """A /proc file's first 4 KiB; nothing when it cannot be opened (pam_module is not imported here)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def send(records: "list[tuple[int, str]]") -> None:
    """AUDIT_GET, then each record unless audit is off or no daemon runs; one ack each."""
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, 9)  # NETLINK_AUDIT
    sock.settimeout(1.0)
    order = sys.byteorder
    try:
        for seq, (kind, text) in enumerate([(1000, ""), *records], 1):  # 1000: AUDIT_GET
            payload = text.encode() + b"\0" if text else b""
            size = 16 + len(payload)
            header = size.to_bytes(4, order) + kind.to_bytes(2, order) + (5).to_bytes(2, order) + seq.to_bytes(4, order)
            sock.send(header + bytes(4) + payload + bytes(-size % 4))  # NLM_F_REQUEST | NLM_F_ACK, pid 0
            reply = sock.recv(65536)
            if kind == 1000 and int.from_bytes(reply[4:6], order) == 1000:
                sock.recv(65536)  # the ack after the status
                enabled, daemon = int.from_bytes(reply[20:24], order), int.from_bytes(reply[32:36], order)
                if not enabled or not daemon:
                    return
    finally:
        sock.close()


def load(scope: dict, exe: str, args: "list[str]") -> object:  # pam_loader.load's signature
    del sys.path[0]
    if "lean=load" in args:
        sys.path.insert(0, os.path.dirname(__file__))
        import pam_module  # noqa: F401 - loaded, never used: the step's cost

        del sys.path[0]
    seen: dict = {}

    def acct_mgmt(pamh: object, flags: int, args: "list[str]") -> int:
        try:
            env, login = pamh.env, pamh.user  # type: ignore[attr-defined]
            user = env.get("TELEPORT_USERNAME")
            if not user or exe.rpartition("/")[2] != "teleport" or os.geteuid() or not login:
                return 25
            info = os.stat("/proc/self/exe")
            if info.st_uid or info.st_mode & 0o022 or env.get("TELEPORT_LOGIN", login) != login:
                return 25
            argv = read("/proc/self/cmdline").split(b"\0")
            child = argv[1].decode() if len(argv) > 1 and argv[1] in (b"networking", b"forward") else "exec"
            roles = ",".join(role for role in (env.get("TELEPORT_ROLES") or "").split(" ") if role)
            seen.update(user=user, roles=roles, child=child, loginuid=read("/proc/self/loginuid"))
            if not pamh.tty:  # type: ignore[attr-defined]
                pamh.tty = "ssh"  # type: ignore[attr-defined]
        except Exception:
            pass
        return 25

    def text(pamh: object, op: str) -> str:
        return (
            f"op={op} acct={quoted(pamh.user)} exe={quoted(exe)} hostname={bare(pamh.rhost)} addr=?"  # type: ignore[attr-defined]
            f" terminal={bare(pamh.tty)} teleportUser={bare(seen['user'])} teleportRoles={bare(seen['roles'])}"  # type: ignore[attr-defined]
            f" teleportChild={seen['child']} res=success"
        )

    def open_session(pamh: object, flags: int, args: "list[str]") -> int:
        try:
            if seen:
                send([(1101, text(pamh, "teleport:accounting"))])  # AUDIT_USER_ACCT
                seen["opened"] = True
        except Exception:
            pass
        return 0

    def close_session(pamh: object, flags: int, args: "list[str]") -> int:
        try:
            if seen.get("opened"):
                send([(1105, text(pamh, "teleport:session_open")), (1106, text(pamh, "teleport:session_close"))])
        except Exception:
            pass
        return 0

    scope.update(pam_sm_acct_mgmt=acct_mgmt, pam_sm_open_session=open_session, pam_sm_close_session=close_session)
    return acct_mgmt
