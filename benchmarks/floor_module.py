"""The floor of the login benchmark: what writing three records costs a login, and nothing else.

pam_entry.py, unchanged but for the module name, loads this file in place of
pam_loader.py (login_cost.floor_entry). It imports what pam_module imports,
and at open_session and close_session sends the three records as fixed text
on a NETLINK_AUDIT socket, reading each ack. No options, trust, encoding,
AUDIT_GET, per-handle state, logging or fallback: c - f is what pam_module's
behaviour costs above the floor, f - b what any pam_python module that writes
these records must pay (docs/benchmarks.md).
"""

import _socket
import os  # noqa: F401 - imported as pam_module imports it (already loaded: costs nothing)
import sys

TEXT = (
    'op=teleport:{op} acct="root" exe="/usr/local/bin/teleport" hostname=? addr=? terminal=ssh'
    " teleportUser=benchmark-floor teleportRoles=access teleportChild=exec res=success"
)


def send(records: list[tuple[int, str]]) -> int:
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, 9)  # NETLINK_AUDIT
    sock.settimeout(1.0)
    for seq, (kind, op) in enumerate(records, 1):
        payload = TEXT.format(op=op).encode() + b"\0"
        size = 16 + len(payload)
        flags = 0x1 | 0x4  # NLM_F_REQUEST | NLM_F_ACK
        header = b"".join(n.to_bytes(width, sys.byteorder) for n, width in ((size, 4), (kind, 2), (flags, 2), (seq, 4)))
        sock.send(header + bytes(4) + payload + bytes(-size % 4))
        sock.recv(65536)
    sock.close()
    return 0


def load(scope: dict) -> object:
    del sys.path[0]
    scope["pam_sm_open_session"] = lambda pamh, flags, args: send([(1101, "accounting")])
    scope["pam_sm_close_session"] = lambda pamh, flags, args: send([(1105, "session_open"), (1106, "session_close")])
    scope["pam_sm_acct_mgmt"] = lambda pamh, flags, args: 25
    return scope["pam_sm_acct_mgmt"]
