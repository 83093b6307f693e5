"""The installer against hostile PAM files, judged by an independent model of libpam's reading.

The model below is written from Linux-PAM's libpam/pam_handlers.c (_pam_assemble_line and
the tokenizing in _pam_parse_conf_file), not from pam_teleport_audit.admin.pamfile, so the parser
is not judging itself. Pass: install either refuses and leaves the bytes as they were, or
writes a file whose rules, as libpam reads them, are the old rules plus exactly ours.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pam_teleport_audit.admin.pamedit import Refusal, install
from pam_teleport_audit.admin.pamstack import Resolver, folder_resolver
from pam_teleport_audit.admin.stanza import Stanza

from .conftest import CLI
from .pam_strategies import ENTRY, INCLUDES, noisy_bytes, pam_file

ROOT = Path(__file__).resolve().parents[2]
FUZZ_EXAMPLES = 10_000


def libpam_logical_lines(data: bytes) -> list[bytes]:
    """_pam_assemble_line: '#' ends a line; a trailing backslash joins the next non-blank line."""
    out: list[bytes] = []
    current = b""
    continuing = False
    for physical in data.split(b"\n"):
        stripped = physical.lstrip(b" \n\t")
        if not stripped or stripped.startswith(b"#"):
            continue  # nothing in this line (also inside a continuation)
        if b"#" in physical:
            out.append(current + physical[: physical.index(b"#")])
            current, continuing = b"", False
            continue
        body = physical.rstrip(b" \t\n")
        if body.endswith(b"\\"):
            current += body[:-1] + b" "
            continuing = True
            continue
        out.append(current + physical)
        current, continuing = b"", False
    if continuing:
        out.append(b"<incomplete>" + current)  # libpam: an incomplete read fails the file
    return out


def libpam_tokens(line: bytes) -> tuple[bytes, ...]:
    """Tokens split on space, tab, newline; '[...]' groups (with '\\]' escapes) are one token."""
    tokens: list[bytes] = []
    i = 0
    while i < len(line):
        if line[i : i + 1] in b" \t\n\r"[:3] and line[i : i + 1] != b"":
            i += 1
            continue
        if line[i : i + 1] == b"[":
            j = i + 1
            while j < len(line) and not (line[j : j + 1] == b"]" and line[j - 1 : j] != b"\\"):
                j += 1
            tokens.append(line[i : j + 1])
            i = j + 1
            continue
        j = i
        while j < len(line) and line[j : j + 1] not in (b" ", b"\t", b"\n"):
            j += 1
        tokens.append(line[i:j])
        i = j
    return tuple(t for t in tokens if t)


def libpam_rules(data: bytes) -> list[tuple[bytes, ...]]:
    return [t for t in (libpam_tokens(x) for x in libpam_logical_lines(data)) if t]


def our_rules(stanza: Stanza, ending: bytes) -> list[tuple[bytes, ...]]:
    lines = stanza.account_lines() + stanza.session_lines()
    return [libpam_tokens(x.encode() + ending) for x in lines]


def assert_only_ours_added(old: bytes, new: bytes, stanza: Stanza) -> None:
    """new reads as old plus our rules (our pam_tty_audit only when the file had none)."""

    def norm(rule: tuple[bytes, ...]) -> tuple[bytes, ...]:
        return tuple(t.rstrip(b"\r") for t in rule)

    before, after = libpam_rules(old), libpam_rules(new)
    for rule in map(norm, our_rules(stanza, b"\n")):
        extra = [norm(r) for r in after].count(rule) - [norm(r) for r in before].count(rule)
        assert extra in (0, 1), (rule, after)
        assert extra == 1 or b"pam_tty_audit.so" in rule, ("our module line is missing", rule, after)
        if extra:
            del after[max(i for i, r in enumerate(after) if norm(r) == rule)]
    assert after == before


def check(data: bytes, stanza: Stanza, resolve: Resolver = INCLUDES) -> bool:
    try:
        result = install(data, stanza, resolve)
    except Refusal:
        return False
    assert_only_ours_added(data, result.data, stanza)
    return True


STANZA = Stanza(ENTRY)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(pam_file(), noisy_bytes()))
def test_fuzz_install_never_changes_how_libpam_reads_other_lines(data: bytes) -> None:
    check(data, STANZA)


def test_the_model_agrees_on_the_stock_files() -> None:
    fixtures = ROOT / "tests" / "fixtures" / "pam"
    # each stock file with a folder holding the files it includes (README.md)
    folders = {
        "debian-13": "debian-12",
        "ubuntu-26.04": "ubuntu-24.04",
        "rhel-8": "rhel-8-sssd",
        "rhel-9": "rhel-9-sssd",
    }
    for path in sorted(fixtures.glob("*/sshd")):
        data = path.read_bytes()
        folder = folders.get(path.parent.name, path.parent.name)
        if b"pam_loginuid" in data:
            assert check(data, STANZA, folder_resolver(str(fixtures / folder / "sshd"))), path


HOSTILE = {
    "huge line": b"session required pam_loginuid.so " + b"x" * 100_000 + b"\naccount required pam_unix.so\n",
    "binary bytes": b"\x00\xff\xfe\x01 session required pam_loginuid.so\n\x7f\x80",
    "unterminated bracket": b"session [success=1 default=ignore pam_unix.so\nsession required pam_loginuid.so\n",
    "continuation at EOF": b"account required pam_unix.so\nsession required pam_loginuid.so \\",
    "no final newline": b"account required pam_unix.so\nsession required pam_loginuid.so",
    "continuation into a comment": (
        b"account required pam_unix.so \\\n# c\n  nullok\nsession required pam_loginuid.so\n"
    ),
    "only comments": b"# nothing\n#\n",
    "empty": b"",
    "CR only": b"account required pam_unix.so\rsession required pam_loginuid.so\r",
    "NUL in module": b"account required pam_\x00unix.so\nsession required pam_loginuid.so\n",
}


def run_install(target: Path) -> subprocess.CompletedProcess[str]:
    argv = [*CLI, "install", "--pam-file", str(target), "--entry", ENTRY]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_through_the_command(tmp_path: Path, name: str) -> None:
    data = HOSTILE[name]
    target = tmp_path / "sshd"
    target.write_bytes(data)
    proc = run_install(target)
    new = target.read_bytes()
    if proc.returncode == 0:
        assert_only_ours_added(data, new, STANZA)
    else:
        assert proc.returncode == 4, proc.stderr  # refused, with a reason
        assert proc.stderr.strip() and new == data


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    loop = tmp_path / "sshd"
    os.symlink(loop, loop)
    proc = run_install(loop)
    assert proc.returncode in (4, 5) and proc.stderr.strip()
    assert os.readlink(loop) == str(loop)


OPTION_EXAMPLES = 3_000
_hostile_text = st.one_of(
    st.text(st.sampled_from(list("ab=_/1:#[]\\ \t\n\r\x00\x7f\u00e9")), max_size=12),
    st.text(max_size=12),
    st.sampled_from(["debug", "rhost_env=X", "timeout_ms=5", "teleport_exe=/t", "fail_closed"]),
)


@settings(max_examples=OPTION_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(_hostile_text, st.sampled_from(["option", "entry"]))
def test_any_option_or_entry_is_one_token_or_refused(value: str, which: str) -> None:
    """Installed: libpam reads the value as exactly one argument of each module line; else refused."""
    data = (ROOT / "tests" / "fixtures" / "pam" / "hard" / "jump-before-loginuid").read_bytes()
    entry = "/opt/" + value + "/pam_teleport_audit/pam_entry.py" if which == "entry" else ENTRY
    stanza = Stanza(entry, options=(value,) if which == "option" else ())
    try:
        result = install(data, stanza, INCLUDES)
    except Refusal as exc:
        assert str(exc)
        assert stanza.problems(), "refused although the value is one clean token"
        return
    assert not stanza.problems()
    ours = [r for r in libpam_rules(result.data) if b"pam_python.so" in r]
    expected = (entry.encode(), value.encode()) if which == "option" else (entry.encode(),)
    assert len(ours) == 2 and all(r[3:] == expected for r in ours), ours
    assert_only_ours_added(data, result.data, stanza)
