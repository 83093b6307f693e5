"""A service's stacks as libpam builds them, and which lines a login always reaches.

Expansion follows Linux-PAM's _pam_parse_conf_file (pam_handlers.c) and Debian's
`@include`: `include` splices the named file's lines of the same type into the
stack (so its sufficient/requisite/done/die end the WHOLE stack, and its jumps
count on past its end); `substack` adds one unit whose inner done/die end only
the substack and whose jumps cannot leave it; `@include` splices every type.
Names are resolved relative to the service file's folder (libpam: /etc/pam.d,
then /usr/lib/pam.d). Jumps count units at their own level (_pam_dispatch_aux:
a substack is one unit).

Reachability (docs/installer.md):
- an account line must run on EVERY pam_acct_mgmt: no entry before it may end
  the stack (sufficient, requisite, any `done` or `die`) or jump over it;
- a session line must run on every SUCCESSFUL open/close: no entry before it
  may end the stack with success (sufficient, any `done`) or jump over it
  (requisite/die before it refuse the session: the module writes at pam_end what it knows,
  `teleport:login` failed before pam_loginuid, `teleport:accounting` after it, beside libpam's
  failed session_open, which search reads; docs/records.md).
Anything the expansion cannot read or parse before the line makes it unprovable.

A `die` that libpam can reach after pam_loginuid and that ends the session stack before our line
loses the refusal from our records (refusers(): doctor warns).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from .pamfile import Kind, Line, parse
from .stanza import ENTRY_SUFFIX

# libpam's PAM_SUBSTACK_MAX_LEVEL caps include and substack depth.
MAX_DEPTH = 16
# Where libpam looks for a service or an included name, in order (_pam_open_config_file): the
# administrator's folder, then the vendor folders packages own (openSUSE, SLE 16, MicroOS ship
# /usr/lib/pam.d/sshd and no /etc/pam.d/sshd; older SUSE used /usr/etc/pam.d).
PAM_DIRS = ("/etc/pam.d", "/usr/lib/pam.d", "/usr/etc/pam.d")
VENDOR_DIRS = PAM_DIRS[1:]
# Every action each control word can take (pam_handlers.c).
_WORD_ACTIONS = {
    "required": frozenset({"ok", "ignore", "bad"}),
    "requisite": frozenset({"ok", "ignore", "die"}),
    "optional": frozenset({"ok", "ignore"}),
    "sufficient": frozenset({"done", "ignore"}),
}

# name -> (path shown in messages, bytes), or None when it cannot be read.
Resolver = Callable[[str], "tuple[str, bytes] | None"]


def no_includes(_name: str) -> tuple[str, bytes] | None:
    """A resolver that reads nothing: every include is unknown (and so unprovable)."""
    return None


def folder_resolver(service_path: str) -> Resolver:
    """Names resolved as libpam resolves them for a service file in this folder.

    An absolute name is read as is; a relative one, for a file in one of libpam's
    folders, from each of PAM_DIRS in order, else from the file's own folder.
    """
    folder = os.path.dirname(os.path.abspath(service_path))
    dirs = PAM_DIRS if folder in PAM_DIRS else (folder,)

    def resolve(name: str) -> tuple[str, bytes] | None:
        candidates = [name] if name.startswith("/") else [os.path.join(d, name) for d in dirs]
        for path in candidates:
            try:
                with open(path, "rb") as f:
                    return path, f.read()
            except OSError:
                continue
        return None

    return resolve


def vendor_copy(path: str) -> str | None:
    """The vendor file libpam reads for the service of a missing /etc/pam.d/NAME, if there is one.

    A symbolic link to nothing is missing too: libpam tries fopen() in each folder in turn.
    """
    folder, name = os.path.split(os.path.abspath(path))
    if folder != PAM_DIRS[0] or os.path.exists(path):
        return None
    return next((c for c in (os.path.join(d, name) for d in VENDOR_DIRS) if os.path.isfile(c)), None)


def copy_command(vendor: str, path: str) -> str:
    """`cp -p VENDOR PATH`, over a symbolic link at PATH (cp will not write through a dangling one)."""
    over = " --remove-destination" if os.path.islink(path) else ""
    return f"`cp -p{over} {vendor} {path}`"


def missing_reason(path: str) -> str:
    """Why a PAM file is not there (no file, or a symbolic link to nothing), and, when libpam reads a vendor
    copy instead, the fix."""
    vendor = vendor_copy(path)
    what = f"{path} does not exist"
    if os.path.islink(path):
        what = f"{path} is a symbolic link to {os.readlink(path)!r}, which does not exist"
        if vendor is None:
            return f"{what} (libpam reads it as missing)"
    if vendor is None:
        return what
    return (
        f"{what}: libpam uses the vendor file {vendor} for this service, which its package owns "
        f"and overwrites on update; copy it first ({copy_command(vendor, path)}), then run again on {path}"
    )


def vendor_problem(path: str) -> str | None:
    """Why path must not be edited: a file in a vendor folder (None: it may be)."""
    folder = os.path.dirname(os.path.realpath(path))
    if folder not in VENDOR_DIRS:
        return None
    name = os.path.basename(path)
    return (
        f"{path} is in {folder}, which its package owns and overwrites on update (the edit would be lost "
        f"silently); copy it to {PAM_DIRS[0]} ({copy_command(path, os.path.join(PAM_DIRS[0], name))}), which libpam "
        f"reads first, and edit that"
    )


DPKG_OLD = ".dpkg-old"


def dpkg_replaced(path: str) -> str | None:
    """PATH.dpkg-old when it loads the module (None otherwise): dpkg put a package's new version of
    the conffile PATH in place of the file that held the stanza (an upgrade with --force-confnew, or
    "install the package maintainer's version" at its prompt) and kept the old one there."""
    old = path + DPKG_OLD
    try:
        if not stat.S_ISREG(os.stat(old).st_mode):  # never open a FIFO
            return None
        with open(old, "rb") as f:
            data = f.read()
    except OSError:
        return None
    ours = any(
        line.module_name == "pam_python" and line.args and line.args[0].rstrip("\r").endswith(ENTRY_SUFFIX)
        for line in parse(data)
    )
    return old if ours else None


def dpkg_replaced_reason(path: str, old: str) -> str:
    """What happened to a file dpkg_replaced() found."""
    return (
        f"a package upgrade replaced {path} with the package's new version (dpkg --force-confnew, or the "
        f"maintainer's version chosen at its prompt); the file with the stanza is now {old}"
    )


def dpkg_replaced_fix(path: str, old: str) -> str:
    return (
        f"run `pam-teleport-audit install --pam-file {path}` with the options of the lines in {old} "
        f"(--fail-closed, --tty-audit, --option), carry over any other local edit from {old}, then remove {old} "
        "(the package's removal counts its lines)"
    )


def system_resolver(name: str) -> tuple[str, bytes] | None:
    """Names resolved as libpam resolves them for a service: /etc/pam.d, then /usr/lib/pam.d."""
    return folder_resolver(os.path.join(PAM_DIRS[0], "service"))(name)


def dict_resolver(files: dict[str, bytes], folder: str = "") -> Resolver:
    """For tests: names looked up in a dict."""

    def resolve(name: str) -> tuple[str, bytes] | None:
        data = files.get(name)
        return None if data is None else (os.path.join(folder, name) if folder else name, data)

    return resolve


@dataclass(frozen=True)
class Entry:
    """One handler of an expanded stack."""

    path: str  # file the line is in
    line: Line
    level: int  # substack depth: 0 is the service's own level
    top: int | None = None  # index of the line in the service file itself (None: from an include)
    unknown: str | None = None  # why the expansion could not tell what this brings (unreadable, loop, invalid)
    substack: bool = False  # the unit marker of a substack; its lines follow at level + 1

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line.number}"


def actions(line: Line) -> set[str]:
    """Every action a rule can take, as libpam parsed its control."""
    control = (line.control or "").lower()
    if control in _WORD_ACTIONS:
        return set(_WORD_ACTIONS[control])
    if not line.actions:
        return set()
    found = set(line.actions.values())
    if "default" not in line.actions:
        found.add("bad")  # libpam: unset values take `bad`
    return found


def jump(line: Line) -> int:
    return max((int(a) for a in actions(line) if a.isdigit()), default=0)


def expand(path: str, data: bytes, type_: str, resolve: Resolver) -> list[Entry]:
    """The `type_` stack of a service file, includes followed."""
    out: list[Entry] = []
    _expand(path, parse(data), type_, resolve, 0, 0, (path,), out, top=True)
    return out


def _expand(
    path: str,
    lines: list[Line],
    type_: str,
    resolve: Resolver,
    depth: int,
    level: int,
    seen: tuple[str, ...],
    out: list[Entry],
    *,
    top: bool = False,
) -> None:
    for index, line in enumerate(lines):
        here = index if top else None
        if line.kind is Kind.BLANK:
            continue
        if line.kind is Kind.INVALID:
            out.append(Entry(path, line, level, here, unknown=f"cannot be parsed ({line.error})"))
            continue
        if line.kind is Kind.RULE and line.type != type_:
            continue
        if line.kind is Kind.RULE and not line.is_include:
            out.append(Entry(path, line, level, here))
            continue
        substack = line.kind is Kind.RULE and (line.control or "").lower() == "substack"
        name = line.module or ""
        if substack:
            out.append(Entry(path, line, level, here, substack=True))
        inner_level = level + 1 if substack else level
        found = resolve(name)
        why = None
        if found is None:
            why = f"includes {name!r}, which cannot be read"
        elif found[0] in seen:
            why = f"includes {name!r} again inside itself (a loop)"
        elif depth + 1 >= MAX_DEPTH:
            why = f"includes {name!r} deeper than libpam's {MAX_DEPTH} levels"
        if why is not None or found is None:
            # libpam puts a failing handler at the including line's own level.
            out.append(Entry(path, line, level, here, unknown=why))
            continue
        _expand(found[0], parse(found[1]), type_, resolve, depth + 1, inner_level, (*seen, found[0]), out)


def brought(path: str, line: Line, type_: str, resolve: Resolver) -> list[Entry]:
    """The entries this one line of the service file adds to the `type_` stack, includes followed."""
    entries: list[Entry] = []
    _expand(path, [line], type_, resolve, 0, 0, (path,), entries)
    return entries


def contributes(path: str, line: Line, type_: str, resolve: Resolver) -> bool:
    """Does this line of the service file add to the `type_` stack? An unreadable include counts."""
    if line.kind is Kind.RULE:
        return line.type == type_
    if line.kind is not Kind.AT_INCLUDE:
        return line.kind is Kind.INVALID
    return bool(brought(path, line, type_, resolve))


def _units_between(entries: list[Entry], start: int, end: int, level: int) -> int:
    """Units at `level` after index start up to and including index end (a substack counts once)."""
    return sum(1 for e in entries[start + 1 : end + 1] if e.level == level)


def skippers(entries: list[Entry], at: int, type_: str) -> list[tuple[Entry, str]]:
    """Entries before entries[at] that can make libpam skip it, each with why.

    An account line is skipped by anything that can end the stack; a session line
    only by what can end it with success. Jumps count units at their own level.
    """
    target = entries[at]
    ending = {"done", "die"} if type_ == "account" else {"done"}
    found: list[tuple[Entry, str]] = []
    for k in range(at):
        entry = entries[k]
        if entry.level > target.level:
            continue  # inside a substack: its done/die end only the substack, its jumps stay inside
        if entry.unknown is not None:
            found.append((entry, entry.unknown))
            continue
        if entry.substack:
            continue
        can = actions(entry.line)
        ends = sorted(can & ending)
        if ends:
            word = entry.line.control if (entry.line.control or "").lower() in _WORD_ACTIONS else ",".join(ends)
            found.append((entry, f"({word} ends the {type_} stack there)"))
            continue
        if _jumps_past(entries, k, at):
            found.append((entry, f"(its jump of {jump(entry.line)} skips it)"))
    return found


def _jumps_past(entries: list[Entry], k: int, at: int) -> bool:
    """Can entries[k]'s [value=N] jump land on or past entries[at] (units counted at its level)?"""
    n = jump(entries[k].line)
    return bool(n) and n >= _units_between(entries, k, at, entries[k].level)


def jumps_over(entries: list[Entry], at: int) -> list[Entry]:
    """Entries before entries[at] whose jump range holds it: removing it would change what they skip."""
    level = entries[at].level
    return [
        e
        for k, e in enumerate(entries[:at])
        if e.level <= level and e.unknown is None and not e.substack and _jumps_past(entries, k, at)
    ]


def locate(entries: list[Entry], top_index: int) -> int | None:
    """Position in the expanded stack of the service file's own line number top_index."""
    return next((k for k, e in enumerate(entries) if e.top == top_index and e.unknown is None), None)


def _unit_end(entries: list[Entry], p: int) -> int:
    """Index after entries[p]'s unit: a substack marker's own lines belong to it."""
    q = p + 1
    while q < len(entries) and entries[q].level > entries[p].level:
        q += 1
    return q


def _next(entries: list[Entry], p: int, action: str) -> int:
    """Index of the entry libpam runs after entries[p] takes `action` (len(entries): the stack ended).

    As _pam_dispatch_aux: done and die end the entry's own level (the whole stack at level 0, else
    its substack); a jump of N skips the next N units of that level and stops at its end (a jump
    past it is libpam's "bad jump in stack", which also fails the substack: what runs next is the same).
    """
    level = entries[p].level
    if action in ("done", "die"):
        q = p + 1
        while q < len(entries) and entries[q].level >= level:
            q += 1
        return q if level else len(entries)
    q = p + 1
    for _ in range(int(action) if action.isdigit() else 0):
        if q >= len(entries) or entries[q].level < level:
            break
        q = _unit_end(entries, q)
    return q


def refusers(entries: list[Entry], start: int, at: int) -> list[Entry]:
    """Entries libpam can reach from entries[start] (the session stack's pam_loginuid) whose `die`
    (requisite, [...=die]) ends the stack, or the substack holding entries[at], before entries[at] runs.

    Such a refusal comes after pam_loginuid changed the loginuid and before our open_session: the
    module writes only `teleport:accounting res=success` for it (docs/records.md). Every path libpam
    can take is followed, whatever the modules return: a line that is always jumped over (Debian's
    `[default=1] pam_permit.so` before `requisite pam_deny.so`) is never reached. A `-` line counts as
    written (a missing module returns PAM_MODULE_UNKNOWN, which a requisite turns into die). What ends the
    stack with success or jumps past entries[at] is skippers()'s; an unknown entry, unprovable there.
    """
    found: set[int] = set()
    todo = [_next(entries, start, a) for a in actions(entries[start].line) - {"die"}] or [start + 1]
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        if p in seen or p >= at:
            continue  # at: ours runs; past it: skipped with success or by a jump (skippers)
        seen.add(p)
        entry = entries[p]
        if entry.unknown is not None or entry.substack:
            todo.append(p + 1)  # a substack's own lines follow its marker
            continue
        for action in actions(entry.line) or {"ok"}:
            q = _next(entries, p, action)
            if action == "die" and q > at:
                found.add(p)
            todo.append(q)
    return [entries[p] for p in sorted(found)]
