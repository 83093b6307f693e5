"""The pam_sm_* flow with a fake pamh and a fake audit sink."""

from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import dataclass, field

import pytest

from pam_teleport_audit import pam_module, syslog
from pam_teleport_audit.constants import AUDIT_USER_ACCT, AUDIT_USER_END, AUDIT_USER_START
from pam_teleport_audit.netlink import AuditError

ENTRY = "/x/pam_entry.py"


class Env(dict):
    """pam_python's env mapping: get() and [] (KeyError when missing)."""


@dataclass
class FakePamh:
    user: str | None = "root"
    tty: str | None = None
    rhost: str | None = None
    service: str = "sshd"
    env: Env = field(
        default_factory=lambda: Env(TELEPORT_USERNAME="alice", TELEPORT_LOGIN="root", TELEPORT_ROLES="access editor")
    )
    PAM_SUCCESS: int = 0
    PAM_SYSTEM_ERR: int = 4
    PAM_SESSION_ERR: int = 14
    PAM_IGNORE: int = 25


@pytest.fixture
def sink(monkeypatch):
    """Captures records and log lines instead of talking to the kernel and syslog."""

    class Sink:
        def __init__(self) -> None:
            self.records: list[tuple[int, str]] = []
            self.logs: list[tuple[int, str]] = []
            self.error: Exception | None = None
            self.exe = "/usr/local/bin/teleport"

    s = Sink()

    def write(msg_type, text, timeout):
        if s.error:
            raise s.error
        s.records.append((msg_type, text))

    monkeypatch.setattr(pam_module, "write_record", write)
    monkeypatch.setattr(pam_module, "program_path", lambda: s.exe)
    monkeypatch.setattr(pam_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(syslog, "log", lambda prio, ident, text, path: s.logs.append((prio, text)))
    return s


def login(module, pamh, *extra: str) -> list[int]:
    args = [ENTRY, *extra]
    return [module.acct_mgmt(pamh, 0, args), module.open_session(pamh, 0, args), module.close_session(pamh, 0, args)]


def test_teleport_login_writes_three_records_and_sets_tty(sink) -> None:
    pamh = FakePamh()
    assert login(pam_module.TeleportAuditModule(), pamh) == [0, 0, 0]
    assert [t for t, _ in sink.records] == [AUDIT_USER_ACCT, AUDIT_USER_START, AUDIT_USER_END]
    assert pamh.tty == "ssh"
    assert "op=teleport:accounting " in sink.records[0][1]
    assert "teleportUser=alice teleportRoles=access,editor res=success" in sink.records[2][1]
    assert sink.logs == []


def test_application_items_are_never_overridden(sink) -> None:
    pamh = FakePamh(tty="/dev/pts/3", rhost="198.51.100.1")
    pamh.env["ADDR"] = "192.0.2.9"
    login(pam_module.TeleportAuditModule(), pamh, "rhost_env=ADDR")
    assert (pamh.tty, pamh.rhost) == ("/dev/pts/3", "198.51.100.1")
    assert "hostname=198.51.100.1 addr=198.51.100.1 terminal=/dev/pts/3" in sink.records[0][1]


@pytest.mark.parametrize(
    ("value", "rhost"),
    [
        ("192.0.2.9", "192.0.2.9"),
        ("2001:db8::1", "2001:db8::1"),
        ("evil host", None),
        ("example.com", None),
        (None, None),
    ],
)
def test_rhost_env_accepts_only_ip_addresses(sink, value, rhost) -> None:
    pamh = FakePamh()
    if value is not None:
        pamh.env["ADDR"] = value
    login(pam_module.TeleportAuditModule(), pamh, "rhost_env=ADDR")
    assert pamh.rhost == rhost


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.env.pop("TELEPORT_USERNAME"),
        lambda p: p.env.update(TELEPORT_LOGIN="ubuntu"),
        lambda p: setattr(p, "user", "ubuntu"),
    ],
    ids=["no-username", "login-mismatch", "other-user"],
)
def test_untrusted_account_phase_writes_nothing_in_any_phase(sink, change) -> None:
    pamh = FakePamh()
    change(pamh)
    module = pam_module.TeleportAuditModule()
    assert login(module, pamh) == [25, 25, 25]
    assert sink.records == [] and pamh.tty is None


def test_other_programs_are_not_trusted(sink) -> None:
    sink.exe = "/usr/sbin/sshd"
    assert login(pam_module.TeleportAuditModule(), FakePamh()) == [25, 25, 25]
    assert sink.records == []


def test_identity_captured_at_acct_mgmt_wins_over_later_changes(sink) -> None:
    pamh = FakePamh()
    module = pam_module.TeleportAuditModule()
    module.acct_mgmt(pamh, 0, [ENTRY])
    pamh.env["TELEPORT_USERNAME"] = "mallory"  # e.g. from ~/.pam_environment via pam_env
    pamh.env["TELEPORT_ROLES"] = "editor"
    module.open_session(pamh, 0, [ENTRY])
    assert all("teleportUser=alice teleportRoles=access,editor" in text for _, text in sink.records)


def test_session_without_account_phase_writes_nothing(sink) -> None:
    module = pam_module.TeleportAuditModule()
    assert module.open_session(FakePamh(), 0, [ENTRY]) == 25
    assert sink.records == []


def test_user_changed_after_acct_mgmt_writes_nothing(sink) -> None:
    pamh = FakePamh()
    module = pam_module.TeleportAuditModule()
    module.acct_mgmt(pamh, 0, [ENTRY])
    pamh.user = "ubuntu"
    assert module.open_session(pamh, 0, [ENTRY]) == 25
    assert len(sink.records) == 1


FAILURES = [
    AuditError(None, "audit is disabled in the kernel (auditctl -e 0)"),
    AuditError(errno.EPERM, "kernel refused audit message 1101: Operation not permitted"),
    AuditError(errno.EPROTONOSUPPORT, "cannot open NETLINK_AUDIT: Protocol not supported"),
    AuditError(errno.ECONNREFUSED, "kernel refused audit message 1101: Connection refused"),
    AuditError(errno.ETIMEDOUT, "waiting for the kernel's ack: Connection timed out"),
    RuntimeError("boom"),
]


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__ + str(getattr(e, "errno", "")))
def test_fail_open_ignores_and_logs_once_per_login(sink, error) -> None:
    sink.error = error
    assert login(pam_module.TeleportAuditModule(), FakePamh()) == [25, 25, 25]
    assert len(sink.logs) == 1
    assert "login goes on" in sink.logs[0][1]


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__ + str(getattr(e, "errno", "")))
def test_fail_closed_refuses_account_and_session_but_close_goes_on(sink, error) -> None:
    sink.error = error
    module = pam_module.TeleportAuditModule()
    pamh = FakePamh()
    assert module.acct_mgmt(pamh, 0, [ENTRY, "fail_closed"]) == 4
    assert module.open_session(pamh, 0, [ENTRY, "fail_closed"]) == 14
    assert module.close_session(pamh, 0, [ENTRY, "fail_closed"]) == 25
    assert "login refused (fail_closed)" in sink.logs[0][1]


def test_fail_closed_does_not_refuse_untrusted_programs(sink) -> None:
    sink.exe = "/usr/sbin/sshd"
    sink.error = AuditError(None, "audit is disabled")
    assert login(pam_module.TeleportAuditModule(), FakePamh(), "fail_closed") == [25, 25, 25]


def test_unknown_option_is_logged_not_fatal(sink) -> None:
    assert login(pam_module.TeleportAuditModule(), FakePamh(), "bogus") == [0, 0, 0]
    assert len(sink.logs) == 1 and "unknown option 'bogus'" in sink.logs[0][1]


def test_a_broken_handle_never_escapes(sink) -> None:
    class Broken:
        def __getattr__(self, name):
            raise RuntimeError(name)

    module = pam_module.TeleportAuditModule()
    assert module.acct_mgmt(Broken(), 0, [ENTRY]) == 25
    assert module.close_session(Broken(), 0, [ENTRY]) == 25


def test_debug_explains_decisions(sink) -> None:
    sink.exe = "/usr/sbin/sshd"
    login(pam_module.TeleportAuditModule(), FakePamh(), "debug")
    assert "not a trusted Teleport binary" in sink.logs[0][1]


def test_non_utf8_names_keep_their_bytes(sink) -> None:
    """pam_python raises UnicodeDecodeError on PAM strings that are not UTF-8."""

    class Env(dict):
        def get(self, key, default=None):
            if key == "TELEPORT_USERNAME":
                raise UnicodeDecodeError("utf-8", b"bad\xff", 3, 4, "invalid start byte")
            return super().get(key, default)

    pamh = FakePamh(env=Env(TELEPORT_LOGIN="root"))
    assert login(pam_module.TeleportAuditModule(), pamh) == [0, 0, 0]
    assert all("teleportUser=626164FF " in text for _, text in sink.records)


class FakeAudit:
    """Stands in for AuditSocket in write_record()."""

    def __init__(self, status) -> None:
        self._status = status
        self.sent: list[tuple[int, str]] = []

    def __call__(self, timeout: float) -> FakeAudit:
        return self

    def __enter__(self) -> FakeAudit:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def status(self):
        return self._status

    def send_user(self, msg_type: int, text: str) -> None:
        self.sent.append((msg_type, text))


def status(**kw: int):
    from pam_teleport_audit.netlink import AuditStatus

    # This test process stands in for a running auditd.
    base = dict(enabled=1, failure=1, pid=os.getpid(), rate_limit=0, backlog_limit=8192, lost=0, backlog=0)
    base.update(kw)
    return AuditStatus(**base)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


DEAD_PID = dead_pid()


@pytest.mark.parametrize(
    ("state", "sent", "error"),
    [
        (status(), True, None),
        (status(enabled=2), True, None),  # locked is enabled
        (status(enabled=0), False, "audit is disabled"),
        (status(backlog=64, backlog_limit=64), False, r"backlog is full \(backlog_limit 64\)"),
        (status(backlog=10, backlog_limit=0), True, None),  # 0: no limit
        (status(pid=0), True, "no audit daemon"),  # sent: the kernel logs it to kmsg
        (status(pid=DEAD_PID), True, "no audit daemon"),  # a killed auditd, still registered
    ],
)
def test_write_record_reads_the_kernel_state_first(monkeypatch, state, sent, error) -> None:
    audit = FakeAudit(state)
    monkeypatch.setattr(pam_module, "AuditSocket", audit)
    if error:
        with pytest.raises(AuditError, match=error):
            pam_module.write_record(1105, "x", 1.0)
    else:
        pam_module.write_record(1105, "x", 1.0)
    assert bool(audit.sent) is sent
