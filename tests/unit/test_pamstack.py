"""pamstack: stacks expanded as libpam builds them, and what can skip a line of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pam_teleport_audit.admin import pamstack
from pam_teleport_audit.admin.pamfile import parse
from pam_teleport_audit.admin.pamstack import dict_resolver, expand, folder_resolver, locate, skippers

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "pam"


def skipped(text: str, files: dict[str, bytes], type_: str, target: str) -> list[str]:
    """Why the line of the service text holding `target` can be skipped (where and why)."""
    data = text.encode()
    lines = parse(data)
    index = next(k for k, x in enumerate(lines) if target in x.text)
    entries = expand("svc", data, type_, dict_resolver(files))
    at = locate(entries, index)
    assert at is not None
    return [f"{e.where} {why}" for e, why in skippers(entries, at, type_)]


@pytest.mark.parametrize(
    ("control", "account", "session"),
    [
        ("required", [], []),
        ("optional", [], []),
        ("requisite", ["svc:1 (requisite ends the account stack there)"], []),
        ("sufficient", ["svc:1 (sufficient ends the account stack there)"], None),
        ("[success=ok default=die]", ["svc:1 (die ends the account stack there)"], []),
        ("[success=done default=ignore]", ["svc:1 (done ends the account stack there)"], None),
        ("[default=bad]", [], []),
    ],
)
def test_what_ends_the_stack_before_our_line(control: str, account: list[str], session: list[str] | None) -> None:
    """Account: anything that ends the stack. Session: only what ends it with success (done)."""
    for type_, expected in (("account", account), ("session", session)):
        text = f"{type_} {control} pam_x.so\n{type_} optional pam_ours.so\n"
        if expected is None:
            expected = [f"svc:1 ({'sufficient' if control == 'sufficient' else 'done'} ends the session stack there)"]
        assert skipped(text, {}, type_, "pam_ours") == expected


def test_include_is_spliced_and_its_sufficient_ends_the_whole_stack() -> None:
    files = {"inc": b"account sufficient pam_localuser.so\n"}
    text = "account include inc\naccount optional pam_ours.so\n"
    assert skipped(text, files, "account", "pam_ours") == ["inc:1 (sufficient ends the account stack there)"]


def test_substack_sufficient_ends_only_the_substack() -> None:
    files = {"sub": b"account sufficient pam_localuser.so\naccount requisite pam_deny.so\n"}
    text = "account substack sub\naccount optional pam_ours.so\n"
    assert skipped(text, files, "account", "pam_ours") == []


def test_at_include_brings_every_type_and_only_that_type_counts() -> None:
    files = {"common": b"auth sufficient pam_unix.so\naccount requisite pam_deny.so\n"}
    text = (
        "@include common\nsession required pam_loginuid.so\nsession optional pam_ours.so\n"
        "account optional pam_ours.so\n"
    )
    assert skipped(text, files, "session", "session optional pam_ours") == []
    assert skipped(text, files, "account", "account optional pam_ours") == [
        "common:2 (requisite ends the account stack there)"
    ]


@pytest.mark.parametrize(
    ("word", "jump", "expected"), [("substack", 3, True), ("include", 3, False), ("include", 5, True)]
)
def test_jumps_count_a_substack_as_one_unit_and_include_lines_each(word: str, jump: int, expected: bool) -> None:
    files = {"three": b"session required pam_a.so\nsession required pam_b.so\nsession required pam_c.so\n"}
    text = (
        f"session [success={jump} default=ignore] pam_j.so\n"
        f"session {word} three\n"
        "session required pam_d.so\n"
        "session optional pam_ours.so\n"
    )
    found = skipped(text, files, "session", "pam_ours")
    assert found == ([f"svc:1 (its jump of {jump} skips it)"] if expected else [])


def test_jumps_inside_an_included_file_reach_past_its_end() -> None:
    files = {"inc": b"session [default=1] pam_permit.so\n"}
    text = "session include inc\nsession optional pam_ours.so\n"
    assert skipped(text, files, "session", "pam_ours") == ["inc:1 (its jump of 1 skips it)"]


def test_jumps_inside_a_substack_stay_inside() -> None:
    files = {"sub": b"session [default=5] pam_permit.so\n"}
    text = "session substack sub\nsession optional pam_ours.so\n"
    assert skipped(text, files, "session", "pam_ours") == []


def test_unreadable_loop_and_depth_are_unprovable() -> None:
    text = "account include missing\naccount optional pam_ours.so\n"
    assert skipped(text, {}, "account", "pam_ours") == ["svc:1 includes 'missing', which cannot be read"]
    loop = {"a": b"account include b\n", "b": b"account include a\n"}
    assert skipped("account include a\naccount optional pam_ours.so\n", loop, "account", "pam_ours") == [
        "b:1 includes 'a' again inside itself (a loop)"
    ]
    deep = {f"f{i}": f"account include f{i + 1}\n".encode() for i in range(40)}
    found = skipped("account include f0\naccount optional pam_ours.so\n", deep, "account", "pam_ours")
    assert len(found) == 1 and "deeper than libpam's 16 levels" in found[0]


def test_an_invalid_line_in_an_included_file_is_unprovable() -> None:
    files = {"inc": b"account requred pam_unix.so\n"}
    found = skipped("account include inc\naccount optional pam_ours.so\n", files, "account", "pam_ours")
    assert found == ["inc:1 cannot be parsed (unknown control 'requred')"]


def test_contributes_follows_at_include() -> None:
    resolve = dict_resolver({"auth-only": b"auth required pam_unix.so\n", "acct": b"account required pam_unix.so\n"})
    lines = parse(b"@include auth-only\n@include acct\n@include missing\nsession required pam_unix.so\n")
    assert [pamstack.contributes("svc", x, "account", resolve) for x in lines] == [False, True, True, False]


def test_folder_resolver_reads_beside_the_file_and_absolute_names(tmp_path: Path) -> None:
    (tmp_path / "inc").write_bytes(b"account required pam_unix.so\n")
    resolve = folder_resolver(str(tmp_path / "svc"))
    assert resolve("inc") == (str(tmp_path / "inc"), b"account required pam_unix.so\n")
    assert resolve(str(tmp_path / "inc")) is not None
    assert resolve("nothing-here") is None


def test_authselect_password_auth_ends_the_account_stack_for_local_users() -> None:
    """The RHEL layout of issue 12: after `account include password-auth` nothing is reached."""
    sshd = FIXTURES / "rhel-9-sssd" / "sshd"
    data = sshd.read_bytes() + b"account optional pam_ours.so\n"
    entries = expand(str(sshd), data, "account", folder_resolver(str(sshd)))
    at = locate(entries, len(parse(data)) - 1)
    assert at is not None
    found = [(e.line.text.split()[-2:], why) for e, why in skippers(entries, at, "account")]
    assert found == [
        (["sufficient", "pam_localuser.so"], "(sufficient ends the account stack there)"),
        (["pam_usertype.so", "issystem"], "(sufficient ends the account stack there)"),
    ]


# --- refusers: a die libpam can reach after pam_loginuid that ends the stack before our session line ---


def refusing(text: str, files: dict[str, bytes]) -> list[str]:
    """FILE:LINE of each line refusers() names between the service text's pam_loginuid and pam_ours."""
    data = text.encode()
    lines = parse(data)
    entries = expand("svc", data, "session", dict_resolver(files))
    start = next(k for k, e in enumerate(entries) if e.line.module_name == "pam_loginuid")
    at = locate(entries, next(k for k, x in enumerate(lines) if "pam_ours" in x.text))
    assert at is not None
    return [e.where for e in pamstack.refusers(entries, start, at)]


LOGINUID = "session required pam_loginuid.so\n"
OURS = "session optional pam_ours.so\n"
TWO = b"session required pam_a.so\nsession required pam_b.so\n"
DENY_AFTER_JUMP = b"session [default=1] pam_permit.so\nsession requisite pam_deny.so\nsession required pam_permit.so\n"


@pytest.mark.parametrize(
    ("between", "files", "expected"),
    [
        ("session requisite pam_x.so\n", {}, ["svc:2"]),
        ("session Requisite pam_x.so\n", {}, ["svc:2"]),
        ("session [success=ok default=die] pam_x.so\n", {}, ["svc:2"]),
        ("session [success=ok auth_err=die default=ignore] pam_x.so\n", {}, ["svc:2"]),
        ("-session requisite pam_missing.so\n", {}, ["svc:2"]),  # a missing module fails: die
        ("session required pam_x.so\n", {}, []),  # fails, but the stack runs on to ours
        ("session optional pam_x.so\n", {}, []),
        ("session [default=bad] pam_x.so\n", {}, []),
        ("session [success=ok] pam_x.so\n", {}, []),  # unset values are bad, not die
        ("session sufficient pam_x.so\n", {}, []),  # skips ours with success: skippers()'s
        ("session include inc\n", {"inc": b"session requisite pam_deny.so\n"}, ["inc:1"]),
        ("@include inc\n", {"inc": b"auth requisite pam_deny.so\nsession requisite pam_deny.so\n"}, ["inc:2"]),
        (
            "session include outer\n",
            {"outer": b"session include inc\n", "inc": b"session requisite pam_x.so\n"},
            ["inc:1"],
        ),
        ("session substack sub\n", {"sub": b"session requisite pam_deny.so\n"}, []),  # ends only the substack
        ("session substack sub\n", {"sub": b"session sufficient pam_permit.so\nsession requisite pam_deny.so\n"}, []),
        # Debian's common-session: pam_permit always jumps over pam_deny, whatever it returns
        ("session include common-session\n", {"common-session": DENY_AFTER_JUMP}, []),
        ("@include common-session\n", {"common-session": DENY_AFTER_JUMP}, []),
        # a jump taken only on success: failure runs on to the requisite
        ("session [success=1 default=ignore] pam_x.so\nsession requisite pam_deny.so\n", {}, ["svc:3"]),
        ("session [default=1] pam_x.so\nsession requisite pam_deny.so\n", {}, []),
        # a substack is one unit for a jump: [default=2] skips it and the requisite
        ("session [default=2] pam_x.so\nsession substack two\nsession requisite pam_deny.so\n", {"two": TWO}, []),
        # an include's lines count one by one: [default=2] lands on the requisite
        ("session [default=2] pam_x.so\nsession include two\nsession requisite pam_deny.so\n", {"two": TWO}, ["svc:4"]),
        # a jump in an included file counts on past its end
        ("session include inc\nsession requisite pam_deny.so\n", {"inc": b"session [default=1] pam_permit.so\n"}, []),
        # a jump inside a substack cannot leave it
        (
            "session substack sub\nsession requisite pam_deny.so\n",
            {"sub": b"session [default=5] pam_permit.so\n"},
            ["svc:3"],
        ),
        # only reached by a jump taken before pam_loginuid: not on a path from it
        ("session [default=2] pam_x.so\n", {}, []),
    ],
)
def test_refusers_follow_every_path_libpam_can_take_from_pam_loginuid(
    between: str, files: dict[str, bytes], expected: list[str]
) -> None:
    assert refusing(LOGINUID + between + OURS, files) == expected


def test_refusers_are_only_between_pam_loginuid_and_ours() -> None:
    before = "session requisite pam_x.so\n" + LOGINUID + OURS + "session requisite pam_y.so\n"
    assert refusing(before, {}) == []
    # the loginuid line's own jump: [default=1] skips the requisite, success=1 only does not
    assert refusing("session [default=1] pam_loginuid.so\nsession requisite pam_x.so\n" + OURS, {}) == []
    assert refusing("session [success=1 default=ignore] pam_loginuid.so\nsession requisite pam_x.so\n" + OURS, {}) == [
        "svc:2"
    ]
    # the requisite reached after a jump that first skips a line
    jumped = (
        LOGINUID
        + "session [success=1 default=ignore] pam_x.so\nsession optional pam_y.so\nsession requisite pam_z.so\n"
    )
    assert refusing(jumped + OURS, {}) == ["svc:4"]


def test_a_die_in_the_substack_holding_our_line_refuses_before_it() -> None:
    files = {"sub": b"session requisite pam_x.so\nsession optional pam_ours.so\n"}
    data = (LOGINUID + "session substack sub\n").encode()
    entries = expand("svc", data, "session", dict_resolver(files))
    at = next(k for k, e in enumerate(entries) if e.line.module_name == "pam_ours")
    assert [e.where for e in pamstack.refusers(entries, 0, at)] == ["sub:1"]
