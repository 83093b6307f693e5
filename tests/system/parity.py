"""One stack, two kinds of login: a real OpenSSH login and a Teleport-like
session, and the audit records each leaves. Used by test_parity.py and by
scripts/parity-report, which writes docs/parity.md from a real run."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pam_teleport_audit.admin.auditlog import AuditRecord

from .conftest import UNSET_SES, run_driver, wait_for_records
from .openssh import OpenSSHServer

TYPED = ["echo parity-check", "id -u"]
# Records the application itself causes, outside what the PAM stack does the same for both:
# sshd calls pam_setcred (CRED_*) and writes its own USER_LOGIN; Teleport's USER_LOGIN is
# sent by the Teleport parent, outside PAM (the C stand-in does not imitate it).
APPLICATION_ONLY = {"CRED_ACQ", "CRED_DISP", "USER_LOGIN"}


@dataclass
class Login:
    kind: str
    ses: str
    records: list[AuditRecord]

    def shape(self) -> list[tuple[str, str]]:
        """(type, op) in log order; TTY and CONFIG_CHANGE by type and op= where they have one."""
        return [(r.type, r.get("op", "")) for r in self.records]

    def pam_shape(self) -> list[tuple[str, str]]:
        """What the shared PAM stack and kernel wrote: without our records and application-only ones."""
        return [(t, op) for t, op in self.shape() if not op.startswith("teleport:") and t not in APPLICATION_ONLY]

    def typed(self) -> bytes:
        return b"".join(bytes.fromhex(r["data"]) for r in self.records if r.type == "TTY")

    def ours(self) -> list[AuditRecord]:
        return [r for r in self.records if "teleportUser" in r.fields]


def uid_of(user: str) -> str:
    return subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout.strip()


def login_records(started: float, uid: str, kind: str) -> Login:
    """The records of the one login of `uid` since `started`, in log order.

    The kernel's LOGIN record gives the session id and the process; the
    records before it (the account phase, ses unset) are joined by that pid.
    """

    def complete(records: list[AuditRecord]) -> bool:
        return any(
            r.type == "USER_END" and r.get("op") == "PAM:session_close" and r.get("auid") == uid for r in records
        )

    records = wait_for_records(started, complete, timeout=15.0)
    logins = [r for r in records if r.type == "LOGIN" and r.get("auid") == uid]
    assert len(logins) == 1, [r.fields for r in logins]
    ses, pid = logins[0]["ses"], logins[0]["pid"]
    mine = [r for r in records if r.get("ses") == ses or (r.get("pid") == pid and r.get("ses") == UNSET_SES)]
    return Login(kind, ses, sorted(mine, key=lambda r: (r.time, r.serial)))


def openssh_login(server: OpenSSHServer, user: str, started: float) -> Login:
    proc = server.login(user, TYPED)
    assert proc.returncode == 0, (proc.stdout, proc.stderr, server.server_log())
    return login_records(started, uid_of(user), "openssh")


def teleport_login(driver: Path, service: str, user: str, tp_user: str) -> Login:
    session = run_driver(driver, service, user, user=tp_user, roles="access", lines=TYPED)
    assert session.returncode == 0, session.output
    return login_records(session.started, uid_of(user), "teleport")
