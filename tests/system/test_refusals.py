"""Refused Teleport logins on the real stack: each leaves exactly one record of
ours naming the Teleport user with res=failed, and none of ours says success
for the refused phase (issue 13). The C stand-in ends a failed login with
pam_end and no pam_close_session, as Teleport does; pam_python then calls our
pam_sm_end."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pam_teleport_audit.admin import doctor
from pam_teleport_audit.admin.auditlog import AuditRecord, records_since
from pam_teleport_audit.admin.search import find_sessions
from pam_teleport_audit.admin.stanza import entry_script

from .conftest import PAM_DIR, UNSET_SES, run_driver, unique, wait_for_records

PERMIT = "account required pam_permit.so"


def stack(
    account: str = PERMIT,
    session: str = "",
    auth: str = "auth required pam_permit.so",
    before: str = "",
    options: str = "",
) -> str:
    """Our account line first, our session line after pam_loginuid and pam_tty_audit (docs/installer.md);
    `before`: session lines between those and ours."""
    module = f"pam_python.so {entry_script()} {options}".rstrip()
    return (
        f"{auth}\n"
        f"account optional {module}\n{account}\n"
        "session required pam_loginuid.so\n"
        "session optional pam_tty_audit.so enable=*\n"
        f"{before}\n"
        f"session optional {module}\n{session}\n"
    )


def ours(records: list[AuditRecord], tp_user: str) -> list[tuple[str, str, str]]:
    return [(r.type, r["op"], r["res"]) for r in records if r.get("teleportUser") == tp_user]


def libpam(records: list[AuditRecord]) -> list[tuple[str, str, str]]:
    return [(r.type, r["op"], r["res"]) for r in records if r.get("op", "").startswith("PAM:")]


# A stack maker gets the scratch login, a scratch folder, and pam_service (for included files).
Maker = Callable[[str, Path, Callable[[str], str]], str]


def expire(login: str, *_: object) -> str:
    subprocess.run(["chage", "-E", "0", login], check=True)
    return stack("account required pam_unix.so")


def must_change_password(login: str, *_: object) -> str:
    """`chage -d 0`: pam_unix's account part returns PAM_NEW_AUTHTOK_REQD, which Teleport refuses
    (lib/pam: any acct_mgmt result but PAM_SUCCESS); Debian's common-account lets it through `done`."""
    subprocess.run(["chage", "-d", "0", login], check=True)
    return stack("account [success=1 new_authtok_reqd=done default=ignore] pam_unix.so\naccount requisite pam_deny.so")


def nologin(login: str, tmp: Path, _: object) -> str:
    flag = tmp / "nologin"
    flag.write_text("maintenance\n")
    return stack(f"account required pam_nologin.so file={flag}")


def config(tmp: Path, name: str, line: str) -> Path:
    """A module's configuration file of one line."""
    path = tmp / name
    path.write_text(line + "\n")
    path.chmod(0o644)
    return path


def no_shell(login: str, *_: object) -> str:
    subprocess.run(["usermod", "-s", "/nonexistent/shell", login], check=True, capture_output=True)
    return stack("account required pam_shells.so")


def no_home(login: str, *_: object) -> str:
    """pam_mkhomedir cannot make a home under /proc."""
    subprocess.run(["usermod", "-d", f"/proc/nonexistent/{login}", login], check=True)
    return stack(session="session required pam_mkhomedir.so")


def included(text: str, control: str, where: str) -> Maker:
    """Our stack with a session file of its own, through `session CONTROL FILE` before or after our line."""

    def make(login: str, tmp: Path, service: Callable[[str], str]) -> str:
        line = f"session {control} {service(text)}"
        return stack(before=line) if where == "before" else stack(session=line)

    return make


REFUSED_ACCOUNT = [("USER_LOGIN", "teleport:login", "failed")]
LIBPAM_ACCOUNT = [("USER_ACCT", "PAM:accounting", "failed")]
REFUSED_SESSION = [("USER_ACCT", "teleport:accounting", "success"), ("USER_START", "teleport:session_open", "failed")]
LIBPAM_SESSION = [("USER_ACCT", "PAM:accounting", "success"), ("USER_START", "PAM:session_open", "failed")]
REQUISITE_FALSE = "session requisite pam_exec.so quiet /bin/false\nsession required pam_permit.so\n"
# scenario: (the stack for a scratch user, the failing step, ours, libpam's[, driver options])
SCENARIOS: dict[str, tuple] = {
    "required account module": (
        lambda *_: stack(f"{PERMIT}\naccount required pam_deny.so"),
        "acct_mgmt",
        REFUSED_ACCOUNT,
        LIBPAM_ACCOUNT,
    ),
    "expired account (pam_unix)": (expire, "acct_mgmt", REFUSED_ACCOUNT, LIBPAM_ACCOUNT),
    "password must be changed (chage -d 0)": (must_change_password, "acct_mgmt", REFUSED_ACCOUNT, LIBPAM_ACCOUNT),
    "pam_nologin": (nologin, "acct_mgmt", REFUSED_ACCOUNT, LIBPAM_ACCOUNT),
    "pam_access": (
        lambda login, tmp, _: stack(
            f"account required pam_access.so accessfile={config(tmp, 'access.conf', f'-:{login}:ALL')}"
        ),
        "acct_mgmt",
        REFUSED_ACCOUNT,
        LIBPAM_ACCOUNT,
    ),
    "pam_time": (
        lambda login, tmp, _: stack(
            f"account required pam_time.so conffile={config(tmp, 'time.conf', f'*;*;{login};!Al0000-2400')}"
        ),
        "acct_mgmt",
        REFUSED_ACCOUNT,
        [("ANOM_LOGIN_TIME", "PAM:pam_time", "failed"), *LIBPAM_ACCOUNT],  # pam_time writes its own record
    ),
    "pam_listfile": (
        lambda login, tmp, _: stack(
            "account required pam_listfile.so onerr=succeed item=user sense=deny "
            f"file={config(tmp, 'deny', f'{login}')}"
        ),
        "acct_mgmt",
        REFUSED_ACCOUNT,
        LIBPAM_ACCOUNT,
    ),
    "pam_succeed_if (requisite, then sufficient)": (
        lambda *_: stack("account requisite pam_succeed_if.so uid >= 4000000000\naccount sufficient pam_permit.so"),
        "acct_mgmt",
        REFUSED_ACCOUNT,
        LIBPAM_ACCOUNT,
    ),
    "pam_shells (no valid shell)": (no_shell, "acct_mgmt", REFUSED_ACCOUNT, LIBPAM_ACCOUNT),
    # '-' only keeps libpam from logging the missing module: `required` still fails (PAM_MODULE_UNKNOWN).
    "-account required, module missing": (
        lambda *_: stack(f"-account required pam_pta_missing_{'x' * 8}.so\n{PERMIT}"),
        "acct_mgmt",
        REFUSED_ACCOUNT,
        LIBPAM_ACCOUNT,
    ),
    # Teleport with use_pam_auth: pam_authenticate after acct_mgmt, before open_session.
    "pam_authenticate (use_pam_auth)": (
        lambda *_: stack(auth="auth required pam_deny.so"),
        "authenticate",
        REFUSED_ACCOUNT,
        [("USER_ACCT", "PAM:accounting", "success"), ("USER_AUTH", "PAM:authentication", "failed")],
        ("-A",),
    ),
    "session module after ours": (
        lambda *_: stack(session="session required pam_deny.so"),
        "open_session",
        REFUSED_SESSION,
        LIBPAM_SESSION,
    ),
    "pam_limits maxlogins 0": (
        lambda login, tmp, _: stack(
            session=f"session required pam_limits.so conf={config(tmp, 'limits', f'{login} hard maxlogins 0')}"
        ),
        "open_session",
        REFUSED_SESSION,
        LIBPAM_SESSION,
    ),
    "pam_limits maxsyslogins 0": (
        lambda login, tmp, _: stack(
            session=f"session required pam_limits.so conf={config(tmp, 'limits', f'{login} hard maxsyslogins 0')}"
        ),
        "open_session",
        REFUSED_SESSION,
        LIBPAM_SESSION,
    ),
    "pam_exec /bin/false after ours": (
        lambda *_: stack(session="session required pam_exec.so quiet /bin/false"),
        "open_session",
        REFUSED_SESSION,
        LIBPAM_SESSION,
    ),
    "[success=ok default=die] after ours": (
        lambda *_: stack(session="session [success=ok default=die] pam_exec.so quiet /bin/false"),
        "open_session",
        REFUSED_SESSION,
        LIBPAM_SESSION,
    ),
    # `required` goes on to the end of the stack: our line runs, and the session fails after it.
    "required pam_exec /bin/false before ours": (
        lambda *_: stack(before="session required pam_exec.so quiet /bin/false"),
        "open_session",
        REFUSED_SESSION,
        LIBPAM_SESSION,
    ),
    "pam_mkhomedir failing": (no_home, "open_session", REFUSED_SESSION, LIBPAM_SESSION),
    # A substack's requisite or die ends only the substack: our line after it still runs.
    "substack with requisite, before ours": (
        included(REQUISITE_FALSE, "substack", "before"),
        "open_session",
        REFUSED_SESSION,
        LIBPAM_SESSION,
    ),
    "include with requisite, after ours": (
        included(REQUISITE_FALSE, "include", "after"),
        "open_session",
        REFUSED_SESSION,
        LIBPAM_SESSION,
    ),
    "jump over a permit onto a deny, after ours": (
        lambda *_: stack(
            session="session [success=2 default=ignore] pam_permit.so\nsession optional pam_permit.so\n"
            "session optional pam_permit.so\nsession requisite pam_deny.so"
        ),
        "open_session",
        REFUSED_SESSION,
        LIBPAM_SESSION,
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_refused_login_leaves_one_failed_record_naming_the_teleport_user(
    scenario, pam_service, linux_user, driver, tmp_path
) -> None:
    make_stack, failing, expected_ours, expected_libpam, *options = SCENARIOS[scenario]
    make_stack: Maker
    login = linux_user()
    tmp_path.chmod(0o755)  # the modules read their configuration as root; pam_exec runs as root too
    service = pam_service(make_stack(login, tmp_path, pam_service))
    tp_user = unique("refused-")
    extra = options[0] if options else ()
    session = run_driver(driver, service, login, user=tp_user, roles="access", shell=False, extra=extra)
    assert session.steps.get(failing, 0) != 0, session.output
    assert "close_session" not in session.steps, session.output
    records = wait_for_records(
        session.started,
        lambda rs: len(ours(rs, tp_user)) >= len(expected_ours) and len(libpam(rs)) >= len(expected_libpam),
        "-p",
        str(session.pid),
    )
    assert ours(records, tp_user) == expected_ours
    # libpam says the same of the same phase (all types: USER_AUTH is not among the login types)
    assert libpam(records_since(session.started, "-p", str(session.pid))) == expected_libpam
    failed = [r for r in records if r.get("teleportUser") == tp_user and r["res"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["acct"] == f'"{login}"' and failed[0]["terminal"] == "ssh"
    assert failed[0]["teleportRoles"] == "access" and failed[0]["teleportChild"] == "exec"
    if failing != "open_session":  # refused before pam_loginuid: no session, as libpam's record
        assert failed[0]["ses"] == UNSET_SES
    else:  # refused after pam_loginuid: the session id of the LOGIN record
        login_record = [r for r in records if r.type == "LOGIN"]
        assert len(login_record) == 1 and failed[0]["ses"] == login_record[0]["ses"] != UNSET_SES


def test_the_same_stack_lets_a_good_login_through_with_three_records(pam_service, linux_user, driver) -> None:
    """The control for the refusals: nothing refuses, three records of ours, all in the LOGIN record's session."""
    login = linux_user()
    service = pam_service(stack("account required pam_unix.so"))
    tp_user = unique("accepted-")
    session = run_driver(driver, service, login, user=tp_user, shell=False)
    assert session.returncode == 0, session.output
    records = wait_for_records(session.started, lambda rs: len(ours(rs, tp_user)) >= 3, "-p", str(session.pid))
    assert ours(records, tp_user) == [
        ("USER_ACCT", "teleport:accounting", "success"),
        ("USER_START", "teleport:session_open", "success"),
        ("USER_END", "teleport:session_close", "success"),
    ]
    ses = [r["ses"] for r in records if r.type == "LOGIN"]
    assert len(ses) == 1 and {r["ses"] for r in records if r.get("teleportUser") == tp_user} == {ses[0]}


@pytest.mark.parametrize(
    "session_lines",
    [
        "session [success=1 default=ignore] pam_permit.so\nsession optional {module}\n",  # jumped over
        "",  # an account line only: the session line was never installed
    ],
    ids=["jumped-over", "missing"],
)
def test_a_good_login_our_session_line_never_saw_is_not_called_refused(
    session_lines, pam_service, linux_user, driver, syslog_catcher
) -> None:
    """The session stack ran (pam_loginuid set the loginuid) without our line: at pam_end the module
    records the account outcome it knows, in the session's id, and says the session's is unknown."""
    module = f"pam_python.so {entry_script()} log_socket={syslog_catcher.path}"
    service = pam_service(
        f"auth required pam_permit.so\naccount optional {module}\n{PERMIT}\n"
        f"session required pam_loginuid.so\n{session_lines.format(module=module)}"
    )
    login = linux_user()
    tp_user = unique("unseen-")
    session = run_driver(driver, service, login, user=tp_user, shell=False)
    assert session.returncode == 0, session.output  # the login went through
    records = wait_for_records(session.started, lambda rs: len(ours(rs, tp_user)) >= 1, "-p", str(session.pid))
    assert ours(records, tp_user) == [("USER_ACCT", "teleport:accounting", "success")]
    logins = [r for r in records if r.type == "LOGIN"]
    assert len(logins) == 1 and [r["ses"] for r in records if r.get("teleportUser") == tp_user] == [logins[0]["ses"]]
    lines = syslog_catcher.lines()
    assert len(lines) == 1 and "our session line did not" in lines[0], lines


# Lines between pam_loginuid and our session line that end the stack when they fail. `status` and
# `install` accept them (a refusal skips no good login), and pam_loginuid has already changed the
# loginuid when they refuse.
BETWEEN = {
    "requisite": lambda service: "session requisite pam_exec.so quiet /bin/false",
    "default=die": lambda service: "session [success=ok default=die] pam_exec.so quiet /bin/false",
    "include with requisite": lambda service: f"session include {service(REQUISITE_FALSE)}",
}


@pytest.mark.parametrize("case", list(BETWEEN))
def test_a_refusal_between_pam_loginuid_and_our_session_line_is_listed_as_refused(
    case, pam_service, linux_user, driver, syslog_catcher
) -> None:
    """The stack ends before our session line: its open never runs, and at pam_end the module writes
    what it knows, teleport:accounting in the session's id, and says in the system log that the
    session's outcome is libpam's to tell. libpam's failed session_open of the same process says
    it; search reads it, and lists the login as refused by a session module, not as a session that
    opened and never ended (it did, before this fix)."""
    service = pam_service(stack(before=BETWEEN[case](pam_service), options=f"log_socket={syslog_catcher.path}"))
    tp_user = unique("between-")
    session = run_driver(driver, service, linux_user(), user=tp_user, roles="access", shell=False)
    assert session.steps.get("open_session", 0) != 0 and "close_session" not in session.steps, session.output
    records = wait_for_records(
        session.started,
        lambda rs: len(ours(rs, tp_user)) >= 1 and len(libpam(rs)) >= 2,
        "-p",
        str(session.pid),
    )
    assert ours(records, tp_user) == [("USER_ACCT", "teleport:accounting", "success")]
    assert libpam(records) == LIBPAM_SESSION
    logins = [r for r in records if r.type == "LOGIN"]
    assert len(logins) == 1 and [r["ses"] for r in records if r.get("teleportUser") == tp_user] == [logins[0]["ses"]]
    lines = syslog_catcher.lines()
    assert len(lines) == 1 and "a session module before it refused the session" in lines[0], lines
    (found,) = find_sessions(records_since(session.started, "-p", str(session.pid)), tp_user)
    assert (found.refused, found.result, found.end) == ("refused by a session module", "failed", None)
    assert found.ses == int(logins[0]["ses"])


# What doctor's `session refusals` check is about, on the real stack: each stack of session lines
# between pam_loginuid (and pam_tty_audit) and our session line, with what a login that one of them
# can refuse really leaves. "lost": refused, and our records say only teleport:accounting success;
# "recorded": refused, and ours say teleport:session_open failed; "let in": three records of ours.
DENY_AFTER_JUMP = "session [default=1] pam_permit.so\nsession requisite pam_deny.so\nsession required pam_permit.so\n"
TWO_PERMITS = "session required pam_permit.so\nsession required pam_permit.so\n"
DOCTOR_CASES: dict[str, tuple[Callable[[Callable[[str], str]], str], str]] = {
    "requisite": (BETWEEN["requisite"], "lost"),
    "default=die": (BETWEEN["default=die"], "lost"),
    "include with requisite": (BETWEEN["include with requisite"], "lost"),
    # a missing module returns PAM_MODULE_UNKNOWN: `-` silences only the log, requisite dies
    "-requisite, module missing": (lambda service: "-session requisite pam_pta_no_such_module.so", "lost"),
    "jump on success only": (
        lambda service: (
            "session [success=1 default=ignore] pam_exec.so quiet /bin/false\nsession requisite pam_deny.so"
        ),
        "lost",
    ),
    "required": (lambda service: "session required pam_exec.so quiet /bin/false", "recorded"),
    "substack with requisite": (lambda service: f"session substack {service(REQUISITE_FALSE)}", "recorded"),
    # Debian's common-session: pam_permit jumps over pam_deny whatever it returns
    "include, deny jumped over": (lambda service: f"session include {service(DENY_AFTER_JUMP)}", "let in"),
    # a jump counts a substack as one unit: [default=2] skips it and the requisite
    "jump over a substack": (
        lambda service: (
            f"session [default=2] pam_permit.so\nsession substack {service(TWO_PERMITS)}\nsession requisite pam_deny.so"
        ),
        "let in",
    ),
}
OUTCOMES = {
    "lost": [("USER_ACCT", "teleport:accounting", "success")],
    "recorded": REFUSED_SESSION,
    "let in": [
        ("USER_ACCT", "teleport:accounting", "success"),
        ("USER_START", "teleport:session_open", "success"),
        ("USER_END", "teleport:session_close", "success"),
    ],
}


@pytest.mark.parametrize("case", list(DOCTOR_CASES))
def test_doctor_warns_exactly_where_a_refusal_loses_our_failed_record(case, pam_service, linux_user, driver) -> None:
    """doctor's `session refusals` warning, against what the real stack (libpam 1.5 on the host, 1.7
    in the debian13 roots) does with each stack: it warns on every stack whose refusal leaves no
    res=failed of ours, and on no other."""
    make, outcome = DOCTOR_CASES[case]
    service = pam_service(stack(before=make(pam_service)))
    checks = [c for c in doctor.stanza_checks(str(PAM_DIR / service)) if c.name == "session refusals"]
    tp_user = unique("reach-")
    session = run_driver(driver, service, linux_user(), user=tp_user, shell=False)
    expected = OUTCOMES[outcome]
    records = wait_for_records(
        session.started,
        lambda rs: len(ours(rs, tp_user)) >= len(expected) and len(libpam(rs)) >= 2,
        "-p",
        str(session.pid),
    )
    refused = session.steps.get("open_session", 0) != 0
    assert refused == (outcome != "let in"), session.output
    assert ours(records, tp_user) == expected
    assert libpam(records)[1] == ("USER_START", "PAM:session_open", "failed" if refused else "success")
    # the pasted lines are not installed (no markers): the check runs only where it finds a refuser
    assert [c.status for c in checks] == ([doctor.WARN] if outcome == "lost" else []), checks
