"""selftest's pure parts: which file, what must hold before running, what the records must say."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pam_teleport_audit.admin import selftest
from pam_teleport_audit.admin.auditlog import AuditRecord
from pam_teleport_audit.admin.pamstack import folder_resolver

if TYPE_CHECKING:
    from pam_teleport_audit.pam_module import AuditStatus

ROOT = Path(__file__).resolve().parents[2]
INSTALLED = (ROOT / "pam.d" / "sshd.example").read_bytes()
DEBIAN = ROOT / "tests" / "fixtures" / "pam" / "debian-12"
STOCK = (DEBIAN / "sshd").read_bytes()
USER = "pam-teleport-audit-selftest-0123456789ab"
PID = 4242


def checks_by_name(checks: list) -> dict[str, object]:
    return {c.name: c for c in checks}


# ---- which file


@pytest.mark.parametrize(
    ("pam_file", "service", "expected"),
    [
        (None, None, ("sshd", "/etc/pam.d/sshd")),
        ("/etc/pam.d/teleport-ssh", None, ("teleport-ssh", "/etc/pam.d/teleport-ssh")),
        ("/etc/pam.d/../pam.d/sshd", None, ("sshd", "/etc/pam.d/sshd")),
        (None, "sshd-x", ("sshd-x", "/etc/pam.d/sshd-x")),
    ],
)
def test_service_and_file(pam_file: str | None, service: str | None, expected: tuple[str, str]) -> None:
    assert selftest.resolve_service(pam_file, service) == expected


@pytest.mark.parametrize(
    ("pam_file", "service"),
    [("/tmp/sshd", None), ("/etc/pam.d", None), ("/etc/pam.d/sub/sshd", None), (None, "a/b"), (None, ".."), (None, "")],
)
def test_files_libpam_cannot_read_as_a_service_are_refused(pam_file: str | None, service: str | None) -> None:
    with pytest.raises(ValueError, match=r"(?i)pam"):
        selftest.resolve_service(pam_file, service)


def test_the_probe_says_it_is_a_selftest_and_is_unique() -> None:
    names = {selftest.probe_user() for _ in range(50)}
    assert len(names) == 50 and all(n.startswith("pam-teleport-audit-selftest-") for n in names)


# ---- preconditions


def stanza(data: bytes, isfile=lambda path: True, tty_audit: bool = True) -> dict[str, object]:
    """The checks of a file in Debian 12's folder (its common-* files resolve its includes)."""
    resolve = folder_resolver(str(DEBIAN / "sshd"))
    return checks_by_name(list(selftest.stanza_preconditions("/etc/pam.d/x", data, isfile, tty_audit, resolve)))


def test_an_installed_stanza_passes() -> None:
    got = stanza(INSTALLED)
    assert {name: c.status for name, c in got.items()} == {
        "stanza": "pass",
        "module file": "pass",
        "pam_tty_audit": "pass",
    }


def test_no_stanza() -> None:
    got = stanza(STOCK)
    assert got["stanza"].status == "fail" and "no account block" in got["stanza"].message
    assert "pam-teleport-audit install --pam-file /etc/pam.d/x" in got["stanza"].fix


def test_the_module_file_missing() -> None:
    got = stanza(INSTALLED, isfile=lambda path: False)
    assert got["module file"].status == "fail"
    assert (
        "/usr/lib/python3/dist-packages/pam_teleport_audit/pam_entry.py, which does not exist"
        in got["module file"].message
    )


def test_pam_tty_audit_missing() -> None:
    data = b"".join(x for x in INSTALLED.splitlines(keepends=True) if b"pam_tty_audit.so" not in x)
    got = stanza(data)
    assert got["stanza"].status == "pass" and got["pam_tty_audit"].status == "fail"
    assert "keystrokes are not recorded" in got["pam_tty_audit"].message
    # Left out on purpose (install --tty-audit off): said, but not a failure.
    assert stanza(data, tty_audit=False)["pam_tty_audit"].status == "warn"


def test_teleport_exe_needs_a_binary_to_stand_in_for() -> None:
    entry = b"pam_teleport_audit/pam_entry.py"
    data = INSTALLED.replace(entry, entry + b" teleport_exe=/opt/teleport/bin/teleport")
    assert stanza(data, isfile=lambda path: path != "/opt/teleport/bin/teleport")["teleport_exe"].status == "fail"
    assert "teleport_exe" not in stanza(data)  # it exists: the probe runs bound over it
    lines = selftest.our_lines(data)
    assert selftest.stand_in(selftest.trusted_exes(lines), lambda p: True) == "/opt/teleport/bin/teleport"
    assert selftest.trusted_exes(selftest.our_lines(INSTALLED)) == []


def audit_status(**kw: int) -> AuditStatus:
    base = dict(enabled=1, failure=1, pid=1, rate_limit=0, backlog_limit=64, lost=5, backlog=0)
    base.update(kw)
    return {**base, "backlog_wait_time": None}  # type: ignore[return-value, typeddict-item]


@pytest.mark.parametrize(
    ("kw", "failing"),
    [({}, set()), ({"enabled": 0}, {"kernel audit"}), ({"pid": 0}, {"auditd"}), ({"pid": 9}, {"auditd"})],
)
def test_audit_preconditions(kw: dict[str, int], failing: set[str], tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "exe").symlink_to("/usr/sbin/auditd")
    checks = selftest.audit_preconditions(lambda: audit_status(**kw), str(tmp_path))
    # A small backlog and lost records are doctor's warnings, not reasons the self-test fails.
    assert [c.name for c in checks] == ["kernel audit", "auditd"]
    assert {c.name for c in checks if c.status == "fail"} == failing


def test_preconditions_name_an_unknown_login_and_a_missing_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    got = checks_by_name(selftest.preconditions(str(tmp_path / "nope"), "no-such-login-pta", lambda: audit_status()))
    assert got["login"].status == "fail" and "no-such-login-pta" in got["login"].message
    assert got["stanza"].status == "fail" and "cannot read" in got["stanza"].message
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    (only,) = selftest.preconditions("/etc/pam.d/sshd", "root", lambda: audit_status())
    assert only.name == "root" and only.status == "fail"


# ---- the transaction's records


def record(type_: str, serial: int, **fields: str) -> AuditRecord:
    return AuditRecord(type_, serial, 1.0, {"pid": str(PID), "uid": "0", **fields})


def ours(op: str, type_: str, serial: int, ses: str = "7", **kw: str) -> AuditRecord:
    fields = {"ses": ses, "op": op, "acct": "root", "terminal": "ssh", "teleportUser": USER, "res": "success"}
    return record(type_, serial, **{**fields, **kw})


def libpam(op: str, type_: str, serial: int, ses: str = "7", terminal: str = "ssh") -> AuditRecord:
    return record(type_, serial, ses=ses, op=op, acct="root", terminal=terminal, res="success")


def good_records() -> list[AuditRecord]:
    """A successful probe in the order the module (COMMON.md's record sequence) writes it."""
    return [
        libpam("PAM:accounting", "USER_ACCT", 1, ses="4294967295"),
        record("LOGIN", 2, ses="7", auid="0"),
        ours("teleport:accounting", "USER_ACCT", 3),
        libpam("PAM:session_open", "USER_START", 4),
        ours("teleport:session_open", "USER_START", 5),
        ours("teleport:session_close", "USER_END", 6),
        libpam("PAM:session_close", "USER_END", 7),
    ]


def transaction(records: list[AuditRecord], returncode: int = 0, output: str = "") -> dict[str, object]:
    run = selftest.Run(PID, returncode, output)
    return checks_by_name(selftest.transaction_checks(run, records, USER, "sshd"))


def test_a_recording_host_passes_every_check() -> None:
    got = transaction(good_records())
    assert {name: c.status for name, c in got.items()} == {
        "pam transaction": "pass",
        "our records": "pass",
        "session id": "pass",
        "libpam records": "pass",
    }
    assert selftest.done(good_records(), PID)


def test_other_processes_and_other_probes_do_not_count() -> None:
    foreign = [AuditRecord(r.type, r.serial, r.time, {**r.fields, "pid": "1"}) for r in good_records()]
    got = transaction(foreign)
    assert all(c.status == "fail" for name, c in got.items() if name != "pam transaction")
    other_probe = [
        AuditRecord(r.type, r.serial, r.time, {**r.fields, "teleportUser": USER + "x"})
        if "teleportUser" in r.fields
        else r
        for r in good_records()
    ]
    assert transaction(other_probe)["our records"].status == "fail"


def test_a_refused_transaction() -> None:
    records = [libpam("PAM:accounting", "USER_ACCT", 1, ses="4294967295", terminal="?")]
    got = transaction(records, 1, "teleport: invoking pam_start\nteleport: Authentication service cannot retrieve")
    assert got["pam transaction"].status == "fail"
    assert "exited 1: teleport: Authentication service cannot retrieve" in got["pam transaction"].message
    # No record of ours, and libpam's says our account line never set PAM_TTY.
    assert "our account line did not run" in got["our records"].message
    assert got["session id"].status == "fail" and "pam_loginuid" in got["session id"].message
    assert "PAM:accounting terminal=?" in got["libpam records"].message
    assert "PAM:session_open missing" in got["libpam records"].message


def test_a_failed_record_of_ours_or_a_missing_one() -> None:
    records = good_records()
    records[5] = ours("teleport:session_close", "USER_END", 6, res="failed")
    assert transaction(records)["our records"].status == "fail"
    got = transaction([r for r in good_records() if r.get("op") != "teleport:session_open"])
    assert got["our records"].status == "fail"
    assert "USER_ACCT teleport:accounting res=success; USER_END teleport:session_close" in got["our records"].message
    assert "did not run" not in got["our records"].message  # the account line did run


def test_a_session_record_without_the_login_ses() -> None:
    records = good_records()
    records[4] = ours("teleport:session_open", "USER_START", 5, ses="4294967295")
    got = transaction(records)
    assert got["session id"].status == "fail"
    assert "ses=7" in got["session id"].message and "teleport:session_open ses=4294967295" in got["session id"].message
    # USER_ACCT too is written at open_session, inside the session (COMMON.md's record sequence).
    records = good_records()
    records[2] = ours("teleport:accounting", "USER_ACCT", 3, ses="4294967295")
    assert transaction(records)["session id"].status == "fail"


def test_libpam_records_without_terminal_ssh() -> None:
    records = good_records()
    records[3] = libpam("PAM:session_open", "USER_START", 4, terminal="?")
    got = transaction(records)
    assert got["libpam records"].status == "fail" and "PAM:session_open terminal=?" in got["libpam records"].message


def test_the_bystander() -> None:
    run = selftest.Run(PID, 0, "")
    clean = [r for r in good_records() if "teleportUser" not in r.fields]
    assert selftest.bystander_check(run, clean, USER).status == "pass"
    got = selftest.bystander_check(run, good_records(), USER)
    assert got.status == "fail" and "3 record(s) of ours" in got.message
    # Nothing in the log at all: the check cannot pass by finding nothing.
    got = selftest.bystander_check(run, [], USER)
    assert got.status == "fail" and "no libpam records" in got.message


# ---- running


def test_pamtester_argv() -> None:
    argv = selftest.pamtester_argv("/run/x/teleport", "sshd", "root", USER)
    assert argv == [
        "/run/x/teleport",
        "-v",
        "-E",
        f"TELEPORT_USERNAME={USER}",
        "-E",
        "TELEPORT_LOGIN=root",
        "-E",
        "TELEPORT_ROLES=pam-teleport-audit-selftest",
        "sshd",
        "root",
        "acct_mgmt",
        "open_session",
        "close_session",
    ]
    bound = selftest.pamtester_argv("/run/x/teleport", "sshd", "root", USER, "/usr/local/bin/teleport")
    assert bound[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert bound[-len(argv) :] == ["/usr/local/bin/teleport", *argv[1:]]


def test_teleport_named_copy_is_private_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    owners: list[tuple[str, int, int]] = []
    monkeypatch.setattr(os, "chown", lambda path, uid, gid: owners.append((path, uid, gid)))
    source = tmp_path / "pamtester"
    source.write_bytes(b"#!/bin/sh\n")
    with selftest.teleport_named(str(source), str(tmp_path)) as copy:
        folder = os.path.dirname(copy)
        assert os.path.basename(copy) == "teleport" and owners == [(copy, 0, 0)]
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(copy).st_mode) == 0o755
    assert not os.path.exists(folder)


def test_a_program_that_cannot_run(tmp_path: Path) -> None:
    data = tmp_path / "teleport"
    data.write_bytes(b"not a program")  # mode 0644: exec fails as on a noexec /run
    run = selftest.run_pamtester([str(data), "-v"])
    assert (run.pid, run.returncode) == (0, 126) and "cannot run" in run.output
    got = transaction([], run.returncode, run.output)
    assert got["pam transaction"].status == "fail" and "cannot run" in got["pam transaction"].message


def test_report_render_and_json() -> None:
    report = selftest.Report("sshd", "/etc/pam.d/sshd", "root", USER, seconds=0.1234, ran=True)
    report.after = selftest.transaction_checks(selftest.Run(PID, 0, ""), good_records(), USER, "sshd")
    assert report.ok and report.as_dict()["seconds"] == 0.123
    text = selftest.render(report)
    assert text.splitlines()[-1] == "this host records Teleport logins (0.12 s)"
    report.before = [selftest.Check("auditd", "fail", "no audit daemon is registered", "start it")]
    report.ran = False
    assert not report.ok and report.as_dict()["ok"] is False
    assert "the PAM transaction was not run" in selftest.render(report)


def test_doctor_refuses_a_file_outside_pam_d() -> None:
    (got,) = selftest.doctor_checks("/tmp/sshd")
    assert got.name == "selftest" and got.status == "fail" and "/etc/pam.d/NAME" in got.message
