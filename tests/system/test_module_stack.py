"""The module on the real stack: kernel audit, auditd, libpam, pam_python,
pam_loginuid, pam_tty_audit, driven by a C Teleport stand-in and pamtester."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from pam_teleport_audit.admin.auditlog import AuditRecord, decode_value, records_since

from .conftest import OUR_OPS, UNSET_SES, debian_stack, pid_records, run_driver, unique, wait_for_records


def by_op(records: list[AuditRecord], op: str) -> AuditRecord:
    found = [r for r in records if r.get("op") == op]
    assert len(found) == 1, f"expected one {op} record, got {[r.fields for r in found]}"
    return found[0]


def teleport_records(started: float, name: str) -> list[AuditRecord]:
    return [
        r
        for r in records_since(started, "-m", "USER_ACCT,USER_START,USER_END")
        if "teleportUser" in r.fields and decode_value(r["teleportUser"]) == name.encode()
    ]


def test_teleport_session_gets_identity_session_id_and_keystrokes(driver, pam_service, linux_user):
    login = linux_user()
    service = pam_service(debian_stack())
    tp_user = unique("alice-")
    marker = unique("typed-")
    session = run_driver(driver, service, login, user=tp_user, roles="access editor", lines=(f"echo {marker}", "id -u"))
    assert session.returncode == 0, session.output
    assert session.steps == {"acct_mgmt": 0, "open_session": 0, "close_session": 0}

    # ours: USER_ACCT, USER_START, USER_END; libpam: the same three; kernel: LOGIN
    records = pid_records(session.started, session.pid, expect=7)
    in_order = [r for r in records if r.get("op", "").startswith("teleport:")]
    assert [(r.type, r["op"]) for r in in_order] == [
        ("USER_ACCT", "teleport:accounting"),
        ("USER_START", "teleport:session_open"),
        ("USER_END", "teleport:session_close"),
    ]
    for record in in_order:
        assert record["teleportUser"] == tp_user
        assert record["teleportRoles"] == "access,editor"
        assert record["teleportChild"] == "exec"
        assert record["acct"] == f'"{login}"'
        assert record["exe"] == f'"{driver}"'
        assert record["terminal"] == "ssh"
        assert record["res"] == "success"

    # Written at open_session, after pam_loginuid: every record of ours has the LOGIN record's auid and ses.
    login_record = [r for r in records if r.type == "LOGIN"]
    assert len(login_record) == 1
    ses = login_record[0]["ses"]
    assert ses != UNSET_SES
    uid = subprocess.run(["id", "-u", login], capture_output=True, text=True, check=True).stdout.strip()
    assert login_record[0]["auid"] == uid
    for record in in_order:
        assert (record["ses"], record["auid"]) == (ses, uid)
    # libpam's account record comes before pam_loginuid, as for sshd.
    assert by_op(records, "PAM:accounting")["ses"] == UNSET_SES

    # libpam's own records now say terminal=ssh, as OpenSSH's do.
    assert by_op(records, "PAM:accounting")["terminal"] == "ssh"
    assert by_op(records, "PAM:session_open")["terminal"] == "ssh"
    assert "pam_python" in by_op(records, "PAM:session_open")["grantors"]

    # Keystrokes: TTY records of the shell, in the same session.
    tty = wait_for_records(session.started, lambda rs: len(rs) >= 3, "-m", "TTY", "--session", ses)
    typed = b"".join(bytes.fromhex(r["data"]) for r in tty)
    assert f"echo {marker}\n".encode() in typed
    assert all(r["ses"] == ses for r in tty)


def test_pamtester_with_teleport_variables_is_not_trusted(pam_service, linux_user):
    login = linux_user()
    service = pam_service(debian_stack())
    tp_user = unique("forged-")
    started = time.time()
    proc = subprocess.run(
        [
            "pamtester",
            "-E",
            f"TELEPORT_USERNAME={tp_user}",
            "-E",
            f"TELEPORT_LOGIN={login}",
            service,
            login,
            "acct_mgmt",
            "open_session",
            "close_session",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # The stack ran (libpam logged it) but nothing of ours, and no items were set.
    libpam = wait_for_records(
        started, lambda rs: len(rs) >= 3, "-m", "USER_ACCT,USER_START,USER_END", "-x", "/usr/bin/pamtester"
    )
    libpam = [r for r in libpam if r.get("acct") == f'"{login}"']
    assert [r["op"] for r in libpam] == ["PAM:accounting", "PAM:session_open", "PAM:session_close"]
    assert all(r["terminal"] == "?" for r in libpam)
    assert all("teleportUser" not in r.fields for r in libpam)
    assert teleport_records(started, tp_user) == []


def test_login_mismatch_is_not_trusted(driver, pam_service, linux_user):
    login = linux_user()
    service = pam_service(debian_stack())
    tp_user = unique("bob-")
    session = run_driver(driver, service, login, user=tp_user, shell=False, extra=("-L", "root"))
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=4)
    assert {r.get("op") for r in records} >= {"PAM:accounting", "PAM:session_open", "PAM:session_close"}
    assert not [r for r in records if "teleportUser" in r.fields]
    assert by_op(records, "PAM:accounting")["terminal"] == "?"


def test_two_handles_in_one_process_keep_their_own_identity(driver, pam_service, linux_user):
    """A process holding two PAM handles at once shares one pam_python interpreter
    between them (FACTS); each handle still records the Teleport user it was
    opened for, through interleaved phases."""
    login = linux_user()
    service = pam_service(debian_stack())
    first, second = unique("erin-"), unique("frank-")
    session = run_driver(driver, service, login, user=first, shell=False, extra=("-2", second))
    assert session.returncode == 0, session.output
    assert list(session.steps) == [
        "acct_mgmt.1",
        "acct_mgmt.2",
        "open_session.1",
        "open_session.2",
        "close_session.2",
        "close_session.1",
    ], session.output

    def ours(records: list[AuditRecord]) -> list[tuple[str, str]]:
        return [(r["op"], r["teleportUser"]) for r in records if "teleportUser" in r.fields]

    records = wait_for_records(session.started, lambda rs: len(ours(rs)) >= 6, "-p", str(session.pid))
    # Each record is written when its outcome is known: accounting at open, both session records at close.
    assert ours(records) == [
        ("teleport:accounting", first),
        ("teleport:accounting", second),
        ("teleport:session_open", second),
        ("teleport:session_close", second),
        ("teleport:session_open", first),
        ("teleport:session_close", first),
    ]


def test_pam_environment_cannot_forge_or_change_the_identity(driver, pam_service, linux_user):
    """pam_env reads ~/.pam_environment in the session stack (Debian: user_readenv=1)."""
    login = linux_user()
    forged = unique("mallory-")
    Path(f"/home/{login}/.pam_environment").write_text(f"TELEPORT_USERNAME DEFAULT={forged}\n")
    service = pam_service(debian_stack())

    real = unique("carol-")
    session = run_driver(driver, service, login, user=real, shell=False)
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=7)
    named = [r["teleportUser"] for r in records if "teleportUser" in r.fields]
    assert named == [real, real, real]

    # No TELEPORT_USERNAME from Teleport: the one pam_env adds later is ignored.
    session = run_driver(driver, service, login, shell=False)
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=4)
    assert not [r for r in records if "teleportUser" in r.fields]
    assert teleport_records(session.started, forged) == []


def test_client_address_from_the_named_variable(driver, pam_service, linux_user):
    login = linux_user()
    service = pam_service(debian_stack("rhost_env=TELEPORT_CLIENT_ADDR"))
    session = run_driver(
        driver, service, login, user=unique("dave-"), shell=False, extra=("-e", "TELEPORT_CLIENT_ADDR=192.0.2.7")
    )
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=7)
    for op in ("teleport:accounting", "PAM:accounting", "teleport:session_open", "PAM:session_open"):
        assert by_op(records, op)["hostname"] == "192.0.2.7", op
    assert by_op(records, "teleport:session_open")["addr"] == "192.0.2.7"


def test_audit_disabled_fail_open_logs_one_line_and_login_goes_on(
    driver, pam_service, linux_user, syslog_catcher, audit_disabled
):
    login = linux_user()
    tp_user = unique("erin-")
    service = pam_service(debian_stack(f"log_socket={syslog_catcher.path}"))
    session = run_driver(driver, service, login, user=tp_user, shell=False)
    assert session.returncode == 0, session.output
    assert session.steps == {"acct_mgmt": 0, "open_session": 0, "close_session": 0}
    lines = syslog_catcher.lines()
    assert len(lines) == 1, lines
    assert "audit is disabled" in lines[0] and "login goes on" in lines[0]
    assert lines[0].startswith("<84>")  # authpriv.warning
    assert f"({service}:session)" in lines[0]  # the first record is written at open_session


def test_audit_disabled_fail_closed_refuses_at_acct_mgmt(
    driver, pam_service, linux_user, syslog_catcher, audit_disabled
):
    login = linux_user()
    service = pam_service(debian_stack(f"log_socket={syslog_catcher.path}", fail_closed=True))
    session = run_driver(driver, service, login, user=unique("frank-"), shell=False)
    assert session.steps == {"acct_mgmt": 4}  # PAM_SYSTEM_ERR: no session was opened
    assert session.returncode == 14
    lines = syslog_catcher.lines()
    assert len(lines) == 1 and "login refused (fail_closed)" in lines[0], lines


def test_fail_closed_with_audit_working_lets_teleport_and_others_in(driver, pam_service, linux_user):
    login = linux_user()
    service = pam_service(debian_stack(fail_closed=True))
    tp_user = unique("gina-")
    session = run_driver(driver, service, login, user=tp_user, shell=False)
    assert session.returncode == 0, session.output
    assert len(teleport_records(session.started, tp_user)) >= 1
    # Someone who is not Teleport is not refused by fail_closed: nothing to record.
    proc = subprocess.run(
        ["pamtester", service, login, "acct_mgmt", "open_session", "close_session"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    wait = wait_for_records(session.started, lambda rs: len(rs) >= 3, "-m", "USER_START,USER_END,USER_ACCT")
    assert len([r for r in wait if r.get("teleportUser") == tp_user]) == 3


# A pam_python script of another product, with a helper module of the same generic name as ours.
OTHER_SCRIPT = """\
import sys


def pam_sm_open_session(pamh, flags, args):
    sys.path.insert(0, args[0].rpartition("/")[0])
    import pam_module
    return pamh.PAM_SUCCESS if getattr(pam_module, "WHOSE", None) == "other" else pamh.PAM_SESSION_ERR


def pam_sm_close_session(pamh, flags, args):
    return pamh.PAM_SUCCESS
"""


def test_another_pam_python_script_gets_its_own_pam_module(driver, pam_service, linux_user, tmp_path):
    """Every pam_python script of a handle shares one interpreter: once ours is loaded, a later
    script's `import pam_module` must find its own file, not ours (pam_loader leaves no names)."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "pam_module.py").write_text('WHOSE = "other"\n')
    (other / "other_entry.py").write_text(OTHER_SCRIPT)
    # After ours in the session stack: our module was loaded at acct_mgmt, before it runs.
    stack = debian_stack() + f"session    required   pam_python.so {other / 'other_entry.py'}\n"
    login = linux_user()
    tp_user = unique("shared-")
    session = run_driver(driver, pam_service(stack), login, user=tp_user, shell=False)
    assert session.returncode == 0, session.output
    assert session.steps == {"acct_mgmt": 0, "open_session": 0, "close_session": 0}
    records = pid_records(session.started, session.pid, expect=7)
    assert [r["op"] for r in records if r.get("teleportUser") == tp_user] == OUR_OPS


# An administrator's own pam_python script, BEFORE ours in the account stack: it imports a module of
# its folder whose top-level name is one of ours, and later checks that name is still its module.
EARLIER_SCRIPT = """\
import sys


def pam_sm_acct_mgmt(pamh, flags, args):
    sys.path.insert(0, args[0].rpartition("/")[0])
    mine = __import__(args[1])
    return pamh.PAM_SUCCESS if getattr(mine, "WHOSE", None) == "other" else pamh.PAM_PERM_DENIED


def pam_sm_open_session(pamh, flags, args):
    mine = __import__(args[1])  # from sys.modules: ours must have left theirs there
    return pamh.PAM_SUCCESS if getattr(mine, "WHOSE", None) == "other" else pamh.PAM_SESSION_ERR


def pam_sm_close_session(pamh, flags, args):
    return pamh.PAM_SUCCESS
"""


def test_an_earlier_pam_python_scripts_module_named_like_ours_does_not_shadow_it(
    driver, pam_service, linux_user, tmp_path
):
    """Every pam_python script of a handle shares one interpreter. A script before ours that imported its
    own top-level `pam_module` left it in sys.modules, where ours used to find it: pam_loader got their
    pam_module and gave the handle our fallback, so the Teleport login went unrecorded, and with
    fail_closed was refused. Now ours is imported and theirs put back, for their session line to find."""
    name = "pam_module"  # their module named like ours (a `pam_loader` is not guarded: docs/architecture.md)
    other = tmp_path / "other"
    other.mkdir()
    (other / f"{name}.py").write_text('WHOSE = "other"\n')
    (other / "other_entry.py").write_text(EARLIER_SCRIPT)
    theirs = f"pam_python.so {other / 'other_entry.py'} {name}"
    ours = "account    required   pam_python.so"  # fail_closed: a fallback of ours refuses the login
    stack = debian_stack(fail_closed=True).replace(ours, f"account required {theirs}\n{ours}", 1)
    stack += f"session required {theirs}\n"
    login = linux_user()
    tp_user = unique("shadow-")
    session = run_driver(driver, pam_service(stack), login, user=tp_user, shell=False)
    assert session.returncode == 0, session.output
    assert session.steps == {"acct_mgmt": 0, "open_session": 0, "close_session": 0}
    records = pid_records(session.started, session.pid, expect=7)
    assert [r["op"] for r in records if r.get("teleportUser") == tp_user] == OUR_OPS
    assert by_op(records, "PAM:session_open")["terminal"] == "ssh"  # our account line ran as ours


def test_our_session_line_twice_in_one_stack_gives_one_set_of_records(driver, pam_service, linux_user):
    """The stanza, and an included file that has our session line too (pasted into common-session by hand):
    pam_python runs both lines with one state (one per script path and handle). Each record is written
    once: it used to write teleport:accounting once per line (and libpam's session_open then listed
    pam_python twice among its grantors). `status` calls such a file broken (exit 7)."""
    line = debian_stack().splitlines()
    ours = next(text for text in line if text.startswith("session") and "pam_python.so" in text)
    included = pam_service(f"{ours}\n")
    stack = debian_stack().replace("@include common-session\n", f"@include common-session\n@include {included}\n")
    login = linux_user()
    tp_user = unique("twice-")
    session = run_driver(driver, pam_service(stack), login, user=tp_user, shell=False)
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=7)
    assert [r["op"] for r in records if r.get("teleportUser") == tp_user] == OUR_OPS
    # The second line ignores: it is not a grantor of libpam's record.
    assert by_op(records, "PAM:session_open")["grantors"].split(",").count("pam_python") == 1
