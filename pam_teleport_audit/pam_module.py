"""pam_teleport_audit: the code that runs inside PAM, in one file.

Like a Linux-PAM module (pam_loginuid.c, pam_tty_audit.c) it reads top to
bottom: constants, options, trust, record text, the kernel socket, the system
log, then the entry points. pam_entry.py, the script on the pam.d line, loads
it (through pam_loader.py, as the top-level module pam_module) only for a PAM
application that may be Teleport; the helper command and the tests import this
same file as pam_teleport_audit.pam_module.

Each record is written once its outcome is known (docs/records.md):

    acct_mgmt      capture the identity; write nothing (PAM_IGNORE)
    open_session   USER_ACCT  teleport:accounting     res=success
    close_session  USER_START teleport:session_open   res=success
                   USER_END   teleport:session_close  res=success
    pam_end        USER_LOGIN teleport:login          res=failed  (refused before the session stack)
                   USER_START teleport:session_open   res=failed  (refused after our line: no close)
                   USER_ACCT  teleport:accounting     res=success (the session stack ran without our line)
"""

# Every Teleport login pays for this file (docs/architecture.md: "What a line
# costs"): pam_python starts a fresh interpreter for every PAM handle. So it
# imports only os and sys (already loaded) and _socket (built in; not
# `socket`, which wraps it at ~9 ms of imports), and time only to log;
# tests/unit/test_imports.py holds it to that. A class costs about 65,000
# instructions to create, a function about 7,000: named data is therefore a
# dict typed as a TypedDict (free at run time), and the only classes are the
# error, the socket and the per-handle state.
import _socket
import os
import sys

# Annotations other than plain names are strings: evaluated ones (str | None,
# tuple[str, ...]) would be built at every login. `typing` would cost an import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol, TypedDict

    class PamEnv(Protocol):
        def get(self, key: str, default: None = None) -> "str | None": ...

    class PamHandle(Protocol):
        """The part of pam_python's handle this module uses."""

        user: "str | None"
        tty: "str | None"
        rhost: "str | None"
        service: "str | None"
        env: PamEnv

    class Options(TypedDict):
        fail_closed: bool
        debug: bool
        # Empty: the default rule (exe_is_teleport). Otherwise absolute paths and
        # "memfd:NAME" entries, matched exactly.
        teleport_exe: tuple[str, ...]
        rhost_env: str | None  # PAM environment variable that carries the client address, if any
        timeout_ms: int
        log_socket: str  # where the syslog daemon listens (a chroot or a test may use another)
        problems: tuple[str, ...]  # what was wrong with the arguments, to be logged

    class Identity(TypedDict):
        user: str  # Teleport user name
        login: str  # Linux login (the PAM user)
        roles: tuple[str, ...]

    class Fields(TypedDict):
        """What one of our records says, before encoding."""

        op: str
        acct: str
        exe: str
        hostname: str | None
        addr: str | None
        terminal: str | None
        teleport_user: str
        roles: tuple[str, ...]
        child: str  # teleportChild=: exec, or networking for Teleport's forwarding child
        success: bool

    class AuditStatus(TypedDict):
        """AUDIT_GET's answer (struct audit_status), the fields we read."""

        enabled: int
        failure: int
        pid: int
        rate_limit: int
        backlog_limit: int
        lost: int
        backlog: int
        backlog_wait_time: int | None  # None: a kernel older than 4.8


# ---------------------------------------------------------------------------
# Constants. Kernel and libpam ABI values never change; ours are named here once.

# <linux/netlink.h>
NETLINK_AUDIT = 9
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSGHDR_SIZE = 16  # struct nlmsghdr: u32 len, u16 type, u16 flags, u32 seq, u32 pid

# <linux/audit.h>
AUDIT_GET = 1000
AUDIT_USER_ACCT = 1101
AUDIT_USER_START = 1105
AUDIT_USER_END = 1106
AUDIT_USER_LOGIN = 1112
# The kernel refuses user record text longer than this.
AUDIT_MESSAGE_TEXT_MAX = 8560
# struct audit_status: u32 fields in this order; older kernels send a prefix.
AUDIT_STATUS_FIELDS = (
    "mask",
    "enabled",
    "failure",
    "pid",
    "rate_limit",
    "backlog_limit",
    "lost",
    "backlog",
    "feature_bitmap",
    "backlog_wait_time",
    "backlog_wait_time_actual",
)

# <security/_pam_types.h>: the values themselves, so a return code never depends
# on a handle that may be the thing failing.
PAM_SUCCESS = 0
PAM_SYSTEM_ERR = 4
PAM_SESSION_ERR = 14
PAM_IGNORE = 25

# <asm-generic/errno.h>, so that `errno` need not be imported.
EIO = 5
EPROTO = 71
ETIMEDOUT = 110

# <syslog.h>
LOG_AUTHPRIV = 10 << 3
LOG_ERR = 3
LOG_WARNING = 4
LOG_INFO = 6

# Our records' op=, named like libpam's "PAM:<op>". OP_LOGIN is a login refused
# before its session opened (account stack, pam_authenticate, or the session
# stack before our line): written at pam_end, type USER_LOGIN, res=failed.
OP_ACCOUNTING = "teleport:accounting"
OP_SESSION_OPEN = "teleport:session_open"
OP_SESSION_CLOSE = "teleport:session_close"
OP_LOGIN = "teleport:login"
# The message type of each of our records.
RECORD_TYPE = {
    OP_ACCOUNTING: AUDIT_USER_ACCT,
    OP_SESSION_OPEN: AUDIT_USER_START,
    OP_SESSION_CLOSE: AUDIT_USER_END,
    OP_LOGIN: AUDIT_USER_LOGIN,
}
# teleportChild=: argv[1] of the Teleport child running PAM.
CHILD_EXEC = "exec"
CHILD_NETWORKING = "networking"  # port, agent and X11 forwarding (Teleport 17+)
CHILD_FORWARD = "forward"  # port forwarding, one child per channel (Teleport 16 and older)
# PAM_TTY that OpenSSH's sshd sets for every session (auth-pam.c).
SSH_TTY_ITEM = "ssh"

# libaudit cuts acct= to the utmp name size (UT_NAMESIZE). Our caps on the other
# fields (raw bytes; hex doubles them) keep any one field from crowding out the
# identity or res=: with them the text always fits AUDIT_MESSAGE_TEXT_MAX.
ACCT_MAX_BYTES = 32
EXE_MAX_BYTES = 1024
HOSTNAME_MAX_BYTES = 512  # a DNS name has at most 253
ADDR_MAX_BYTES = 64  # an IPv6 literal has at most 45
TERMINAL_MAX_BYTES = 128
TELEPORT_USER_MAX_BYTES = 2048

# Teleport's side: the PAM environment it fills before pam_acct_mgmt (lib/pam),
# the binary trusted when no teleport_exe= option is given, and the memfd
# Teleport 18.8+ runs `teleport exec` from (session/reexec/embed_linux.go).
ENV_TELEPORT_USERNAME = "TELEPORT_USERNAME"
ENV_TELEPORT_LOGIN = "TELEPORT_LOGIN"
ENV_TELEPORT_ROLES = "TELEPORT_ROLES"
DEFAULT_TELEPORT_NAME = "teleport"
DEFAULT_TELEPORT_MEMFD = "memfd:teleport-sessionhelper"
# What the kernel appends to /proc/PID/exe when the file was replaced or unlinked.
DELETED_SUFFIX = " (deleted)"
MEMFD_PREFIX = "/memfd:"


# ---------------------------------------------------------------------------
# Options, from the pam.d line, parsed in this one place:
#
#   account optional pam_python.so /path/pam_entry.py [fail_closed] [debug]
#       [teleport_exe=/usr/local/bin/teleport|memfd:NAME ...] [rhost_env=NAME]
#       [timeout_ms=N] [log_socket=/dev/log]
#
# An unknown or malformed option is reported back to be logged; it never stops a login.

DEFAULT_TIMEOUT_MS = 1000
DEFAULT_LOG_SOCKET = "/dev/log"


def parse_options(argv: "list[str] | tuple[str, ...]") -> "Options":
    """Parse module arguments (without pam_python's script path)."""
    fail_closed = debug = False
    exes: list[str] = []
    rhost_env: str | None = None
    timeout_ms = DEFAULT_TIMEOUT_MS
    log_socket = DEFAULT_LOG_SOCKET
    problems: list[str] = []
    for arg in argv:
        name, has_value, value = arg.partition("=")
        if not has_value and name == "fail_closed":
            fail_closed = True
        elif not has_value and name == "debug":
            debug = True
        elif has_value and name == "teleport_exe":
            if value.startswith("/"):
                # /proc/self/exe names the file a symlink resolves to (teleport-update makes
                # /usr/local/bin/teleport one), as it resolves at this login.
                exes += dict.fromkeys((value, os.path.realpath(value)))
            elif value.startswith("memfd:") and len(value) > 6:
                exes.append(value)
            else:
                problems.append(f"teleport_exe={value!r} is neither an absolute path nor memfd:NAME; ignored")
        elif has_value and name == "rhost_env":
            if value and value.isascii() and value.replace("_", "a").isalnum():
                rhost_env = value
            else:
                problems.append(f"rhost_env={value!r} is not an environment variable name; ignored")
        elif has_value and name == "timeout_ms":
            if value.isdigit() and 0 < int(value) <= 60000:
                timeout_ms = int(value)
            else:
                problems.append(f"timeout_ms={value!r} is not a number of milliseconds in 1..60000; ignored")
        elif has_value and name == "log_socket":
            if value.startswith("/"):
                log_socket = value
            else:
                problems.append(f"log_socket={value!r} is not an absolute path; ignored")
        else:
            problems.append(f"unknown option {arg!r}; ignored")
    return {
        "fail_closed": fail_closed,
        "debug": debug,
        "teleport_exe": tuple(exes),
        "rhost_env": rhost_env,
        "timeout_ms": timeout_ms,
        "log_socket": log_socket,
        "problems": tuple(problems),
    }


# ---------------------------------------------------------------------------
# Trust: who is logging in, and whether to believe it.
#
# The TELEPORT_* variables are plain PAM environment entries: any PAM
# application, and in the session stack pam_env reading the user's own
# ~/.pam_environment, can set them. They are believed only when the PAM
# application itself is Teleport, running as root, in the account phase.


def exe_is_teleport(
    exe: str, allowed: "tuple[str, ...]", exe_stat: "Callable[[], os.stat_result] | None" = None
) -> bool:
    """Whether /proc/self/exe names a Teleport binary.

    exe_stat (default: os.stat of /proc/self/exe, which reaches the running
    binary's inode even when it was deleted) is called only for the default
    rule's file check.
    """
    # A running binary that was replaced by an upgrade reads "PATH (deleted)"
    # and is still the binary that was trusted when it started; a binary run
    # from a memfd reads "/memfd:NAME (deleted)". With no teleport_exe= option,
    # a file named teleport owned by root and writable by nobody else, and the
    # memfd Teleport itself names teleport-sessionhelper, are trusted;
    # otherwise only the listed paths and memfd:NAME entries.
    exe = exe.removesuffix(DELETED_SUFFIX)
    if exe.startswith(MEMFD_PREFIX):
        # A memfd's owner and mode say nothing: whoever runs it as root made it.
        return ("memfd:" + exe[len(MEMFD_PREFIX) :]) in (allowed or (DEFAULT_TELEPORT_MEMFD,))
    if not exe.startswith("/"):
        return False
    if allowed:
        return exe in allowed
    if exe.rpartition("/")[2] != DEFAULT_TELEPORT_NAME:
        return False
    try:
        info = exe_stat() if exe_stat else os.stat("/proc/self/exe")
    except OSError:
        return False
    # Anyone who could have rewritten the binary could be forging the environment.
    return info.st_uid == 0 and not info.st_mode & 0o022


NO_TELEPORT_IDENTITY = "no TELEPORT_USERNAME in the PAM environment"


def trusted_identity(
    getenv: "Callable[[str], str | None]",
    pam_user: "str | None",
    exe: str,
    euid: int,
    allowed_exes: "tuple[str, ...]",
    exe_stat: "Callable[[], os.stat_result] | None" = None,
) -> "tuple[Identity | None, str]":
    """The identity to record, or None and the reason it is not believed."""
    user = getenv(ENV_TELEPORT_USERNAME)
    if not user:
        return None, NO_TELEPORT_IDENTITY
    if not exe_is_teleport(exe, allowed_exes, exe_stat):
        rule = "teleport_exe=" if allowed_exes else "default rule: named teleport, root's, not group/other-writable"
        return None, f"PAM application {exe!r} is not a trusted Teleport binary ({rule})"
    if euid != 0:
        return None, "PAM application is not running as root"
    if not pam_user:
        return None, "no PAM user"
    login = getenv(ENV_TELEPORT_LOGIN)
    if login is not None and login != pam_user:
        return None, "TELEPORT_LOGIN differs from the PAM user"
    # Teleport joins the role names with plain spaces: any other whitespace belongs to a name.
    roles = tuple(role for role in (getenv(ENV_TELEPORT_ROLES) or "").split(" ") if role)
    return {"user": user, "login": pam_user, "roles": roles}, "trusted"


def program_path() -> str:
    try:
        return os.readlink("/proc/self/exe")
    except OSError:
        return "?"


UNSET_LOGINUID = b"4294967295"  # (uid_t)-1: no login has set it


def login_uid(path: str = "/proc/self/loginuid") -> "bytes | None":
    """This process's loginuid as the kernel writes it; None when unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.read(fd, 32)
        finally:
            os.close(fd)
    except OSError:
        return None


def child_kind(cmdline: str = "/proc/self/cmdline") -> str:
    """teleportChild=: Teleport's forwarding children by their argv[1], else exec."""
    try:
        with open(cmdline, "rb") as file:
            argv = file.read().split(b"\0")
    except OSError:
        return CHILD_EXEC
    word = argv[1].decode(errors="replace") if len(argv) > 1 else ""
    return word if word in (CHILD_NETWORKING, CHILD_FORWARD) else CHILD_EXEC


# ---------------------------------------------------------------------------
# Record text: libaudit's encoding rules and the field layout of our records.
#
#   op=teleport:session_open acct="root" exe="/usr/local/bin/teleport"
#   hostname=? addr=? terminal=ssh teleportUser=alice teleportRoles=access,editor
#   teleportChild=exec res=success
#
# acct and exe follow libaudit (audit_log_acct_message): double-quoted, or
# uppercase hex without quotes when the value holds '"', a byte below 0x21 or
# above 0x7e. The other values are written bare when plainly safe, so that
# `grep teleportUser=alice` works, and as hex otherwise. A bare value never
# looks like hex (such values are hex-encoded too), so a reader can always
# tell the two apart (admin/auditlog.py: decode_value).

UNKNOWN = "?"
# bytes.translate(None, these) deletes them: what is left is what a value may not hold.
_HEX_DIGITS = b"0123456789ABCDEF"
# libaudit's audit_value_needs_encoding(): any byte outside 0x21..0x7e, or '"'.
_LIBAUDIT_PLAIN = bytes(range(0x21, 0x7F)).replace(b'"', b"")
# A bare value: printable ASCII except the quote characters, '=' and the
# backslash, which log readers treat specially.
_BARE_PLAIN = _LIBAUDIT_PLAIN.translate(None, b"'=\\")


def looks_like_hex(value: bytes) -> bool:
    """What libaudit's hex encoding produces: pairs of uppercase hex digits."""
    return bool(value) and len(value) % 2 == 0 and not value.translate(None, _HEX_DIGITS)


def needs_encoding(value: bytes) -> bool:
    """libaudit's audit_value_needs_encoding()."""
    return bool(value.translate(None, _LIBAUDIT_PLAIN))


def libaudit_value(value: bytes) -> str:
    """acct=/exe= as libaudit writes them: quoted, or hex when unsafe."""
    return value.hex().upper() if needs_encoding(value) else '"' + value.decode("ascii") + '"'


def bare_value(value: bytes) -> str:
    """A value written bare when plainly safe, as hex otherwise."""
    # Unsafe bytes, nothing, or what would read back as unset ("?") or as hex.
    if not value or value == b"?" or value.translate(None, _BARE_PLAIN) or looks_like_hex(value):
        return value.hex().upper()
    return value.decode("ascii")


def _capped(value: "str | None", cap: int) -> str:
    """bare_value() of at most cap bytes of value; "?" when unset."""
    return bare_value(value.encode("utf-8", "surrogateescape")[:cap]) if value else UNKNOWN


def _joined(roles: "tuple[str, ...]") -> str:
    if not roles:
        return UNKNOWN
    text = ",".join(roles)
    # Teleport allows a comma in a role name, and `a,b` then reads as two roles: so when one holds
    # a comma, each role is written after a space instead (TELEPORT_ROLES is split on spaces, so
    # no role holds one; the value is hex then). A comma-joined value never starts with a space.
    if text.count(",") >= len(roles):
        text = " " + " ".join(roles)
    return bare_value(text.encode("utf-8", "surrogateescape"))


def _roles(roles: "tuple[str, ...]", budget: int) -> "tuple[str, int]":
    """The encoded roles that fit in budget, cut only between roles, and how many were left out."""
    text = _joined(roles)
    if len(text) <= budget:
        return text, 0
    # A role cut mid-name would read as another, valid-looking role: cut between roles.
    low, high = 0, len(roles)  # the first low roles fit ("?" always does), the first high do not
    while high - low > 1:
        middle = (low + high) // 2
        if len(_joined(roles[:middle])) <= budget:
            low = middle
        else:
            high = middle
    return _joined(roles[:low]), len(roles) - low


def record_text(fields: "Fields") -> str:
    """The message text, never longer than the kernel accepts (AUDIT_MESSAGE_TEXT_MAX).

    Every field but the roles has a cap that keeps it from crowding out the
    rest; the roles get what is left, cut between roles, and
    teleportRolesOmitted=N then says how many are missing. A name cut to its cap
    is followed by teleportUserOmitted=N, the bytes left out: the beginning alone
    would read as a whole name. res= is always last and always whole.
    """
    user = fields["teleport_user"].encode("utf-8", "surrogateescape") if fields["teleport_user"] else b""
    head = (
        f"op={fields['op']}"
        f" acct={libaudit_value(fields['acct'].encode('utf-8', 'surrogateescape')[:ACCT_MAX_BYTES])}"
        f" exe={libaudit_value(fields['exe'].encode('utf-8', 'surrogateescape')[:EXE_MAX_BYTES])}"
        f" hostname={_capped(fields['hostname'], HOSTNAME_MAX_BYTES)}"
        f" addr={_capped(fields['addr'], ADDR_MAX_BYTES)}"
        f" terminal={_capped(fields['terminal'], TERMINAL_MAX_BYTES)}"
        f" teleportUser={bare_value(user[:TELEPORT_USER_MAX_BYTES]) if user else UNKNOWN}"
    )
    if len(user) > TELEPORT_USER_MAX_BYTES:
        head += f" teleportUserOmitted={len(user) - TELEPORT_USER_MAX_BYTES}"
    result = "success" if fields["success"] else "failed"
    tail = f" teleportChild={bare_value(fields['child'].encode())} res={result}"
    all_roles = fields["roles"]
    budget = AUDIT_MESSAGE_TEXT_MAX - len(head) - len(" teleportRoles=") - len(tail)
    roles, omitted = _roles(all_roles, budget)
    if omitted:
        roles, omitted = _roles(all_roles, budget - len(f" teleportRolesOmitted={len(all_roles)}"))
        roles += f" teleportRolesOmitted={omitted}"
    return f"{head} teleportRoles={roles}{tail}"


def ip_literal(value: "str | None") -> "str | None":
    """value when it is an IPv4 or IPv6 address, else None (no DNS: never block)."""
    if not value:
        return None
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, value)
            return value
        except (OSError, ValueError):
            continue
    return None


# ---------------------------------------------------------------------------
# The kernel socket: NETLINK_AUDIT. AuditSocket only frames, sends and reads
# acknowledgements; every failure is an AuditError carrying the errno and the
# system's message. Netlink fields are in host byte order.


class AuditError(Exception):
    """A record could not be written; errno is None when audit is disabled."""

    def __init__(self, errno: "int | None", message: str) -> None:
        super().__init__(errno, message)
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        return self.message if self.errno is None else f"[errno {self.errno}] {self.message}"


def _os_error(code: int, context: str) -> AuditError:
    return AuditError(code, f"{context}: {os.strerror(code)}")


def audit_status(payload: bytes) -> "AuditStatus":
    """AUDIT_GET's answer, read from struct audit_status."""
    count = min(len(payload) // 4, len(AUDIT_STATUS_FIELDS))
    if count < 8:
        raise AuditError(EPROTO, f"short AUDIT_GET reply ({len(payload)} bytes)")
    values = dict(zip(AUDIT_STATUS_FIELDS, memoryview(payload[: 4 * count]).cast("I"), strict=False))  # a prefix
    return {
        "enabled": values["enabled"],
        "failure": values["failure"],
        "pid": values["pid"],
        "rate_limit": values["rate_limit"],
        "backlog_limit": values["backlog_limit"],
        "lost": values["lost"],
        "backlog": values["backlog"],
        "backlog_wait_time": values.get("backlog_wait_time"),
    }


def daemon_alive(status: "AuditStatus", proc: str = "/proc") -> bool:
    """Whether the registered audit daemon still runs."""
    # A killed auditd stays registered until the kernel next fails to deliver a
    # record to it (then it resets pid to 0): the pid alone is not enough.
    # /proc/PID/exe is gone once the process has exited, zombie included;
    # reading the link costs about a sixth of reading /proc/PID/stat.
    if not status["pid"]:
        return False
    try:
        os.readlink(f"{proc}/{status['pid']}/exe")
    except PermissionError:
        return True  # it exists; only root may look (the module runs as root)
    except OSError:
        return False
    return True


def drops_records(status: "AuditStatus") -> "AuditError | None":
    """Why a user record sent now will not reach the audit log, or None."""
    # A full backlog is no reason: the kernel queues a user record whatever the
    # backlog, then holds the sender for up to backlog_wait_time (docs/security.md).
    if not status["enabled"]:
        # The kernel acks records while disabled, and drops them.
        return AuditError(None, "audit is disabled in the kernel (auditctl -e 0)")
    if not daemon_alive(status):
        # The kernel takes the record and, with no daemon to give it to, prints it to its own log.
        return AuditError(None, "no audit daemon is running: records go to the kernel log only")
    return None


def frame(msg_type: int, payload: bytes, seq: int, flags: int = NLM_F_REQUEST | NLM_F_ACK) -> bytes:
    """One netlink message, padded to 4 bytes as NLMSG_SPACE() does."""
    length = NLMSGHDR_SIZE + len(payload)
    order = sys.byteorder
    header = length.to_bytes(4, order) + msg_type.to_bytes(2, order) + flags.to_bytes(2, order) + seq.to_bytes(4, order)
    return header + bytes(4) + payload + bytes(-length % 4)  # pid 0: the kernel


def parse(buffer: bytes) -> "list[tuple[int, int, bytes]]":
    """Split a datagram into (type, seq, payload) messages."""
    out = []
    offset = 0
    while offset + NLMSGHDR_SIZE <= len(buffer):
        header = memoryview(buffer[offset : offset + NLMSGHDR_SIZE])
        words = header.cast("I")  # len, type and flags, seq, pid
        length, seq = words[0], words[2]
        if length < NLMSGHDR_SIZE or offset + length > len(buffer):
            raise AuditError(EPROTO, "malformed netlink reply")
        out.append((header[4:6].cast("H")[0], seq, buffer[offset + NLMSGHDR_SIZE : offset + length]))
        offset += (length + 3) & ~3
    return out


class AuditSocket:
    """A NETLINK_AUDIT socket with request/acknowledge semantics."""

    def __init__(self, timeout: float = 1.0, factory: "Callable[..., Any]" = _socket.socket) -> None:
        try:
            self._sock = factory(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_AUDIT)
        except OSError as exc:
            raise _os_error(exc.errno or EIO, "cannot open NETLINK_AUDIT") from exc
        self._sock.settimeout(timeout)
        self._seq = 0

    def __enter__(self) -> "AuditSocket":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._sock.close()

    def _request(self, msg_type: int, payload: bytes) -> "bytes | None":
        """Send one request; return the reply payload of msg_type, if any, once acked."""
        self._seq += 1
        seq = self._seq
        # Named by kind, not number: a login's three records fail with one message.
        what = "AUDIT_GET" if msg_type == AUDIT_GET else "the audit record"
        try:
            self._sock.send(frame(msg_type, payload, seq))
        except OSError as exc:
            raise _os_error(exc.errno or EIO, f"sending {what}") from exc
        reply = None
        while True:
            try:
                data = self._sock.recv(65536)
            except TimeoutError as exc:
                raise _os_error(ETIMEDOUT, f"waiting for the kernel's ack of {what}") from exc
            except OSError as exc:
                raise _os_error(exc.errno or EIO, f"reading the ack of {what}") from exc
            for got_type, got_seq, body in parse(data):
                if got_seq != seq:
                    continue
                if got_type == NLMSG_ERROR:
                    code = -memoryview(body[:4]).cast("i")[0]  # struct nlmsgerr: int error, then our header
                    if code:
                        raise _os_error(code, f"kernel refused {what}")
                    if msg_type != AUDIT_GET or reply is not None:
                        return reply
                elif got_type == NLMSG_DONE:
                    return reply
                elif got_type == msg_type:
                    reply = body
                    if msg_type == AUDIT_GET:
                        return reply

    def status(self) -> "AuditStatus":
        """What `auditctl -s` shows (AUDIT_GET)."""
        reply = self._request(AUDIT_GET, b"")
        if reply is None:
            raise AuditError(EPROTO, "no reply to AUDIT_GET")
        return audit_status(reply)

    def send_user(self, msg_type: int, text: str) -> None:
        """Write a user-space record; raise AuditError unless the kernel acked it."""
        # The kernel overwrites the last byte with NUL, so the text carries its own.
        self._request(msg_type, text.encode("ascii") + b"\0")


def kernel_status(audit: AuditSocket) -> "AuditStatus | None":
    """AUDIT_GET's answer, or None when the kernel will not say."""
    # It needs CAP_AUDIT_CONTROL and the initial pid namespace, a record only
    # CAP_AUDIT_WRITE: in a container or a unit without CAP_AUDIT_CONTROL the
    # question fails (EPERM) while the record would be kept.
    try:
        return audit.status()
    except AuditError:
        return None


def check_usable(timeout: float) -> None:
    """AuditError when audit is known to be unusable: what fail_closed refuses a login on."""
    with AuditSocket(timeout) as audit:
        status = kernel_status(audit)
    problem = drops_records(status) if status else None
    if problem:
        raise problem


def write_records(records: "list[tuple[int, str]]", timeout: float) -> bool:
    """Send user records on one socket; AuditError when one will not reach the audit log. False when
    they were sent without the kernel saying whether audit is on (AUDIT_GET refused)."""
    # Every record is sent whenever the kernel would take it: an unanswered
    # AUDIT_GET does not stop the send (kernel_status), nor does a dead daemon
    # (the kernel log still gets them).
    with AuditSocket(timeout) as audit:
        status = kernel_status(audit)
        problem = drops_records(status) if status else None
        if status is None or status["enabled"]:
            for msg_type, text in records:
                audit.send_user(msg_type, text)
    if problem:
        raise problem
    return status is not None


# ---------------------------------------------------------------------------
# The system log: one line, facility authpriv, written straight to the log
# socket as syslog(3) would, because Python's syslog module calls openlog()
# and would rename the host application's own lines (sshd's, teleport's) for
# the rest of the process.


def syslog_line(priority: int, ident: str, text: str, now: "float | None" = None) -> bytes:
    import time  # only here: most logins log nothing

    stamp = time.strftime("%b %e %H:%M:%S", time.localtime(now))
    # One line, whatever the text holds: control characters become spaces.
    clean = "".join(c if c.isprintable() else " " for c in text)
    return f"<{LOG_AUTHPRIV | priority}>{stamp} {ident}[{os.getpid()}]: {clean}".encode("utf-8", "replace")


def syslog(priority: int, ident: str, text: str, path: str) -> bool:
    """Send one line; False when no log daemon listens (never raises)."""
    # As glibc's syslog(3): a datagram socket first; when that fails (EPROTOTYPE
    # from a stream socket such as syslog-ng's unix-stream, or anything else), a
    # stream socket, with the line NUL-terminated to mark where it ends.
    line = syslog_line(priority, ident, text)
    for kind, payload in ((_socket.SOCK_DGRAM, line), (_socket.SOCK_STREAM, line + b"\0")):
        try:
            sock = _socket.socket(_socket.AF_UNIX, kind | _socket.SOCK_CLOEXEC)
        except OSError:
            continue
        try:
            sock.settimeout(0.5)
            sock.connect(path)
            sock.sendall(payload)
            return True
        except OSError:
            continue
        finally:
            sock.close()
    return False


# ---------------------------------------------------------------------------
# The entry points: one TeleportAuditModule per PAM handle.


def _exact(read: "Callable[[], str | None]") -> "str | None":
    """A PAM string, whatever its bytes."""
    # pam_python decodes PAM strings as strict UTF-8 and raises on anything
    # else; the raw bytes ride on the exception, and surrogate escapes keep
    # them exact (encoding with surrogateescape gives back the same bytes).
    try:
        return read()
    except UnicodeDecodeError as exc:
        return bytes(exc.object).decode("utf-8", "surrogateescape")


def pam_item(pamh: "PamHandle", name: str) -> "str | None":
    """PAM_USER, PAM_TTY, PAM_RHOST … as pam_python names them (user, tty, rhost)."""
    return _exact(lambda: getattr(pamh, name))


def pam_env(pamh: "PamHandle", name: str) -> "str | None":
    """A PAM environment variable (pam_getenv), None when unset."""
    return _exact(lambda: pamh.env.get(name))


class TeleportAuditModule:
    """One PAM handle's worth of state: the identity trusted at acct_mgmt, and how far the login got."""

    def __init__(self) -> None:
        self.identity: Identity | None = None
        # Read once, as the kernel says it (" (deleted)" after an upgrade): a
        # process's executable cannot change while its interpreter lives.
        self.exe = program_path()
        self.child: str | None = None  # read at the first trusted acct_mgmt
        # At the trusted acct_mgmt: pam_loginuid, early in the session stack, changes it. So at
        # pam_end, without our open_session, it tells whether the session stack ran.
        self.loginuid: bytes | None = None
        self.options = parse_options(())  # the last line's: pam_sm_end gets no arguments
        self._args: list[str] = []  # what self.options was parsed from
        self.opened = False  # our open_session ran for the identity
        self.accounted = False  # and wrote its record: a second line of ours must not write it again
        self.closed = False  # our close_session ran: nothing is left to say at pam_end
        # Each distinct problem is logged once per PAM handle: one line per
        # login, not one per phase.
        self._reported: set[str] = set()

    # With fail_closed a failure refuses the account or the session opening; closing a
    # session and pam_end never refuse (the user is already in, or already out).
    def acct_mgmt(self, pamh: "PamHandle", flags: int, args: "list[str]") -> int:
        return self._run(pamh, args, "account", self._account, PAM_SYSTEM_ERR)

    def open_session(self, pamh: "PamHandle", flags: int, args: "list[str]") -> int:
        return self._run(pamh, args, "session", self._open, PAM_SESSION_ERR)

    def close_session(self, pamh: "PamHandle", flags: int, args: "list[str]") -> int:
        return self._run(pamh, args, "session", self._close, None)

    def end(self, pamh: "PamHandle") -> int:
        """pam_sm_end: pam_python calls it from pam_end, without the status pam_end got."""
        return self._run(pamh, None, "end", self._end, None)

    def _run(
        self,
        pamh: "PamHandle",
        args: "list[str] | None",
        phase: str,
        action: "Callable[[PamHandle, Options], int]",
        refusal: "int | None",
    ) -> int:
        """Run one phase; never raises. The return code is settled before anything is logged."""
        code = PAM_IGNORE
        try:
            if args is not None and args[1:] != self._args:
                self._args, self.options = args[1:], parse_options(args[1:])
            options = self.options
            if options["problems"]:
                self._log(pamh, options, phase, LOG_WARNING, "; ".join(options["problems"]))
            try:
                return action(pamh, options)
            except AuditError as exc:
                why = f"audit record not written: {exc}"
            except Exception as exc:  # a module bug must not lock anyone out
                why = f"internal error: {type(exc).__name__}: {exc}"
            if not options["fail_closed"]:
                refusal = None
            code = PAM_IGNORE if refusal is None else refusal
            if refusal is not None:
                verdict = "login refused (fail_closed)"
            else:  # at pam_end the login is already over, one way or the other
                verdict = "the login's outcome is not recorded" if phase == "end" else "login goes on"
            self._log(pamh, options, phase, LOG_WARNING if refusal is None else LOG_ERR, f"{why}; {verdict}", why)
        except Exception:  # even the handle or the options are unusable: stay out of the way
            pass
        return code

    def _account(self, pamh: "PamHandle", options: "Options") -> int:
        self.identity, reason = trusted_identity(
            lambda name: pam_env(pamh, name), pam_item(pamh, "user"), self.exe, os.geteuid(), options["teleport_exe"]
        )
        self.opened = self.closed = self.accounted = False
        if self.identity is None:
            # A program named teleport (or listed) that set TELEPORT_USERNAME and is not believed:
            # a misconfiguration (teleport_exe=, the binary's mode) or a forgery; either way, say so.
            priority = LOG_INFO if reason == NO_TELEPORT_IDENTITY else LOG_WARNING
            if priority == LOG_WARNING or options["debug"]:
                self._log(pamh, options, "account", priority, f"nothing recorded: {reason}")
            return PAM_IGNORE
        if self.child is None:
            self.child = child_kind()
        self.loginuid = login_uid()
        self._set_items(pamh, options)
        if options["fail_closed"]:
            check_usable(options["timeout_ms"] / 1000)
        if options["debug"]:
            user = self.identity["user"]
            self._debug(pamh, options, "account", f"Teleport user {user!r}: recorded from open_session on")
        return PAM_IGNORE

    def _open(self, pamh: "PamHandle", options: "Options") -> int:
        # accounted: a second session line of ours runs this same state (pam_python keeps one per script
        # path and handle: a hand-edited duplicate, or the stanza and an included file that has it too).
        if self.accounted or not self._still_trusted(pamh, options, "session"):
            return PAM_IGNORE
        # Teleport opens a session only once acct_mgmt succeeded: the account outcome is known.
        self.opened = True
        if self.loginuid not in (None, UNSET_LOGINUID) and login_uid() == self.loginuid:
            # Set before PAM, by whoever started Teleport (Teleport warns of it too), to this login's
            # uid: pam_loginuid then leaves it, and opens no session of its own.
            uid = self.loginuid.decode(errors="replace")
            why = f"Teleport runs with loginuid {uid}, which pam_loginuid left: this session has no session id"
            self._log(pamh, options, "session", LOG_WARNING, f"{why} of its own (ses=); start Teleport from systemd")
        self._write(pamh, options, "session", [(OP_ACCOUNTING, True)])
        self.accounted = True
        return PAM_SUCCESS

    def _close(self, pamh: "PamHandle", options: "Options") -> int:
        if not self.opened or self.closed or not self._still_trusted(pamh, options, "session"):
            return PAM_IGNORE
        # Teleport closes only sessions that opened: the session's outcome is known.
        self.closed = True
        self._write(pamh, options, "session", [(OP_SESSION_OPEN, True), (OP_SESSION_CLOSE, True)])
        return PAM_SUCCESS

    def _end(self, pamh: "PamHandle", options: "Options") -> int:
        if self.identity is None or self.closed:
            return PAM_SUCCESS
        self.closed = True
        if self.opened:  # refused by a session module after ours: Teleport closes only what opened
            self._write(pamh, options, "end", [(OP_SESSION_OPEN, False)])
        elif self.loginuid is not None and login_uid() != self.loginuid:
            # pam_loginuid ran (or Teleport's enhanced session recording set it, after a session
            # opened), so the account stack passed (Teleport opens a session only then), yet our
            # session line never did: a requisite or die line between pam_loginuid and ours refused
            # the session (a stack `status` accepts), or our line is skipped by a jump or missing (one
            # it does not). Nothing here tells the two apart; libpam's USER_START of this process does,
            # and search reads it. What is known is recorded; the session's outcome is not.
            self._write(pamh, options, "end", [(OP_ACCOUNTING, True)])
            self._log(
                pamh,
                options,
                "end",
                LOG_WARNING,
                "the session stack ran (the loginuid changed) but our session line did not: a session module "
                "before it refused the session (requisite or die), or the line is skipped or missing "
                "(`pam-teleport-audit status` names it); the session's outcome is not in our records, "
                "libpam's USER_START of this process has it",
            )
        else:  # refused before the session stack: account stack, authentication, or its first modules
            self._write(pamh, options, "end", [(OP_LOGIN, False)])
        return PAM_SUCCESS

    def _still_trusted(self, pamh: "PamHandle", options: "Options", phase: str) -> bool:
        identity = self.identity
        if identity is None:
            return False
        if options["debug"] and pam_env(pamh, ENV_TELEPORT_USERNAME) != identity["user"]:
            self._debug(pamh, options, phase, "TELEPORT_USERNAME changed since acct_mgmt; recording the first value")
        return True

    def _write(self, pamh: "PamHandle", options: "Options", phase: str, outcomes: "list[tuple[str, bool]]") -> None:
        """One record per (op, success), on one socket."""
        identity = self.identity
        assert identity is not None
        uid = os.geteuid()
        if uid != 0:
            # Teleport's networking child (17+) takes the login user's uid once its session is open and
            # closes it as that user: the kernel then takes no record, libpam's USER_END included.
            # Trying would only add an EPERM warning to every forwarding session.
            ops = ", ".join(op for op, _ in outcomes)
            why = "Teleport dropped root after opening the session (its networking child does)"
            self._log(pamh, options, phase, LOG_INFO, f"{ops} not recorded: this process runs as uid {uid} now: {why}")
            return
        user = pam_item(pamh, "user")
        if user and user != identity["login"]:
            # Only a module of the stack or Teleport itself sets PAM_USER: one that canonicalises the name
            # (pam_canonicalize_user, pam_winbind) leaves the session the Teleport user's. Name PAM_USER,
            # as libpam's records and pam_loginuid's auid do.
            old, identity["login"] = identity["login"], user
            self._log(pamh, options, phase, LOG_INFO, f"PAM user changed from {old!r} to {user!r} since acct_mgmt")
        rhost = pam_item(pamh, "rhost") or None
        fields: Fields = {  # op and success are each record's, below
            "op": "",
            "acct": identity["login"],
            "exe": self.exe,
            "hostname": rhost,
            "addr": ip_literal(rhost),
            "terminal": pam_item(pamh, "tty"),
            "teleport_user": identity["user"],
            "roles": identity["roles"],
            "child": self.child or CHILD_EXEC,
            "success": True,
        }
        records = [(RECORD_TYPE[op], record_text({**fields, "op": op, "success": ok})) for op, ok in outcomes]
        verified = write_records(records, options["timeout_ms"] / 1000)
        if options["debug"]:
            ops = ", ".join(f"{op} res={'success' if ok else 'failed'}" for op, ok in outcomes)
            # Unverified: the kernel acks a record even when audit is off, and would not say (AUDIT_GET).
            how = "recorded" if verified else "sent, unverified (the kernel will not say whether audit is on),"
            self._debug(pamh, options, phase, f"{how} {ops} for Teleport user {identity['user']!r}")

    @staticmethod
    def _set_items(pamh: "PamHandle", options: "Options") -> None:
        """Set the items sshd sets, so libpam's own records read like OpenSSH's."""
        if not pam_item(pamh, "tty"):
            pamh.tty = SSH_TTY_ITEM
        if options["rhost_env"] and not pam_item(pamh, "rhost"):
            address = ip_literal(pam_env(pamh, options["rhost_env"]))
            if address:
                pamh.rhost = address

    def _debug(self, pamh: "PamHandle", options: "Options", phase: str, text: str) -> None:
        if options["debug"]:
            self._log(pamh, options, phase, LOG_INFO, text)

    def _log(
        self, pamh: "PamHandle", options: "Options", phase: str, priority: int, text: str, key: "str | None" = None
    ) -> None:
        """One line to syslog, once per handle per key (default: the text); never raises."""
        try:
            key = key or text
            if key in self._reported:
                return
            self._reported.add(key)
            try:
                service = pamh.service
            except Exception:
                service = "?"
            ident = self.exe.removesuffix(DELETED_SUFFIX).rpartition("/")[2] or "pam"
            syslog(priority, ident, f"pam_teleport_audit({service}:{phase}): {text}", options["log_socket"])
        except Exception:
            pass


def entry_points() -> "dict[str, Callable[..., int]]":
    """The pam_sm_* functions of one PAM handle, bound to a new TeleportAuditModule."""
    # pam_python execs pam_entry.py afresh for each handle, and pam_loader puts
    # these in the script's globals in place of its own: two handles alive in one process
    # (and so one interpreter) never share an identity.
    module = TeleportAuditModule()
    return {
        "pam_sm_acct_mgmt": module.acct_mgmt,
        "pam_sm_open_session": module.open_session,
        "pam_sm_close_session": module.close_session,
        "pam_sm_end": module.end,
    }
