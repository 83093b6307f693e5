"""2. Per-record cost, in the distro Python: what the module does per PAM
phase (build the record text, then write_records: open a NETLINK_AUDIT socket,
AUDIT_GET, send, wait for the ack, close), beside the raw cost of sending the
same bytes on an open socket and reading the ack, and beside one AUDIT_GET on
an open socket (the kernel answers it from a new kernel thread, the largest
part of ours). Interleaved per iteration.

These are real USER_START records in the audit log, under a unique Teleport
user name bench-record-….
"""

from __future__ import annotations

import _socket
import time
from typing import TYPE_CHECKING

from pam_teleport_audit.pam_module import (
    AUDIT_USER_START,
    NETLINK_AUDIT,
    OP_SESSION_OPEN,
    AuditSocket,
    frame,
    record_text,
    write_records,
)

from . import common

if TYPE_CHECKING:
    from pam_teleport_audit.pam_module import Fields

COUNT = 1000


def raw_send(sock: _socket.socket, packet: bytes) -> None:
    """One send and its ack, nothing else: the floor of any user record."""
    sock.send(packet)
    sock.recv(65536)


def run(count: int = COUNT) -> None:
    tpuser = common.unique("bench-record-")
    fields: Fields = {
        "op": OP_SESSION_OPEN,
        "acct": "root",
        "exe": "/usr/local/bin/teleport",
        "hostname": None,
        "addr": None,
        "terminal": "ssh",
        "teleport_user": tpuser,
        "roles": ("access", "editor"),
        "child": "exec",
        "success": True,
    }
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_AUDIT)
    packet = frame(AUDIT_USER_START, record_text(fields).encode("ascii") + b"\0", 1)
    with AuditSocket(1.0) as status_socket:
        build, ours, raw, get = [], [], [], []
        for _ in range(count):
            start = time.perf_counter_ns()
            text = record_text(fields)
            built = time.perf_counter_ns()
            write_records([(AUDIT_USER_START, text)], 1.0)
            done = time.perf_counter_ns()
            raw_send(sock, packet)
            sent = time.perf_counter_ns()
            status_socket.status()
            get.append(time.perf_counter_ns() - sent)
            raw.append(sent - done)
            build.append(built - start)
            ours.append(done - start)
    sock.close()
    measured = (("build", build), ("ours", ours), ("raw", raw), ("get", get))
    med = {name: common.median(values) / 1000 for name, values in measured}
    print(f"## 2. Per-record cost: {count} records, interleaved with raw sends\n")
    print(
        common.table(
            ("what", "µs per record (median)"),
            [
                ("record_text() only", f"{med['build']:.1f}"),
                ("record_text() + write_records() (socket, AUDIT_GET, send, ack, close)", f"{med['ours']:.1f}"),
                ("raw send of the same bytes + ack, socket already open", f"{med['raw']:.1f}"),
                ("AUDIT_GET alone, socket already open (the kernel replies from a new kthread)", f"{med['get']:.1f}"),
                ("ours without its AUDIT_GET", f"{med['ours'] - med['get']:.1f}"),
                ("ours / raw", f"{med['ours'] / med['raw']:.2f}"),
            ],
        )
    )
    print(f"\ntarget: <= 100 µs per record: {'met' if med['ours'] <= 100 else 'MISSED'}\n")
