"""Lines the installer did not write: a stanza pasted by hand outside the markers, a line added
inside them, a pam_tty_audit brought in by an include, a vendor-only layout, and --json on failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pam_teleport_audit.admin import cli, doctor, pamedit, pamstack
from pam_teleport_audit.admin.pamedit import Refusal
from pam_teleport_audit.admin.pamfile import parse
from pam_teleport_audit.admin.stanza import ACCOUNT_COMMENT, SESSION_COMMENT, TTY_COMMENT, Stanza

from .pam_strategies import ENTRY

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "pam"
DEBIAN = (FIXTURES / "debian-12" / "sshd").read_bytes()
DEBIAN_INCLUDES = pamstack.folder_resolver(str(FIXTURES / "debian-12" / "sshd"))
ACCOUNT = f"account    required   pam_python.so {ENTRY} fail_closed\n"
TTY = "session    required   pam_tty_audit.so enable=*\n"
SESSION = f"session    required   pam_python.so {ENTRY} fail_closed\n"
# The QA review's c-hand: `stanza --fail-closed` pasted where its comments say, without markers.
HAND = (
    DEBIAN.decode()
    .replace("# Disallow non-root", ACCOUNT + "# Disallow non-root", 1)
    .replace("session    required     pam_loginuid.so\n", "session    required     pam_loginuid.so\n" + TTY + SESSION)
    .encode()
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for common in (FIXTURES / "debian-12").glob("common-*"):
        shutil.copy(common, tmp_path / common.name)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = cli.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def line_of(data: bytes, text: str) -> int:
    return data.decode().splitlines().index(text.rstrip("\n")) + 1


def test_a_pasted_stanza_is_present_but_not_managed(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pam = folder / "sshd"
    pam.write_bytes(HAND)
    account, session = line_of(HAND, ACCOUNT), line_of(HAND, SESSION)
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert code == cli.EXIT_UNMANAGED == out["exit"]
    assert out["installed"] is False and out["unmanaged_parts"] == ["account", "session"]
    assert [x.split(" '")[0] for x in out["unmanaged"]] == [f"line {account}", f"line {session}"]
    assert f"uninstall --pam-file {pam}` (it removes them)" in out["summary"]
    assert "present but not managed" in out["summary"]
    # doctor: the same words and fix, not "run install"; a warning, as these lines are reached by every login
    (check,) = [c for c in doctor.stanza_checks(str(pam)) if c.name == "stanza"]
    assert check.status == doctor.WARN and "present but not managed" in check.message
    assert check.fix.startswith(f"run `pam-teleport-audit uninstall --pam-file {pam}`")
    # install refuses and says what to run; the file keeps its bytes
    code, out = run(capsys, "install", "--pam-file", str(pam), "--entry", ENTRY)
    assert code == cli.EXIT_REFUSED and out["would_change"] is False
    assert f"line {account} 'account    required   pam_python.so" in out["reason"]
    assert f"run `pam-teleport-audit uninstall --pam-file {pam}`, which removes such lines" in out["reason"]
    assert pam.read_bytes() == HAND
    # uninstall removes our module lines (not the pam_tty_audit, which is not marked as ours) and says so
    code, out = run(capsys, "uninstall", "--pam-file", str(pam), "--check")
    assert (code, out["would_change"], pam.read_bytes()) == (cli.EXIT_WOULD_CHANGE, True, HAND)
    code, out = run(capsys, "uninstall", "--pam-file", str(pam))
    assert (code, out["changed"]) == (cli.EXIT_OK, True)
    assert pam.read_bytes() == HAND.replace(ACCOUNT.encode(), b"").replace(SESSION.encode(), b"")
    assert any(f"keeping line {session - 1} 'session    required   pam_tty_audit.so" in n for n in out["notes"])
    # then install manages them
    assert cli.main(["install", "--pam-file", str(pam), "--entry", ENTRY]) == cli.EXIT_OK
    assert cli.main(["status", "--pam-file", str(pam)]) == cli.EXIT_OK


def test_a_pasted_line_that_a_login_skips_fails_doctor() -> None:
    """Only the account line, after Debian's common-account (its requisite pam_deny can end the stack)."""
    data = DEBIAN.replace(b"@include common-account\n", b"@include common-account\n" + ACCOUNT.encode())
    found = pamedit.status(data, DEBIAN_INCLUDES, "sshd")
    assert found.unmanaged and not found.installed and not found.reachable
    assert any("requisite ends the account stack" in x for x in found.skipped_by)
    check = doctor.stanza_problem("sshd", found)
    assert check is not None and check.status == doctor.FAIL and "present but not managed" in check.message


def installed() -> bytes:
    return pamedit.install(DEBIAN, Stanza(ENTRY), DEBIAN_INCLUDES).data


def test_a_pasted_line_beside_our_blocks_is_a_second_copy() -> None:
    data = installed() + SESSION.encode()
    found = pamedit.status(data, pamstack.no_includes)
    assert not found.installed and not found.complete
    assert any("loads pam_teleport_audit outside the managed markers" in p for p in found.problems)
    assert pamedit.uninstall(data, pamstack.no_includes).data == DEBIAN


@pytest.mark.parametrize(
    ("control", "why"),
    [("sufficient", "with control sufficient"), ("[success=done default=ignore]", "with control [success=done")],
)
def test_uninstall_refuses_a_pasted_line_whose_removal_changes_the_stack(control: str, why: str) -> None:
    data = b"account required pam_unix.so\naccount " + control.encode() + b" pam_python.so " + ENTRY.encode() + b"\n"
    with pytest.raises(Refusal, match="removing it would change what else runs") as caught:
        pamedit.uninstall(data, pamstack.no_includes)
    assert why in str(caught.value)


def test_uninstall_refuses_a_pasted_line_inside_a_jump_range() -> None:
    data = (
        b"account [success=1 default=ignore] pam_unix.so\n"
        b"account optional pam_python.so " + ENTRY.encode() + b"\n"
        b"account requisite pam_deny.so\n"
    )
    with pytest.raises(Refusal) as caught:
        pamedit.uninstall(data, pamstack.no_includes)
    assert "inside the range of the jump at this file:1 'account [success=1 default=ignore] pam_unix.so'" in str(
        caught.value
    )
    # a jump counted through an include reaches it too
    jumping = pamstack.dict_resolver({"common": b"account [success=2 default=ignore] pam_unix.so\n"})
    data = b"account include common\naccount optional pam_python.so " + ENTRY.encode() + b"\n"
    with pytest.raises(Refusal, match="inside the range of the jump at common:1"):
        pamedit.uninstall(data, jumping)
    # after the range it goes
    data = b"account [success=1 default=ignore] pam_unix.so\naccount requisite pam_deny.so\n"
    assert pamedit.uninstall(data + b"account optional pam_python.so " + ENTRY.encode() + b"\n").data == data


# --- 2: a line added by hand inside our markers ---------------------------------------------------

ACCESS = "account required pam_access.so accessfile=/etc/security/access-teleport.conf"


def hand_edited() -> bytes:
    done = pamedit.install(DEBIAN, Stanza(ENTRY), pamstack.folder_resolver(str(FIXTURES / "debian-12" / "sshd"))).data
    return done.replace(
        b"# END pam_teleport_audit account\n", ACCESS.encode() + b"\n# END pam_teleport_audit account\n"
    )


def test_a_line_added_inside_our_markers_is_named_and_kept(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = hand_edited()
    pam = folder / "sshd"
    pam.write_bytes(data)
    at = line_of(data, ACCESS)
    begin = next(k for k, x in enumerate(data.decode().splitlines(), 1) if x.startswith("# BEGIN pam_teleport_audit a"))
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert code == cli.EXIT_BROKEN and out["installed"] is False
    assert out["hand_edited"] == [f"the account block at line {begin} holds line {at} {ACCESS!r}"]
    (check,) = [c for c in doctor.stanza_checks(str(pam)) if c.name == "stanza"]
    assert check.status == doctor.FAIL and f"line {at}" in check.message and "move each such line" in check.fix
    for argv in (["install", "--entry", ENTRY], ["uninstall"], ["install", "--entry", ENTRY, "--check"]):
        code, out = run(capsys, *argv, "--pam-file", str(pam))
        assert (code, out["exit"], out["would_change"]) == (cli.EXIT_REFUSED, cli.EXIT_REFUSED, False), argv
        assert f"holds line {at} {ACCESS!r}, which pam-teleport-audit does not write there" in out["reason"]
        assert pam.read_bytes() == data


def test_a_comment_or_blank_line_inside_our_markers_is_kept_too() -> None:
    for extra in (b"# why: ticket 42\n", b"\n"):
        data = hand_edited().replace(ACCESS.encode() + b"\n", extra)
        with pytest.raises(Refusal, match="does not write there"):
            pamedit.uninstall(data, pamstack.no_includes)


# --- 3: pam_tty_audit from an included file ---------------------------------------------------------


def test_pam_tty_audit_in_an_included_file_is_kept_and_ours_goes_after_it() -> None:
    resolve = pamstack.folder_resolver(str(FIXTURES / "rhel-9-tty-audit" / "sshd"))
    original = (FIXTURES / "rhel-9-tty-audit" / "sshd").read_bytes()
    for tty in ("*", None):
        result = pamedit.install(original, Stanza(ENTRY, tty_audit=tty), resolve, "sshd")
        lines = result.data.decode().splitlines()
        assert not any("pam_tty_audit" in x for x in lines)  # no second one
        begin = lines.index("# BEGIN pam_teleport_audit session (managed by pam-teleport-audit; do not edit)")
        assert lines[begin - 1] == "session    include      password-auth"
        assert any(
            "keeping the existing pam_tty_audit at" in n
            and "password-auth:24 (included by line 16)" in n
            and "enable=root" in n
            for n in result.notes
        ), result.notes
        found = pamedit.status(result.data, resolve, "sshd")
        assert found.installed and found.tty_audit == "existing"
        assert pamedit.uninstall(result.data, resolve).data == original


def test_status_checks_the_order_over_the_expanded_stack() -> None:
    """Our block where the old installer put it, before the include that brings pam_tty_audit."""
    resolve = pamstack.folder_resolver(str(FIXTURES / "rhel-9-tty-audit" / "sshd"))
    plain = pamedit.install(
        (FIXTURES / "rhel-9-sssd" / "sshd").read_bytes(),
        Stanza(ENTRY, tty_audit=None),
        pamstack.folder_resolver(str(FIXTURES / "rhel-9-sssd" / "sshd")),
    ).data
    found = pamedit.status(plain, resolve, "sshd")
    assert not found.installed and not found.order_ok and found.tty_audit == "existing"
    tty = FIXTURES / "rhel-9-tty-audit" / "password-auth"
    assert any(p.startswith(f"our module runs before the pam_tty_audit at {tty}:24 'session") for p in found.problems)


# --- 6: vendor-only layouts (openSUSE, SLE 16) --------------------------------------------------------


@pytest.fixture
def suse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An /etc/pam.d without sshd and a /usr/lib/pam.d with it, as folders of tmp_path."""
    etc, vendor = tmp_path / "etc" / "pam.d", tmp_path / "usr" / "lib" / "pam.d"
    etc.mkdir(parents=True)
    vendor.mkdir(parents=True)
    (vendor / "sshd").write_bytes(DEBIAN)
    for common in (FIXTURES / "debian-12").glob("common-*"):
        shutil.copy(common, etc / common.name)
    dirs = (str(etc), str(vendor), str(tmp_path / "usr" / "etc" / "pam.d"))
    monkeypatch.setattr(pamstack, "PAM_DIRS", dirs)
    monkeypatch.setattr(pamstack, "VENDOR_DIRS", dirs[1:])
    return etc, vendor


def test_a_missing_etc_file_with_a_vendor_copy_says_so(
    suse: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    etc, vendor = suse
    hint = f"libpam uses the vendor file {vendor}/sshd for this service"
    fix = f"`cp -p {vendor}/sshd {etc}/sshd`"
    for command in ("install", "status"):
        code, out = run(capsys, command, "--pam-file", str(etc / "sshd"))
        assert (code, out["would_change"]) == (cli.EXIT_IO, False), command
        assert hint in out["reason"] and fix in out["reason"]
    code, out = run(capsys, "uninstall", "--pam-file", str(etc / "sshd"))
    assert code == cli.EXIT_OK and out["notes"] == [f"libpam reads {vendor}/sshd for this service; it is not edited"]
    (check,) = [c for c in doctor.stanza_checks(str(etc / "sshd")) if c.name == "stanza"]
    assert check.status == doctor.FAIL and hint in check.message and fix in check.fix
    assert not (etc / "sshd").exists() and (vendor / "sshd").read_bytes() == DEBIAN


def test_a_vendor_file_is_not_edited(suse: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    etc, vendor = suse
    for argv in (["install", "--entry", ENTRY], ["install", "--entry", ENTRY, "--check"]):
        code, out = run(capsys, *argv, "--pam-file", str(vendor / "sshd"))
        assert (code, out["would_change"]) == (cli.EXIT_REFUSED, False)
        assert "which its package owns and overwrites on update" in out["reason"]
        assert f"`cp -p {vendor}/sshd {etc}/sshd`" in out["reason"]
    assert (vendor / "sshd").read_bytes() == DEBIAN
    # nothing to do is fine: status reads it (includes resolved from /etc/pam.d first) and notes it
    assert run(capsys, "uninstall", "--pam-file", str(vendor / "sshd"))[0] == cli.EXIT_OK
    code, out = run(capsys, "status", "--pam-file", str(vendor / "sshd"))
    assert code == cli.EXIT_NOT_INSTALLED and "install and uninstall refuse this file" in out["notes"][0]


# --- 7: --json keys on every outcome ------------------------------------------------------------------

KEYS = {"command", "path", "changed", "check", "would_change", "notes", "exit", "diff", "backup"}


def test_json_always_carries_the_documented_keys(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pam = folder / "sshd"
    pam.write_bytes(DEBIAN.replace(b"session    required     pam_loginuid.so\n", b""))
    cases = [
        (["install", "--entry", ENTRY], str(pam), cli.EXIT_REFUSED),
        (["install", "--entry", ENTRY], str(folder / "gone" / "sshd"), cli.EXIT_IO),
        (["uninstall"], str(folder), cli.EXIT_REFUSED),
        (["uninstall"], str(folder / "missing"), cli.EXIT_OK),
        (["status"], str(folder / "missing"), cli.EXIT_IO),
        (["status"], str(pam), cli.EXIT_NOT_INSTALLED),
    ]
    for argv, path, expected in cases:
        code, out = run(capsys, *argv, "--pam-file", path)
        assert code == expected == out["exit"], (argv, path, out)
        assert set(out) >= KEYS and out["would_change"] is False and out["changed"] is False, (argv, out)
        if code in (cli.EXIT_REFUSED, cli.EXIT_IO):
            assert out["reason"] and out["refused"] is (code == cli.EXIT_REFUSED)


def test_diff_and_backup_are_null_when_there_is_none(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pam = folder / "sshd"
    pam.write_bytes(DEBIAN)
    cases = [
        (["install", "--entry", ENTRY, "--diff", "--backup-dir", str(folder / "bk"), "--check"], str(pam), False),
        (["install", "--entry", ENTRY, "--diff", "--backup-dir", str(folder / "bk")], str(pam), True),
        (["install", "--entry", ENTRY, "--diff", "--backup-dir", str(folder / "bk")], str(pam), None),  # no change
        (["uninstall", "--diff"], str(folder / "missing"), False),
        (["uninstall", "--diff"], str(folder), False),  # refused
        (["status"], str(pam), False),
    ]
    for argv, path, written in cases:
        _, out = run(capsys, *argv, "--pam-file", path)
        assert (out["backup"] is not None) is bool(written), (argv, out)
        # a diff is there exactly when the edit was computed with --diff (empty when nothing changes)
        assert (out["diff"] is not None) is ("--diff" in argv and out["exit"] in (0, 3) and path == str(pam)), out


# --- 8: our line in a file this one includes (common-session, password-auth) ----------------------------

PASTED_SESSION = f"session optional pam_python.so {ENTRY}\n".encode()


def test_a_line_of_ours_in_an_included_file_is_seen(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pam, common = folder / "sshd", folder / "common-session"
    pam.write_bytes(DEBIAN)
    common.write_bytes(common.read_bytes() + PASTED_SESSION)
    where = f"{common}:{line_of(common.read_bytes(), PASTED_SESSION.decode())}"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert code == cli.EXIT_UNMANAGED and out["unmanaged"][0].startswith(f"{where} 'session optional")
    assert out["unmanaged_files"] == [str(common)] and out["unmanaged_parts"] == ["session"]
    # a session line alone is incomplete, as a session block alone would be
    assert out["complete"] is False and "no account line loads pam_teleport_audit" in out["summary"]
    assert f"uninstall --pam-file {common}` (it removes them) then `pam-teleport-audit install" in out["summary"]
    (check,) = [c for c in doctor.stanza_checks(str(pam)) if c.name == "stanza"]
    assert check.status == doctor.FAIL and where in check.message
    for command in (["install", "--entry", ENTRY], ["uninstall"]):
        code, out = run(capsys, *command, "--pam-file", str(pam))
        assert code == cli.EXIT_REFUSED and where in out["reason"], out
        assert f"`pam-teleport-audit uninstall --pam-file {common}` edits only that file" in out["reason"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # uninstall never edits another file
    # the fix it names works: then install, and a line pasted there again is a second copy (7)
    assert cli.main(["uninstall", "--pam-file", str(common)]) == cli.EXIT_OK
    assert cli.main(["install", "--entry", ENTRY, "--pam-file", str(pam)]) == cli.EXIT_OK
    common.write_bytes(common.read_bytes() + PASTED_SESSION)
    capsys.readouterr()
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert code == cli.EXIT_BROKEN and any(p.startswith(where) for p in out["problems"])
    assert run(capsys, "install", "--entry", ENTRY, "--pam-file", str(pam))[0] == cli.EXIT_REFUSED


@pytest.mark.parametrize(
    ("layout", "name", "real"),
    [
        ("opensuse-tumbleweed", "common-session", "common-session-pc"),  # pam-config's link, same folder
        ("authselect-local", "password-auth", "authselect/password-auth"),  # authselect's, another folder
    ],
)
def test_the_fix_for_our_line_in_an_included_link_names_the_file_behind_it(
    layout: str, name: str, real: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """libpam reads an included name through its link (pam-config's common-session -> common-session-pc,
    authselect's password-auth -> /etc/authselect/password-auth); uninstall refuses to replace a link. The
    old fix named the link, so running it was refused (exit 4); it names the file behind it now, and
    running it takes the line out there, the link left as it was."""
    shutil.copytree(FIXTURES / layout, tmp_path, symlinks=True, dirs_exist_ok=True)
    pam, link, target = tmp_path / "sshd", tmp_path / name, tmp_path / real
    original = target.read_bytes()
    target.write_bytes(original + PASTED_SESSION)
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert code == cli.EXIT_UNMANAGED and out["unmanaged_files"] == [str(link)], out
    assert f"`pam-teleport-audit uninstall --pam-file {target}` (it removes them)" in out["summary"], out["summary"]
    code, out = run(capsys, "uninstall", "--pam-file", str(pam))
    assert (
        code == cli.EXIT_REFUSED and f"`pam-teleport-audit uninstall --pam-file {target}` edits only" in out["reason"]
    )
    assert run(capsys, "uninstall", "--pam-file", str(target))[0] == cli.EXIT_OK
    assert target.read_bytes() == original and link.is_symlink() and os.readlink(link) == real
    assert run(capsys, "status", "--pam-file", str(pam))[0] == cli.EXIT_NOT_INSTALLED


def test_a_line_of_ours_in_an_included_account_file_is_seen_through_include_and_substack() -> None:
    line = f"account required pam_python.so {ENTRY}\n".encode()
    for word in (b"include", b"substack"):
        data = b"account " + word + b" password-auth\nsession required pam_loginuid.so\n"
        found = pamedit.status(data, pamstack.dict_resolver({"password-auth": line}), "sshd")
        assert found.unmanaged == [f"password-auth:1 {line.decode().strip()!r}"] and not found.installed


# --- 9: an END marker whose BEGIN is gone takes only our module line --------------------------------

ORPHAN = (
    b"account required pam_nologin.so\n"
    b"session required pam_loginuid.so\n"
    b"session required pam_tty_audit.so disable=* enable=root\n"
    b"session optional pam_python.so " + ENTRY.encode() + b"\n"
    b"# END pam_teleport_audit session\n"
)
OPERATOR_TTY = b"session required pam_tty_audit.so disable=* enable=root\n"


def test_an_orphan_end_keeps_the_operators_pam_tty_audit() -> None:
    (block,) = pamedit.find_blocks(parse(ORPHAN))
    assert (block.start, block.end) == (3, 5)
    found = pamedit.status(ORPHAN, pamstack.no_includes)
    assert "session block at line 4 lacks a marker" in found.problems
    for tty in ("off", "*"):
        stanza = Stanza(ENTRY, None if tty == "off" else tty)
        done = pamedit.install(ORPHAN, stanza, pamstack.no_includes)
        assert done.data.count(OPERATOR_TTY) == 1 and b"enable=*" not in done.data, tty
    gone = pamedit.uninstall(ORPHAN, pamstack.no_includes)
    assert gone.data == ORPHAN.split(b"session optional")[0]
    assert any("keeping line 3 'session required pam_tty_audit.so" in n for n in gone.notes)


# --- 10: the order and completeness checks apply to pasted lines too --------------------------------


def test_a_pasted_session_line_before_pam_loginuid_and_pam_tty_audit_is_out_of_order() -> None:
    data = DEBIAN.replace(b"# Disallow non-root", ACCOUNT.encode() + b"# Disallow non-root", 1).replace(
        b"session    required     pam_loginuid.so\n",
        SESSION.encode() + b"session    required     pam_loginuid.so\n" + TTY.encode(),
    )
    found = pamedit.status(data, DEBIAN_INCLUDES, "sshd")
    assert (found.order_ok, found.tty_audit, found.installed) == (False, "existing", False)
    assert any(p.startswith("our module at sshd:") and p.endswith("runs before pam_loginuid") for p in found.problems)
    assert any(p.startswith("our module runs before the pam_tty_audit at sshd:") for p in found.problems)
    check = doctor.stanza_problem("sshd", found)
    assert check is not None and check.status == doctor.FAIL and "runs before pam_loginuid" in check.message


def test_a_pasted_session_line_without_an_account_line_is_incomplete() -> None:
    data = DEBIAN.replace(
        b"session    required     pam_loginuid.so\n", b"session    required     pam_loginuid.so\n" + SESSION.encode()
    )
    found = pamedit.status(data, DEBIAN_INCLUDES, "sshd")
    assert not found.complete and found.order_ok
    assert found.problems == ["no account line loads pam_teleport_audit (the pasted lines are session only)"]
    check = doctor.stanza_problem("sshd", found)
    assert check is not None and check.status == doctor.FAIL


# --- 11: uninstall removes no pasted line from a file it cannot parse ---------------------------------


def test_uninstall_refuses_a_pasted_line_in_a_file_it_cannot_parse(folder: Path) -> None:
    crossed = (
        b"session [success=1 default=ignore] pam_succeed_if.so quiet \\\n"
        b"# only for the ops group\n"
        b"    user ingroup ops\n"
    )
    loginuid = b"session    required     pam_loginuid.so\n"
    data = DEBIAN.replace(loginuid, loginuid + crossed + SESSION.encode())
    with pytest.raises(Refusal, match=r"cannot be parsed .* what removing them changes cannot be told"):
        pamedit.uninstall(data, DEBIAN_INCLUDES, "sshd")
    # also when the line libpam may misread is in an included file before it
    bad = pamstack.dict_resolver({"common": crossed})
    with pytest.raises(Refusal, match=r"after common:1 .* cannot be parsed"):
        pamedit.uninstall(b"session include common\n" + SESSION.encode(), bad)
    pam = folder / "sshd"
    pam.write_bytes(data)
    assert cli.main(["uninstall", "--pam-file", str(pam)]) == cli.EXIT_REFUSED and pam.read_bytes() == data


def test_our_line_inside_a_crossed_continuation_is_named_and_not_removed() -> None:
    """libpam 1.6+ reads it as a line of its own (prerm counts it): status must not say "not installed"."""
    loginuid = b"session    required     pam_loginuid.so\n"
    tail = b"session [success=1 default=ignore] pam_succeed_if.so quiet \\\n# ops only\n" + SESSION.encode()
    data = DEBIAN.replace(loginuid, loginuid + tail)
    found = pamedit.status(data, DEBIAN_INCLUDES, "sshd")
    assert [x.split(" '")[0] for x in found.unmanaged] == [f"line {line_of(data, loginuid.decode()) + 1}"]
    assert found.unmanaged_parts == [] and any("cannot be parsed" in p for p in found.problems)
    with pytest.raises(Refusal, match="cannot be parsed"):
        pamedit.uninstall(data, DEBIAN_INCLUDES, "sshd")


# --- 12: a pasted line whose script path ends in a CR ------------------------------------------------


def test_a_pasted_line_ending_in_cr_is_ours_and_removed() -> None:
    account = ACCOUNT.replace("\n", "\r\n").replace(" fail_closed", "").encode()
    session = SESSION.replace("\n", "\r\n").replace(" fail_closed", "").encode()
    loginuid = b"session    required     pam_loginuid.so\n"
    data = DEBIAN.replace(b"# Disallow non-root", account + b"# Disallow non-root", 1).replace(
        loginuid, loginuid + session
    )
    found = pamedit.status(data, DEBIAN_INCLUDES, "sshd")
    assert found.unmanaged_parts == ["account", "session"] and not found.installed
    assert any("script path ends in a CR" in p and "control required" in p for p in found.problems)
    assert doctor.stanza_problem("sshd", found).status == doctor.FAIL  # type: ignore[union-attr]
    with pytest.raises(Refusal, match="outside the managed markers"):
        pamedit.install(data, Stanza(ENTRY), DEBIAN_INCLUDES, "sshd")
    assert pamedit.uninstall(data, DEBIAN_INCLUDES, "sshd").data == DEBIAN


# --- 13: one exit status per input, whatever the command ---------------------------------------------


@pytest.mark.parametrize(
    ("make", "codes"),
    [
        # libpam reads a symlink to nothing as a missing file: as a missing file
        (lambda p: p.symlink_to(p.parent / "nowhere"), (cli.EXIT_IO, cli.EXIT_IO, cli.EXIT_OK)),
        (lambda p: p.mkdir(), (cli.EXIT_REFUSED,) * 3),
        (lambda p: os.mkfifo(p), (cli.EXIT_REFUSED,) * 3),  # never opened: no command hangs
    ],
    ids=["dangling symlink", "directory", "fifo"],
)
def test_the_same_input_gets_the_same_status(
    make: Callable[[Path], None], codes: tuple[int, int, int], folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pam = folder / "sshd"
    make(pam)
    for command, code in zip(("status", "install", "uninstall"), codes, strict=True):
        got, out = run(capsys, command, "--pam-file", str(pam), *(["--entry", ENTRY] if command == "install" else []))
        assert got == code == out["exit"], (command, out)
        assert out["diff"] is None and out["backup"] is None


# --- 14: vendor: /etc/pam.d/NAME missing, /usr/lib/pam.d/NAME loads our module -------------------------


def test_uninstall_does_not_say_done_while_the_vendor_copy_loads_our_module(
    suse: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    etc, vendor = suse
    (vendor / "sshd").write_bytes(HAND)
    code, out = run(capsys, "uninstall", "--pam-file", str(etc / "sshd"))
    assert code == cli.EXIT_REFUSED and f"`cp -p {vendor}/sshd {etc}/sshd` then" in out["reason"]
    # status on the vendor file gives a fix that works: copy, then uninstall the copy
    code, out = run(capsys, "status", "--pam-file", str(vendor / "sshd"))
    fix = f"`cp -p {vendor}/sshd {etc}/sshd` then `pam-teleport-audit uninstall --pam-file {etc}/sshd`"
    assert code == cli.EXIT_UNMANAGED and fix in out["summary"]
    shutil.copy(vendor / "sshd", etc / "sshd")
    assert cli.main(["uninstall", "--pam-file", str(etc / "sshd")]) == cli.EXIT_OK
    assert cli.main(["status", "--pam-file", str(etc / "sshd")]) == cli.EXIT_NOT_INSTALLED
    assert (vendor / "sshd").read_bytes() == HAND


def test_a_symbolic_link_to_nothing_is_missing_to_libpam_which_reads_the_vendor_copy(
    suse: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """libpam fopen()s /etc/pam.d/NAME and, when that fails, /usr/lib/pam.d/NAME (_pam_open_config_file): a
    symbolic link to nothing is as missing as no file (openSUSE Tumbleweed moved its vendor files from
    /usr/etc/pam.d to /usr/lib/pam.d, which leaves a link made to the old one dangling). The old code took
    the link for the file: uninstall said nothing to do while the vendor copy ran our module, and install,
    status and doctor did not name the vendor file. The fix copies over the link (`cp -p` will not write
    through a dangling one)."""
    etc, vendor = suse
    (vendor / "sshd").write_bytes(HAND)
    (etc / "sshd").symlink_to("/usr/etc/pam.d/sshd-gone")
    fix = f"`cp -p --remove-destination {vendor}/sshd {etc}/sshd`"
    code, out = run(capsys, "uninstall", "--pam-file", str(etc / "sshd"))
    assert code == cli.EXIT_REFUSED and f"{fix} then `pam-teleport-audit uninstall" in out["reason"]
    for argv in (["install", "--entry", ENTRY], ["status"]):
        code, out = run(capsys, *argv, "--pam-file", str(etc / "sshd"))
        assert code == cli.EXIT_IO, argv
        assert out["reason"].startswith(
            f"[Errno 2] {etc}/sshd is a symbolic link to '/usr/etc/pam.d/sshd-gone', which does"
        )
        assert f"libpam uses the vendor file {vendor}/sshd for this service" in out["reason"] and fix in out["reason"]
    (check,) = [c for c in doctor.stanza_checks(str(etc / "sshd")) if c.name == "stanza"]
    assert check.status == doctor.FAIL and f"the vendor file {vendor}/sshd" in check.message and fix in check.fix
    assert os.readlink(etc / "sshd") == "/usr/etc/pam.d/sshd-gone" and (vendor / "sshd").read_bytes() == HAND
    # the fix as printed, then the uninstall it names
    subprocess.run(["cp", "-p", "--remove-destination", str(vendor / "sshd"), str(etc / "sshd")], check=True)
    assert not (etc / "sshd").is_symlink()
    assert cli.main(["uninstall", "--pam-file", str(etc / "sshd")]) == cli.EXIT_OK
    assert cli.main(["status", "--pam-file", str(etc / "sshd")]) == cli.EXIT_NOT_INSTALLED
    assert (vendor / "sshd").read_bytes() == HAND
    capsys.readouterr()
    # no vendor copy: the link is reported as before, and uninstall has nothing to do
    (vendor / "sshd").unlink()
    (etc / "sshd").unlink()
    (etc / "sshd").symlink_to("/usr/etc/pam.d/sshd-gone")
    code, out = run(capsys, "status", "--pam-file", str(etc / "sshd"))
    assert (code, out["reason"]) == (
        cli.EXIT_IO,
        f"[Errno 2] {etc}/sshd is a symbolic link to '/usr/etc/pam.d/sshd-gone', which does not exist (libpam "
        "reads it as missing)",
    )
    assert run(capsys, "uninstall", "--pam-file", str(etc / "sshd"))[0] == cli.EXIT_OK


def pasted(stanza: Stanza) -> bytes:
    """Debian's sshd with `stanza`'s output pasted where its comments say: account part above the first
    account line, session part right after pam_loginuid, each with its comment lines."""
    text = stanza.render().splitlines(keepends=True)
    session = text.index(f"{SESSION_COMMENT}\n")
    loginuid = "session    required     pam_loginuid.so\n"
    return (
        DEBIAN.decode()
        .replace("# Disallow non-root", "".join(text[:session]) + "# Disallow non-root", 1)
        .replace(loginuid, loginuid + "".join(text[session:]))
        .encode()
    )


def test_uninstall_of_a_pasted_stanza_takes_its_comment_lines_too(folder: Path, capsys) -> None:
    pam = folder / "sshd"
    pam.write_bytes(pasted(Stanza(ENTRY, None)))
    code, out = run(capsys, "uninstall", "--pam-file", str(pam))
    assert (code, out["changed"]) == (cli.EXIT_OK, True)
    assert pam.read_bytes() == DEBIAN  # no comment of the stanza left behind
    assert sum("a comment `pam-teleport-audit stanza` prints" in note for note in out["notes"]) == 2


def test_the_comments_of_a_kept_pam_tty_audit_stay_with_it(folder: Path, capsys) -> None:
    pam = folder / "sshd"
    stanza = Stanza(ENTRY, "root,adm*")
    pam.write_bytes(pasted(stanza))
    code, out = run(capsys, "uninstall", "--pam-file", str(pam))
    assert code == cli.EXIT_OK
    # The pam_tty_audit is not marked as ours: it stays, and so do the lines that describe it.
    tty = [SESSION_COMMENT, TTY_COMMENT[0].format(patterns="root,adm*"), TTY_COMMENT[1], *stanza.session_lines()[:1]]
    loginuid = "session    required     pam_loginuid.so\n"
    assert pam.read_text() == DEBIAN.decode().replace(loginuid, loginuid + "".join(f"{x}\n" for x in tty))
    assert any("(with the comment lines `stanza` prints above it)" in note for note in out["notes"]), out["notes"]


def test_only_the_stanzas_own_comments_go() -> None:
    operator = b"# our compliance team wants this\n"
    data = pasted(Stanza(ENTRY, None)).replace(
        ACCOUNT_COMMENT.encode(), operator.rstrip(b"\n") + b"\n" + ACCOUNT_COMMENT.encode()
    )
    done = pamedit.uninstall(data, DEBIAN_INCLUDES).data
    assert done == DEBIAN.replace(b"# Disallow non-root", operator + b"# Disallow non-root", 1)
