"""Record text and encoding, table-driven."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pam_teleport_audit.admin.auditlog import decode_value, split_roles
from pam_teleport_audit.pam_module import (
    AUDIT_MESSAGE_TEXT_MAX,
    HOSTNAME_MAX_BYTES,
    bare_value,
    libaudit_value,
    needs_encoding,
    record_text,
)

if TYPE_CHECKING:
    from pam_teleport_audit.pam_module import Fields

KEYS = ["op", "acct", "exe", "hostname", "addr", "terminal", "teleportUser", "teleportRoles", "teleportChild", "res"]


FIELD_NAMES = ("op", "acct", "exe", "hostname", "addr", "terminal", "teleport_user", "roles", "child", "success")


def in_order(*values: object) -> Fields:
    """A Fields dict from values in declaration order."""
    return dict(zip(FIELD_NAMES, values, strict=True))  # type: ignore[return-value]


def fields(user: str = "alice", roles: tuple[str, ...] = ("access",), **kw: object) -> Fields:
    base = dict(
        op="teleport:session_open",
        acct="root",
        exe="/usr/local/bin/teleport",
        hostname=None,
        addr=None,
        terminal="ssh",
        teleport_user=user,
        roles=roles,
        child="exec",
        success=True,
    )
    base.update(kw)
    return base  # type: ignore[return-value]


def split(text: str) -> list[tuple[str, str]]:
    """Every value we write is free of spaces, so a space separates fields."""
    return [tuple(part.split("=", 1)) for part in text.split(" ")]  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "encode"),
    [
        (b"alice", False),
        (b"a b", True),
        (b'a"b', True),
        (b"a'b", False),  # libaudit does not encode ' or =
        (b"a=b", False),
        (b"tab\there", True),
        (b"nl\n", True),
        (b"\x00", True),
        (b"\x7f", True),
        ("caf\u00e9".encode(), True),
        (b"~", False),
    ],
)
def test_needs_encoding_matches_libaudit(raw: bytes, encode: bool) -> None:
    assert needs_encoding(raw) is encode


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"root", '"root"'),
        (b"a b", "612062"),
        (b"/usr/local/bin/teleport", '"/usr/local/bin/teleport"'),
        (b"/opt/my dir/teleport", "2F6F70742F6D79206469722F74656C65706F7274"),
    ],
)
def test_libaudit_value(raw: bytes, expected: str) -> None:
    assert libaudit_value(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"alice", "alice"),
        (b"alice@example.com", "alice@example.com"),
        (b"alice res=failed", "616C696365207265733D6661696C6564"),
        (b' acct="root"', "20616363743D22726F6F7422"),
        (b"a=b", "613D62"),  # '=' would confuse `grep teleportUser=`
        (b"o'neil", "6F276E65696C"),
        (b"back\\slash", "6261636B5C736C617368"),
        (b"line\nbreak", "6C696E650A627265616B"),
        (b"nul\x00", "6E756C00"),
        ("jos\u00e9".encode(), "6A6F73C3A9"),
        (b"\xff\xfe", "FFFE"),  # invalid UTF-8 is fine: bytes are bytes
        (b"", ""),
        (b"?", "3F"),  # "?" means unknown
        (b"CAFE", "43414645"),  # looks like hex: encoded, so decoding is unambiguous
        (b"cafe", "cafe"),
    ],
)
def test_bare_value_and_its_inverse(raw: bytes, expected: str) -> None:
    assert bare_value(raw) == expected
    if raw:
        assert decode_value(expected) == raw


def test_decode_quoted() -> None:
    assert decode_value('"root"') == b"root"


def test_record_layout_follows_libpam_with_identity_before_res() -> None:
    text = record_text(fields(roles=("access", "editor")))
    assert text == (
        'op=teleport:session_open acct="root" exe="/usr/local/bin/teleport" hostname=? addr=? terminal=ssh'
        " teleportUser=alice teleportRoles=access,editor teleportChild=exec res=success"
    )


def test_record_without_roles_and_with_address() -> None:
    text = record_text(fields(roles=(), hostname="192.0.2.7", addr="192.0.2.7", success=False))
    assert dict(split(text))["teleportRoles"] == "?"
    assert "hostname=192.0.2.7 addr=192.0.2.7" in text
    assert text.endswith(" res=failed")


INJECTIONS = [
    "alice res=failed",
    'alice acct="root"',
    "alice\nop=forged",
    "alice\rres=failed",
    "alice\tx",
    "alice\x00root",
    "alice' res=failed '",
    "teleportUser=mallory",
    "\u202eevil",
    "a" * 4096,
    "b" * 10240,
    "c d " * 3000,
]


@pytest.mark.parametrize("name", INJECTIONS, ids=lambda n: repr(n[:20]))
@pytest.mark.parametrize("roles", [("access",), ("x res=failed", "y\nz"), ("r" * 9000,)], ids=["plain", "evil", "long"])
def test_crafted_names_never_add_or_change_a_field(name: str, roles: tuple[str, ...]) -> None:
    text = record_text(fields(user=name, roles=roles))
    assert len(text.encode()) <= AUDIT_MESSAGE_TEXT_MAX
    assert text.isascii() and text.isprintable()
    pairs = split(text)
    keys = [k for k, _ in pairs]
    if "teleportRolesOmitted" in keys:  # the one long role did not fit whole: left out, and said so
        keys.remove("teleportRolesOmitted")
        assert dict(pairs)["teleportRolesOmitted"] == "1" and dict(pairs)["teleportRoles"] == "?"
    if "teleportUserOmitted" in keys:  # a name longer than its cap: the bytes left out, right after it
        assert keys.index("teleportUserOmitted") == keys.index("teleportUser") + 1
        assert int(dict(pairs)["teleportUserOmitted"]) == len(name.encode()) - 2048 > 0
        keys.remove("teleportUserOmitted")
    assert keys == KEYS
    values = dict(pairs)
    assert values["acct"] == '"root"' and values["res"] == "success"
    user = decode_value(values["teleportUser"])
    assert name.encode().startswith(user) and len(user) > 0


def test_roles_are_cut_between_roles_and_the_cut_is_said() -> None:
    roles = tuple(f"role-{i:04d}" for i in range(2000))
    text = record_text(fields(user="u" * 2000, roles=roles))
    values = dict(split(text))
    assert values["teleportUser"] == "u" * 2000  # kept whole
    kept = values["teleportRoles"].split(",")
    assert kept == list(roles[: len(kept)])  # whole roles, in order, none cut mid-name
    assert int(values["teleportRolesOmitted"]) == len(roles) - len(kept) > 0
    assert len(text) <= AUDIT_MESSAGE_TEXT_MAX and text.endswith(" teleportChild=exec res=success")


@pytest.mark.parametrize(
    ("roles", "recorded"),
    [
        (("access", "editor"), "access,editor"),  # as before: bare, comma-joined, greppable
        (("ops,dev", "qa"), b" ops,dev qa".hex().upper()),  # a role holds a comma: each after a space
        (("ops", "dev", "qa"), "ops,dev,qa"),
        (("a,b",), b" a,b".hex().upper()),
    ],
)
def test_a_role_holding_a_comma_is_not_read_as_two(roles: tuple[str, ...], recorded: str) -> None:
    """Teleport allows a comma in a role name: `ops,dev` and `qa` must not read as `ops`, `dev`, `qa`."""
    value = dict(split(record_text(fields(roles=roles))))["teleportRoles"]
    assert value == recorded
    assert split_roles(decode_value(value)) == [r.encode() for r in roles]


@pytest.mark.parametrize(("length", "omitted"), [(2047, None), (2048, None), (2049, "1"), (9000, "6952")])
def test_a_name_cut_to_its_cap_says_how_many_bytes_were_left_out(length: int, omitted: str | None) -> None:
    """The record keeps the first 2,048 bytes of a name; teleportUserOmitted=N right after it says that
    N more were left out, so that the beginning is not read as a whole name (ausearch shows it too)."""
    text = record_text(fields(user="u" * length))
    pairs = split(text)
    values = dict(pairs)
    assert values["teleportUser"] == "u" * min(length, 2048)
    assert values.get("teleportUserOmitted") == omitted
    if omitted:
        keys = [k for k, _ in pairs]
        assert keys.index("teleportUserOmitted") == keys.index("teleportUser") + 1
        assert f" teleportUser={'u' * 2048} teleportUserOmitted={omitted} teleportRoles=access " in text


def test_roles_that_fit_have_no_omitted_marker() -> None:
    assert "teleportRolesOmitted" not in record_text(fields(roles=("access", "editor")))


def test_huge_rhost_keeps_res() -> None:
    """An 8,600-byte PAM_RHOST once pushed res= past the kernel's limit."""
    text = record_text(fields(hostname="h" * 8600, addr=None, success=False))
    values = dict(split(text))
    assert len(text) <= AUDIT_MESSAGE_TEXT_MAX
    assert values["res"] == "failed" and values["teleportUser"] == "alice" and values["teleportRoles"] == "access"
    assert values["hostname"] == "h" * HOSTNAME_MAX_BYTES


def test_every_field_at_its_worst_still_fits() -> None:
    text = record_text(
        in_order(
            "teleport:session_close",
            "\xff" * 99,
            "\x01" * 9000,
            " " * 9000,
            " " * 9000,
            " " * 9000,
            "\n" * 9000,
            tuple("\x02" * 50 for _ in range(500)),
            "networking",
            False,
        )
    )
    assert len(text) <= AUDIT_MESSAGE_TEXT_MAX and text.endswith(" teleportChild=networking res=failed")


field_text = st.text(st.characters(codec="utf-8"), max_size=3000) | st.text(max_size=20)
# TELEPORT_ROLES is split on spaces; a role name may hold a comma (Teleport checks only that it is not empty).
role = st.text(st.characters(codec="utf-8", exclude_categories=("Z", "Cc")) | st.just(","), min_size=1, max_size=300)


@settings(max_examples=300, deadline=None)
@given(
    acct=field_text,
    exe=field_text,
    hostname=st.none() | field_text,
    addr=st.none() | field_text,
    terminal=st.none() | field_text,
    user=field_text.filter(bool),
    roles=st.lists(role, max_size=200).map(tuple),
    child=st.sampled_from(["exec", "networking"]),
    success=st.booleans(),
)
def test_property_any_fields_give_one_well_formed_record(
    acct, exe, hostname, addr, terminal, user, roles, child, success
) -> None:
    text = record_text(in_order("teleport:login", acct, exe, hostname, addr, terminal, user, roles, child, success))
    assert len(text.encode()) <= AUDIT_MESSAGE_TEXT_MAX
    assert text.isascii() and text.isprintable()
    pairs = split(text)
    keys = [k for k, _ in pairs]
    values = dict(pairs)
    omitted = int(values.pop("teleportRolesOmitted", 0))
    cut = int(values.pop("teleportUserOmitted", 0))
    assert [k for k in keys if k not in ("teleportRolesOmitted", "teleportUserOmitted")] == KEYS
    assert cut == max(0, len(user.encode("utf-8", "surrogateescape")) - 2048)
    assert values["res"] == ("success" if success else "failed") and values["teleportChild"] == child
    assert user.encode("utf-8", "surrogateescape").startswith(decode_value(values["teleportUser"]))
    kept = split_roles(decode_value(values["teleportRoles"]))
    # Whole roles only: exactly the first len(kept) of them, and the count of the rest.
    assert kept == [r.encode("utf-8", "surrogateescape") for r in roles[: len(kept)]]
    assert omitted == len(roles) - len(kept)


def test_acct_is_cut_to_32_bytes_like_libaudit() -> None:
    values = dict(split(record_text(fields(acct="x" * 40))))
    assert values["acct"] == '"' + "x" * 32 + '"'


def test_unsafe_acct_exe_and_terminal_are_hex() -> None:
    values = dict(split(record_text(fields(acct="a b", exe="/tmp/my teleport", terminal="pts 1"))))
    assert decode_value(values["acct"]) == b"a b"
    assert decode_value(values["exe"]) == b"/tmp/my teleport"
    assert decode_value(values["terminal"]) == b"pts 1"


def _doc_value(values: dict[str, str], name: str) -> str | None:
    return None if values[name] == "?" else decode_value(values[name]).decode("utf-8", "surrogateescape")


def test_records_shown_in_the_docs_are_what_the_module_writes() -> None:
    """Every raw record of ours quoted in README.md and docs/records.md is, byte for byte, what
    record_text writes for its decoded values (README's example once lacked teleportChild=)."""
    root = Path(__file__).resolve().parents[2]
    quoted = [
        m.group(1)
        for doc in (root / "README.md", root / "docs" / "records.md")
        for m in re.finditer(r"msg=audit\(\d+\.\d+:\d+\):.* msg='(op=teleport:[^']*)'", doc.read_text())
    ]
    assert len(quoted) >= 10
    for text in quoted:
        values = dict(part.split("=", 1) for part in text.split(" "))
        value = functools.partial(_doc_value, values)
        rebuilt = fields(
            op=values["op"],
            acct=value("acct"),
            exe=value("exe"),
            hostname=value("hostname"),
            addr=value("addr"),
            terminal=value("terminal"),
            user=value("teleportUser"),
            roles=tuple(r.decode() for r in split_roles(decode_value(values["teleportRoles"]))),
            child=values["teleportChild"],
            success=values["res"] == "success",
        )
        assert record_text(rebuilt) == text
