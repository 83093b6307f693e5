"""How search reads log files: NUL runs a crash leaves, and the order the files are read in."""

from __future__ import annotations

import re
from pathlib import Path

from pam_teleport_audit.admin.search import _grep

A = "type=USER_ACCT msg=audit(1795900000.000:1): pid=5 uid=0 auid=1 ses=7 msg='op=x teleportUser=alice res=success'"
B = 'type=TTY msg=audit(1795900001.000:2): tty pid=6 uid=1 auid=1 ses=7 major=136 minor=0 comm="sh" data=6C730A'
C = "type=USER_END msg=audit(1795900002.000:3): pid=5 uid=0 auid=1 ses=7 msg='op=y teleportUser=alice res=success'"
SES = re.compile(rb" ses=7 ")


def test_nul_runs_end_lines_and_never_reach_auparse(tmp_path: Path) -> None:
    """auparse reads its buffer as a C string: a NUL in it silently ends the search."""
    log = tmp_path / "audit.log"
    # A record, a record cut by the crash, zeros, and what auditd appended after the reboot, the
    # first of it on the same "line" as the zeros; zeros again at the very end.
    log.write_bytes(f"{A}\n{B[:40]}".encode() + b"\0" * 4096 + f"{B}\n{C}\n".encode() + b"\0" * 10)
    text = _grep([str(log)], SES)
    assert "\0" not in text
    assert text.splitlines() == [A, B, C]
    # A match in the cut record gives that piece alone, not the records glued to it by the zeros.
    assert _grep([str(log)], re.compile(rb"comm=")).splitlines() == [B]
    assert _grep([str(log)], re.compile(rb"msg=audit\(1795900001")).splitlines() == [B[:40], B]
