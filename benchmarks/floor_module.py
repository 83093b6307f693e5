"""The floor of the login benchmark: what a module costs a login before it does anything of ours.

pam_entry.py, unchanged but for the module name, loads this file in place of
pam_loader.py (login_cost.floor_entry). Its `floor=` argument on the pam.d
line says how far it goes, each step adding one thing to the one before
(docs/benchmarks.md):

  floor=import   being imported: a small module, nothing else
  floor=socket   and importing _socket, as pam_module does
  floor=records  and, at open_session and close_session, sending the three
                 records as fixed text on a NETLINK_AUDIT socket, reading each ack

No options, trust, encoding, AUDIT_GET, per-handle state, logging or fallback:
c - f (floor=records) is what pam_module's behaviour costs above the floor.
"""

import sys

TEXT = (
    'op=teleport:{op} acct="root" exe="/usr/local/bin/teleport" hostname=? addr=? terminal=ssh'
    " teleportUser=benchmark-floor teleportRoles=access teleportChild=exec res=success"
)


def send(records: list[tuple[int, str]]) -> int:
    import _socket  # already imported at acct_mgmt: a lookup in sys.modules

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


def load(scope: dict, exe: str, args: list[str]) -> object:  # pam_loader.load's signature
    del sys.path[0]

    def acct_mgmt(pamh: object, flags: int, args: list[str]) -> int:
        step = next((arg for arg in args if arg.startswith("floor=")), "floor=import")
        if step != "floor=import":
            import _socket  # noqa: F401 - what the step adds
        if step == "floor=records":
            scope["pam_sm_open_session"] = lambda pamh, flags, args: send([(1101, "accounting")])
            scope["pam_sm_close_session"] = lambda pamh, flags, args: send(
                [(1105, "session_open"), (1106, "session_close")]
            )
        return 25

    scope["pam_sm_acct_mgmt"] = acct_mgmt
    return acct_mgmt
