"""doctor's `session refusals` check on real layouts: a session line that can refuse the session after
pam_loginuid and before our session line (our records then keep no res=failed: docs/records.md).

Each layout (tests/fixtures/pam/README.md) is copied to a folder, includes resolved from there as
libpam resolves them beside the service, the stanza installed, then changed as each case says.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pam_teleport_audit.admin import cli, doctor, pamedit, pamstack
from pam_teleport_audit.admin.stanza import Stanza

from .pam_strategies import ENTRY

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "pam"
# layout: (its sshd-like file, the folder its included files come from); tests/system/test_layouts.py
# logs in through each
LAYOUTS = {
    "debian-12": ("debian-12/sshd", "debian-12"),
    "debian-12-sss": ("debian-12-sss/sshd", "debian-12-sss"),
    "debian-13": ("debian-13/sshd", "debian-12"),
    "ubuntu-24.04": ("ubuntu-24.04/sshd", "ubuntu-24.04"),
    "ubuntu-26.04": ("ubuntu-26.04/sshd", "ubuntu-24.04"),
    "rhel-8-sssd": ("rhel-8-sssd/sshd", "rhel-8-sssd"),
    "rhel-8-minimal": ("rhel-8-minimal/sshd", "rhel-8-minimal"),
    "rhel-8-winbind": ("rhel-8-winbind/sshd", "rhel-8-winbind"),
    "rhel-9-sssd": ("rhel-9-sssd/sshd", "rhel-9-sssd"),
    "rhel-9-minimal": ("rhel-9-minimal/sshd", "rhel-9-minimal"),
    "rhel-9-winbind": ("rhel-9-winbind/sshd", "rhel-9-winbind"),
    "rhel-9-tty-audit": ("rhel-9-tty-audit/sshd", "rhel-9-tty-audit"),
    "substack": ("hard/substack-sshd", "hard"),
    "session-sufficient": ("hard/session-sufficient", "hard"),
    "existing-tty-audit": ("hard/existing-tty-audit", "debian-12"),
    # pam_loginuid only in system-login, through sshd's `session include system-remote-login`
    "arch": ("arch/sshd", "arch"),
    # authselect's `local` profile (RHEL 10, Fedora 40+): password-auth and postlogin are symbolic links
    # into authselect/, as /etc/pam.d's are into /etc/authselect
    "authselect-local": ("authselect-local/sshd", "authselect-local"),
    # openSUSE: `account substack common-account` and `session substack common-session`; with pam-config,
    # common-* and postlogin-* are symbolic links to its common-*-pc and postlogin-*-pc
    "opensuse-tumbleweed": ("opensuse-tumbleweed/sshd", "opensuse-tumbleweed"),
    # the same sshd with the pam package's own files (/usr/lib/pam.d, no pam-config)
    "opensuse-tumbleweed-vendor": ("opensuse-tumbleweed-vendor/sshd", "opensuse-tumbleweed-vendor"),
    # SUSE's sshd with `include common-*` (no substack, no postlogin-*), through pam-config's links
    "sle-15": ("sle-15/sshd", "opensuse-tumbleweed"),
    # `pam-config -a --sss`: common-account-pc gets `account sufficient pam_localuser.so`, which ends only
    # the substack in Tumbleweed's sshd and the whole account stack in sshd-sle's `include`
    "opensuse-tumbleweed-sss": ("opensuse-tumbleweed-sss/sshd", "opensuse-tumbleweed-sss"),
    "sle-15-sss": ("sle-15/sshd", "opensuse-tumbleweed-sss"),
}
REFUSE = "session    requisite    pam_exec.so quiet /bin/false\n"
LOGINUID = "pam_loginuid.so"
# Debian's sshd with a pam_tty_audit after `@include common-session`: our line goes after it, so
# common-session's `requisite pam_deny.so` (always jumped over by `[default=1] pam_permit.so`) is between.
TTY_LATE = "@include common-session\nsession    required     pam_tty_audit.so enable=*\n"


def layout(tmp_path: Path, name: str) -> tuple[Path, list[Path]]:
    """The layout's files in tmp_path, symbolic links kept as links (libpam opens an included name through
    them): (the service, [the service, every regular file beside it or below, each once])."""
    sshd, folder = LAYOUTS[name]
    shutil.copytree(FIXTURES / folder, tmp_path, symlinks=True, dirs_exist_ok=True)
    service = tmp_path / "svc"
    shutil.copy(FIXTURES / sshd, service)
    files = sorted(p for p in tmp_path.rglob("*") if p != service and p.is_file() and not p.is_symlink())
    return service, [service, *files]


def install(service: Path) -> None:
    resolve = pamstack.folder_resolver(str(service))
    service.write_bytes(pamedit.install(service.read_bytes(), Stanza(ENTRY), resolve, str(service)).data)


def insert_after(path: Path, anchor: str, text: str) -> int:
    """Insert text after the first session line naming anchor; the number of the first inserted line."""
    lines = path.read_text().splitlines(keepends=True)
    at = next(k for k, x in enumerate(lines) if x.split()[:1] in (["session"], ["-session"]) and anchor in x)
    lines.insert(at + 1, text)
    path.write_text("".join(lines))
    return at + 2


def after_loginuid(files: list[Path], text: str = REFUSE) -> str:
    """text right after pam_loginuid, in whichever file holds it: FILE:LINE of the inserted line."""
    for path in files:
        if any(x.split()[:1] == ["session"] and LOGINUID in x for x in path.read_text().splitlines()):
            return f"{path}:{insert_after(path, LOGINUID, text)}"
    raise AssertionError("no pam_loginuid")


def refusal_check(service: Path) -> doctor.Check:
    (check,) = [c for c in doctor.stanza_checks(str(service)) if c.name == "session refusals"]
    return check


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_stock_layouts_pass(name: str, tmp_path: Path) -> None:
    service, _ = layout(tmp_path, name)
    install(service)
    check = refusal_check(service)
    assert check.status == doctor.PASS, check.message


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_requisite_right_after_pam_loginuid_warns_in_every_layout(name: str, tmp_path: Path) -> None:
    """In its own file (Arch: inside system-login, two includes below the service), after the install."""
    service, files = layout(tmp_path, name)
    install(service)
    where = after_loginuid(files)
    check = refusal_check(service)
    assert check.status == doctor.WARN
    assert check.message.startswith(f"{service}: {where} {REFUSE.strip()!r}: can refuse the session")
    assert "`teleport:accounting res=success`, no res=failed" in check.message
    assert "make it `required`" in check.fix and "put it after the module's session block" in check.fix
    # the fix: `required` refuses too, but libpam runs on to our line, which records it
    text = Path(where.rsplit(":", 1)[0]).read_text().replace(REFUSE, REFUSE.replace("requisite", "required "))
    Path(where.rsplit(":", 1)[0]).write_text(text)
    assert refusal_check(service).status == doctor.PASS


@pytest.mark.parametrize("name", ["debian-12", "rhel-9-sssd", "arch"])
def test_a_requisite_after_our_session_line_is_not_named(name: str, tmp_path: Path) -> None:
    service, _ = layout(tmp_path, name)
    install(service)
    service.write_text(service.read_text() + REFUSE)
    assert refusal_check(service).status == doctor.PASS


@pytest.mark.parametrize(
    ("common_session", "warns"),
    [
        (None, False),  # stock: `[default=1] pam_permit.so` jumps over pam_deny whatever it returns
        (("[default=1]\t\t\tpam_permit.so", "[success=1 default=ignore] pam_permit.so"), True),
        (("[default=1]\t\t\tpam_permit.so", "[success=1 default=ignore] pam_succeed_if.so user = root"), True),
        (("requisite\t\t\tpam_deny.so", "required\t\t\tpam_deny.so"), False),
    ],
    ids=["stock", "jump-on-success-only", "jump-if-root", "deny-required"],
)
def test_debian_common_session_between_is_followed_through_its_jump(
    common_session: tuple[str, str] | None, warns: bool, tmp_path: Path
) -> None:
    """pam_tty_audit after `@include common-session` puts common-session between pam_loginuid and ours."""
    service, _ = layout(tmp_path, "debian-12")
    service.write_text(service.read_text().replace("@include common-session\n", TTY_LATE))
    if common_session is not None:
        common = tmp_path / "common-session"
        assert common_session[0] in common.read_text()
        common.write_text(common.read_text().replace(*common_session))
    install(service)
    state = pamedit.status(service.read_bytes(), pamstack.folder_resolver(str(service)), str(service))
    assert state.installed and state.tty_audit == "existing", state.problems
    check = refusal_check(service)
    assert check.status == (doctor.WARN if warns else doctor.PASS), check.message
    if warns:
        assert f"{tmp_path / 'common-session'}:17 'session\\trequisite\\t\\t\\tpam_deny.so'" in check.message


def test_status_notes_it_and_still_says_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service, files = layout(tmp_path, "arch")
    install(service)
    where = after_loginuid(files)
    code = cli.main(["status", "--pam-file", str(service), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == cli.EXIT_OK and out["installed"] is True
    assert out["refused_before"] == [f"{where} {REFUSE.strip()!r}"]
    assert [n for n in out["notes"] if "can refuse the session after pam_loginuid" in n] == [
        f"warning: {where} {REFUSE.strip()!r} can refuse the session after pam_loginuid and before the module's "
        "session line: such a refusal leaves only teleport:accounting res=success of ours (see `pam-teleport-audit "
        "doctor`)"
    ]


def test_doctor_warns_beside_a_failing_stanza_check(tmp_path: Path) -> None:
    """A pasted (unmanaged) stanza: the stanza check says so, and the refusal is still named."""
    service, files = layout(tmp_path, "debian-12")
    install(service)
    text = "".join(x for x in service.read_text().splitlines(keepends=True) if not x.startswith("# "))
    service.write_text(text)
    where = after_loginuid(files)
    checks = {c.name: c for c in doctor.stanza_checks(str(service))}
    assert checks["stanza"].status in (doctor.WARN, doctor.FAIL)
    assert checks["session refusals"].status == doctor.WARN and where in checks["session refusals"].message
