"""The lossless parser: bytes back exactly, fields read the way libpam reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings

from pam_teleport_audit.admin.pamfile import LIBPAM_LINE_MAX, Kind, parse, render

from .pam_strategies import noisy_bytes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pam"
ALL = sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.name != "README.md")


@settings(max_examples=1000)
@given(noisy_bytes())
def test_render_of_parse_is_identity_on_any_bytes(data: bytes) -> None:
    lines = parse(data)
    assert render(lines) == data
    assert all(line.raw for line in lines)  # no empty logical lines: each holds its bytes


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixtures_round_trip_and_parse(path: Path) -> None:
    data = path.read_bytes()
    lines = parse(data)
    assert render(lines) == data
    if "bad-" not in path.name and path.name != "crlf":
        assert [line.error for line in lines if line.kind is Kind.INVALID] == []


def test_fields_of_a_debian_file() -> None:
    lines = parse((FIXTURES / "debian-12" / "sshd").read_bytes())
    selinux = next(x for x in lines if x.module_name == "pam_selinux")
    assert selinux.type == "session"
    assert selinux.actions == {"success": "ok", "ignore": "ignore", "module_unknown": "ignore", "default": "bad"}
    assert selinux.args == ("close",)
    mail = next(x for x in lines if x.module_name == "pam_mail")
    assert mail.args == ("standard", "noenv")
    assert mail.comment == b"# [1]"
    includes = [x.module for x in lines if x.kind is Kind.AT_INCLUDE]
    assert includes == ["common-auth", "common-account", "common-session", "common-password"]


def test_continuations_brackets_and_comment_lines() -> None:
    lines = [x for x in parse((FIXTURES / "hard" / "continuations").read_bytes()) if x.kind is Kind.RULE]
    access = next(x for x in lines if x.module_name == "pam_access")
    assert access.args == ("accessfile=/etc/security/access-sshd.conf",)
    assert access.raw.count(b"\n") == 2
    # a backslash joins the next line whatever it holds: the pam_exec line becomes arguments of pam_loginuid
    loginuid = next(x for x in lines if x.module_name == "pam_loginuid")
    assert loginuid.raw.count(b"\n") == 3
    assert loginuid.args == ("session", "optional", "pam_exec.so", "[quiet seteuid]", "/usr/local/sbin/hook", "--flag")
    assert not [x for x in lines if x.module_name == "pam_exec"]


@pytest.mark.parametrize(
    "between",
    [b"   # a comment line inside a continuation\n", b"\n", b"  \t\n", b"#\n# two\n"],
)
def test_a_continuation_across_a_blank_or_comment_line_is_invalid(between: bytes) -> None:
    """libpam 1.5 skips such a line and joins on; 1.6+ (Debian 13) ends the logical line there."""
    data = b"session required pam_loginuid.so \\\n" + between + b"session optional pam_exec.so /bin/true\n"
    (line,) = parse(data)
    assert line.kind is Kind.INVALID and line.raw == data
    assert line.error is not None and "libpam 1.5 joins" in line.error and "1.6 and later end the line" in line.error
    assert "line 2" in line.error
    # a continuation whose next line has content reads the same in both: still one rule
    (ok,) = parse(b"session required pam_loginuid.so \\\n  debug\n")
    assert ok.kind is Kind.RULE and ok.args == ("debug",)


def test_case_dash_and_trailing_comments() -> None:
    lines = parse((FIXTURES / "hard" / "trailing-comments").read_bytes())
    assert [(x.type, x.dash, x.control, x.module) for x in lines] == [
        ("account", False, "include", "common-account"),
        ("session", False, "Required", "pam_loginuid.so"),
        ("session", True, "OPTIONAL", "pam_systemd.so"),
    ]
    assert lines[1].args == ()  # '[not an arg]' sits after the '#'
    assert lines[0].is_include


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (b"session requred pam_x.so\n", "unknown control"),
        (b"sesion required pam_x.so\n", "unknown type"),
        (b"session [success=ok bogus=1] pam_x.so\n", "unknown control value"),
        (b"session [success=jump] pam_x.so\n", "unknown control action"),
        (b"session [success=ok pam_x.so\n", "unterminated"),
        (b"session required\n", "missing"),
        (b"@include\n", "@include"),
        (b"session required pam_x.so \\", "continuation at end of file"),
    ],
)
def test_what_libpam_rejects_is_invalid(text: bytes, error: str) -> None:
    (line,) = parse(text)
    assert line.kind is Kind.INVALID
    assert line.error is not None and error in line.error


@pytest.mark.parametrize(
    "control",
    ["[SUCCESS=ok default=ignore]", "[success=OK default=ignore]", "[Default=bad]", "[success=1 default=Ignore]"],
)
def test_control_values_and_actions_are_case_sensitive_as_in_libpam(control: str) -> None:
    """libpam's _pam_parse_control (pam_misc.c) uses strncmp: a mixed-case value or action is a parse
    error there (every action becomes `bad`), so the line is invalid here too."""
    (line,) = parse(f"session    {control}    pam_loginuid.so\n".encode())
    assert line.kind is Kind.INVALID
    assert line.error is not None and "case-sensitively" in line.error


def test_control_words_stay_case_insensitive_as_in_libpam() -> None:
    """The control words are compared with strcasecmp."""
    for word in ("Required", "REQUISITE", "Sufficient", "optional", "Include", "SUBSTACK"):
        (line,) = parse(f"session {word} pam_x.so\n".encode())
        assert line.kind is Kind.RULE, word


def test_crlf_endings_are_kept_and_the_cr_is_read_as_libpam_reads_it() -> None:
    """libpam splits on space, tab and LF: the CR stays in the last token, a CR-only line is invalid."""
    lines = parse(b"session required pam_loginuid.so\r\naccount optional pam_x.so a\r\n\r\n")
    assert [x.ending for x in lines] == [b"\r\n", b"\r\n", b"\r\n"]
    assert lines[0].module == "pam_loginuid.so\r"
    assert lines[1].args == ("a\r",)
    assert lines[2].kind is Kind.INVALID and "CR LF" in (lines[2].error or "")
    assert parse(b"x")[0].ending == b""


def test_jump_length() -> None:
    (line,) = parse(b"auth [success=3 new_authtok_reqd=1 default=ignore] pam_unix.so\n")
    assert line.jump == 3
    assert parse(b"auth required pam_unix.so\n")[0].jump == 0


def test_lines_longer_than_libpams_buffer_are_invalid() -> None:
    """libpam 1.5 reads lines with fgets() into 1024 bytes: a longer one is read in pieces."""
    short = b"session required pam_loginuid.so " + b"x" * (LIBPAM_LINE_MAX - 34) + b"\n"
    assert parse(short)[0].kind is Kind.RULE
    long = b"session required pam_loginuid.so " + b"x" * (LIBPAM_LINE_MAX - 33) + b"\n"
    assert parse(long)[0].kind is Kind.INVALID and "line buffer" in (parse(long)[0].error or "")
    comment = b"#" + b"c" * 2000 + b"\n"  # a long comment too: its second piece would be a line
    assert parse(comment)[0].kind is Kind.INVALID


def test_a_nul_byte_makes_a_line_invalid() -> None:
    (line,) = parse(b"account required pam_\0unix.so\n")
    assert line.kind is Kind.INVALID and "NUL" in (line.error or "")
