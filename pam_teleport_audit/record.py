"""Record text: libaudit's encoding rules and the field layout of our records.

Pure functions over bytes and str; nothing here touches the system.

    op=teleport:session_open acct="root" exe="/usr/local/bin/teleport"
    hostname=? addr=? terminal=ssh teleportUser=alice teleportRoles=access,editor
    teleportChild=exec res=success

acct and exe follow libaudit (audit_log_acct_message): double-quoted, or
uppercase hex without quotes when the value holds '"', a byte below 0x21 or
above 0x7e. The other values are written bare when plainly safe, so that
`grep teleportUser=alice` works, and as hex otherwise. A bare value never
looks like hex (such values are hex-encoded too), so decode_value() can
always tell the two apart.
"""

from .constants import (
    ACCT_MAX_BYTES,
    ADDR_MAX_BYTES,
    AUDIT_MESSAGE_TEXT_MAX,
    CHILD_EXEC,
    EXE_MAX_BYTES,
    HOSTNAME_MAX_BYTES,
    TELEPORT_USER_MAX_BYTES,
    TERMINAL_MAX_BYTES,
)
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


class Fields(Struct):
    """What one of our records says, before encoding."""

    __slots__ = ("op", "acct", "exe", "hostname", "addr", "terminal", "teleport_user", "roles", "child", "success")
    _defaults = {"child": CHILD_EXEC, "success": True}  # noqa: RUF012
    op: str
    acct: str
    exe: str
    hostname: str | None
    addr: str | None
    terminal: str | None
    teleport_user: str
    roles: tuple[str, ...]
    child: str  # teleportChild=: exec, or networking for Teleport's forwarding child
    success: bool


def _capped(value: str | None, cap: int) -> str:
    """bare_value() of at most cap bytes of value; "?" when unset."""
    return bare_value(to_bytes(value)[:cap]) if value else UNKNOWN


def _roles(roles: tuple[str, ...], budget: int) -> tuple[str, int]:
    """The encoded roles that fit in budget, cut only between roles, and how many were left out.

    A role cut mid-name would read as another, valid-looking role.
    """

    def encoded(count: int) -> str:
        return bare_value(to_bytes(",".join(roles[:count]))) if count else UNKNOWN

    if len(encoded(len(roles))) <= budget:
        return encoded(len(roles)), 0
    low, high = 0, len(roles)  # encoded(low) fits ("?" always does), encoded(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        if len(encoded(middle)) <= budget:
            low = middle
        else:
            high = middle
    return encoded(low), len(roles) - low


def record_text(fields: Fields) -> str:
    """The message text, never longer than the kernel accepts (AUDIT_MESSAGE_TEXT_MAX).

    Every field but the roles has a cap (constants.py) that keeps it from
    crowding out the rest; the roles get what is left, cut between roles, and
    teleportRolesOmitted=N then says how many are missing. res= is always last
    and always whole.
    """
    head = (
        f"op={fields.op}"
        f" acct={libaudit_value(to_bytes(fields.acct)[:ACCT_MAX_BYTES])}"
        f" exe={libaudit_value(to_bytes(fields.exe)[:EXE_MAX_BYTES])}"
        f" hostname={_capped(fields.hostname, HOSTNAME_MAX_BYTES)}"
        f" addr={_capped(fields.addr, ADDR_MAX_BYTES)}"
        f" terminal={_capped(fields.terminal, TERMINAL_MAX_BYTES)}"
        f" teleportUser={_capped(fields.teleport_user, TELEPORT_USER_MAX_BYTES)}"
    )
    tail = f" teleportChild={bare_value(fields.child.encode())} res={'success' if fields.success else 'failed'}"
    omitted_room = len(f" teleportRolesOmitted={len(fields.roles)}")
    budget = AUDIT_MESSAGE_TEXT_MAX - len(head) - len(" teleportRoles=") - len(tail)
    roles, omitted = _roles(fields.roles, budget)
    if omitted:
        roles, omitted = _roles(fields.roles, budget - omitted_room)
        roles += f" teleportRolesOmitted={omitted}"
    return f"{head} teleportRoles={roles}{tail}"
