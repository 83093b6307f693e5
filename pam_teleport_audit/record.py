"""Record text: libaudit's encoding rules and the field layout of our records.

Pure functions over bytes and str; nothing here touches the system.

    op=teleport:session_open acct="root" exe="/usr/local/bin/teleport"
    hostname=? addr=? terminal=ssh teleportUser=alice teleportRoles=access,editor
    res=success

acct and exe follow libaudit (audit_log_acct_message): double-quoted, or
uppercase hex without quotes when the value holds '"', a byte below 0x21 or
above 0x7e. The other values are written bare when plainly safe, so that
`grep teleportUser=alice` works, and as hex otherwise. A bare value never
looks like hex (such values are hex-encoded too), so decode_value() can
always tell the two apart.
"""

from .constants import ACCT_MAX_BYTES, AUDIT_MESSAGE_TEXT_MAX, EXE_MAX_BYTES
from .struct_type import Struct

UNKNOWN = "?"
_HEX_DIGITS = frozenset("0123456789ABCDEF")
# Bytes a bare value may hold: printable ASCII except the quote characters,
# '=' and the backslash, which log readers treat specially.
_BARE_BYTES = frozenset(range(0x21, 0x7F)) - frozenset(b"\"'=\\")


def looks_like_hex(text: str) -> bool:
    """What libaudit's hex encoding produces: pairs of uppercase hex digits."""
    return bool(text) and len(text) % 2 == 0 and _HEX_DIGITS.issuperset(text)


def needs_encoding(value: bytes) -> bool:
    """libaudit's audit_value_needs_encoding()."""
    return any(b == 0x22 or b < 0x21 or b > 0x7E for b in value)


def hex_value(value: bytes) -> str:
    return value.hex().upper()


def libaudit_value(value: bytes) -> str:
    """acct=/exe= as libaudit writes them: quoted, or hex when unsafe."""
    return hex_value(value) if needs_encoding(value) else '"' + value.decode("ascii") + '"'


def bare_value(value: bytes) -> str:
    """A value written bare when plainly safe, as hex otherwise."""
    if value and value != b"?" and all(b in _BARE_BYTES for b in value):
        text = value.decode("ascii")
        if not looks_like_hex(text):
            return text
    return hex_value(value)


def decode_value(field: str) -> bytes:
    """Inverse of bare_value() and libaudit_value(), for readers of the log."""
    if len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1].encode()
    if looks_like_hex(field):
        return bytes.fromhex(field)
    return field.encode()


def to_bytes(text: str) -> bytes:
    """PAM strings reach Python as str; get their original bytes back."""
    return text.encode("utf-8", "surrogateescape")


def _fit(value: bytes, budget: int) -> str:
    """bare_value() of the longest prefix of value that fits in budget."""
    encoded = bare_value(value)
    if len(encoded) <= budget:
        return encoded
    encoded = bare_value(value[:budget])
    if len(encoded) > budget:  # hex doubles the length
        encoded = bare_value(value[: budget // 2])
    return encoded


class Fields(Struct):
    """What one of our records says, before encoding."""

    __slots__ = ("op", "acct", "exe", "hostname", "addr", "terminal", "teleport_user", "roles", "success")
    _defaults = {"success": True}  # noqa: RUF012
    op: str
    acct: str
    exe: str
    hostname: str | None
    addr: str | None
    terminal: str | None
    teleport_user: str
    roles: tuple[str, ...]
    success: bool


def _optional(value: str | None) -> str:
    return bare_value(to_bytes(value)) if value else UNKNOWN


def record_text(fields: Fields) -> str:
    """The message text, never longer than the kernel accepts.

    When the Teleport user and roles do not fit, roles are cut first, then
    the user name; every other field is always complete.
    """
    head = (
        f"op={fields.op}"
        f" acct={libaudit_value(to_bytes(fields.acct)[:ACCT_MAX_BYTES])}"
        f" exe={libaudit_value(to_bytes(fields.exe)[:EXE_MAX_BYTES])}"
        f" hostname={_optional(fields.hostname)}"
        f" addr={_optional(fields.addr)}"
        f" terminal={_optional(fields.terminal)}"
    )
    tail = " res=success" if fields.success else " res=failed"
    budget = AUDIT_MESSAGE_TEXT_MAX - len(head) - len(tail) - len(" teleportUser= teleportRoles=")
    user = _fit(to_bytes(fields.teleport_user), budget - len(UNKNOWN))
    roles_raw = to_bytes(",".join(fields.roles))
    roles = _fit(roles_raw, budget - len(user)) if roles_raw else UNKNOWN
    return f"{head} teleportUser={user} teleportRoles={roles or UNKNOWN}{tail}"
