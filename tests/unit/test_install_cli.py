"""The install / uninstall / status commands: exit statuses, --check, --diff, --json, file safety."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import struct
from pathlib import Path

import pytest

from pam_teleport_audit.admin import atomicwrite, cli, doctor

from .pam_strategies import ENTRY

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "pam"
DEBIAN = (FIXTURES / "debian-12" / "sshd").read_bytes()
EXAMPLE = (ROOT / "pam.d" / "sshd.example").read_bytes()


@pytest.fixture
def pam(tmp_path: Path) -> Path:
    """Debian 12's sshd in a folder with the common-* files it includes."""
    for common in (FIXTURES / "debian-12").glob("common-*"):
        shutil.copy(common, tmp_path / common.name)
    path = tmp_path / "sshd"
    path.write_bytes(DEBIAN)
    path.chmod(0o640)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = cli.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_install_check_diff_then_install_then_noop(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "install", "--pam-file", str(pam), "--entry", ENTRY, "--check", "--diff")
    assert code == cli.EXIT_WOULD_CHANGE == out["exit"]
    assert out["changed"] is False and out["would_change"] is True
    assert "+# BEGIN pam_teleport_audit account" in out["diff"]
    assert pam.read_bytes() == DEBIAN

    code, out = run(capsys, "install", "--pam-file", str(pam), "--entry", ENTRY)
    assert (code, out["changed"], out["path"]) == (cli.EXIT_OK, True, str(pam))
    assert pam.read_bytes() == EXAMPLE
    assert pam.stat().st_mode & 0o777 == 0o640

    inode = pam.stat().st_ino
    code, out = run(capsys, "install", "--pam-file", str(pam), "--entry", ENTRY, "--check")
    assert (code, out["changed"], out["would_change"]) == (cli.EXIT_OK, False, False)
    code, out = run(capsys, "install", "--pam-file", str(pam), "--entry", ENTRY)
    assert (code, out["changed"]) == (cli.EXIT_OK, False)
    assert pam.stat().st_ino == inode  # nothing written when nothing changes


def test_status_exit_statuses(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert (code, out["installed"], out["account"]) == (cli.EXIT_NOT_INSTALLED, False, False)
    cli.main(["install", "--pam-file", str(pam), "--entry", ENTRY])
    capsys.readouterr()
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert (code, out["installed"], out["tty_audit"]) == (cli.EXIT_OK, True, "ours")
    pam.write_bytes(pam.read_bytes().replace(b"# END pam_teleport_audit session\n", b""))
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert code == cli.EXIT_BROKEN and out["problems"]


def test_uninstall_gives_the_original_back(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["install", "--pam-file", str(pam), "--entry", ENTRY])
    capsys.readouterr()
    code, out = run(capsys, "uninstall", "--pam-file", str(pam), "--check")
    assert code == cli.EXIT_WOULD_CHANGE
    code, out = run(capsys, "uninstall", "--pam-file", str(pam))
    assert (code, out["changed"]) == (cli.EXIT_OK, True)
    assert pam.read_bytes() == DEBIAN


def test_refusal_is_nonzero_with_reason_and_leaves_the_file(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = DEBIAN.replace(b"session    required     pam_loginuid.so\n", b"")
    pam.write_bytes(broken)
    code, out = run(capsys, "install", "--pam-file", str(pam))
    assert code == cli.EXIT_REFUSED == out["exit"]
    assert out["refused"] is True and "no pam_loginuid" in out["reason"]
    assert pam.read_bytes() == broken
    # Text mode says it on stderr.
    assert cli.main(["install", "--pam-file", str(pam)]) == cli.EXIT_REFUSED
    assert "refused" in capsys.readouterr().err


def test_symlink_is_refused_and_left(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = pam.parent / "sshd-link"
    link.symlink_to(pam)
    code, out = run(capsys, "install", "--pam-file", str(link))
    assert code == cli.EXIT_REFUSED and out["reason"].endswith("pass the real file with --pam-file")
    assert link.is_symlink() and pam.read_bytes() == DEBIAN


def test_a_symlink_out_of_its_folder_is_refused_with_the_fix_that_works(
    pam: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/etc/pam.d/sshd -> /srv/pam/sshd: libpam resolves its includes in /etc/pam.d, so passing the
    target (whose folder lacks them) cannot work; the fix is a copy in place of the link."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = pam.parent / "sshd-link"
    link.symlink_to(elsewhere / "sshd")
    (elsewhere / "sshd").write_bytes(DEBIAN)
    code, out = run(capsys, "install", "--pam-file", str(link))
    assert code == cli.EXIT_REFUSED
    assert out["reason"].endswith(f"`cp --remove-destination {elsewhere / 'sshd'} {link}`), then run again")
    assert link.is_symlink() and (elsewhere / "sshd").read_bytes() == DEBIAN


def test_hard_link_and_non_regular_are_refused(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.link(pam, pam.parent / "other-name")
    code, out = run(capsys, "install", "--pam-file", str(pam))
    assert code == cli.EXIT_REFUSED and "hard links" in out["reason"]
    code, out = run(capsys, "install", "--pam-file", str(pam.parent))
    assert code == cli.EXIT_REFUSED and "not a regular file" in out["reason"]
    # a missing file is an I/O error for install and status (the table), nothing to do for uninstall
    for command, expected in (("install", cli.EXIT_IO), ("status", cli.EXIT_IO), ("uninstall", cli.EXIT_OK)):
        code, out = run(capsys, command, "--pam-file", str(pam.parent / "missing"))
        assert (code, out["exit"], out["would_change"], out["changed"]) == (expected, expected, False, False), command
    assert out["summary"].endswith("nothing to do (it does not exist)")
    assert not (pam.parent / "missing").exists()


def test_backup_keeps_the_replaced_bytes_outside_the_pam_folder(
    pam: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path_factory.mktemp("backups") / "pam-teleport-audit"
    before = sorted(p.name for p in pam.parent.iterdir())
    code, out = run(capsys, "install", "--pam-file", str(pam), "--backup-dir", str(folder), "--entry", ENTRY)
    assert code == cli.EXIT_OK
    backup = Path(out["backup"])
    assert backup.parent == folder and backup.name.startswith("sshd.") and backup.name.endswith("Z")
    assert backup.read_bytes() == DEBIAN and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # Nothing new beside the PAM file: libpam would read it as a service, prerm would find our stanza in it.
    assert sorted(p.name for p in pam.parent.iterdir()) == before


def test_backup_makes_missing_parents_0700(
    pam: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """No /var/backups on RHEL, SUSE, Alpine: the folder and its missing parents are made, each 0700."""
    top = tmp_path_factory.mktemp("host")
    top.chmod(0o755)
    folder = top / "var" / "backups" / "pam-teleport-audit"
    code, out = run(capsys, "install", "--pam-file", str(pam), "--backup-dir", str(folder), "--entry", ENTRY)
    assert code == cli.EXIT_OK, out
    assert Path(out["backup"]).read_bytes() == DEBIAN
    for made in (top / "var", top / "var" / "backups", folder):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    assert stat.S_IMODE(top.stat().st_mode) == 0o755  # what existed keeps its mode


def test_backup_default_folder_is_outside_etc_pam_d() -> None:
    from pam_teleport_audit.admin.atomicwrite import DEFAULT_BACKUP_DIR

    assert DEFAULT_BACKUP_DIR == "/var/backups/pam-teleport-audit"
    args = cli.build_parser().parse_args(["install", "--backup"])
    assert args.backup and args.backup_dir is None


def test_status_names_the_line_that_skips_ours(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hand edit puts `sufficient` before our account line: present but unreachable, exit 8."""
    cli.main(["install", "--pam-file", str(pam), "--entry", ENTRY])
    capsys.readouterr()
    text = pam.read_text().replace(
        "# BEGIN pam_teleport_audit account", "account sufficient pam_localuser.so\n# BEGIN pam_teleport_audit account"
    )
    pam.write_text(text)
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert code == cli.EXIT_UNREACHABLE == 8
    line = text.splitlines().index("account sufficient pam_localuser.so") + 1
    assert out["skipped_by"] == [
        f"the account line at {pam}:{line + 2} can be skipped: {pam}:{line} 'account sufficient pam_localuser.so' "
        "(sufficient ends the account stack there)"
    ]
    assert cli.main(["status", "--pam-file", str(pam)]) == 8
    assert f"present but unreachable: the account line at {pam}:{line + 2}" in capsys.readouterr().out
    checks = [c for c in doctor.stanza_checks(str(pam)) if c.name == "stanza"]
    assert len(checks) == 1 and checks[0].status == doctor.FAIL
    assert f"{pam}:{line} 'account sufficient pam_localuser.so'" in checks[0].message
    assert "present but unreachable" in checks[0].message and "install" in checks[0].fix
    # install moves the block above it again
    assert cli.main(["install", "--pam-file", str(pam), "--entry", ENTRY]) == cli.EXIT_OK
    assert cli.main(["status", "--pam-file", str(pam)]) == cli.EXIT_OK


def test_an_unreadable_include_before_our_line_is_refused(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (pam.parent / "common-auth").unlink()
    code, out = run(capsys, "install", "--pam-file", str(pam), "--entry", ENTRY)
    assert code == cli.EXIT_REFUSED
    assert (
        f"the new session line cannot be proven to run: {pam}:4 '@include common-auth' includes 'common-auth', "
        "which cannot be read" in out["reason"]
    )
    assert pam.read_bytes() == DEBIAN


HOSTILE = [
    ("--option", "debug\nauth sufficient pam_permit.so"),
    ("--option", "two words"),
    ("--option", "x#y"),
    ("--option", "[x]"),
    ("--option", "a]b"),
    ("--option", "a\\"),
    ("--option", ""),
    ("--option", "tab\there"),
    ("--option", "nonsense"),
    ("--option", "timeout_ms=0"),
    ("--option", "fail_closed"),
    ("--option", "caf\u00e9"),
    ("--entry", "relative/pam_teleport_audit/pam_entry.py"),
    ("--entry", "/opt/x/other.py"),
    ("--entry", "/opt/my dir/pam_teleport_audit/pam_entry.py"),
    ("--entry", "/opt/x\n/pam_teleport_audit/pam_entry.py"),
    ("--entry", ""),
]


@pytest.mark.parametrize(("flag", "value"), HOSTILE)
def test_hostile_option_or_entry_is_refused_with_the_file_unchanged(
    pam: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    argv = ["install", "--pam-file", str(pam), "--entry", ENTRY, flag, value]
    code, out = run(capsys, *argv)
    assert code == cli.EXIT_REFUSED and out["refused"] is True and out["reason"]
    assert pam.read_bytes() == DEBIAN
    # the same on a file that already has our blocks
    cli.main(["install", "--pam-file", str(pam), "--entry", ENTRY])
    installed = pam.read_bytes()
    capsys.readouterr()
    assert cli.main(argv) == cli.EXIT_REFUSED
    assert "refused" in capsys.readouterr().err
    assert pam.read_bytes() == installed
    # stanza prints nothing for it
    assert cli.main(["stanza", "--entry", ENTRY, flag, value]) == cli.EXIT_REFUSED
    assert capsys.readouterr().out == ""


def test_good_options_are_written_as_single_tokens(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    opts = ["rhost_env=TELEPORT_CLIENT_ADDR", "teleport_exe=/usr/local/bin/teleport", "debug", "timeout_ms=500"]
    argv = ["install", "--pam-file", str(pam), "--entry", ENTRY]
    for opt in opts:
        argv += ["--option", opt]
    assert cli.main(argv) == cli.EXIT_OK
    assert f"account    optional   pam_python.so {ENTRY} {' '.join(opts)}\n" in pam.read_text()


def test_fail_closed_and_tty_audit_flags(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(capsys, "install", "--pam-file", str(pam), "--fail-closed", "--tty-audit", "off", "--entry", ENTRY)
    assert code == cli.EXIT_OK
    text = pam.read_text()
    assert "pam_tty_audit" not in text
    assert f"session    required   pam_python.so {ENTRY} fail_closed" in text


@pytest.mark.parametrize("bad", ["a b", "x#y", "[x]", ""])
def test_tty_patterns_that_would_break_the_line_are_usage_errors(pam: Path, bad: str) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["install", "--pam-file", str(pam), "--tty-audit", bad])
    assert caught.value.code == cli.EXIT_USAGE
    assert pam.read_bytes() == DEBIAN


def test_a_crlf_file_is_refused_saying_it_is_crlf(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RHEL 9's sshd saved with CR LF (no blank line, so no line is invalid): its `pam_loginuid.so\\r` is
    not pam_loginuid for libpam. The old message said only "no pam_loginuid in the session stack"."""
    folder = pam.parent
    for name in ("password-auth", "postlogin"):
        shutil.copy(FIXTURES / "rhel-9-sssd" / name, folder / name)
    crlf = (FIXTURES / "rhel-9" / "sshd").read_bytes().replace(b"\n", b"\r\n")
    pam.write_bytes(crlf)
    code, out = run(capsys, "install", "--pam-file", str(pam), "--entry", ENTRY)
    assert code == cli.EXIT_REFUSED
    assert "no pam_loginuid" in out["reason"] and "end in CR LF" in out["reason"] and "dos2unix" in out["reason"]
    assert pam.read_bytes() == crlf


def test_no_keystrokes_note_when_nothing_is_written(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The edit was worked out (and would add pam_tty_audit enable=*), then the write was refused: the old
    install still printed "note: pam_tty_audit enable=* records the keystrokes…"."""
    os.link(pam, pam.parent / "other-name")
    code = cli.main(["install", "--pam-file", str(pam), "--entry", ENTRY])
    err = capsys.readouterr().err
    assert code == cli.EXIT_REFUSED and "hard links" in err
    assert "note:" not in err and "records the keystrokes" not in err
    code, out = run(capsys, "install", "--pam-file", str(pam), "--entry", ENTRY)
    assert code == cli.EXIT_REFUSED and out["notes"] == []


def set_inode_flags(path: Path, flags: int) -> None:
    """What chattr does (linux/fs.h FS_IOC_SETFLAGS), without needing e2fsprogs in a minimal root."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, 0x40086602, struct.pack("l", flags))
    finally:
        os.close(fd)


def test_an_immutable_file_is_named_as_such(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """chattr +i: root's rename fails with EPERM. Say the file is immutable and how to clear it, and no note."""
    assert os.geteuid() == 0, "the suite runs as root"
    set_inode_flags(pam, atomicwrite.FS_IMMUTABLE_FL)
    try:
        code = cli.main(["install", "--pam-file", str(pam), "--entry", ENTRY])
        err = capsys.readouterr().err
    finally:
        set_inode_flags(pam, 0)
    assert code == cli.EXIT_IO
    assert f"{pam} is immutable" in err and f"chattr -i {pam}" in err
    assert "note:" not in err
    assert pam.read_bytes() == DEBIAN
    assert not [p for p in pam.parent.iterdir() if p.name.startswith(".pam-teleport-audit.")]


def test_status_and_doctor_name_a_stanza_dpkg_replaced(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """openssh-server's /etc/pam.d/sshd is a conffile: an upgrade with --force-confnew (or "install the
    maintainer's version") puts the package's file in place and keeps ours as sshd.dpkg-old. status says
    not installed (6) and why; doctor fails and says the same; without the .dpkg-old, the plain message."""
    assert cli.main(["install", "--pam-file", str(pam), "--entry", ENTRY]) == cli.EXIT_OK
    old = Path(f"{pam}.dpkg-old")
    os.replace(pam, old)  # what dpkg does: the modified file to .dpkg-old, the new one in place
    pam.write_bytes(DEBIAN + b"# changed by the new version\n")
    capsys.readouterr()

    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert (code, out["installed"], out["dpkg_old"]) == (cli.EXIT_NOT_INSTALLED, False, str(old))
    assert f"{pam}: not installed: a package upgrade replaced {pam}" in out["summary"]
    assert f"the file with the stanza is now {old}" in out["summary"]
    assert f"Fix: run `pam-teleport-audit install --pam-file {pam}`" in out["summary"]
    check = next(doctor.stanza_checks(str(pam)))
    assert check.status == doctor.FAIL and f"the file with the stanza is now {old}" in check.message, check
    assert "with the options of the lines in" in check.fix and f"then remove {old}" in check.fix

    # A .dpkg-old without our lines (an unrelated upgrade), or none at all: no such claim.
    old.write_bytes(DEBIAN)
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert (code, out["summary"], out["dpkg_old"]) == (cli.EXIT_NOT_INSTALLED, f"{pam}: not installed", None)
    old.unlink()
    check = next(doctor.stanza_checks(str(pam)))
    assert check.status == doctor.FAIL and ".dpkg-old" not in check.message + check.fix
    # A .dpkg-old that is a FIFO is never opened (it would block).
    os.mkfifo(old)
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert (code, out["dpkg_old"]) == (cli.EXIT_NOT_INSTALLED, None)
