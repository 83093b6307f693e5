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
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from . import pamstack
from .pamfile import Kind, Line, parse
from .pamstack import Resolver
from .stanza import ENTRY_SUFFIX, Stanza, is_comment

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
    unmanaged_files: list[str] = field(default_factory=list)  # the files those lines are in (this one or included)
    hand_edited: list[str] = field(default_factory=list)  # lines inside our markers that install never writes
    # What libpam loads for the lines of ours, here or included (status checks that they load: see loadable).
    modules: list[str] = field(default_factory=list)  # their module tokens, as written (pam_python.so)
    scripts: list[str] = field(default_factory=list)  # the entry scripts they name
    # FILE:LINE 'text' of each session line libpam can reach after pam_loginuid whose die (requisite,
    # [...=die]) ends the stack before our session line: a refusal there leaves no res=failed of ours.
    refused_before: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _marker(line: Line, word: str, part: str) -> bool:
    # Matched on the stable prefix, so a hand-edited marker tail still counts as ours.
    text = line.raw.strip().decode("utf-8", "replace")
    return line.kind is Kind.BLANK and text.startswith(f"# {word} pam_teleport_audit {part}")


def is_ours(line: Line) -> bool:
    """A line loading our module: pam_python with our entry script.

    A CR pasted from a CR LF file is part of the token for libpam (pam_python then cannot
    open `pam_entry.py\r`), but the line is still ours: the package's prerm counts it.
    """
    return line.module_name == "pam_python" and bool(line.args) and line.args[0].rstrip("\r").endswith(ENTRY_SUFFIX)


def is_tty_audit(line: Line) -> bool:
    return line.module_name == "pam_tty_audit"


def find_blocks(lines: list[Line]) -> list[Block]:
    """Our blocks: BEGIN..END, or an orphan marker with the lines of ours right after/before it."""
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        part = next((p for p in PARTS if _marker(lines[i], "BEGIN", p)), None)
        if part is None:
            end_part = next((p for p in PARTS if _marker(lines[i], "END", p)), None)
            if end_part is not None:  # END without BEGIN: take it and our module lines just above
                # Not a pam_tty_audit: nothing tells ours from the operator's once BEGIN is gone.
                start = i
                while start > 0 and is_ours(lines[start - 1]):
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
        while j < len(lines) and (is_ours(lines[j]) or is_tty_audit(lines[j])):
            j += 1
        blocks.append(Block(part, i, j, False))
        i = j
    return blocks


def _names_ours(line: Line) -> bool:
    """An unparseable line naming our entry script outside a comment (e.g. inside a crossed
    continuation): libpam 1.6+ may load it; the package's prerm counts it, so status must too."""
    return line.kind is Kind.INVALID and any(
        ENTRY_SUFFIX.encode() in physical.split(b"#", 1)[0] for physical in line.raw.split(b"\n")
    )


def stray_lines(lines: list[Line], blocks: list[Block]) -> list[int]:
    """Indices of lines loading our module outside our blocks (a stanza pasted by hand)."""
    inside = {k for b in blocks for k in range(b.start, b.end)}
    return [k for k, x in enumerate(lines) if (is_ours(x) or _names_ours(x)) and k not in inside]


def _foreign(lines: list[Line], blocks: list[Block]) -> list[str]:
    """Lines inside our markers that install never writes there, each as a message."""
    found = []
    for b in blocks:
        # Only BEGIN..END blocks can hold other lines; an orphan marker takes only our lines.
        for x in lines[b.start + 1 : b.end - 1] if b.complete else []:
            if not (is_ours(x) or is_tty_audit(x)):
                found.append(f"the {b.part} block at line {b.start + 1} holds line {x.number} {x.text!r}")
    return found


def editable(path: str) -> str:
    """The file to edit for path: a vendor file's copy in /etc/pam.d, which libpam reads first."""
    if pamstack.vendor_problem(path) is None:
        return path
    return os.path.join(pamstack.PAM_DIRS[0], os.path.basename(path))


def removal(path: str) -> str:
    """The command that removes our lines from path (a vendor file, which uninstall refuses: from a copy).

    Behind a symbolic link (authselect's password-auth -> /etc/authselect/password-auth, pam-config's
    common-session -> common-session-pc), the file it points to: libpam reads that file's bytes, and
    uninstall refuses to replace a link."""
    if os.path.islink(path) and os.path.exists(path):
        path = os.path.realpath(path)
    etc = editable(path)
    copy = "" if etc == path else f"{pamstack.copy_command(path, etc)} then "
    return f"{copy}`pam-teleport-audit uninstall --pam-file {etc}`"


def unmanaged_fix(path: str, files: list[str] | None = None) -> str:
    """What to do about lines loading our module outside the markers (status and doctor say the same).

    files: those holding such lines (default: path itself); an included one is fixed there.
    """
    first = " and ".join(removal(f) for f in (files or [path]))
    return (
        f"run {first} (it removes them) then `pam-teleport-audit install --pam-file {editable(path)}`; or keep "
        "editing them by hand (install refuses the file while they are there)"
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
    """Index of the first of the comment-only lines right above `at` (they describe that line).

    Not above a first line `#%PAM-1.0`: that header describes the file, and stays its first line.
    """
    while at > 0 and lines[at - 1].kind is Kind.BLANK and lines[at - 1].comment.strip():
        if at == 1 and lines[0].raw.startswith(b"#%PAM"):
            break
        at -= 1
    return at


def _check_parseable(lines: list[Line]) -> None:
    for line in lines:
        if line.kind is Kind.INVALID:
            raise Refusal(f"line {line.number} cannot be parsed ({line.error}): {line.text!r}")


def loads(count: int) -> str:
    """The verb for count lines that load our module."""
    return "loads" if count == 1 else "load"


def _where(lines: list[Line], indices: list[int]) -> str:
    return ", ".join(f"line {lines[k].number} {lines[k].text!r}" for k in indices)


def _stray(lines: list[Line], path: str) -> None:
    found = stray_lines(lines, [])
    if found:
        raise Refusal(
            f"{_where(lines, found)} {loads(len(found))} pam_teleport_audit outside the managed "
            f"markers (a stanza pasted by hand), so install would run the module twice; run `pam-teleport-audit "
            f"uninstall --pam-file {path}`, which removes such lines, then install again"
        )


def _find(lines: list[Line], module: str, type_: str = "session") -> int | None:
    return next((k for k, x in enumerate(lines) if x.type == type_ and x.module_name == module), None)


def _is_loginuid(line: Line) -> bool:
    return line.module_name == "pam_loginuid"


def _brought_by(
    lines: list[Line], path: str, resolve: Resolver, wanted: Callable[[Line], bool]
) -> list[tuple[int, pamstack.Entry]]:
    """(index of the line of this file, entry) for each session entry that wanted() picks, includes followed."""
    return [
        (k, e)
        for k, x in enumerate(lines)
        for e in pamstack.brought(path, x, "session", resolve)
        if e.unknown is None and wanted(e.line)
    ]


def _no_loginuid(lines: list[Line]) -> str:
    """Why install refuses a file without pam_loginuid in its session stack (a CR LF file says so)."""
    why = "no pam_loginuid in the session stack of this file, includes followed: the session block must follow it"
    crlf = [x for x in lines if x.kind is Kind.RULE and x.ending == b"\r\n"]
    if crlf:
        # libpam ends lines at LF only: `pam_loginuid.so\r` names no module, so it is not pam_loginuid.
        why += (
            f"; its lines end in CR LF (line {crlf[0].number} {crlf[0].text!r}), and libpam reads the CR as part "
            "of each line's last word (`pam_loginuid.so\\r` is no module it can load): convert the file to LF "
            "endings (e.g. `dos2unix`), then run install again"
        )
    return why


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
    _check_included(data, resolve, path, "install")

    loginuid = _find(base, "pam_loginuid")
    if loginuid is None:
        # Arch and Gentoo: pam_loginuid is in system-login, which sshd's `session include
        # system-remote-login` brings in: the block goes after that line (the checks below decide).
        loginuid = next((k for k, _ in _brought_by(base, path, resolve, _is_loginuid)), None)
    if loginuid is None:
        raise Refusal(_no_loginuid(base))
    # pam_tty_audit may come from an include (RHEL compliance playbooks put it in password-auth).
    ttys = _brought_by(base, path, resolve, is_tty_audit)
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
        # Only the default pattern takes everyone: name the users a narrowed one takes, not "every login".
        whose = "every login" if stanza.tty_audit == "*" else f"every login of a user matching {stanza.tty_audit}"
        keystrokes = (
            f"pam_tty_audit enable={stanza.tty_audit} records the keystrokes of {whose} through {path}, "
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
    (required, optional), no jump's range holds it, and the file parses; otherwise the
    file is refused. A line of ours in an included file is refused too: it is not this
    file's to edit, and the module would go on running for this service.
    """
    lines = parse(data)
    blocks = find_blocks(lines)
    _check_foreign(lines, blocks)
    _check_included(data, resolve, path, "uninstall")
    stray = stray_lines(lines, blocks)
    _check_removable(data, lines, stray, resolve, path)
    comments = _stanza_comments(lines, stray)
    notes = [f"removing the {b.part} block at line {b.start + 1}" for b in blocks]
    notes += [f"removing {_where(lines, [k])}, which loads pam_teleport_audit outside the markers" for k in stray]
    notes += [f"removing {_where(lines, [k])}, a comment `pam-teleport-audit stanza` prints" for k in comments]
    gone = set(stray) | {k for b in blocks for k in range(b.start, b.end)}
    # A pam_tty_audit right above a removed line of ours that is not inside our markers may be the
    # operator's (a lost BEGIN, a pasted stanza): kept, and said.
    notes += [
        f"keeping {_where(lines, [k - 1])}: not marked as ours; delete it by hand if it came with our lines"
        + (" (with the comment lines `stanza` prints above it)" if _stanza_comments(lines, [k - 1]) else "")
        for k in sorted(gone)
        if is_ours(lines[k]) and k > 0 and is_tty_audit(lines[k - 1]) and k - 1 not in gone
    ]
    rest = [x for k, x in enumerate(lines) if k not in stray and k not in comments]
    return Result(b"".join(x.raw for x in _without_blocks(rest, find_blocks(rest))), notes)


def _stanza_comments(lines: list[Line], stray: list[int]) -> list[int]:
    """The comment lines `stanza` prints, right above a pasted line of ours (they describe nothing once it
    is gone). Not those above a pam_tty_audit, which is kept: they still describe it."""
    found: set[int] = set()
    for k in stray:
        j = k - 1
        while j >= 0 and j not in stray and lines[j].kind is Kind.BLANK and is_comment(lines[j].text):
            found.add(j)
            j -= 1
    return sorted(found)


def _stacks(data: bytes, resolve: Resolver, path: str) -> dict[str, list[pamstack.Entry]]:
    return {part: pamstack.expand(path, data, part, resolve) for part in PARTS}


def included_lines(stacks: dict[str, list[pamstack.Entry]]) -> list[pamstack.Entry]:
    """Lines of the files this one includes (include, substack, @include) that load our module."""
    return [
        e for entries in stacks.values() for e in entries if e.top is None and e.unknown is None and is_ours(e.line)
    ]


def _cr_problem(lines: list[Line], k: int) -> str:
    """A line of ours whose script path ends in a CR: libpam passes the CR on, so nothing is loaded."""
    return (
        f"{_where(lines, [k])}: its script path ends in a CR (pasted from a CR LF file), which libpam passes on to "
        f"pam_python: it cannot open the script, so the module never runs, and with control {lines[k].control} "
        "that failure is the line's result at every login"
    )


def _entry_where(entry: pamstack.Entry) -> str:
    return f"{entry.where} {entry.line.text!r}"


def _check_included(data: bytes, resolve: Resolver, path: str, command: str) -> None:
    found = included_lines(_stacks(data, resolve, path))
    if not found:
        return
    files = sorted({e.path for e in found})
    doing = (
        "install would run the module twice"
        if command == "install"
        else f"uninstall edits only {path}, so the module would go on running for this service"
    )
    raise Refusal(
        f"{', '.join(_entry_where(e) for e in found)}, in a file this one includes, load"
        f"{'s' if len(found) == 1 else ''} pam_teleport_audit for this service (and for every other service "
        f"that includes it): {doing}; remove them there first ("
        + " and ".join(removal(f) for f in files)
        + f" edits only that file), then run {command} again"
    )


def _check_removable(data: bytes, lines: list[Line], stray: list[int], resolve: Resolver, path: str) -> None:
    """Refuse removing a hand-pasted line of ours whose removal would change what else runs."""
    invalid = [x for x in lines if x.kind is Kind.INVALID]
    if stray and invalid:
        # libpam may read that line as a jump or an end over ours: what removing ours changes is unknown.
        raise Refusal(
            f"{_where(lines, stray)} {loads(len(stray))} pam_teleport_audit outside the markers, and line "
            f"{invalid[0].number} "
            f"cannot be parsed ({invalid[0].error}): what removing them changes cannot be told; fix that line first"
        )
    for k in stray:
        line = lines[k]
        if not pamstack.actions(line) <= {"ok", "ignore", "bad"}:
            raise Refusal(
                f"{_where(lines, [k])} loads pam_teleport_audit outside the markers with control {line.control}, "
                "which can end the stack or jump: removing it would change what else runs; remove it by hand"
            )
        entries = pamstack.expand(path, data, line.type or "", resolve)
        at = pamstack.locate(entries, k)
        # An included line libpam may read as a jump or an end over ours (an unreadable include
        # fails the whole stack anyway: removing ours changes nothing there).
        unparsed = [e for e in entries[:at] if e.line.kind is Kind.INVALID] if at is not None else []
        for entry in unparsed[:1]:
            raise Refusal(
                f"{_where(lines, [k])} loads pam_teleport_audit outside the markers after {entry.where} "
                f"{entry.line.text.strip()!r}, which {entry.unknown}: what removing it changes cannot be told; "
                "fix that first"
            )
        for entry in pamstack.jumps_over(entries, at) if at is not None else []:
            raise Refusal(
                f"{_where(lines, [k])} loads pam_teleport_audit outside the markers inside the range of the jump at "
                f"{entry.where} {entry.line.text.strip()!r}: removing it would change what that jump skips; "
                "remove it by hand and adjust the jump"
            )


def _reach(
    stacks: dict[str, list[pamstack.Entry]],
    mine: set[int],
    path: str,
    numbers: dict[int, int] | None,
) -> list[str]:
    """For each line of ours (this file's indices mine, or an included line loading our module), what can
    make a login skip it (numbers: this file's line numbers before an edit)."""
    found: list[str] = []
    for part, entries in stacks.items():
        seen: set[int] = set()
        for at, target in enumerate(entries):
            if target.unknown is not None or not (target.top in mine or (target.top is None and is_ours(target.line))):
                continue
            for entry, why in pamstack.skippers(entries, at, part):
                if id(entry) in seen:
                    continue  # named once, for the first line of ours it stands before
                seen.add(id(entry))
                verdict = "cannot be proven to run" if entry.unknown else "can be skipped"
                where = entry.where
                if numbers is not None and entry.path == path:
                    where = f"{path}:{numbers.get(entry.line.number, entry.line.number)}"
                ours = f"the new {part} line" if numbers is not None else f"the {part} line at {target.where}"
                found.append(f"{ours} {verdict}: {where} {entry.line.text.strip()!r} {why}")
    return found


def status(data: bytes, resolve: Resolver = pamstack.system_resolver, path: str = "this file") -> Status:
    """Are our blocks present, complete, in order, and run by every login (see pamstack)?"""
    return _status(data, resolve, path, None)


def _order(lines: list[Line], stack: list[pamstack.Entry], session: Block | None) -> tuple[str, list[str]]:
    """tty_audit ("ours", "existing", "none") and what is out of order in the session stack.

    The same checks for every line of ours that libpam runs, marked, pasted or included:
    after pam_loginuid (the session id) and after any pam_tty_audit.
    """
    inner = range(session.start, session.end) if session is not None else range(0)
    ours_tty = [k for k in inner if is_tty_audit(lines[k])]
    ttys = [(i, e) for i, e in enumerate(stack) if is_tty_audit(e.line) and e.unknown is None]
    existing = [e for _, e in ttys if e.top not in ours_tty]
    module = [i for i, e in enumerate(stack) if e.unknown is None and is_ours(e.line)]
    if session is None and not module:
        return "none", []
    tty = "ours" if ours_tty else ("existing" if existing else "none")
    problems: list[str] = []
    loginuid = _find(lines, "pam_loginuid")
    if session is not None and loginuid is not None and loginuid > session.start:
        problems.append("the session block comes before pam_loginuid")
    first_loginuid = next(
        (i for i, e in enumerate(stack) if e.unknown is None and e.line.module_name == "pam_loginuid"), None
    )
    if first_loginuid is None:
        problems.append("no pam_loginuid in the session stack")
    else:
        problems += [
            f"our module at {_entry_where(stack[i])} runs before pam_loginuid"
            for i in module
            if i < first_loginuid and stack[i].top not in inner
        ]
    problems += [
        f"our module runs before the pam_tty_audit at {e.where} {e.line.text.strip()!r}"
        for i, e in ttys
        if any(i > m for m in module)
    ]
    return tty, problems


def refused_before(stack: list[pamstack.Entry]) -> list[str]:
    """FILE:LINE 'text' of each session line that can refuse the session after the first pam_loginuid and
    before the first line of ours after it (pamstack.refusers); none when either is missing."""
    found = [i for i, e in enumerate(stack) if e.unknown is None and e.line.module_name == "pam_loginuid"]
    start = found[0] if found else None
    at = next((i for i, e in enumerate(stack) if start is not None and i > start and is_ours(e.line)), None)
    if start is None or at is None or stack[at].unknown is not None:
        return []
    return [f"{e.where} {e.line.text.strip()!r}" for e in pamstack.refusers(stack, start, at)]


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
            if not any(is_ours(x) and x.type == part for x in inner):
                problems.append(f"{part} block at line {b.start + 1} lacks the module line")
    hand_edited = _foreign(lines, blocks)
    problems += [f"{x}, which pam-teleport-audit does not write there (edited by hand)" for x in hand_edited]
    stray = stray_lines(lines, blocks)
    stacks = _stacks(data, resolve, path)
    included = included_lines(stacks)
    unmanaged = [_where(lines, [k]) for k in stray] + [_entry_where(e) for e in included]
    parts = sorted({x.type for x in [*(lines[k] for k in stray), *(e.line for e in included)] if x.type})
    problems += [_cr_problem(lines, k) for k, x in enumerate(lines) if is_ours(x) and x.args[0].endswith("\r")]
    if blocks:  # beside our blocks, a pasted line is a second copy of the module
        problems += [f"{x} loads pam_teleport_audit outside the managed markers" for x in unmanaged]
    elif parts:  # pasted lines alone: both stacks, as for our blocks
        problems += [
            f"no {p} line loads pam_teleport_audit (the pasted lines are {parts[0]} only)"
            for p in PARTS
            if p not in parts
        ]
    session = by_part["session"][0] if by_part["session"] else None
    tty, order = _order(lines, stacks["session"], session)
    complete = not problems
    problems += order
    mine = {k for b in blocks for k in range(b.start, b.end)} | set(stray)
    skipped_by = _reach(stacks, mine, path, numbers)
    problems += skipped_by
    present = {p: bool(by_part[p]) for p in PARTS}
    loaded = [x for x in lines if is_ours(x)] + [e.line for e in included]
    for part in PARTS:
        if not present[part] and not (unmanaged and not blocks):
            problems.append(f"no {part} block")
    return Status(
        installed=all(present.values()) and complete and not order and not skipped_by and not unmanaged,
        account=present["account"],
        session=present["session"],
        complete=complete,
        order_ok=not order,
        tty_audit=tty,
        problems=problems,
        reachable=not skipped_by,
        skipped_by=skipped_by,
        unmanaged=unmanaged,
        unmanaged_parts=parts,
        unmanaged_files=sorted({path} if stray else set()) + sorted({e.path for e in included} - {path}),
        hand_edited=hand_edited,
        modules=list(dict.fromkeys(x.module or "" for x in loaded)),
        scripts=list(dict.fromkeys(x.args[0] for x in loaded if not x.args[0].endswith("\r"))),  # CR: a problem
        refused_before=refused_before(stacks["session"]),
    )


def unmanaged_summary(path: str, state: Status) -> str:
    """status's and doctor's words for a file where only lines outside our markers load the module."""
    return (
        f"{path}: present but not managed: {', '.join(state.unmanaged)} {loads(len(state.unmanaged))} "
        "pam_teleport_audit outside the "
        "managed markers" + "".join(f"; {x}" for x in state.problems)
    )
