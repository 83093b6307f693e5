"""A lossless parser of /etc/pam.d service files, read the way libpam reads them.

Every logical line keeps its exact original bytes (continuations, spacing,
comments, CR LF), so render(parse(data)) == data for any bytes at all. The
parsed fields are only for deciding where to edit; nothing is ever re-rendered
from them.

libpam's reading (_pam_assemble_line in pam_handlers.c), as followed here:
only LF ends a physical line (a CR is content); a line holding a '#' ends the
logical line there (also inside brackets, also after a backslash); a line that
is blank or only a comment adds nothing; otherwise a trailing backslash (before
spaces and tabs) continues the logical line on the next physical one. Inside a
continuation, a blank or comment-only line is skipped by libpam 1.5 but ends
the logical line in libpam 1.6+ (pam_line.c): such a line is marked invalid,
as the two versions run different stacks from it; lines longer than its 1024-byte buffer are read in pieces
(marked invalid here). Tokens are separated by space, tab or newline. A line
is `[-]type control module [args...]` or `@include name`;
type, control words and `@include` match case-insensitively (strcasecmp); a control may be
`[value=action ...]`, whose values and actions match case-sensitively (strncmp in libpam's
_pam_parse_control), and an argument `[text with spaces]`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import Enum

TYPES = frozenset({"auth", "account", "session", "password"})
CONTROL_WORDS = frozenset({"required", "requisite", "sufficient", "optional", "include", "substack"})
INCLUDE_WORDS = frozenset({"include", "substack"})
# libpam/pam_handlers.c: the return values a [value=action] control may name.
CONTROL_VALUES = frozenset(
    (
        "success",
        "open_err",
        "symbol_err",
        "service_err",
        "system_err",
        "buf_err",
        "perm_denied",
        "auth_err",
        "cred_insufficient",
        "authinfo_unavail",
        "user_unknown",
        "maxtries",
        "new_authtok_reqd",
        "acct_expired",
        "session_err",
        "cred_unavail",
        "cred_expired",
        "cred_err",
        "no_module_data",
        "conv_err",
        "authtok_err",
        "authtok_recover_err",
        "authtok_lock_busy",
        "authtok_disable_aging",
        "try_again",
        "ignore",
        "abort",
        "authtok_expired",
        "module_unknown",
        "bad_item",
        "conv_again",
        "incomplete",
        "default",
    )
)
CONTROL_ACTIONS = frozenset({"ignore", "ok", "done", "bad", "die", "reset"})
_BLANKS = b" \t\n"
# libpam 1.5 assembles a logical line with fgets() into a 1024-byte buffer: a longer
# physical line is read as several lines, a longer logical line fails the whole file.
LIBPAM_LINE_MAX = 1023
_PHYSICAL = re.compile(rb"[^\n]*\n|[^\n]+")


class Kind(Enum):
    BLANK = "blank"  # nothing but blanks and/or a comment
    RULE = "rule"  # type control module args (control may be include/substack)
    AT_INCLUDE = "@include"  # @include name: all four stacks of another file
    INVALID = "invalid"  # libpam would fail the stack on this line


@dataclass(frozen=True)
class Line:
    raw: bytes  # exact bytes, continuations and line ending included
    number: int  # 1-based physical line number where it starts
    kind: Kind
    type: str | None = None  # lower-case stack name, without the '-'
    dash: bool = False  # '-type': a missing module logs nothing; it still returns PAM_MODULE_UNKNOWN to its control
    control: str | None = None  # control token as written
    actions: dict[str, str] = field(default_factory=dict)  # of a [value=action ...] control
    module: str | None = None  # module path (or included file name)
    args: tuple[str, ...] = ()  # as written, brackets kept
    comment: bytes = b""  # trailing comment bytes of the first physical line, from '#'
    error: str | None = None  # why the line is INVALID

    @property
    def ending(self) -> bytes:
        """The line terminator: CR LF, LF, or nothing at the end of the file."""
        if self.raw.endswith(b"\r\n"):
            return b"\r\n"
        return b"\n" if self.raw.endswith(b"\n") else b""

    @property
    def module_name(self) -> str | None:
        """pam_x for `pam_x.so` or `/lib/security/pam_x.so`."""
        if self.kind is not Kind.RULE or self.is_include or self.module is None:
            return None
        base = os.path.basename(self.module)
        return base[:-3] if base.endswith(".so") else base

    @property
    def is_include(self) -> bool:
        return self.control is not None and self.control.lower() in INCLUDE_WORDS

    @property
    def jump(self) -> int:
        """The longest forward jump of a [value=N] control (0: none)."""
        return max((int(a) for a in self.actions.values() if a.isdigit()), default=0)

    @property
    def text(self) -> str:
        """The first physical line without its ending, for messages."""
        return self.raw.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")


def _cut_comment(content: bytes) -> tuple[bytes, bytes]:
    at = content.find(b"#")
    return (content, b"") if at < 0 else (content[:at], content[at:])


def _tokens(text: bytes) -> list[bytes]:
    """Split on blanks, keeping a token that starts with '[' whole up to its ']' (\\] escapes)."""
    out: list[bytes] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in _BLANKS:
            i += 1
            continue
        start = i
        if text[i : i + 1] == b"[":
            i += 1
            while i < n and text[i : i + 1] != b"]":
                i += 2 if text[i : i + 2] == b"\\]" else 1
            if i >= n:
                raise ValueError("unterminated '['")
            i += 1
            # libpam ends a bracketed token at ']' only; text glued after it is a new token
        else:
            while i < n and text[i] not in _BLANKS:
                i += 1
        out.append(text[start:i])
    return out


def _parse_actions(token: str) -> dict[str, str]:
    """The value=action pairs of a [...] control, matched case-sensitively as libpam does.

    libpam's _pam_parse_control (pam_misc.c) compares values and actions with strncmp, unlike the
    control words (strcasecmp): `[SUCCESS=ok]` is a parse error there, which makes every action `bad`.
    """
    actions: dict[str, str] = {}
    for item in token[1:-1].split():
        value, eq, action = item.partition("=")
        if not eq or value not in CONTROL_VALUES:
            raise ValueError(f"unknown control value {item!r}{_case_hint(value, CONTROL_VALUES)}")
        if action not in CONTROL_ACTIONS and not (action.isdigit() and int(action) > 0):
            raise ValueError(f"unknown control action {item!r}{_case_hint(action, CONTROL_ACTIONS)}")
        actions[value] = action
    if not actions:
        raise ValueError("empty [] control")
    return actions


def _case_hint(word: str, known: frozenset[str]) -> str:
    """A note when word is a known one in another case (libpam: a parse error all the same)."""
    if word not in known and word.lower() in known:
        return f" (libpam matches [value=action] case-sensitively: write {word.lower()!r})"
    return ""


def _classify(raw: bytes, number: int, logical: bytes, comment: bytes) -> Line:
    base = {"raw": raw, "number": number, "comment": comment}
    try:
        tokens = [t.decode("utf-8", "surrogateescape") for t in _tokens(logical)]
    except ValueError as exc:
        return Line(kind=Kind.INVALID, error=str(exc), **base)
    if not tokens:
        return Line(kind=Kind.BLANK, **base)
    if tokens[0].lower() == "@include":
        if len(tokens) != 2:
            return Line(kind=Kind.INVALID, error="@include takes exactly one file name", **base)
        return Line(kind=Kind.AT_INCLUDE, module=tokens[1], **base)
    dash = tokens[0].startswith("-")
    type_ = tokens[0][1:].lower() if dash else tokens[0].lower()
    if type_ not in TYPES:
        if "\r" in tokens[0]:
            return Line(
                kind=Kind.INVALID, error="a CR (CR LF line ending) that libpam reads as part of the line", **base
            )
        return Line(kind=Kind.INVALID, error=f"unknown type {tokens[0]!r}", **base)
    if len(tokens) < 3:
        return Line(kind=Kind.INVALID, error="missing control or module", **base)
    control, actions = tokens[1], {}
    if control.startswith("["):
        try:
            actions = _parse_actions(control)
        except ValueError as exc:
            return Line(kind=Kind.INVALID, error=str(exc), **base)
    elif control.lower() not in CONTROL_WORDS:
        return Line(kind=Kind.INVALID, error=f"unknown control {control!r}", **base)
    return Line(
        kind=Kind.RULE,
        type=type_,
        dash=dash,
        control=control,
        actions=actions,
        module=tokens[2],
        args=tuple(tokens[3:]),
        **base,
    )


def parse(data: bytes) -> list[Line]:
    """Logical lines of a PAM service file; b''.join(line.raw) gives data back.

    Follows libpam's _pam_assemble_line (pam_handlers.c) byte for byte: only LF ends a
    physical line (a CR is content, as libpam reads it); a line holding a '#' ends there,
    whatever comes before it; a line that is blank or only a comment adds nothing; a
    trailing backslash (before spaces and tabs) is replaced by a space and the next
    physical line continues the logical one. A continuation across a blank or
    comment-only line is kept whole (as 1.5 groups it) but INVALID: 1.6+ ends it there.
    """
    lines: list[Line] = []
    physical = _PHYSICAL.findall(data)
    i = 0
    while i < len(physical):
        number, raw, logical = i + 1, b"", b""
        first_comment: bytes | None = None
        continuing = False
        crossed = 0  # physical line number of a blank or comment line inside the continuation
        while True:
            part = physical[i]
            i += 1
            raw += part
            content = part[:-1] if part.endswith(b"\n") else part
            body = content.lstrip(b" \t")
            if not body or body.startswith(b"#"):  # nothing in this line
                if first_comment is None:
                    first_comment = body
                if continuing and i < len(physical):
                    # libpam 1.5 skips it and joins on; 1.6+ ends the logical line here.
                    crossed = crossed or i
                    continue
                if continuing:
                    lines.append(Line(raw=raw, number=number, kind=Kind.INVALID, error="continuation at end of file"))
                else:
                    lines.append(Line(raw=raw, number=number, kind=Kind.BLANK, comment=body))
                break
            before, comment = _cut_comment(content)
            if first_comment is None:
                first_comment = comment
            if comment:
                logical += before
            else:
                stripped = content.rstrip(b" \t")
                if stripped.endswith(b"\\"):
                    logical += stripped[:-1] + b" "
                    continuing = True
                    if i < len(physical):
                        continue
                    lines.append(Line(raw=raw, number=number, kind=Kind.INVALID, error="continuation at end of file"))
                    break
                logical += content
            if crossed:
                lines.append(Line(raw=raw, number=number, kind=Kind.INVALID, error=_crossed(crossed)))
            else:
                lines.append(_classify(raw, number, logical, first_comment))
            break
    return [_within_libpam_limits(x) for x in lines]


def _crossed(number: int) -> str:
    return (
        f"a backslash continuation runs across the blank or comment-only line {number}: libpam 1.5 joins "
        "the lines after it, libpam 1.6 and later end the line there; remove the backslash or that line"
    )


def _within_libpam_limits(line: Line) -> Line:
    """Invalid when libpam reads the bytes otherwise than their text: in pieces, or cut at a NUL."""
    # A continued line is measured whole: conservative, as the buffer holds all its pieces.
    if len(line.raw.rstrip(b"\n")) >= LIBPAM_LINE_MAX:
        error = f"longer than libpam's {LIBPAM_LINE_MAX + 1}-byte line buffer"
    elif b"\x00" in line.raw:
        error = "a NUL byte: libpam's C strings end there"
    else:
        return line
    return Line(raw=line.raw, number=line.number, kind=Kind.INVALID, error=error)


def render(lines: list[Line]) -> bytes:
    return b"".join(line.raw for line in lines)
