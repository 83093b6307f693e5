"""Pure edits of a PAM service file: install, uninstall and status of our stanza.

Bytes in, bytes out (or a Refusal with the reason); the only reads are of the
files the service includes, through the resolver the caller passes (see
pamstack). Lines outside our marked blocks are never changed, so install then
uninstall gives the original bytes back.

Placement (see docs/installer.md):
- account block: FIRST in the account stack, right before the first line that
  adds to it (an `account` line of any control, or an `@include` whose file has
  account lines; an unreadable one counts), above the comment lines glued to it;
- session block: after pam_loginuid, or after an existing pam_tty_audit if
  that comes later (our module must run after pam_tty_audit);
- the result must be provably reachable (pamstack.skippers), and never inside
  the range of a `[value=N]` jump (that would change which lines it skips).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import pamstack
from .pamfile import Kind, Line, parse
from .pamstack import Resolver
from .stanza import ENTRY_SUFFIX, Stanza

PARTS = ("account", "session")
__all__ = ["ENTRY_SUFFIX", "Refusal", "Result", "Status", "install", "status", "uninstall"]


class Refusal(Exception):
    """The file cannot be edited safely; it is left as it was. str() is the reason."""


@dataclass(frozen=True)
class Block:
    part: str
    start: int  # index of the BEGIN line (or of the first line of an orphan run)
    end: int  # index after the END line
    complete: bool  # BEGIN and END both present


@dataclass
class Result:
    data: bytes
    notes: list[str] = field(default_factory=list)


@dataclass
class Status:
    installed: bool  # both blocks present, complete and in a correct place
    account: bool  # account block present
    session: bool  # session block present
    complete: bool  # every present block has BEGIN, END and its module line
    order_ok: bool
    tty_audit: str  # "ours", "existing" or "none"
    problems: list[str] = field(default_factory=list)
    reachable: bool = True  # no line of ours can be skipped (pamstack rules), as far as proven
    skipped_by: list[str] = field(default_factory=list)  # FILE:LINE 'text': why, for each that can skip ours
    unmanaged: list[str] = field(default_factory=list)  # "line N 'text'": our module loaded outside the markers
    unmanaged_parts: list[str] = field(default_factory=list)  # the stacks (account, session) those lines are in
    hand_edited: list[str] = field(default_factory=list)  # lines inside our markers that install never writes

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _marker(line: Line, word: str, part: str) -> bool:
    # Matched on the stable prefix, so a hand-edited marker tail still counts as ours.
    text = line.raw.strip().decode("utf-8", "replace")
    return line.kind is Kind.BLANK and text.startswith(f"# {word} pam_teleport_audit {part}")


def _is_ours(line: Line) -> bool:
    """A module line we write: pam_python with our entry script."""
    return line.module_name == "pam_python" and bool(line.args) and line.args[0].endswith(ENTRY_SUFFIX)


def _is_our_tty(line: Line) -> bool:
    return line.module_name == "pam_tty_audit"


def find_blocks(lines: list[Line]) -> list[Block]:
    """Our blocks: BEGIN..END, or an orphan marker with the lines of ours right after/before it."""
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        part = next((p for p in PARTS if _marker(lines[i], "BEGIN", p)), None)
        if part is None:
            end_part = next((p for p in PARTS if _marker(lines[i], "END", p)), None)
            if end_part is not None:  # END without BEGIN: take it and our lines just above
                start = i
                while start > 0 and (_is_ours(lines[start - 1]) or _is_our_tty(lines[start - 1])):
                    start -= 1
                if blocks and blocks[-1].end > start:
                    start = blocks[-1].end
                blocks.append(Block(end_part, start, i + 1, False))
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not any(_marker(lines[j], w, p) for w in ("BEGIN", "END") for p in PARTS):
            j += 1
        if j < len(lines) and _marker(lines[j], "END", part):
            blocks.append(Block(part, i, j + 1, True))
            i = j + 1
            continue
        # BEGIN without END: take only the lines of ours right after it
        j = i + 1
        while j < len(lines) and (_is_ours(lines[j]) or _is_our_tty(lines[j])):
            j += 1
        blocks.append(Block(part, i, j, False))
        i = j
    return blocks


def stray_lines(lines: list[Line], blocks: list[Block]) -> list[int]:
    """Indices of lines loading our module outside our blocks (a stanza pasted by hand)."""
    inside = {k for b in blocks for k in range(b.start, b.end)}
    return [k for k, x in enumerate(lines) if _is_ours(x) and k not in inside]


def _foreign(lines: list[Line], blocks: list[Block]) -> list[str]:
    """Lines inside our markers that install never writes there, each as a message."""
    found = []
    for b in blocks:
        # Only BEGIN..END blocks can hold other lines; an orphan marker takes only our lines.
        for x in lines[b.start + 1 : b.end - 1] if b.complete else []:
            if not (_is_ours(x) or _is_our_tty(x)):
                found.append(f"the {b.part} block at line {b.start + 1} holds line {x.number} {x.text!r}")
    return found


def unmanaged_fix(path: str) -> str:
    """What to do about lines loading our module outside the markers (status and doctor say the same)."""
    return (
        f"run `pam-teleport-audit uninstall --pam-file {path}` (it removes them) then `pam-teleport-audit install "
        f"--pam-file {path}`; or keep editing them by hand (install refuses the file while they are there)"
    )


HAND_EDITED_FIX = "move each such line out of the markers (above BEGIN or below END) or delete it, then run install"


def _check_foreign(lines: list[Line], blocks: list[Block]) -> None:
    found = _foreign(lines, blocks)
    if found:
        raise Refusal(
            "; ".join(found) + ", which pam-teleport-audit does not write there (edited by hand): rewriting the block "
            f"would delete it; {HAND_EDITED_FIX} (or uninstall) again"
        )


def _without_blocks(lines: list[Line], blocks: list[Block]) -> list[Line]:
    drop = {k for b in blocks for k in range(b.start, b.end)}
    kept = [line for k, line in enumerate(lines) if k not in drop]
    # A block at the very end without a final newline: install gave the line
    # before it a newline, so take that newline away again.
    if kept and len(lines) - 1 in drop and lines[-1].ending == b"":
        last = kept[-1]
        kept[-1] = dataclasses.replace(last, raw=last.raw[: len(last.raw) - len(last.ending)])
    return kept


def _covered(lines: list[Line], at: int, type_: str) -> Line | None:
    """The jumping line whose range would hold a new `type_` line inserted before index `at`.

    A [value=N] jump skips the next N modules of its stack. An include, substack
    or @include between the jump and `at` brings in modules we cannot count
    here, so the range is then taken to reach `at`.
    """
    for k in range(at - 1, -1, -1):
        line = lines[k]
        if line.kind is not Kind.RULE or line.type != type_ or not line.jump:
            continue
        between = lines[k + 1 : at]
        if any(x.kind is Kind.AT_INCLUDE or (x.type == type_ and x.is_include) for x in between):
            return line
        if sum(1 for x in between if x.kind is Kind.RULE and x.type == type_) < line.jump:
            return line
    return None


def _encode(block: list[str], ending: bytes) -> list[bytes]:
    return [text.encode("utf-8", "surrogateescape") + ending for text in block]


def _insert(lines: list[Line], at: int, block: list[bytes]) -> list[Line]:
    """Block lines inserted before index `at`; an unterminated line before them gets an LF."""
    new = [Line(raw=b, number=0, kind=Kind.BLANK) for b in block]
    if at == 0:
        return new + lines
    anchor = lines[at - 1]
    head = lines[:at]
    if anchor.ending == b"":
        ending = block[0][-2:] if block[0].endswith(b"\r\n") else block[0][-1:]
        head[-1] = dataclasses.replace(anchor, raw=anchor.raw + ending)
        last = new[-1]
        new[-1] = dataclasses.replace(last, raw=last.raw[: len(last.raw) - len(ending)])
    return head + new + lines[at:]


def _above_comments(lines: list[Line], at: int) -> int:
    """Index of the first of the comment-only lines right above `at` (they describe that line)."""
    while at > 0 and lines[at - 1].kind is Kind.BLANK and lines[at - 1].comment.strip():
        at -= 1
    return at


def _check_parseable(lines: list[Line]) -> None:
    for line in lines:
        if line.kind is Kind.INVALID:
            raise Refusal(f"line {line.number} cannot be parsed ({line.error}): {line.text!r}")


def _where(lines: list[Line], indices: list[int]) -> str:
    return ", ".join(f"line {lines[k].number} {lines[k].text!r}" for k in indices)


def _stray(lines: list[Line], path: str) -> None:
    found = stray_lines(lines, [])
    if found:
        raise Refusal(
            f"{_where(lines, found)} load{'s' if len(found) == 1 else ''} pam_teleport_audit outside the managed "
            f"markers (a stanza pasted by hand), so install would run the module twice; run `pam-teleport-audit "
            f"uninstall --pam-file {path}`, which removes such lines, then install again"
        )


def _find(lines: list[Line], module: str, type_: str = "session") -> int | None:
    return next((k for k, x in enumerate(lines) if x.type == type_ and x.module_name == module), None)


def _check_stanza(stanza: Stanza) -> None:
    problems = stanza.problems()
    if problems:
        raise Refusal("; ".join(problems))


def _check_blocks(data: bytes, stanza: Stanza) -> None:
    """Each block of ours in data is byte for byte the block the stanza meant."""
    lines = parse(data)
    for block in find_blocks(lines):
        got = b"".join(x.raw for x in lines[block.start : block.end])
        meant = b"".join(_encode(stanza.block(block.part), b"\n"))
        if got not in (meant, meant[:-1]):  # the last line of the file may lack its LF
            raise Refusal(f"the {block.part} block written would not be the one meant: {got!r} != {meant!r}")


def install(
    data: bytes, stanza: Stanza, resolve: Resolver = pamstack.system_resolver, path: str = "this file"
) -> Result:
    """data with our two blocks, in place; any old or broken block of ours is replaced.

    resolve reads the files the service includes (default: from /etc/pam.d, as libpam
    does for a service; pamstack.folder_resolver for a file elsewhere); path names the
    file in messages.
    """
    _check_stanza(stanza)
    lines = parse(data)
    _check_parseable(lines)
    blocks = find_blocks(lines)
    _check_foreign(lines, blocks)
    notes: list[str] = []
    base = _without_blocks(lines, blocks)
    _stray(base, path)

    loginuid = _find(base, "pam_loginuid")
    if loginuid is None:
        raise Refusal("no pam_loginuid in the session stack of this file: the session block must follow it")
    # pam_tty_audit may come from an include (RHEL compliance playbooks put it in password-auth).
    ttys = [
        (k, e) for k, x in enumerate(base) for e in pamstack.brought(path, x, "session", resolve) if _is_our_tty(e.line)
    ]
    existing_tty = ttys[-1][0] if ttys else None
    keystrokes: str | None = None
    for k, entry in ttys:
        where = (
            f"line {entry.line.number}" if entry.path == path else f"{entry.where} (included by line {base[k].number})"
        )
        notes.append(f"keeping the existing pam_tty_audit at {where}: {entry.line.text.strip()!r}; not adding another")
    if existing_tty is not None and stanza.tty_audit is not None:
        if existing_tty < loginuid:
            notes.append("warning: that pam_tty_audit runs before pam_loginuid, so its records lack the session id")
        stanza = dataclasses.replace(stanza, tty_audit=None)
    elif stanza.tty_audit is not None:
        keystrokes = (
            f"pam_tty_audit enable={stanza.tty_audit} records the keystrokes of every login through {path}, "
            "OpenSSH's included; narrow it with --tty-audit PATTERNS or turn it off with --tty-audit off"
        )
    session_at = (loginuid if existing_tty is None else max(loginuid, existing_tty)) + 1

    first = next((k for k, x in enumerate(base) if pamstack.contributes(path, x, "account", resolve)), None)
    if first is None:
        raise Refusal("no account stack in this file to add the account line to")
    account_at = _above_comments(base, first)

    jump = _covered(base, session_at, "session")
    if jump is not None:
        raise Refusal(
            f"the session block would go after line {base[session_at - 1].number}, inside the range of the jump "
            f"at line {jump.number} ({jump.text!r}); inserting there would change what it skips"
        )
    # Always LF, also in a CR LF file: libpam splits tokens on space, tab and LF only, so a CR
    # would become part of our last token ("pam_entry.py\r", "enable=*\r").
    ending = b"\n"
    # Insert the later one first so the earlier index stays valid.
    plan = sorted([("account", account_at), ("session", session_at)], key=lambda p: p[1], reverse=True)
    out = base
    for part, at in plan:
        out = _insert(out, at, _encode(stanza.block(part), ending))
    result = b"".join(x.raw for x in out)
    # Read back what we made the way libpam will: a stanza that does not parse, or a
    # line of ours that a login can skip, must never reach the disk.
    # Name the file's lines by their numbers before the edit (ours are new).
    numbers = {new.number: old.number for new, old in zip(parse(result), out, strict=True)}
    check = _status(result, resolve, path, numbers)
    if not check.installed:
        raise Refusal(f"the edited file would not be correct: {'; '.join(check.problems)}")
    _check_blocks(result, stanza)
    if result != data:
        notes += [f"replacing the {b.part} block at line {b.start + 1}" for b in blocks]
        notes += [keystrokes] if keystrokes else []
    return Result(result, notes)


def uninstall(data: bytes, resolve: Resolver = pamstack.system_resolver, path: str = "this file") -> Result:
    """data without any block of ours, nor any line loading our module outside them.

    Other lines keep every byte. A line of ours pasted by hand is removed only when
    that changes nothing else in the stack: its control can only ok, ignore or bad
    (required, optional), and no jump's range holds it; otherwise the file is refused.
    """
    lines = parse(data)
    blocks = find_blocks(lines)
    _check_foreign(lines, blocks)
    stray = stray_lines(lines, blocks)
    _check_removable(data, lines, stray, resolve, path)
    notes = [f"removing the {b.part} block at line {b.start + 1}" for b in blocks]
    notes += [f"removing {_where(lines, [k])}, which loads pam_teleport_audit outside the markers" for k in stray]
    notes += [
        f"keeping {_where(lines, [k - 1])}: not marked as ours; delete it by hand if it came with the pasted stanza"
        for k in stray
        if k > 0 and _is_our_tty(lines[k - 1]) and k - 1 not in stray
    ]
    rest = [x for k, x in enumerate(lines) if k not in stray]
    return Result(b"".join(x.raw for x in _without_blocks(rest, find_blocks(rest))), notes)


def _check_removable(data: bytes, lines: list[Line], stray: list[int], resolve: Resolver, path: str) -> None:
    """Refuse removing a hand-pasted line of ours whose removal would change what else runs."""
    for k in stray:
        line = lines[k]
        if not pamstack.actions(line) <= {"ok", "ignore", "bad"}:
            raise Refusal(
                f"{_where(lines, [k])} loads pam_teleport_audit outside the markers with control {line.control}, "
                "which can end the stack or jump: removing it would change what else runs; remove it by hand"
            )
        entries = pamstack.expand(path, data, line.type or "", resolve)
        at = pamstack.locate(entries, k)
        for entry in pamstack.jumps_over(entries, at) if at is not None else []:
            raise Refusal(
                f"{_where(lines, [k])} loads pam_teleport_audit outside the markers inside the range of the jump at "
                f"{entry.where} {entry.line.text.strip()!r}: removing it would change what that jump skips; "
                "remove it by hand and adjust the jump"
            )


def _reach(
    data: bytes, lines: list[Line], mine: list[int], resolve: Resolver, path: str, numbers: dict[int, int] | None
) -> list[str]:
    """For each rule line of ours (indices mine), what can make a login skip it (numbers: lines before an edit)."""
    found: list[str] = []
    for part in PARTS:
        ours = [k for k in mine if lines[k].type == part]
        if not ours:
            continue
        entries = pamstack.expand(path, data, part, resolve)
        seen: set[int] = set()
        for k in ours:
            at = pamstack.locate(entries, k)
            for entry, why in pamstack.skippers(entries, at, part) if at is not None else []:
                if id(entry) in seen:
                    continue  # named once, for the first line of ours it stands before
                seen.add(id(entry))
                verdict = "cannot be proven to run" if entry.unknown else "can be skipped"
                where = entry.where
                if numbers is not None and entry.path == path:
                    where = f"{path}:{numbers.get(entry.line.number, entry.line.number)}"
                ours = f"the new {part} line" if numbers is not None else f"the {part} line at {path}:{lines[k].number}"
                found.append(f"{ours} {verdict}: {where} {entry.line.text.strip()!r} {why}")
    return found


def status(data: bytes, resolve: Resolver = pamstack.system_resolver, path: str = "this file") -> Status:
    """Are our blocks present, complete, in order, and run by every login (see pamstack)?"""
    return _status(data, resolve, path, None)


def _status(data: bytes, resolve: Resolver, path: str, numbers: dict[int, int] | None) -> Status:
    lines = parse(data)
    blocks = find_blocks(lines)
    problems = [f"line {x.number} cannot be parsed ({x.error})" for x in lines if x.kind is Kind.INVALID]
    by_part = {p: [b for b in blocks if b.part == p] for p in PARTS}
    for part, found in by_part.items():
        if len(found) > 1:
            problems.append(f"{len(found)} {part} blocks")
        for b in found:
            inner = lines[b.start : b.end]
            if not b.complete:
                problems.append(f"{part} block at line {b.start + 1} lacks a marker")
            if not any(_is_ours(x) and x.type == part for x in inner):
                problems.append(f"{part} block at line {b.start + 1} lacks the module line")
    hand_edited = _foreign(lines, blocks)
    problems += [f"{x}, which pam-teleport-audit does not write there (edited by hand)" for x in hand_edited]
    stray = stray_lines(lines, blocks)
    unmanaged = [_where(lines, [k]) for k in stray]
    if blocks:  # beside our blocks, a pasted line is a second copy of the module
        problems += [f"{x} loads pam_teleport_audit outside the managed markers" for x in unmanaged]
    complete = not problems
    order_ok = True
    tty = "none"
    session = by_part["session"][0] if by_part["session"] else None
    # pam_tty_audit wherever libpam runs it: in this file or in a file it includes.
    stack = pamstack.expand(path, data, "session", resolve)
    if session is not None:
        inner = range(session.start, session.end)
        ours_tty = [k for k in inner if _is_our_tty(lines[k])]
        ttys = [(i, e) for i, e in enumerate(stack) if _is_our_tty(e.line) and e.unknown is None]
        existing = [e for _, e in ttys if e.top not in ours_tty]
        module = [i for i, e in enumerate(stack) if e.top in inner and _is_ours(e.line)]
        loginuid = _find(lines, "pam_loginuid")
        tty = "ours" if ours_tty else ("existing" if existing else "none")
        after = [e for i, e in ttys if any(i > m for m in module)]
        checks = [
            (loginuid is None or loginuid < session.start, "the session block comes before pam_loginuid"),
            (loginuid is not None, "no pam_loginuid in the session stack"),
            *[(False, f"our module runs before the pam_tty_audit at {e.where} {e.line.text.strip()!r}") for e in after],
        ]
        for ok, problem in checks:
            if not ok:
                order_ok = False
                problems.append(problem)
    mine = [k for b in blocks for k in range(b.start, b.end)] + stray
    skipped_by = _reach(data, lines, mine, resolve, path, numbers)
    problems += skipped_by
    present = {p: bool(by_part[p]) for p in PARTS}
    for part in PARTS:
        if not present[part] and not (unmanaged and not blocks):
            problems.append(f"no {part} block")
    return Status(
        installed=all(present.values()) and complete and order_ok and not skipped_by and not unmanaged,
        account=present["account"],
        session=present["session"],
        complete=complete,
        order_ok=order_ok,
        tty_audit=tty,
        problems=problems,
        reachable=not skipped_by,
        skipped_by=skipped_by,
        unmanaged=unmanaged,
        unmanaged_parts=sorted({lines[k].type or "" for k in stray}),
        hand_edited=hand_edited,
    )
