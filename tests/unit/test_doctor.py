"""doctor's checks on given inputs: kernel status, /proc, Teleport config."""

from __future__ import annotations

from pathlib import Path

import pytest

from pam_teleport_audit import doctor
from pam_teleport_audit.netlink import AuditError, AuditStatus


def status(**kw: int) -> AuditStatus:
    base = dict(enabled=1, failure=1, pid=1, rate_limit=0, backlog_limit=8192, lost=0, backlog=0)
    base.update(kw)
    return AuditStatus(**base)


def statuses(checks: list[doctor.Check]) -> dict[str, str]:
    return {c.name: c.status for c in checks}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (status(), {"kernel audit": "pass", "auditd": "pass", "backlog": "pass", "lost records": "pass"}),
        (status(enabled=0), {"kernel audit": "fail"}),
        (status(enabled=2), {"kernel audit": "pass"}),
        (status(pid=0), {"auditd": "fail"}),
        (status(pid=7), {"auditd": "fail"}),  # a zombie, still registered
        (status(pid=9), {"auditd": "fail"}),  # gone, still registered
        (status(backlog_limit=64), {"backlog": "warn"}),
        (status(lost=3), {"lost records": "warn"}),
    ],
)
def test_audit_checks(state: AuditStatus, expected: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "exe").symlink_to("/usr/sbin/auditd")
    (tmp_path / "7").mkdir()  # a zombie: no exe
    got = statuses(list(doctor.audit_checks(lambda: state, str(tmp_path))))
    assert {k: got[k] for k in expected} == expected


@pytest.mark.parametrize(("pid", "says"), [(0, "no audit daemon is registered"), (9, "pid 9 is registered but gone")])
def test_auditd_failure_says_which(pid: int, says: str, tmp_path: Path) -> None:
    checks = {c.name: c for c in doctor.audit_checks(lambda: status(pid=pid), str(tmp_path))}
    assert says in checks["auditd"].message


def test_unreachable_kernel_audit() -> None:
    def fail() -> AuditStatus:
        raise AuditError(93, "cannot open NETLINK_AUDIT: Protocol not supported")

    (check,) = doctor.audit_checks(fail)
    assert check.status == "fail" and "Protocol not supported" in check.message


def fake_proc(root: Path, pid: int, exe: str, loginuid: int) -> None:
    folder = root / str(pid)
    folder.mkdir()
    (folder / "exe").symlink_to(exe)
    (folder / "loginuid").write_text(f"{loginuid}\n")


def test_teleport_processes(tmp_path: Path) -> None:
    assert statuses(list(doctor.process_checks(str(tmp_path)))) == {"teleport processes": "warn"}
    fake_proc(tmp_path, 10, "/usr/local/bin/teleport", 4294967295)
    fake_proc(tmp_path, 11, "/usr/local/bin/teleport", 1000)
    fake_proc(tmp_path, 12, "/usr/sbin/sshd", 1000)
    checks = list(doctor.process_checks(str(tmp_path)))
    by_pid = {c.name: c for c in checks}
    assert set(by_pid) == {"teleport pid 10", "teleport pid 11"}
    assert by_pid["teleport pid 11"].status == "fail" and "loginuid is 1000" in by_pid["teleport pid 11"].message
    # /proc entries are owned by the process's uid; here the test's own files are root's.
    assert by_pid["teleport pid 10"].status == "pass"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh_service:\n  pam:\n    enabled: true\n", "pass"),
        ("ssh_service:\n  pam:\n    enabled: yes\n    service_name: teleport\n", "pass"),
        ("ssh_service:\n  enabled: true\n", "fail"),
        ("ssh_service: [unclosed\n", "fail"),
        ("", "fail"),
    ],
)
def test_teleport_config(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "teleport.yaml"
    path.write_text(text)
    (check,) = doctor.teleport_config_checks(str(path))
    assert check.status == expected, check


def test_missing_teleport_config(tmp_path: Path) -> None:
    (check,) = doctor.teleport_config_checks(str(tmp_path / "none.yaml"))
    assert check.status == "warn"


def test_check_line_has_the_fix_only_when_not_passing() -> None:
    assert doctor.Check("x", "pass", "fine", "do y").line() == "PASS  x: fine."
    assert doctor.Check("x", "fail", "broken", "do y").line() == "FAIL  x: broken. Fix: do y"
