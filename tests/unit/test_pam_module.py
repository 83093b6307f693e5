"""The pam_sm_* flow with a fake pamh and a fake audit sink."""

from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import dataclass, field

import pytest

from pam_teleport_audit import pam_module
from pam_teleport_audit.pam_module import (
    AUDIT_USER_ACCT,
    AUDIT_USER_END,
    AUDIT_USER_LOGIN,
    AUDIT_USER_START,
    AuditError,
)

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


@pytest.fixture
def sink(monkeypatch):
    """Captures records and log lines instead of talking to the kernel and syslog."""

    class Sink:
        def __init__(self) -> None:
            self.records: list[tuple[int, str]] = []
            self.logs: list[tuple[int, str]] = []
            self.error: Exception | None = None  # every write fails with it
            self.unusable: Exception | None = None  # what check_usable finds (fail_closed, acct_mgmt)
            self.exe = "/usr/local/bin/teleport"
            self.child = "exec"
            self.verified = True  # write_records: the kernel said audit is on

    s = Sink()

    def write(records, timeout):
        if s.error:
            raise s.error
        s.records.extend(records)
        return s.verified

    def check(timeout):
        if s.unusable:
            raise s.unusable

    monkeypatch.setattr(pam_module, "write_records", write)
    monkeypatch.setattr(pam_module, "check_usable", check)
    monkeypatch.setattr(pam_module, "program_path", lambda: s.exe)
    monkeypatch.setattr(pam_module, "child_kind", lambda: s.child)
    monkeypatch.setattr(pam_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(pam_module, "login_uid", lambda: pam_module.UNSET_LOGINUID)  # Teleport from systemd
    monkeypatch.setattr(pam_module, "syslog", lambda prio, ident, text, path: s.logs.append((prio, text)))
    return s


def login(module, pamh, *extra: str, end: bool = True) -> list[int]:
    """acct_mgmt, open_session, close_session, then pam_end as Teleport calls them."""
    args = [ENTRY, *extra]
    codes = [module.acct_mgmt(pamh, 0, args), module.open_session(pamh, 0, args), module.close_session(pamh, 0, args)]
    if end:
        module.end(pamh)
    return codes


def ops(sink) -> list[tuple[int, str, str]]:
    """(type, op, res) of each record written."""
    out = []
    for msg_type, text in sink.records:
        fields = dict(part.split("=", 1) for part in text.split(" "))
        out.append((msg_type, fields["op"], fields["res"]))
    return out


def test_teleport_login_writes_each_record_once_its_outcome_is_known(sink) -> None:
    pamh = FakePamh()
    module = pam_module.TeleportAuditModule()
    assert module.acct_mgmt(pamh, 0, [ENTRY]) == 25  # never SUCCESS: an all-ignore stack must not grant
    assert sink.records == [] and pamh.tty == "ssh"
    assert module.open_session(pamh, 0, [ENTRY]) == 0
    assert ops(sink) == [(AUDIT_USER_ACCT, "teleport:accounting", "success")]
    assert module.close_session(pamh, 0, [ENTRY]) == 0
    module.end(pamh)
    assert ops(sink) == [
        (AUDIT_USER_ACCT, "teleport:accounting", "success"),
        (AUDIT_USER_START, "teleport:session_open", "success"),
        (AUDIT_USER_END, "teleport:session_close", "success"),
    ]
    assert "teleportUser=alice teleportRoles=access,editor teleportChild=exec res=success" in sink.records[2][1]
    assert sink.logs == []


def test_a_second_session_line_of_ours_adds_no_record(sink) -> None:
    """The same script on two session lines (a pasted duplicate, or the stanza and an included file that has
    it too) is one state to pam_python: it used to write teleport:accounting once per line."""
    pamh = FakePamh()
    module = pam_module.TeleportAuditModule()
    args = [ENTRY]
    assert [module.acct_mgmt(pamh, 0, args), module.acct_mgmt(pamh, 0, args)] == [25, 25]
    assert [module.open_session(pamh, 0, args), module.open_session(pamh, 0, args)] == [0, 25]
    assert [module.close_session(pamh, 0, args), module.close_session(pamh, 0, args)] == [0, 25]
    module.end(pamh)
    assert ops(sink) == [
        (AUDIT_USER_ACCT, "teleport:accounting", "success"),
        (AUDIT_USER_START, "teleport:session_open", "success"),
        (AUDIT_USER_END, "teleport:session_close", "success"),
    ]


def test_refused_before_our_session_line_gives_one_failed_login_record(sink) -> None:
    pamh = FakePamh()
    module = pam_module.TeleportAuditModule()
    module.acct_mgmt(pamh, 0, [ENTRY])
    assert module.end(pamh) == 0  # Teleport: pam_end without open_session after a refusal
    assert ops(sink) == [(AUDIT_USER_LOGIN, "teleport:login", "failed")]
    assert "teleportUser=alice " in sink.records[0][1] and "terminal=ssh " in sink.records[0][1]


def test_refused_after_our_session_line_gives_a_failed_session_open(sink) -> None:
    pamh = FakePamh()
    module = pam_module.TeleportAuditModule()
    module.acct_mgmt(pamh, 0, [ENTRY])
    module.open_session(pamh, 0, [ENTRY])
    module.end(pamh)  # a session module after ours refused: no close_session
    assert ops(sink) == [
        (AUDIT_USER_ACCT, "teleport:accounting", "success"),
        (AUDIT_USER_START, "teleport:session_open", "failed"),
    ]


def test_a_refusal_record_that_fails_says_so_once(sink) -> None:
    pamh = FakePamh()
    module = pam_module.TeleportAuditModule()
    module.acct_mgmt(pamh, 0, [ENTRY])
    sink.error = AuditError(None, "audit is disabled in the kernel (auditctl -e 0)")
    assert module.end(pamh) == 25
    assert module.end(pamh) == 0  # pam_end runs once; a second call has nothing left to say
    assert len(sink.logs) == 1
    assert "(sshd:end): audit record not written: audit is disabled" in sink.logs[0][1]
    assert sink.logs[0][1].endswith("the login's outcome is not recorded")


def test_end_without_a_trusted_identity_writes_nothing(sink) -> None:
    sink.exe = "/usr/sbin/sshd"
    module = pam_module.TeleportAuditModule()
    module.acct_mgmt(FakePamh(), 0, [ENTRY])
    assert module.end(FakePamh()) == 0
    assert pam_module.TeleportAuditModule().end(FakePamh()) == 0  # no acct_mgmt at all
    assert sink.records == []


def test_networking_child_is_marked(sink) -> None:
    sink.child = "networking"
    login(pam_module.TeleportAuditModule(), FakePamh())
    assert len(sink.records) == 3
    assert all(" teleportChild=networking res=success" in text for _, text in sink.records)


def test_a_session_closed_after_root_was_dropped_is_not_attempted(sink, monkeypatch) -> None:
    """Teleport 17+'s networking child closes its session as the login user: the kernel would refuse
    the records (EPERM), so they are not sent; one line says why, and what was written stands."""
    sink.child = "networking"
    pamh = FakePamh(user="bob", env=Env(TELEPORT_USERNAME="alice", TELEPORT_LOGIN="bob", TELEPORT_ROLES="access"))
    module = pam_module.TeleportAuditModule()
    assert module.acct_mgmt(pamh, 0, [ENTRY]) == 25
    assert module.open_session(pamh, 0, [ENTRY]) == 0
    monkeypatch.setattr(pam_module.os, "geteuid", lambda: 1001)  # setuid(bob)
    assert module.close_session(pamh, 0, [ENTRY]) == 0
    assert module.end(pamh) == 0
    assert ops(sink) == [(AUDIT_USER_ACCT, "teleport:accounting", "success")]
    assert sink.logs == [
        (
            pam_module.LOG_INFO,
            "pam_teleport_audit(sshd:session): teleport:session_open, teleport:session_close not recorded: this "
            "process runs as uid 1001 now: Teleport dropped root after opening the session (its networking child does)",
        )
    ]


@pytest.mark.parametrize(
    ("argv", "child"),
    [
        (b"/usr/local/bin/teleport\0networking\0", "networking"),
        (b"/usr/local/bin/teleport\0exec\0", "exec"),
        (b"teleport\0", "exec"),
        (b"/x/teleport\0networkingx\0", "exec"),
        (b"/usr/local/bin/teleport\0forward\0", "forward"),  # Teleport 16's port forwarding child
        (b"/usr/local/bin/teleport\0\xff\0", "exec"),
    ],
)
def test_child_kind_reads_argv1(tmp_path, argv, child) -> None:
    path = tmp_path / "cmdline"
    path.write_bytes(argv)
    assert pam_module.child_kind(str(path)) == child
    assert pam_module.child_kind(str(tmp_path / "missing")) == "exec"


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
    module.end(pamh)
    assert len(sink.records) == 2
    assert all("teleportUser=alice teleportRoles=access,editor" in text for _, text in sink.records)


def test_session_without_account_phase_writes_nothing(sink) -> None:
    module = pam_module.TeleportAuditModule()
    assert module.open_session(FakePamh(), 0, [ENTRY]) == 25
    assert module.close_session(FakePamh(), 0, [ENTRY]) == 25
    module.end(FakePamh())
    assert sink.records == []


def test_user_changed_after_acct_mgmt_is_recorded_under_the_new_name(sink) -> None:
    """A module of the stack renamed the login (pam_canonicalize_user): the session is still the Teleport
    user's; the records name PAM_USER as it is now, as libpam's do, and one line says so."""
    pamh = FakePamh()
    module = pam_module.TeleportAuditModule()
    module.acct_mgmt(pamh, 0, [ENTRY])
    pamh.user = "ubuntu"
    assert module.open_session(pamh, 0, [ENTRY]) == 0
    assert module.close_session(pamh, 0, [ENTRY]) == 0
    module.end(pamh)
    assert [op for _, op, _ in ops(sink)] == ["teleport:accounting", "teleport:session_open", "teleport:session_close"]
    assert all(' acct="ubuntu" ' in text and "teleportUser=alice " in text for _, text in sink.records)
    assert [text for _, text in sink.logs] == [
        "pam_teleport_audit(sshd:session): PAM user changed from 'root' to 'ubuntu' since acct_mgmt"
    ]


def test_user_changed_before_a_refusal_is_recorded_under_the_new_name(sink) -> None:
    pamh = FakePamh()
    module = pam_module.TeleportAuditModule()
    module.acct_mgmt(pamh, 0, [ENTRY])
    pamh.user = "ubuntu"  # e.g. in the auth stack, which then refused (use_pam_auth)
    module.end(pamh)
    assert [(op, res) for _, op, res in ops(sink)] == [("teleport:login", "failed")]
    assert ' acct="ubuntu" ' in sink.records[0][1]


FAILURES = [
    AuditError(None, "audit is disabled in the kernel (auditctl -e 0)"),
    AuditError(errno.EPERM, "kernel refused the audit record: Operation not permitted"),
    AuditError(errno.EPROTONOSUPPORT, "cannot open NETLINK_AUDIT: Protocol not supported"),
    AuditError(errno.ECONNREFUSED, "kernel refused the audit record: Connection refused"),
    AuditError(errno.ETIMEDOUT, "waiting for the kernel's ack: Connection timed out"),
    RuntimeError("boom"),
]
IDS = [type(e).__name__ + str(getattr(e, "errno", "")) for e in FAILURES]


@pytest.mark.parametrize("error", FAILURES, ids=IDS)
def test_fail_open_ignores_and_logs_once_per_login(sink, error) -> None:
    sink.error = error
    assert login(pam_module.TeleportAuditModule(), FakePamh()) == [25, 25, 25]
    assert len(sink.logs) == 1
    assert "login goes on" in sink.logs[0][1] and "(sshd:session)" in sink.logs[0][1]


@pytest.mark.parametrize("error", FAILURES, ids=IDS)
def test_fail_closed_refuses_the_session_when_the_record_fails(sink, error) -> None:
    sink.error = error
    module = pam_module.TeleportAuditModule()
    pamh = FakePamh()
    assert module.acct_mgmt(pamh, 0, [ENTRY, "fail_closed"]) == 25  # nothing known to be wrong yet
    assert module.open_session(pamh, 0, [ENTRY, "fail_closed"]) == 14
    assert module.end(pamh) == 25  # tried the failed session_open record; still one log line
    assert len(sink.logs) == 1 and "login refused (fail_closed)" in sink.logs[0][1]


@pytest.mark.parametrize("error", FAILURES, ids=IDS)
def test_fail_closed_refuses_at_acct_mgmt_when_audit_is_known_unusable(sink, error) -> None:
    sink.unusable = sink.error = error
    module = pam_module.TeleportAuditModule()
    pamh = FakePamh()
    assert module.acct_mgmt(pamh, 0, [ENTRY, "fail_closed"]) == 4
    module.end(pamh)
    assert len(sink.logs) == 1 and "login refused (fail_closed)" in sink.logs[0][1]
    assert "(sshd:account)" in sink.logs[0][1]


def test_fail_closed_close_and_end_never_refuse(sink) -> None:
    module = pam_module.TeleportAuditModule()
    pamh = FakePamh()
    module.acct_mgmt(pamh, 0, [ENTRY, "fail_closed"])
    module.open_session(pamh, 0, [ENTRY, "fail_closed"])
    sink.error = AuditError(None, "audit is disabled")
    assert module.close_session(pamh, 0, [ENTRY, "fail_closed"]) == 25
    assert module.end(pamh) == 0  # closed: nothing left to say
    assert len(sink.logs) == 1 and "login goes on" in sink.logs[0][1]


def test_fail_closed_does_not_refuse_untrusted_programs(sink) -> None:
    sink.exe = "/usr/sbin/sshd"
    sink.unusable = sink.error = AuditError(None, "audit is disabled")
    assert login(pam_module.TeleportAuditModule(), FakePamh(), "fail_closed") == [25, 25, 25]


@pytest.mark.parametrize("fail_closed", [False, True])
def test_a_raising_logger_never_changes_the_return_code(sink, monkeypatch, fail_closed) -> None:
    def broken_log(*args: object) -> None:
        raise OSError("log socket exploded")

    monkeypatch.setattr(pam_module, "syslog", broken_log)
    sink.error = AuditError(None, "audit is disabled")
    extra = ("fail_closed", "debug", "bogus") if fail_closed else ("debug", "bogus")
    module = pam_module.TeleportAuditModule()
    pamh = FakePamh()
    assert module.acct_mgmt(pamh, 0, [ENTRY, *extra]) == 25
    assert module.open_session(pamh, 0, [ENTRY, *extra]) == (14 if fail_closed else 25)
    sink.error = None
    assert module.open_session(pamh, 0, [ENTRY, *extra]) == 0


def test_unknown_option_is_logged_not_fatal(sink) -> None:
    assert login(pam_module.TeleportAuditModule(), FakePamh(), "bogus") == [25, 0, 0]
    assert len(sink.logs) == 1 and "unknown option 'bogus'" in sink.logs[0][1]


def test_a_broken_handle_never_escapes(sink) -> None:
    class Broken:
        def __getattr__(self, name):
            raise RuntimeError(name)

    module = pam_module.TeleportAuditModule()
    assert module.acct_mgmt(Broken(), 0, [ENTRY]) == 25
    assert module.close_session(Broken(), 0, [ENTRY]) == 25
    assert module.acct_mgmt(FakePamh(), 0, [ENTRY]) == 25
    assert module.end(Broken()) == 25  # the failed-login record could not be built
    assert module.acct_mgmt(Broken(), 0, None) == 25  # type: ignore[arg-type]


def test_debug_explains_decisions(sink) -> None:
    sink.exe = "/usr/sbin/sshd"
    login(pam_module.TeleportAuditModule(), FakePamh(), "debug")
    assert "not a trusted Teleport binary" in sink.logs[0][1]


@pytest.mark.parametrize("verified", [True, False])
def test_debug_says_whether_the_kernel_confirmed_audit_is_on(sink, verified) -> None:
    """In a pid namespace, or without CAP_AUDIT_CONTROL, AUDIT_GET is refused: the records are sent and
    acked, but an ack does not prove audit is on, so debug does not say "recorded"."""
    sink.verified = verified
    login(pam_module.TeleportAuditModule(), FakePamh(), "debug")
    lines = [text for _, text in sink.logs if "teleport:accounting res=success" in text]
    how = "recorded" if verified else "sent, unverified (the kernel will not say whether audit is on),"
    assert lines == [
        f"pam_teleport_audit(sshd:session): {how} teleport:accounting res=success for Teleport user 'alice'"
    ]


def test_a_teleport_started_from_a_login_shell_is_warned_of(sink, monkeypatch) -> None:
    """Its loginuid is set to the login's uid: pam_loginuid leaves it, and the session shares the
    starter's ses. Recorded all the same, with one warning per login; a loginuid pam_loginuid
    changes (another uid) gives the session its own ses, and no warning."""
    loginuid = [b"1000"]
    monkeypatch.setattr(pam_module, "login_uid", lambda: loginuid[0])
    assert login(pam_module.TeleportAuditModule(), FakePamh()) == [25, 0, 0]
    assert len(sink.records) == 3
    assert sink.logs == [
        (
            pam_module.LOG_WARNING,
            "pam_teleport_audit(sshd:session): Teleport runs with loginuid 1000, which pam_loginuid left: this "
            "session has no session id of its own (ses=); start Teleport from systemd",
        )
    ]
    sink.logs.clear()
    module = pam_module.TeleportAuditModule()
    module.acct_mgmt(FakePamh(), 0, [ENTRY])
    loginuid[0] = b"0"  # pam_loginuid, for root
    module.open_session(FakePamh(), 0, [ENTRY])
    assert sink.logs == []


def test_non_utf8_names_keep_their_bytes(sink) -> None:
    """pam_python raises UnicodeDecodeError on PAM strings that are not UTF-8."""

    class Env(dict):
        def get(self, key, default=None):
            if key == "TELEPORT_USERNAME":
                raise UnicodeDecodeError("utf-8", b"bad\xff", 3, 4, "invalid start byte")
            return super().get(key, default)

    pamh = FakePamh(env=Env(TELEPORT_LOGIN="root"))
    assert login(pam_module.TeleportAuditModule(), pamh) == [25, 0, 0]
    assert len(sink.records) == 3
    assert all("teleportUser=626164FF " in text for _, text in sink.records)


class FakeAudit:
    """Stands in for AuditSocket in write_records() and check_usable()."""

    def __init__(self, status) -> None:
        self._status = status  # an AuditStatus, or the AuditError AUDIT_GET gets
        self.sent: list[tuple[int, str]] = []

    def __call__(self, timeout: float) -> FakeAudit:
        return self

    def __enter__(self) -> FakeAudit:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def status(self):
        if isinstance(self._status, Exception):
            raise self._status
        return self._status

    def send_user(self, msg_type: int, text: str) -> None:
        self.sent.append((msg_type, text))


def status(**kw: int):
    # This test process stands in for a running auditd.
    base = dict(enabled=1, failure=1, pid=os.getpid(), rate_limit=0, backlog_limit=8192, lost=0, backlog=0)
    base.update(kw)
    return {**base, "backlog_wait_time": None}


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


DEAD_PID = dead_pid()
EPERM = AuditError(errno.EPERM, "kernel refused AUDIT_GET: Operation not permitted")
ECONNREFUSED = AuditError(errno.ECONNREFUSED, "kernel refused AUDIT_GET: Connection refused")

# kernel state: (records sent, error of write_records, error of check_usable)
STATES = [
    (status(), True, None, None),
    (status(enabled=2), True, None, None),  # locked is enabled
    (status(enabled=0), False, "audit is disabled", "audit is disabled"),
    (status(backlog=64, backlog_limit=64), True, None, None),  # the kernel queues it anyway
    (status(backlog=10, backlog_limit=0), True, None, None),  # 0: no limit
    (status(pid=0), True, "no audit daemon", "no audit daemon"),  # sent: the kernel logs it to kmsg
    (status(pid=DEAD_PID), True, "no audit daemon", "no audit daemon"),  # a killed auditd, still registered
    (EPERM, True, None, None),  # a pid namespace, or no CAP_AUDIT_CONTROL: the record is still taken
    (ECONNREFUSED, True, None, None),  # unknown: the send says what the kernel thinks
]


@pytest.mark.parametrize(("state", "sent", "error", "_"), STATES)
def test_write_records_sends_whenever_the_kernel_would_take_them(monkeypatch, state, sent, error, _) -> None:
    audit = FakeAudit(state)
    monkeypatch.setattr(pam_module, "AuditSocket", audit)
    records = [(1105, "x"), (1106, "y")]
    if error:
        with pytest.raises(AuditError, match=error):
            pam_module.write_records(records, 1.0)
    else:
        # True: the kernel said audit is on; False: it would not say (AUDIT_GET refused), sent unverified.
        assert pam_module.write_records(records, 1.0) is not isinstance(state, AuditError)
    assert audit.sent == (records if sent else [])


@pytest.mark.parametrize(("state", "_", "__", "error"), STATES)
def test_check_usable_refuses_only_what_is_known(monkeypatch, state, _, __, error) -> None:
    audit = FakeAudit(state)
    monkeypatch.setattr(pam_module, "AuditSocket", audit)
    if error:
        with pytest.raises(AuditError, match=error):
            pam_module.check_usable(1.0)
    else:
        pam_module.check_usable(1.0)
    assert audit.sent == []


def test_check_usable_refuses_when_no_socket_opens(monkeypatch) -> None:
    def no_socket(timeout: float) -> None:
        raise AuditError(errno.EPROTONOSUPPORT, "cannot open NETLINK_AUDIT: Protocol not supported")

    monkeypatch.setattr(pam_module, "AuditSocket", no_socket)
    with pytest.raises(AuditError, match="cannot open NETLINK_AUDIT"):
        pam_module.check_usable(1.0)


def test_roles_are_split_on_plain_spaces_only(sink) -> None:
    """Teleport joins role names with " ": other whitespace is part of a name, never a separator."""
    pamh = FakePamh()
    pamh.env["TELEPORT_ROLES"] = "admin\x1fauditor  editor\u00a0x"
    login(pam_module.TeleportAuditModule(), pamh)
    roles = dict(part.split("=", 1) for part in sink.records[0][1].split(" "))["teleportRoles"]
    assert bytes.fromhex(roles).decode() == "admin\x1fauditor,editor\u00a0x"  # hex: \x1f is not plain text


@pytest.mark.parametrize(
    ("env", "logged"),
    [
        ({"TELEPORT_USERNAME": "alice", "TELEPORT_LOGIN": "root"}, True),  # a forgery, or a misconfiguration
        ({}, False),  # not a Teleport login to speak of
    ],
)
def test_an_identity_not_believed_is_logged_without_debug(sink, env, logged) -> None:
    sink.exe = "/opt/unlisted/teleport"
    login(pam_module.TeleportAuditModule(), FakePamh(env=Env(env)), "teleport_exe=/usr/local/bin/teleport")
    assert sink.records == []
    assert [text for _, text in sink.logs if "nothing recorded" in text] == (
        [
            "pam_teleport_audit(sshd:account): nothing recorded: PAM application '/opt/unlisted/teleport' is not a "
            "trusted Teleport binary (teleport_exe=)"
        ]
        if logged
        else []
    )


def test_a_session_stack_that_ran_without_our_line_is_not_called_a_refusal(sink, monkeypatch) -> None:
    """Our session line skipped (a jump) or missing: pam_loginuid changed the loginuid, so the account
    stack passed and the session stack ran. The account outcome is recorded, not a refusal."""
    loginuid = [b"4294967295"]
    monkeypatch.setattr(pam_module, "login_uid", lambda: loginuid[0])
    pamh = FakePamh()
    module = pam_module.TeleportAuditModule()
    module.acct_mgmt(pamh, 0, [ENTRY])
    loginuid[0] = b"0"  # pam_loginuid, in pam_open_session
    assert module.end(pamh) == 0
    assert ops(sink) == [(AUDIT_USER_ACCT, "teleport:accounting", "success")]
    assert len(sink.logs) == 1 and "our session line did not" in sink.logs[0][1]
