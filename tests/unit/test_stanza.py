"""The stanza lines, the `stanza` command and the files shipped in pam.d/."""

from __future__ import annotations

from pathlib import Path

import pytest

from pam_teleport_audit.cli import main
from pam_teleport_audit.stanza import Stanza, entry_script

ROOT = Path(__file__).resolve().parents[2]
INSTALLED_ENTRY = "/usr/lib/python3/dist-packages/pam_teleport_audit/pam_entry.py"


def test_entry_script_is_the_shim_beside_the_package() -> None:
    assert entry_script() == str(ROOT / "pam_teleport_audit" / "pam_entry.py")
    assert Path(entry_script()).is_file()


def test_default_stanza() -> None:
    stanza = Stanza("/e.py")
    assert stanza.account_lines() == ["account    optional   pam_python.so /e.py"]
    assert stanza.session_lines() == [
        "session    optional   pam_tty_audit.so enable=*",
        "session    optional   pam_python.so /e.py",
    ]


def test_fail_closed_uses_required_and_the_option() -> None:
    stanza = Stanza("/e.py", tty_audit="root,admin*", fail_closed=True, options=("rhost_env=ADDR",))
    assert stanza.session_lines() == [
        "session    required   pam_tty_audit.so enable=root,admin*",
        "session    required   pam_python.so /e.py fail_closed rhost_env=ADDR",
    ]


def test_blocks_are_marked_without_timestamps() -> None:
    block = Stanza("/e.py", tty_audit=None).block("session")
    assert block[0].startswith("# BEGIN pam_teleport_audit session")
    assert block[1:] == ["session    optional   pam_python.so /e.py", "# END pam_teleport_audit session"]
    assert Stanza("/e.py").block("account") == Stanza("/e.py").block("account")


def test_shipped_stanza_file_is_what_the_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stanza", "--entry", INSTALLED_ENTRY]) == 0
    assert capsys.readouterr().out == (ROOT / "pam.d" / "pam_teleport_audit.stanza").read_text()


def test_stanza_command_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stanza", "--tty-audit", "off", "--fail-closed", "--option", "debug"]) == 0
    out = capsys.readouterr().out
    assert "pam_tty_audit" not in out
    assert f"session    required   pam_python.so {entry_script()} fail_closed debug" in out
