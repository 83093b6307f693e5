"""The PAM layouts real hosts have, on the real stack: install, then a Teleport-like login.

Each layout (tests/fixtures/pam/README.md) is written as scratch files under /etc/pam.d with
unique names (its include names rewritten to them; modules this Debian host lacks, such as
pam_sss and pam_sepermit, get the '-' prefix so libpam skips them), `install` runs on the
sshd-like file, and the C stand-in for `teleport exec` logs in as a scratch user and as root
(root is what `sufficient pam_usertype.so issystem` and `pam_localuser` wave through).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pam_teleport_audit.admin import cli, doctor
from pam_teleport_audit.admin.auditlog import AuditRecord, records_since
from pam_teleport_audit.admin.pamfile import Kind, parse
from pam_teleport_audit.admin.search import find_sessions
from pam_teleport_audit.admin.stanza import entry_script
from tests.unit.test_session_refusals import LAYOUTS

from .conftest import OUR_OPS, PAM_DIR, ROOT, UNSET_SES, assert_recorded_session, run_driver, unique, wait_for_records

FIXTURES = ROOT / "tests" / "fixtures" / "pam"
# layout: (its sshd-like file, the folder its included files come from), shared with the unit tests


def module_exists(name: str) -> bool:
    if name.startswith("/"):
        return os.path.exists(name)
    return any(os.path.exists(os.path.join(d, name)) for d in doctor.MODULE_DIRS)


def for_this_host(data: bytes, names: dict[str, str]) -> bytes:
    """Include names rewritten to the scratch names; rules whose module is missing here get '-'."""
    out = []
    for line in parse(data):
        raw = line.raw
        if line.kind is Kind.AT_INCLUDE or (line.kind is Kind.RULE and line.is_include):
            name = line.module or ""
            if name in names:
                raw = re.sub(rb"(\s)" + re.escape(name.encode()) + rb"(?=\s|$)", rb"\g<1>" + names[name].encode(), raw)
        elif line.kind is Kind.RULE and not line.dash and not module_exists(line.module or ""):
            raw = re.sub(rb"^(\s*)", rb"\1-", raw, count=1)
        out.append(raw)
    return b"".join(out)


def materialise(
    sshd: str,
    folder: str,
    pam_service: Callable[[str], str],
    pam_link: Callable[[str], str],
    top: Callable[[str], str] | None = None,
) -> tuple[str, dict[str, str]]:
    """Scratch copies of a layout's files under /etc/pam.d: the sshd-like service's name, and the
    scratch name of each file it includes, directly or through another included file (Arch:
    sshd -> system-remote-login -> system-login -> system-auth). An included name that is a symbolic
    link in the layout (pam-config's common-account -> common-account-pc, authselect's password-auth ->
    /etc/authselect/password-auth) is a scratch link to the scratch copy of its target: libpam opens it
    through the link. top: where the sshd-like file itself is written (default: pam_service)."""
    names: dict[str, str] = {}

    def copy(data: bytes, write: Callable[[str], str] = pam_service) -> str:
        wanted = {x.module for x in parse(data) if x.kind is Kind.AT_INCLUDE or (x.kind is Kind.RULE and x.is_include)}
        for name in sorted(n for n in wanted if n and n not in names):
            source = FIXTURES / folder / name
            assert source.is_file(), f"{sshd}: {name} is not in {folder}"
            target = copy(source.read_bytes())
            names[name] = pam_link(target) if source.is_symlink() else target
        return write(for_this_host(data, names).decode())

    return copy((FIXTURES / sshd).read_bytes(), top or pam_service), names


def pam_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pam_teleport_audit", *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )


def install(service: str) -> subprocess.CompletedProcess[str]:
    return pam_cli("install", "--pam-file", str(PAM_DIR / service), "--entry", entry_script())


def one(records: list[AuditRecord], op: str) -> AuditRecord:
    found = [r for r in records if r.get("op") == op]
    assert len(found) == 1, (op, [r.fields for r in found])
    return found[0]


def assert_session_records(records: list[AuditRecord]) -> None:
    """libpam's records say terminal=ssh; our USER_START/USER_END carry the LOGIN record's ses."""
    assert one(records, "PAM:accounting")["terminal"] == "ssh"
    assert one(records, "PAM:session_open")["terminal"] == "ssh"
    logins = [r for r in records if r.type == "LOGIN"]
    assert len(logins) == 1 and logins[0]["ses"] != UNSET_SES
    for op in OUR_OPS[1:]:
        assert one(records, op)["ses"] == logins[0]["ses"], op


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_installs_and_every_login_is_recorded(layout, driver, pam_service, pam_link, linux_user):
    service, _ = materialise(*LAYOUTS[layout], pam_service, pam_link)
    before = (PAM_DIR / service).read_bytes()
    done = install(service)
    assert done.returncode == cli.EXIT_OK, done.stderr
    assert (PAM_DIR / service).read_bytes() != before
    status = pam_cli("status", "--pam-file", str(PAM_DIR / service))
    assert status.returncode == cli.EXIT_OK, status.stdout + status.stderr
    for login in (linux_user(), "root"):
        records = assert_recorded_session(driver, service, login, f"{layout[:6]}-")
        assert_session_records(records)


def test_an_included_pam_tty_audit_is_the_one_libpam_runs_before_our_module(driver, pam_service, pam_link, linux_user):
    """password-auth brings `pam_tty_audit disable=* enable=root`: install adds none, and libpam's
    session record lists exactly one pam_tty_audit among the grantors, before pam_python."""
    service, _ = materialise(*LAYOUTS["rhel-9-tty-audit"], pam_service, pam_link)
    done = install(service)
    assert done.returncode == cli.EXIT_OK, done.stderr
    assert "keeping the existing pam_tty_audit" in done.stderr
    assert "pam_tty_audit" not in (PAM_DIR / service).read_text()
    status = pam_cli("status", "--pam-file", str(PAM_DIR / service), "--json")
    assert status.returncode == cli.EXIT_OK and '"tty_audit": "existing"' in status.stdout
    records = assert_recorded_session(driver, service, linux_user(), "ttyinc-")
    grantors = one(records, "PAM:session_open")["grantors"].split(",")
    assert grantors.count("pam_tty_audit") == 1
    assert grantors.index("pam_tty_audit") < grantors.index("pam_python")


VENDOR_DIR = Path("/usr/lib/pam.d")


@pytest.fixture
def vendor_service() -> Iterator[Callable[[str], str]]:
    """Factory: a scratch /usr/lib/pam.d/<name> (a package's vendor file) holding the text; return its name.
    Removed afterwards, with any /etc/pam.d/<name> the test made from it."""
    made: list[str] = []

    def make(text: str) -> str:
        name = unique("pta-test-")
        (VENDOR_DIR / name).write_text(text)
        made.append(name)
        return name

    yield make
    for name in made:
        (VENDOR_DIR / name).unlink(missing_ok=True)
        (PAM_DIR / name).unlink(missing_ok=True)


def test_tumbleweed_vendor_sshd_is_copied_then_installed_and_every_login_is_recorded(
    driver, pam_service, pam_link, vendor_service, linux_user
):
    """openSUSE Tumbleweed with pam-config: sshd only in /usr/lib/pam.d (the openssh package), the files it
    includes pam-config's links in /etc/pam.d. install on /etc/pam.d/NAME changes nothing and prints the
    copy to make; after it, install edits the copy, libpam reads its substacks and includes through the
    links, and both logins are recorded through it; uninstall gives back the vendor file's bytes.

    (Without pam-config the included files are in /usr/lib/pam.d too: libpam reads them there since
    Linux-PAM 1.2.0, but Debian 12's libpam 1.5.2-6+deb12u3 resolves include and substack names in
    /etc/pam.d only (observed with strace), so that layout is proven here from /etc/pam.d copies.)"""
    VENDOR_DIR.mkdir(exist_ok=True)
    service, names = materialise(*LAYOUTS["opensuse-tumbleweed"], pam_service, pam_link, top=vendor_service)
    etc, vendor = PAM_DIR / service, VENDOR_DIR / service
    assert not etc.exists() and all((PAM_DIR / n).is_symlink() for n in names.values())
    done = install(service)
    assert done.returncode == cli.EXIT_IO, done.stdout + done.stderr
    assert f"libpam uses the vendor file {vendor} for this service" in done.stderr
    assert f"`cp -p {vendor} {etc}`" in done.stderr and not etc.exists()
    subprocess.run(["cp", "-p", str(vendor), str(etc)], check=True)
    done = install(service)
    assert done.returncode == cli.EXIT_OK, done.stderr
    status = pam_cli("status", "--pam-file", str(etc))
    assert status.returncode == cli.EXIT_OK, status.stdout + status.stderr
    checks = {c.name: c for c in doctor.stanza_checks(str(etc))}
    assert checks["stanza"].status == doctor.PASS and checks["session refusals"].status == doctor.PASS
    for login in (linux_user(), "root"):
        assert_session_records(assert_recorded_session(driver, service, login, "tw-"))
    assert pam_cli("uninstall", "--pam-file", str(etc)).returncode == cli.EXIT_OK
    assert etc.read_bytes() == vendor.read_bytes()


def move_account_block_after(path: Path, include: str) -> None:
    """The old installer's place for the account block: after the account stack's include of `include`."""
    lines = path.read_text().splitlines(keepends=True)
    begin = next(k for k, x in enumerate(lines) if x.startswith("# BEGIN pam_teleport_audit account"))
    block = lines[begin : begin + 3]
    del lines[begin : begin + 3]
    at = next(k for k, x in enumerate(lines) if include in x and x.split()[0] in ("account", "@include")) + 1
    lines[at:at] = block
    path.write_text("".join(lines))


@pytest.mark.parametrize(
    ("layout", "include", "skipper"),
    [
        ("rhel-9-sssd", "password-auth", "account     sufficient                                   pam_localuser.so"),
        ("debian-12-sss", "common-account", "account\tsufficient\t\t\t\t\tpam_localuser.so"),
        # through pam-config's link common-account -> common-account-pc
        ("sle-15-sss", "common-account", "account\tsufficient\tpam_localuser.so"),
    ],
)
def test_the_old_place_is_present_but_unreachable_and_named(layout, include, skipper, pam_service, pam_link):
    """Where the old installer put the account block (after the account stack's include)."""
    service, names = materialise(*LAYOUTS[layout], pam_service, pam_link)
    path = PAM_DIR / service
    assert install(service).returncode == cli.EXIT_OK
    move_account_block_after(path, names[include])
    status = pam_cli("status", "--pam-file", str(path))
    assert status.returncode == cli.EXIT_UNREACHABLE, status.stdout + status.stderr
    assert "present but unreachable" in status.stdout and repr(skipper) in status.stdout
    assert f"the account line at {path}:" in status.stdout and f"{PAM_DIR / names[include]}:" in status.stdout
    checks = {c.name: c for c in doctor.stanza_checks(str(path))}
    assert checks["stanza"].status == doctor.FAIL
    assert "present but unreachable" in checks["stanza"].message and repr(skipper) in checks["stanza"].message
    # install puts it back first, and the file is proven again
    assert install(service).returncode == cli.EXIT_OK
    assert pam_cli("status", "--pam-file", str(path)).returncode == cli.EXIT_OK


def test_a_hand_edited_sufficient_before_the_session_line_is_named(pam_service, pam_link):
    service, _ = materialise(*LAYOUTS["session-sufficient"], pam_service, pam_link)
    path = PAM_DIR / service
    assert install(service).returncode == cli.EXIT_OK
    text = path.read_text()
    text = text.replace("session    sufficient   pam_permit.so\n", "").replace(
        "# BEGIN pam_teleport_audit session",
        "session    sufficient   pam_permit.so\n# BEGIN pam_teleport_audit session",
    )
    path.write_text(text)
    line = text.splitlines().index("session    sufficient   pam_permit.so") + 1
    status = pam_cli("status", "--pam-file", str(path), "--json")
    assert status.returncode == cli.EXIT_UNREACHABLE
    assert f"{path}:{line} 'session    sufficient   pam_permit.so' (sufficient ends the session stack there)" in (
        status.stdout
    )
    doc = subprocess.run(
        [sys.executable, "-m", "pam_teleport_audit", "doctor", "--pam-file", str(path), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert doc.returncode == 1 and f"{path}:{line} 'session    sufficient   pam_permit.so'" in doc.stdout


def test_include_that_ends_the_session_stack_is_refused_with_the_file_unchanged(pam_service, pam_link):
    service, _ = materialise("hard/include-sshd", "hard", pam_service, pam_link)
    before = (PAM_DIR / service).read_bytes()
    done = install(service)
    assert done.returncode == cli.EXIT_REFUSED
    assert "'session    sufficient   pam_permit.so' (sufficient ends the session stack there)" in done.stderr
    assert (PAM_DIR / service).read_bytes() == before


REFUSE = "session    requisite    pam_exec.so quiet /bin/false\n"


def after_loginuid(files: list[Path]) -> None:
    """A requisite that fails, right after the session stack's pam_loginuid, in whichever file holds it."""
    for path in files:
        lines = path.read_text().splitlines(keepends=True)
        at = next((k for k, x in enumerate(lines) if x.split()[:1] == ["session"] and "pam_loginuid.so" in x), None)
        if at is not None:
            lines.insert(at + 1, REFUSE)
            path.write_text("".join(lines))
            return
    raise AssertionError("no pam_loginuid")


def ours(records: list[AuditRecord], tp_user: str) -> list[tuple[str, str, str]]:
    return [(r.type, r["op"], r["res"]) for r in records if r.get("teleportUser") == tp_user]


def nologin(files: list[Path], tmp: Path) -> bool:
    """Every account line's pam_nologin reads a nologin file of the test's (file=), which exists: as an
    /etc/nologin would, without shutting the host's own logins out. A layout without one is unchanged.
    True when one was found: the account stack must then refuse the login."""
    flag = tmp / "nologin"
    flag.write_text("no logins (test)\n")
    found = False
    for path in files:
        lines = path.read_text().splitlines(keepends=True)
        for k, x in enumerate(lines):
            if x.split()[:1] in (["account"], ["-account"]) and "pam_nologin.so" in x:
                lines[k] = x.replace("pam_nologin.so", f"pam_nologin.so file={flag}", 1)
                found = True
        path.write_text("".join(lines))
    return found


def expire(login: str, files: list[Path], tmp: Path) -> bool:
    subprocess.run(["chage", "-E", "0", login], check=True)
    return False


def requisite_after_loginuid(login: str, files: list[Path], tmp: Path) -> bool:
    after_loginuid(files)
    return False


def required_at_the_end(login: str, files: list[Path], tmp: Path) -> bool:
    files[0].write_text(files[0].read_text() + "session required pam_exec.so quiet /bin/false\n")
    return False


# What each refusal is added to the installed layout as: (refuses in every layout?, how). How returns True
# when the layout's account stack must then refuse the login.
REFUSALS: dict[str, tuple[bool, Callable[[str, list[Path], Path], bool]]] = {
    "expired account": (False, expire),
    "requisite right after pam_loginuid": (True, requisite_after_loginuid),
    "required at the end of the service file": (False, required_at_the_end),
    "nologin file (pam_nologin in the account stack)": (False, lambda login, files, tmp: nologin(files, tmp)),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_refusals_are_recorded_as_libpam_and_the_login_say(
    layout, refusal, driver, pam_service, pam_link, linux_user, tmp_path
):
    """Each installed layout with a refusal added (in its own files, through its includes, substacks and
    jumps): our records agree with libpam's of the same phase and with what happened to the login, and
    search lists the login as refused exactly when it was (docs/records.md)."""
    service, names = materialise(*LAYOUTS[layout], pam_service, pam_link)
    assert install(service).returncode == cli.EXIT_OK
    login = linux_user()
    always, make = REFUSALS[refusal]
    refuses_account = make(login, [PAM_DIR / service, *(PAM_DIR / n for n in names.values())], tmp_path)
    tp_user = unique(f"{layout[:6]}-")
    session = run_driver(driver, service, login, user=tp_user, shell=False)
    assert not refuses_account or session.steps.get("acct_mgmt"), session.output
    expect = 3 if session.returncode == 0 else 1
    records = wait_for_records(session.started, lambda rs: len(ours(rs, tp_user)) >= expect, "-p", str(session.pid))
    libpam = {r["op"]: r["res"] for r in records if r.get("op", "").startswith("PAM:")}
    (found,) = find_sessions(records_since(session.started, "-p", str(session.pid)), tp_user)
    # doctor warns exactly where the refusal leaves only teleport:accounting success of ours
    (check,) = [c for c in doctor.stanza_checks(str(PAM_DIR / service)) if c.name == "session refusals"]
    lost = bool(session.steps.get("open_session")) and ours(records, tp_user) == [
        ("USER_ACCT", "teleport:accounting", "success")
    ]
    assert check.status == (doctor.WARN if lost else doctor.PASS), (check, ours(records, tp_user))
    assert lost == always, "a requisite right after pam_loginuid loses the failed record in every layout"
    if session.steps.get("acct_mgmt"):
        assert libpam["PAM:accounting"] == "failed" and "PAM:session_open" not in libpam
        assert ours(records, tp_user) == [("USER_LOGIN", "teleport:login", "failed")]
        assert found.refused == "refused by the account stack"
    elif session.steps.get("open_session"):
        assert libpam == {"PAM:accounting": "success", "PAM:session_open": "failed"}, libpam
        assert ours(records, tp_user) in (
            [("USER_ACCT", "teleport:accounting", "success"), ("USER_START", "teleport:session_open", "failed")],
            [("USER_ACCT", "teleport:accounting", "success")],  # refused before our line (after pam_loginuid)
        )
        assert (found.refused, found.result) == ("refused by a session module", "failed")
    else:
        assert session.returncode == 0 and not always, session.output
        assert libpam == dict.fromkeys(("PAM:accounting", "PAM:session_open", "PAM:session_close"), "success")
        assert ours(records, tp_user) == [
            ("USER_ACCT", "teleport:accounting", "success"),
            ("USER_START", "teleport:session_open", "success"),
            ("USER_END", "teleport:session_close", "success"),
        ]
        assert found.refused is None and found.end_result == "success"
