"""The install / uninstall / status commands: exit statuses, --check, --diff, --json, file safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pam_teleport_audit import cli
from pam_teleport_audit.atomicwrite import BACKUP_SUFFIX

from .pam_strategies import ENTRY

ROOT = Path(__file__).resolve().parents[2]
DEBIAN = (ROOT / "tests" / "fixtures" / "pam" / "debian-12" / "sshd").read_bytes()
EXAMPLE = (ROOT / "pam.d" / "sshd.example").read_bytes()


@pytest.fixture
def pam(tmp_path: Path) -> Path:
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
    assert code == cli.EXIT_REFUSED and "symbolic link" in out["reason"]
    assert link.is_symlink() and pam.read_bytes() == DEBIAN


def test_hard_link_and_non_regular_are_refused(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.link(pam, pam.parent / "other-name")
    code, out = run(capsys, "install", "--pam-file", str(pam))
    assert code == cli.EXIT_REFUSED and "hard links" in out["reason"]
    code, out = run(capsys, "install", "--pam-file", str(pam.parent))
    assert code == cli.EXIT_REFUSED and "not a regular file" in out["reason"]
    code, out = run(capsys, "install", "--pam-file", str(pam.parent / "missing"))
    assert code == cli.EXIT_REFUSED and "does not exist" in out["reason"]


def test_backup_keeps_the_replaced_bytes(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "install", "--pam-file", str(pam), "--backup", "--entry", ENTRY)
    assert code == cli.EXIT_OK
    backup = Path(out["backup"])
    assert backup == Path(str(pam) + BACKUP_SUFFIX)
    assert backup.read_bytes() == DEBIAN and backup.stat().st_mode & 0o777 == 0o640
    assert not [p for p in pam.parent.iterdir() if p.name.startswith(".pam-teleport-audit.")]


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
    assert caught.value.code == 2
    assert pam.read_bytes() == DEBIAN
