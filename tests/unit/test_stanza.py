"""The stanza lines, the `stanza` command and the files shipped in pam.d/."""

from __future__ import annotations

from pathlib import Path

import pytest

from pam_teleport_audit.admin.cli import main
from pam_teleport_audit.admin.stanza import Stanza, entry_script, token_problem

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
    # Whole lines: a date or a version in a marker would make every run rewrite the file.
    assert Stanza("/e.py", tty_audit=None).block("session") == [
        "# BEGIN pam_teleport_audit session (managed by pam-teleport-audit; do not edit)",
        "session    optional   pam_python.so /e.py",
        "# END pam_teleport_audit session",
    ]


def test_shipped_stanza_file_is_what_the_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stanza", "--entry", INSTALLED_ENTRY]) == 0
    assert capsys.readouterr().out == (ROOT / "pam.d" / "pam_teleport_audit.stanza").read_text()


def test_stanza_command_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stanza", "--tty-audit", "off", "--fail-closed", "--option", "debug"]) == 0
    out = capsys.readouterr().out
    assert "pam_tty_audit" not in out
    assert f"session    required   pam_python.so {entry_script()} fail_closed debug" in out


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "is empty"),
        ("a b", "blank"),
        ("a\tb", "blank"),
        ("a\nb", "control character"),
        ("caf\u00e9", "non-ASCII"),
        ("x#y", "'#'"),
        ("[x", "'['"),
        ("x]", "']'"),
        ("x\\", "'\\\\'"),
    ],
)
def test_token_problems(value: str, why: str) -> None:
    problem = token_problem(value)
    assert problem is not None and why in problem


def test_clean_tokens_and_a_clean_stanza() -> None:
    assert token_problem("rhost_env=TELEPORT_CLIENT_ADDR") is None
    assert Stanza(INSTALLED_ENTRY, options=("debug", "timeout_ms=200")).problems() == []


def test_stanza_problems_name_the_flag() -> None:
    assert Stanza("relative/pam_teleport_audit/pam_entry.py").problems() == [
        "--entry 'relative/pam_teleport_audit/pam_entry.py' is not an absolute path ending in "
        "pam_teleport_audit/pam_entry.py"
    ]
    assert Stanza(INSTALLED_ENTRY, options=("nosuch",)).problems() == [
        "--option 'nosuch': unknown option 'nosuch'"  # refused, not ignored as a login would
    ]
    assert Stanza(INSTALLED_ENTRY, options=("timeout_ms=0",)).problems() == [
        "--option 'timeout_ms=0': timeout_ms='0' is not a number of milliseconds in 1..60000"
    ]
    assert Stanza(INSTALLED_ENTRY, tty_audit="a b").problems()[0].startswith("--tty-audit 'a b' holds a blank")


def test_the_stanza_says_what_the_keystroke_default_does() -> None:
    text = Stanza(INSTALLED_ENTRY).render()
    assert "keystrokes of EVERY login" in text and "--tty-audit off" in text
    assert "keystrokes" not in Stanza(INSTALLED_ENTRY, tty_audit=None).render()
