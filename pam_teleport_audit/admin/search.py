"""What a Teleport user did: sessions, refused attempts and typed input, from the audit log.

One pass over the log with auparse (python3-audit). libauparse does the
filtering in C: only events holding a record of a type below reach Python.

A session is keyed by (node, ses), the id pam_loginuid gives it: every record
with that ses on that node belongs to it (TTY input included) until the
kernel's LOGIN record gives the id to a new session (ids restart at boot).
Two record sequences of ours are read (docs/records.md):

- today's: USER_ACCT teleport:accounting at pam_open_session (it carries the
  ses and starts the session), USER_START teleport:session_open and USER_END
  teleport:session_close at pam_close_session. A refusal leaves USER_LOGIN
  teleport:login res=failed (before the session opened) or USER_START
  teleport:session_open res=failed (a session module after ours), at pam_end;
- the earlier one, still in older logs: USER_ACCT at pam_acct_mgmt (ses
  unset), USER_START at open (starts the session), USER_END at close.

What comes before a session has its ses (Teleport's own USER_LOGIN, libpam's
USER_ACCT, the LOGIN record) is joined by the process that wrote it, (node,
pid), and only within ACCOUNT_LOOKBACK seconds: a pid comes back, and a later
shell with a reused pid must never be taken for that process. Records with a
ses go to the session first.
"""

from __future__ import annotations

import bz2
import calendar
import contextlib
import errno
import gzip
import json
import lzma
import mmap
import os
import re
import shutil
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from ..pam_module import (
    DELETED_SUFFIX,
    OP_ACCOUNTING,
    OP_LOGIN,
    OP_SESSION_CLOSE,
    OP_SESSION_OPEN,
    TELEPORT_USER_MAX_BYTES,
    bare_value,
)
from . import logrotate
from .auditlog import UNSET_ID, AuditRecord, decode_value, read_conf, read_record, split_roles

# Record types a session timeline is made of.
TIMELINE_TYPES = (
    "USER_ACCT",
    "USER_AUTH",
    "USER_START",
    "USER_END",
    "USER_LOGIN",
    "USER_ERR",
    "LOGIN",
    "CRED_ACQ",
    "CRED_DISP",
    "TTY",
    "USER_TTY",
)
DEFAULT_LOG_NAME = "audit.log"
DEFAULT_LOG = "/var/log/audit/" + DEFAULT_LOG_NAME
# What one process writes before its session has a ses (Teleport's USER_LOGIN, our and libpam's
# USER_ACCT, LOGIN) is joined to it only this far back: a pid is reused later.
ACCOUNT_LOOKBACK = 60.0
# Fields shown as auparse interprets them: keystrokes, as aureport --tty shows them.
_INTERPRETED = frozenset({"data"})
_INPUT = ("TTY", "USER_TTY")  # typed input: joined by ses only, never by pid
# libpam's ops in the rest of a session's course, after its accounting: what a session without ses
# takes from its pid (ours and Teleport's own records too).
_SESSION_COURSE = frozenset({"PAM:session_open", "PAM:session_close", "PAM:setcred"})
OUR_OPS = frozenset({OP_ACCOUNTING, OP_SESSION_OPEN, OP_SESSION_CLOSE, OP_LOGIN})

# Teleport's own records, sent by the `teleport exec` process that then runs PAM
# (gravitational/teleport lib/srv/reexec.go RunCommand: USER_LOGIN res=success before PAM,
# USER_ERR res=failed when the login does not exist, USER_END res=success when it ends; and
# USER_ERR from the SSH service itself when it refuses a certificate or the roles deny the login,
# lib/srv/authhandlers.go recordFailedLogin), in
# the text of lib/auditd/auditd_linux.go (msgDataTmpl, a text/template, nothing escaped):
#   op={{ .Opcode }} acct="{{ .Msg.SystemUser }}" exe="{{ .Exe }}" hostname={{ .Hostname }}
#   addr={{ .Msg.ConnAddress }} terminal={{ .Msg.TTYName }}
#   {{if .Msg.TeleportUser}}teleportUser={{.Msg.TeleportUser}} {{end}}res={{ .Result }}
# with hostname "?", addr the client's ip:port, terminal the pty (/dev/pts/N) or "teleport"
# (lib/auditd/common.go SetDefaults). Releases before 2023 wrote exe= unquoted. teleportUser is
# raw, so `teleportUser=alice smith` is one name: read from the line, not auparse's fields.
TELEPORT_OPS = {"USER_LOGIN": "login", "USER_END": "session_close", "USER_ERR": "invalid_user"}
_TELEPORT_TEXT = re.compile(
    r'op=(?P<op>\S+) acct="(?P<acct>.*?)" exe=(?P<exe>".*?"|\S*) hostname=(?P<hostname>\S*)'
    r" addr=(?P<addr>\S*) terminal=(?P<terminal>\S*)(?: teleportUser=(?P<user>.*))? res=(?P<res>\w+)",
    re.DOTALL,
)
# Why an attempt was refused, by the op of the first record of its process saying res=failed.
REFUSALS = {
    "PAM:accounting": "refused by the account stack",
    "PAM:authentication": "refused by pam_authenticate",
    "PAM:session_open": "refused by a session module",
    OP_ACCOUNTING: "refused by the account stack",
    OP_LOGIN: "refused before its session opened",
    OP_SESSION_OPEN: "refused by a session module",
    "invalid_user": "refused by Teleport itself (invalid_user: no such login, or certificate or roles denied)",
}
CHILDREN = {"exec": "shell or command", "networking": "port/agent/X11 forwarding", "forward": "port forwarding"}


@dataclass
class Keystrokes:
    time: float
    serial: int  # the audit event's serial number (ausearch -a)
    pid: int
    comm: str
    keys: str  # as aureport --tty shows them: "ls -l",<nl>
    text: str  # the bytes typed, decoded (UTF-8; a byte that is not is a lone surrogate, surrogateescape)


@dataclass
class Event:
    time: float
    serial: int
    type: str
    op: str | None
    res: str | None
    pid: int


@dataclass
class Session:
    """A session of a Teleport user, or an attempt that was refused (refused says why)."""

    node: str | None
    ses: int | None  # None: pam_loginuid gave it none (refused before it ran, or not in the stack)
    teleport_user: str
    login: str
    auid: int
    roles: list[str]
    terminal: str
    hostname: str
    addr: str
    exe: str
    pid: int
    start: float
    result: str
    end: float | None = None
    end_result: str | None = None
    events: list[Event] = field(default_factory=list)
    input: list[Keystrokes] = field(default_factory=list)
    refused: str | None = None
    child: str | None = None  # teleportChild: exec, networking (port/agent/X11 forwarding) or forward (Teleport 16)
    roles_omitted: int | None = None  # teleportRolesOmitted: roles cut to fit the record
    user_omitted: int | None = None  # teleportUserOmitted: bytes of the name cut to fit the record
    teleport_addr: str | None = None  # the client's ip:port, from Teleport's own USER_LOGIN
    start_in_log: bool = True  # False: the start rotated out; start is the first record left
    input_joined: bool = True  # False: pam_loginuid gave it no ses, so no typed input can be joined

    def to_json(self) -> dict[str, object]:
        """A stable object for SIEM ingestion: times in ISO 8601 UTC."""
        out = asdict(self)
        out["start"] = iso(self.start)
        out["end"] = iso(self.end) if self.end is not None else None
        for item in out["events"] + out["input"]:
            item["time"] = iso(item["time"])
        return out


# --since/--until's dates, as both outputs print them: ISO 8601 (JSON), and the text's local time with
# its offset; seconds, fraction and zone optional.
_WHEN = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(\.\d{1,9})?)?)? ?(Z|[+-]\d\d:?\d\d)?", re.ASCII
)


def parse_time(text: str, now: float | None = None) -> float:
    """--since/--until: ISO 8601 (local time unless it ends in Z or an offset), @EPOCH, today, yesterday, recent."""
    now = time.time() if now is None else now
    midnight = time.mktime((*time.localtime(now)[:3], 0, 0, 0, 0, 0, -1))
    words = {"recent": now - 600, "today": midnight, "yesterday": midnight - 86400, "now": now}
    if text in words:
        return words[text]
    if text.startswith("@"):
        return float(text[1:])
    found = _WHEN.fullmatch(text)
    try:
        *fields, fraction, zone = found.groups()  # type: ignore[union-attr]
        parsed = time.strptime(" ".join(field or "00" for field in fields), "%Y %m %d %H %M %S")  # checks ranges
    except (AttributeError, ValueError):
        layout = "YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+HH:MM]"
        raise ValueError(f"cannot read time {text!r}: use {layout}, @EPOCH, today, yesterday or recent") from None
    extra = float(fraction or 0)
    if zone is None:
        return time.mktime((*parsed[:8], -1)) + extra
    offset = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 3600 + int(zone[-2:]) * 60)
    return calendar.timegm(parsed) - offset + extra


def iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}Z"


def _text(raw: str) -> str:
    """A value of the log as text, losslessly: a byte that is not UTF-8 becomes the lone surrogate
    U+DC80+byte (surrogateescape), never characters a value could hold itself."""
    return decode_value(raw).decode("utf-8", "surrogateescape") if raw not in ("", "?") else raw


# The time and serial of a record: audit(SECONDS.MILLIS:SERIAL).
_STAMP = re.compile(rb"audit\((\d+)\.(\d{3}):(\d+)\)")
# Compressions logrotate's compresscmd is set to: read with the standard library (lzma.open reads .xz
# and the older .lzma), or through their command, "NAME -dc" (Python 3.11 has no zstd, nor lz4): the
# command, and its Debian package.
_DECOMPRESS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
    ".lzma": lzma.open,
}
# Read through `COMMAND -dc` (Python 3.11 has no module for them): extension -> (command, Debian package).
# gzip reads compress(1)'s .Z as well.
_COMMANDS = {
    ".zst": ("zstd", "zstd"),
    ".lz4": ("lz4", "lz4"),
    ".lz": ("lzip", "lzip"),
    ".lzo": ("lzop", "lzop"),
    ".br": ("brotli", "brotli"),
    ".Z": ("gzip", "gzip"),
}
# Rotated logs as auditd names them (audit.log.1), and as logrotate does, which some sites use instead
# (max_log_file_action = ignore): numbered the same way, or with dateext, whose dateformat may be
# -%Y%m%d (the default), -%Y%m%d%H, -%Y-%m-%d, .%Y%m%d, -%s, ...: a separator, then digits in groups
# (logrotate allows only numeric specifiers); compressed or not. Nothing else (audit.log.lock, editor
# backups, .dpkg-old, another log named audit.log-other.conf) ends in digits and a known extension.
_ROTATED = r"[-._](?P<stamp>\d+(?:[-_.]\d+)*)(?:" + "|".join(map(re.escape, [*_DECOMPRESS, *_COMMANDS])) + ")?"
Log = bytes | mmap.mmap


# What a damaged or cut compressed file raises while it is read (a .gz logrotate is still writing).
_DAMAGED = (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile, OSError)


@dataclass
class LogFile:
    path: str
    data: Log
    note: str | None = None  # why it is read in part or not at all, for stderr


def open_log(path: str, stack: contextlib.ExitStack) -> LogFile:
    """A log file's contents, open until the stack closes; compressed files decompressed."""
    ext = os.path.splitext(path)[1]
    note = None
    f = stack.enter_context(open(path, "rb"))  # noqa: SIM115 - the stack closes it
    if ext in _DECOMPRESS or ext in _COMMANDS:
        # Into an unnamed temporary file, not memory: a compressed log is ten times smaller.
        compressed, f = f, stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 - the stack closes it
        if ext in _DECOMPRESS:
            note = _decompress(_DECOMPRESS[ext], compressed, f)
        else:
            note = _decompress_command(*_COMMANDS[ext], compressed, f)
        f.flush()  # mmap and fstat see the file, not its buffer
    if os.fstat(f.fileno()).st_size == 0:
        return LogFile(path, b"", note)
    data = stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    if first_stamp(data) is None:
        note = "holds no audit record (not an audit log?)"
    return LogFile(path, data, note)


def _decompress(decompress: Callable[[IO[bytes]], IO[bytes]], compressed: IO[bytes], out: IO[bytes]) -> str | None:
    """Decompressed into out with the standard library; what went wrong, for stderr."""
    try:
        with decompress(compressed) as source:
            shutil.copyfileobj(source, out, 8192)  # small reads: a cut file yields all but its last piece
    except _DAMAGED as exc:  # the file is open: this is its data; what came before the damage is read
        return f"damaged or incomplete ({type(exc).__name__}: {exc}): read up to the damage"
    return None


def _decompress_command(command: str, package: str, compressed: IO[bytes], out: IO[bytes]) -> str | None:
    """Decompressed into out by COMMAND -dc, fed the file already open (a rotation renames it, the open
    file keeps its contents); what went wrong, for stderr: never a file left unread without a word."""
    program = shutil.which(command)
    if program is None:
        return f"not read: the {command} command is not installed (apt-get install {package})"
    # It writes each block as it decodes it: a cut or damaged file gives what came before the damage.
    proc = subprocess.run([program, "-dc"], stdin=compressed, stdout=out, stderr=subprocess.PIPE, check=False)
    if proc.returncode == 0:
        return None
    said = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
    # Without the command's name, nor its name for standard input (zstd's /*stdin*\, lzip's (stdin), lzop's <stdin>).
    said = re.sub(r"(?:^[\w.-]+: )?(?:/\*stdin\*\\|\(stdin\)|<stdin>) ?:? ?", " ", said.removeprefix(f"{command}: "))
    said = said.strip(" :") or "no message"
    return f"damaged or incomplete ({command} exit {proc.returncode}: {said}): read up to the damage"


def first_stamp(data: Log) -> tuple[int, int, int] | None:
    """(seconds, milliseconds, serial) of the first record; None when there is none."""
    found = _STAMP.search(data)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


@contextlib.contextmanager
def opened_logs(files: list[str], rotated_live: bool = False) -> Iterator[list[LogFile]]:
    """The files, each opened once, oldest first, without copies: what a search reads.

    rotated_live: files is auditd's log (last) and its rotations, found by log_files. Then a
    missing live log is named, not fatal, while a rotation is there: logrotate without `create`
    leaves none until auditd reopens it, and until then auditd writes into the rotated file.

    Opened once, before anything is read: auditd may rotate (rename) them while a search
    reads them, and an open file keeps its contents.

    Sessions are followed record by record, so the order matters: read in a shell glob's order
    (audit.log audit.log.1 ..., or .1 .10 .2) a session's input and end would come before its
    start. So whatever order they come in, the files are read by the time of their first record
    (a stable sort: files without records keep their place before the others).

    Two files that begin with the same record (time and serial) are one log twice: logrotate's
    audit.log.1 beside the audit.log.1.gz it is writing, or a copy. The longer is read.
    """
    with contextlib.ExitStack() as stack:
        gone = files[-1] if rotated_live and len(files) > 1 and not os.path.exists(files[-1]) else None
        opened = [open_log(path, stack) for path in files if path != gone]
        if gone is not None:
            opened.append(LogFile(gone, b"", "does not exist: its rotations are read (logrotate without `create`?)"))
        logs = sorted(opened, key=lambda x: first_stamp(x.data) or (0, 0, 0))
        kept: dict[tuple[int, int, int], LogFile] = {}
        for log in logs:
            stamp = first_stamp(log.data)
            other = kept.get(stamp) if stamp else None
            if other is None:
                if stamp:
                    kept[stamp] = log
                continue
            short, long = sorted((other, log), key=lambda x: len(x.data))
            kept[stamp] = long
            copy = f"the same log as {long.path} (its first record): read once"
            short.note, short.data = "; ".join(filter(None, (short.note, copy))), b""
        yield logs


NO_LOG_NOTE = (
    "search: auditd.conf has {reason}: auditd keeps no log on this host (records go only to its plugins, "
    "e.g. au-remote or syslog), so what is read here stops where logging stopped: search where they are stored"
)
UNNAMED_NOTE = (
    "search: this host's auditd takes records from other hosts (tcp_listen_port), and some records have no node= "
    "(a sender with name_format = none, or this host's own): their host is shown as ?, and sessions of "
    "different hosts with the same ses or pid cannot be told apart"
)


def auditd_conf(path: str = "/etc/audit/auditd.conf") -> dict[str, str]:
    """auditd.conf's settings; none when it cannot be read."""
    try:
        return read_conf(path)
    except OSError:
        return {}


def receives_remote(conf: dict[str, str]) -> bool:
    """Whether auditd with this configuration takes records from other hosts (a collector)."""
    port = conf.get("tcp_listen_port", "").strip()
    return port.isdigit() and int(port) > 0


def log_files(
    inputs: Iterable[str] | None,
    auditd_conf: str = "/etc/audit/auditd.conf",
    logrotate_conf: str = logrotate.DEFAULT_CONF,
    *,
    conf: dict[str, str] | None = None,
) -> list[str]:
    """The files to read, opened_logs orders them: auditd's log with its rotations, or the given ones.

    conf: auditd.conf's settings as the caller read them ({} when unreadable), so that one reading
    decides both the log and what is said about it; read from auditd_conf when None.

    Without inputs: auditd's log_file, its rotations beside it, and those in the folder logrotate
    moves them to, if its configuration has an `olddir` for the log. A given folder stands for the
    audit.log in it and its rotations (a copy of a host's /var/log/audit, logrotate's `olddir`); a
    folder holding neither is an error.
    """
    if not inputs:
        if conf is None:
            try:
                conf = read_conf(auditd_conf)
            except OSError:
                conf = {}
        log = conf.get("log_file") or DEFAULT_LOG
        moved = logrotate.olddir(log, logrotate_conf)
        if moved is None or not os.path.isdir(moved) or moved == os.path.dirname(os.path.normpath(log)):
            return rotations(log)
        return rotations(os.path.join(moved, os.path.basename(log)))[:-1] + rotations(log)  # the older first
    files = []
    for path in inputs:
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = [name for name in rotations(os.path.join(path, DEFAULT_LOG_NAME)) if os.path.exists(name)]
        if not found:
            raise FileNotFoundError(errno.ENOENT, f"no {DEFAULT_LOG_NAME} nor a rotation of it in the folder", path)
        files += found
    return files


def rotations(log: str) -> list[str]:
    """log's rotated files in its folder, oldest first by name, then log itself (which may not exist)."""
    folder, base = os.path.split(log)
    pattern = re.compile(re.escape(base) + _ROTATED)
    rotated = [
        (_name_age(found["stamp"]), os.path.join(folder, name))
        for name in os.listdir(folder or ".")
        if (found := pattern.fullmatch(name))
    ]
    rotated.sort()
    return [path for _, path in rotated] + [log]


def _name_age(stamp: str) -> tuple[int, ...]:
    """Oldest first by name, for files without a record to place them (opened_logs orders the others
    by their first record): auditd's small numbers, higher is older; then dates, earlier is older."""
    if stamp.isdigit() and len(stamp) < 8:
        return (0, -int(stamp))
    return (1, *map(int, re.findall(r"\d+", stamp)))


def _lines_around(data: mmap.mmap | bytes, pattern: re.Pattern[bytes]) -> list[tuple[int, int]]:
    """(start, end) of every line holding a match. A NUL also ends a line: a crash leaves runs of
    them in a log that auditd then appends to, and auparse would stop at the first one."""
    spans = []
    for match in pattern.finditer(data):
        # The NUL searches are bounded by the line's newlines: a scan to the end of a file without
        # NULs for every match would make the grep quadratic.
        start = data.rfind(b"\n", 0, match.start()) + 1
        start = data.rfind(b"\0", start, match.start()) + 1 or start
        end = data.find(b"\n", match.end())
        end = len(data) if end < 0 else end + 1
        nul = data.find(b"\0", match.end(), end)
        spans.append((start, end if nul < 0 else nul))
    return spans


def _grep(logs: list[Log], *patterns: re.Pattern[bytes]) -> str:
    """The lines of the logs that match any pattern, in log order, as one buffer for auparse."""
    out = []
    for data in logs:
        spans = {span for pattern in patterns for span in _lines_around(data, pattern)}
        for start, end in sorted(spans):
            out.append(data[start:end] if data[end - 1 : end] == b"\n" else data[start:end] + b"\n")
    return b"".join(out).decode("utf-8", "replace")


def _digit_trie(numbers: list[str]) -> str:
    """A regex matching exactly these numbers, as a trie: re tries alternatives one by one,
    and a scan meets " ses=" on nearly every line of a log."""
    if "" in numbers and len(numbers) == 1:
        return ""
    branches = []
    for digit in sorted({n[0] for n in numbers if n}):
        branches.append(digit + _digit_trie([n[1:] for n in numbers if n and n[0] == digit]))
    body = "|".join(branches)
    if "" in numbers:  # a number that ends here, and longer ones that go on
        return f"(?:{body})?"
    return body if len(branches) == 1 else f"(?:{body})"


def candidate_parser(files: list[str], teleport_user: str) -> Any:
    """auparse over the only lines that can belong to the user's sessions and attempts.

    Two byte scans narrow a log of millions of records down for auparse: the
    lines naming the user, as we write the name (record.bare_value) or as
    Teleport does (raw), whose records give the session ids and pids; then
    every line with one of those ses= or pid= values. A superset of what
    find_sessions() keeps, so the result is the same as parsing the whole log;
    auparse parses what is left.
    """
    with opened_logs(files) as logs:
        return candidates([log.data for log in logs], teleport_user)


def recorded_name(teleport_user: str) -> bytes:
    """What our records keep of a Teleport user name: its first TELEPORT_USER_MAX_BYTES bytes
    (Teleport's own records keep it whole)."""
    return teleport_user.encode("utf-8", "surrogateescape")[:TELEPORT_USER_MAX_BYTES]


def candidates(logs: list[Log], teleport_user: str) -> Any:
    """candidate_parser's two scans, over logs already open."""
    import auparse

    raw = teleport_user.encode("utf-8", "surrogateescape")
    kept = bare_value(recorded_name(teleport_user)).encode()
    names = [re.compile(rb" teleportUser=" + re.escape(kept) + rb" ")]
    if kept != raw:
        names.append(re.compile(rb" teleportUser=" + re.escape(raw) + rb" res="))

    named = _grep(logs, *names)
    ses, pids = set(), set()
    for rec in iter_records(auparse.AuParser(auparse.AUSOURCE_BUFFER, named)) if named else ():
        if rec.int("ses") not in (UNSET_ID, -1):
            ses.add(rec.fields["ses"])
        pids.add(rec.fields.get("pid", ""))
    # One scan per field name: a pattern that starts with a literal (" ses=") is searched fast.
    patterns = []
    for name, values in (("ses", ses), ("pid", pids)):
        numbers = [x for x in values if x.isdigit()]
        if numbers:
            patterns.append(re.compile(f" {name}={_digit_trie(numbers)} ".encode()))
    text = _grep(logs, *patterns) if patterns else ""
    return auparse.AuParser(auparse.AUSOURCE_BUFFER, text)


def iter_records(parser: Any) -> Iterator[AuditRecord]:
    """Records of the timeline types, filtered in C by libauparse (all of them: --since chooses
    sessions by their start, which may lie before it)."""
    expression = " || ".join(f"\\record_type == {t}" for t in TIMELINE_TYPES)
    import auparse

    parser.search_add_expression(expression, auparse.AUSEARCH_RULE_CLEAR)
    parser.search_set_stop(auparse.AUSEARCH_STOP_EVENT)
    while parser.search_next_event():
        parser.first_record()
        while True:
            kind = parser.get_type_name()
            if kind in TIMELINE_TYPES:
                yield read_record(parser, _INTERPRETED, with_text=kind in TELEPORT_OPS)
            if not parser.next_record():
                break
        # search_next_event() resumes after the current event
        # (AUSEARCH_STOP_EVENT), so nothing is read twice.


def teleport_fields(rec: AuditRecord) -> dict[str, str] | None:
    """The fields of one of Teleport's own records, read from the line (teleportUser is raw)."""
    if TELEPORT_OPS.get(rec.type) != rec.fields.get("op") or not rec.text:
        return None
    line = rec.text.split("\x1d", 1)[0]  # ENRICHED: the interpreted ids follow a 0x1D byte
    begin = line.find(" msg='")
    match = _TELEPORT_TEXT.fullmatch(line, begin + 6, line.rfind("'")) if begin >= 0 else None
    if match is None:
        return None
    found = {k: v for k, v in match.groupdict().items() if v is not None}
    found["exe"] = found["exe"].strip('"')
    return found


@dataclass
class _Process:
    """What one process (node, pid) wrote in one PAM transaction before its session had a ses."""

    start: float
    records: list[AuditRecord] = field(default_factory=list)
    ses: int = UNSET_ID  # the id its LOGIN record gave it
    ours: AuditRecord | None = None  # our first record naming the user
    teleport: tuple[AuditRecord, dict[str, str]] | None = None  # Teleport's own, naming the user
    ended: bool = False  # our pam_end record (any user's) came: only Teleport's own may follow
    closed: bool = False  # Teleport's USER_END or USER_ERR came: it sends nothing after them

    def add(self, rec: AuditRecord, ours: bool, teleport: dict[str, str] | None) -> None:
        self.records.append(rec)
        if rec.type == "LOGIN":
            self.ses = rec.int("ses")
        if ours and self.ours is None:
            self.ours = rec
        if rec.fields.get("op") == OP_LOGIN and "teleportUser" in rec.fields:  # whoever it names
            self.ended = True
        if teleport is not None and self.teleport is None:
            self.teleport = (rec, teleport)
        if rec.type in ("USER_END", "USER_ERR") and TELEPORT_OPS.get(rec.type) == rec.fields.get("op"):
            self.closed = True


def find_sessions(
    records: Iterable[AuditRecord],
    teleport_user: str,
    *,
    since: float | None = None,
    until: float | None = None,
    node: str | None = None,
    local: str | None = None,
) -> list[Session]:
    """Sessions and refused attempts of one Teleport user, in the order they started.

    local names the host of records without node= (this host, when reading its own logs): --node
    selects them by that name, as the output labels them.
    """
    wanted = recorded_name(teleport_user)
    found: list[Session] = []
    # (node, ses) → the logins that ses holds, by the pid of their Teleport process, latest last; None
    # for another user's (a ses is shared when pam_loginuid finds the loginuid already right).
    open_by_key: dict[tuple[str | None, int], dict[int, Session | None]] = {}
    # (node, ses) → its records while no login of ours holds it: a session whose start rotated out
    # gets them when a later record of ours shows up.
    before: dict[tuple[str | None, int], list[AuditRecord]] = {}
    # (node, pid) → a session pam_loginuid gave no ses, and when our close came: its Teleport process
    # lives until then, so its pid is not reused meanwhile.
    no_ses: dict[tuple[str | None, int], tuple[Session, float | None]] = {}
    opened_at_account: set[int] = set()  # id() of sessions whose outcome is our session_open's
    processes: dict[tuple[str | None, int], _Process] = {}  # (node, pid) → before its session
    swept = 0.0

    def finish(key: tuple[str | None, int]) -> None:
        """A process's transaction that opened no session of ours: listed when refused."""
        proc = processes.pop(key)
        reason = _refusal(proc.records)
        if reason is None or (proc.ours is None and proc.teleport is None):
            return
        if proc.ours is not None:
            ses = proc.ours.int("ses")
            attempt = _new_session(proc.ours, key[0], None if ses in (UNSET_ID, -1) else ses)
        else:
            attempt = _teleport_session(*proc.teleport, key[0])  # type: ignore[misc]
        attempt.result, attempt.refused = "failed", reason
        _join(attempt, proc)
        found.append(attempt)

    def start(rec: AuditRecord, rec_node: str | None, ses: int | None, proc: _Process | None) -> Session:
        session = _new_session(rec, rec_node, ses)
        if proc is not None:
            joined = processes.pop((rec_node, rec.int("pid")))
            _join(session, joined)
            if any(_failed_open(r) for r in joined.records):
                _refused_open(session)
        found.append(session)
        return session

    def take(session: Session, rec: AuditRecord, ours: bool, teleport: dict[str, str] | None) -> None:
        """One more record of the session: input, or an event that may say how the login went."""
        if rec.type in _INPUT:
            session.input.append(_keystrokes(rec))
            return
        session.events.append(_event(rec, teleport))
        if rec.int("pid") != session.pid:
            return  # su, sudo, sshd inside the session: their outcome is not this login's
        op = rec.fields.get("op")
        if ours and rec.type == "USER_START" and id(session) in opened_at_account:
            session.result = rec.fields.get("res", "?")  # today's sequence: the open's outcome, at close or pam_end
        if teleport is not None and teleport.get("user") == teleport_user and session.teleport_addr is None:
            session.teleport_addr = teleport["addr"]
        if session.refused is None:
            session.refused = _refusal([rec])
        if _failed_open(rec):
            _refused_open(session)
        if ours and rec.type == "USER_END" and op == OP_SESSION_CLOSE:
            session.end, session.end_result = rec.time, rec.fields.get("res")
        elif rec.type == "USER_END" and op == "PAM:session_close" and rec.fields.get("res") == "failed":
            # A close module after our line failed (ours is written where our line runs, libpam's once the
            # whole stack ran): the session ended, and libpam says its close did not succeed.
            session.end_result = "failed" if session.end is not None else session.end_result

    def take_without_ses(
        session: Session, rec: AuditRecord, key: tuple[str | None, int], ours: bool, teleport: dict[str, str] | None
    ) -> None:
        """A record of a session without ses, by its pid."""
        take(session, rec, ours, teleport)
        if teleport is not None and rec.type in ("USER_END", "USER_ERR"):
            del no_ses[key]  # Teleport sends nothing after its own close
        elif ours and (rec.fields.get("op") == OP_SESSION_CLOSE or rec.fields.get("res") == "failed"):
            no_ses[key] = (session, rec.time)  # pam_end follows: libpam's and Teleport's close

    def orphan_without_ses(rec: AuditRecord, key: tuple[str | None, int], proc: _Process | None) -> Session:
        """A session without ses whose accounting rotated out, from the first record of ours left (its
        open or close; proc, what its pid wrote just before, holds nothing of ours). Held by its pid
        like the others, and given proc's records when they are its own course (libpam's open, setcred)."""
        if proc is not None and not all(
            _in_course(r, False, teleport_fields(r) if r.type in TELEPORT_OPS else None) for r in proc.records
        ):
            finish(key)  # another process's, before this one got the pid
            proc = None
        session = start(rec, key[0], None, proc)
        session.start = min([rec.time] + [e.time for e in session.events])
        session.start_in_log = session.input_joined = False
        opened_at_account.add(id(session))
        no_ses[key] = (session, None)
        return session

    for rec in records:
        rec_node = rec.fields.get("node")
        if node is not None and (rec_node or local) != node:
            continue
        op = rec.fields.get("op")
        ses = rec.int("ses")
        has_ses = ses not in (UNSET_ID, -1)
        pid = rec.int("pid")
        key = (rec_node, pid)
        ours = op in OUR_OPS and "teleportUser" in rec.fields and decode_value(rec.fields["teleportUser"]) == wanted
        teleport = teleport_fields(rec) if rec.type in TELEPORT_OPS else None
        named = teleport if teleport is not None and teleport.get("user") == teleport_user else None
        if rec.time - swept > ACCOUNT_LOOKBACK:  # keep only the processes that may still go on
            for old in [k for k, p in processes.items() if rec.time - p.start > ACCOUNT_LOOKBACK]:
                finish(old)
            swept = rec.time

        held = no_ses.get(key) if rec.type not in _INPUT else None
        # Only the rest of its own course goes to a session without ses (_in_course), and nothing of
        # ours or past our wait after our close.
        if held is not None and (
            not _in_course(rec, ours, teleport)
            or (held[1] is not None and (ours or rec.time - held[1] > ACCOUNT_LOOKBACK))
        ):
            del no_ses[key]
            held = None
        if held is not None and not has_ses:
            take_without_ses(held[0], rec, key, ours, teleport)
            continue

        proc = processes.get(key)
        # A transaction of this pid that is too old, or a new one of the same pid (Teleport's USER_LOGIN
        # before PAM, a second accounting record: one handle runs acct_mgmt once), ends the last one.
        if proc is not None and (
            rec.time - proc.start > ACCOUNT_LOOKBACK
            or (teleport is not None and rec.type == "USER_LOGIN")
            or (rec.type == "USER_ACCT" and any(r.type == "USER_ACCT" and r.get("op") == op for r in proc.records))
            or (proc.ended and teleport is None)
            or proc.closed
        ):
            finish(key)
            proc = None
        if not has_ses:
            if ours and rec.fields.get("res") == "success" and _opens_without_ses(rec, proc):
                session = start(rec, rec_node, None, proc)
                session.input_joined = False
                opened_at_account.add(id(session))
                no_ses[key] = (session, None)
                take(session, rec, ours, teleport)
                continue
            if ours and op in (OP_SESSION_OPEN, OP_SESSION_CLOSE) and (proc is None or proc.ours is None):
                take_without_ses(orphan_without_ses(rec, key, proc), rec, key, ours, teleport)
                continue
            if proc is None and rec.type not in _INPUT:
                proc = processes[key] = _Process(rec.time)
            if proc is not None:
                proc.add(rec, ours, named)
            continue

        ses_key = (rec_node, ses)
        if rec.type == "LOGIN":
            open_by_key.pop(ses_key, None)  # this id now names another session
            before.pop(ses_key, None)
        group = open_by_key.get(ses_key)
        logins = group or {}
        # A record of a login's own process goes to it; the rest (input) to the latest login.
        session = logins[pid] if pid in logins else next(reversed(logins.values()), None)
        accounting = rec.type == "USER_ACCT" and op == OP_ACCOUNTING and "teleportUser" in rec.fields
        starts = None
        if pid not in logins:
            if accounting:
                starts = "account"  # today's sequence: written at pam_open_session
            elif rec.type == "USER_START" and op == OP_SESSION_OPEN and proc is not None and proc.ses == ses:
                starts = "open"  # the earlier sequence; its LOGIN came just before
            elif op in (OP_SESSION_OPEN, OP_SESSION_CLOSE) and (proc is None or proc.ses != ses):
                starts = "orphan"  # a session whose start is not in the log
        if starts is not None and not ours:
            if accounting:  # another user's login on a shared ses: what follows is not ours
                open_by_key.setdefault(ses_key, {})[pid] = None
                before.pop(ses_key, None)
            starts = None
        if starts is not None:
            earlier = before.pop(ses_key, [])
            session = start(rec, rec_node, ses, proc if starts != "orphan" else None)
            if starts != "open":
                opened_at_account.add(id(session))
            if starts == "orphan":
                session.start_in_log = False
                session.start = min([rec.time] + [r.time for r in earlier])
            else:  # what its own process wrote with this ses before (a shared ses has no LOGIN)
                earlier = [r for r in earlier if r.int("pid") == pid]
            for old in earlier:
                take(session, old, False, teleport_fields(old) if old.type in TELEPORT_OPS else None)
            session.events.sort(key=lambda e: (e.time, e.serial))
            open_by_key.setdefault(ses_key, {})[pid] = session
        elif (
            session is not None
            and pid not in logins
            and rec.type not in _INPUT
            and (key in processes or _another_login(rec, ours, teleport, session))
        ):
            # Another Teleport process on this shared ses (pam_loginuid wrote no LOGIN): the next
            # login's records, or a refused attempt's, kept by its pid as before a ses. What the
            # session's own processes write (sudo, su, even after it ended) still goes to it.
            proc = processes.get(key) or processes.setdefault(key, _Process(rec.time))
            proc.ses = ses
            proc.add(rec, ours, named)
            continue
        elif session is None:
            if proc is not None and (ses == proc.ses or rec.type == "LOGIN"):
                proc.add(rec, ours, named)
            elif proc is None and rec.type == "LOGIN":
                processes[key] = _Process(rec.time)
                processes[key].add(rec, ours, named)
            elif group is None and rec.type != "LOGIN":  # kept for a session whose start rotated out
                before.setdefault(ses_key, []).append(rec)
            continue
        take(session, rec, ours, teleport)
    for key in list(processes):
        finish(key)
    found.sort(key=lambda s: s.start)
    return [s for s in found if (until is None or s.start <= until) and (since is None or last_seen(s) >= since)]


def last_seen(session: Session) -> float:
    """The time of a session's last record: --since lists every session with a record in the window,
    one that started before it and went on into it too (what was typed there is what is asked)."""
    return max([session.start, session.end or 0.0] + [e.time for e in session.events] + [k.time for k in session.input])


def _another_login(rec: AuditRecord, ours: bool, teleport: dict[str, str] | None, session: Session) -> bool:
    """Whether a record of another pid on a session's ses is a Teleport process's, not the session's own."""
    if teleport is not None or (ours and rec.fields.get("op") == OP_LOGIN):
        return True
    # libpam's records name their program: Teleport's binary, not sudo or su inside the session. The
    # same binary once an upgrade replaced it (" (deleted)"), whether before this login or the other.
    if rec.type not in ("USER_ACCT", "USER_AUTH"):
        return False
    return _text(rec.fields.get("exe", "?")).removesuffix(DELETED_SUFFIX) == session.exe.removesuffix(DELETED_SUFFIX)


def _in_course(rec: AuditRecord, ours: bool, teleport: dict[str, str] | None) -> bool:
    """Whether a record of the pid of a session without ses can be the rest of its own course: its
    session's open and close (libpam's, ours), Teleport's close. Anything else from that pid is a later
    process that got the pid (the Teleport process was killed, or is gone), as is a new transaction."""
    if rec.type in ("LOGIN", "USER_ACCT") or (teleport is not None and rec.type == "USER_LOGIN"):
        return False
    return ours or teleport is not None or rec.fields.get("op") in _SESSION_COURSE


def _opens_without_ses(rec: AuditRecord, proc: _Process | None) -> bool:
    """Whether a record of ours opens a session pam_loginuid gave no ses: today's accounting (written
    at pam_open_session, after libpam's PAM:accounting of the process), or the earlier sequence's
    session_open after its accounting."""
    if proc is None:
        return False
    op = rec.fields.get("op")
    if rec.type == "USER_ACCT" and op == OP_ACCOUNTING:
        return any(r.type == "USER_ACCT" and r.get("op") == "PAM:accounting" for r in proc.records)
    return rec.type == "USER_START" and op == OP_SESSION_OPEN and proc.ours is not None


def _keystrokes(rec: AuditRecord) -> Keystrokes:
    data = rec.fields.get("data", rec.fields.get("msg", ""))
    comm = _text(rec.fields.get("comm", "?"))
    return Keystrokes(rec.time, rec.serial, rec.int("pid"), comm, rec.interpreted.get("data", data), _text(data))


def _refusal(records: list[AuditRecord]) -> str | None:
    """Why a login was refused: the first record of its process that says so, or None."""
    for rec in records:
        reason = REFUSALS.get(rec.fields.get("op", ""))
        if reason is not None and rec.fields.get("res") == "failed":
            return reason
    return None


def _failed_open(rec: AuditRecord) -> bool:
    """libpam's record of a pam_open_session that failed: neither Teleport nor sshd goes on after it."""
    return rec.type == "USER_START" and rec.fields.get("op") == "PAM:session_open" and rec.fields.get("res") == "failed"


def _refused_open(session: Session) -> None:
    """The session's own process says its open failed. Our record that started it then came from pam_end:
    a session module before our line (requisite or die, after pam_loginuid) refused the session, so our
    line never ran and our teleport:accounting says only that the account stack passed (docs/records.md)."""
    session.result = "failed"
    session.refused = session.refused or REFUSALS["PAM:session_open"]


def _join(session: Session, proc: _Process) -> None:
    """What the process wrote before the session (or refusal): events, Teleport's client address."""
    session.events = [_event(r, teleport_fields(r) if r.type in TELEPORT_OPS else None) for r in proc.records]
    if proc.teleport is not None:
        session.teleport_addr = proc.teleport[1]["addr"]


def _event(rec: AuditRecord, teleport: dict[str, str] | None = None) -> Event:
    source = teleport if teleport is not None else rec.fields
    return Event(rec.time, rec.serial, rec.type, source.get("op"), source.get("res"), rec.int("pid"))


def _new_session(rec: AuditRecord, rec_node: str | None, ses: int | None) -> Session:
    f = rec.fields
    roles = split_roles(decode_value(f.get("teleportRoles", "?")))
    omitted = f.get("teleportRolesOmitted", "")
    cut = f.get("teleportUserOmitted", "")
    return Session(
        node=rec_node,
        ses=ses,
        teleport_user=_text(f["teleportUser"]),
        login=_text(f.get("acct", "?")),
        auid=rec.int("auid"),
        roles=[role.decode("utf-8", "surrogateescape") for role in roles],
        terminal=_text(f.get("terminal", "?")),
        hostname=_text(f.get("hostname", "?")),
        addr=_text(f.get("addr", "?")),
        exe=_text(f.get("exe", "?")),
        pid=rec.int("pid"),
        start=rec.time,
        result=f.get("res", "?"),
        child=f.get("teleportChild"),
        roles_omitted=int(omitted) if omitted.isdigit() else None,
        user_omitted=int(cut) if cut.isdigit() else None,
    )


def _teleport_session(rec: AuditRecord, f: dict[str, str], rec_node: str | None) -> Session:
    """A refusal only Teleport recorded (its USER_ERR invalid_user: the login does not exist)."""
    return Session(
        node=rec_node,
        ses=None,
        teleport_user=f.get("user", "?"),
        login=f["acct"],
        auid=rec.int("auid"),
        roles=[],
        terminal=f["terminal"],
        hostname="?",  # what PAM knew: nothing; Teleport's address is teleport_addr
        addr="?",
        exe=f["exe"],
        pid=rec.int("pid"),
        start=rec.time,
        result=f["res"],
    )


def local_time(stamp: float) -> str:
    """The host's local time with its zone's offset: a report read elsewhere must not be misread."""
    local = time.localtime(stamp)
    return time.strftime("%Y-%m-%d %H:%M:%S", local) + f".{int(stamp * 1000) % 1000:03d}" + time.strftime(" %z", local)


# In repr(): an escaped backslash (kept), a character U+0080..U+00FF it does not print (written
# \u00XX here), a byte that is not UTF-8 (surrogateescape's U+DC80..U+DCFF: written \xXX here).
_REPR_ESCAPES = re.compile(r"(\\\\)|\\x([89a-f][0-9a-f])|\\udc([89a-f][0-9a-f])")


def _literal(value: str) -> str:
    """value as a Python string literal in which \\xNN is always the byte NN of the value."""
    return _REPR_ESCAPES.sub(lambda m: m[1] or (f"\\u00{m[2]}" if m[2] else f"\\x{m[3]}"), repr(value))


def shown(value: str, separator: str = "") -> str:
    """A value from the log on one line of text, so that a name (any bytes, from an SSO claim) adds no
    line and sends the terminal nothing, and no two values print the same: as it is when printable (a
    backslash in it is a backslash), else as a Python string literal in quotes, where \\xNN is a byte
    that is not UTF-8 (or a control character) and \\\\ a backslash. A value that begins with a quote,
    or holds the separator of a list it is printed in, is quoted too: a quoted value is always a
    literal. --format json gives every value exactly."""
    if value.isprintable() and not value.startswith(("'", '"')) and not (separator and separator in value):
        return value
    return _literal(value)


def _keys(keys: str) -> str:
    """Keystrokes as aureport --tty shows them ("ls",<nl>: they begin with a quote), repr() only when
    not printable."""
    return keys if keys.isprintable() else repr(keys)


def render_text(sessions: list[Session], host: str | None) -> str:
    if not sessions:
        return "no sessions found\n"
    out = []
    for s in sessions:
        where = shown(s.node or host or "?")
        roles = ",".join(shown(role, ",") for role in s.roles) or "-"
        user, login = shown(s.teleport_user), shown(s.login)
        if s.user_omitted:
            user += f" (and {s.user_omitted} more bytes, cut to fit the record)"
        if s.roles_omitted:
            roles += f" and {s.roles_omitted} more (cut to fit the record)"
        client = f"{shown(s.hostname)} {shown(s.addr)}"
        client += f", {shown(s.teleport_addr)} as Teleport recorded" if s.teleport_addr else ""
        child = f", {CHILDREN.get(s.child, shown(s.child))} (teleport {shown(s.child)})" if s.child else ""
        if s.refused:
            ses = f" (ses {s.ses})" if s.ses is not None else ""
            out.append(
                f"REFUSED login{ses} on {where}: Teleport user {user} as {login}, roles {roles}\n"
                f"  attempted {local_time(s.start)}: {s.refused}\n"
            )
        else:
            ended = f"ended {local_time(s.end)} ({s.end_result})" if s.end is not None else "not ended in the log"
            if s.end is None and s.child == "networking" and s.login != "root":
                # docs/records.md: Teleport 17+ closes it as the login user, whom the kernel takes no record from.
                ended += " (Teleport closes forwarding sessions as the login user: no end is ever recorded)"
            began = "started" if s.start_in_log else "start not in the log, first record"
            out.append(
                f"session {s.ses if s.ses is not None else '(no id)'} on {where}: Teleport user {user}"
                f" as {login} (auid {s.auid}), roles {roles}\n"
                f"  {began} {local_time(s.start)} ({s.result}), {ended}\n"
            )
            if not s.input_joined:
                out.append("  no session id (pam_loginuid gave none): its typed input cannot be joined to it\n")
        out.append(f"  terminal {shown(s.terminal)}, client {client}, program {shown(s.exe)}, pid {s.pid}{child}\n")
        timeline = [
            (e.time, e.serial, f"{e.type:<10} {shown(e.op) + ' ' if e.op else ''}res={shown(e.res)}") for e in s.events
        ]
        timeline += [(k.time, k.serial, f"{'input':<10} {shown(k.comm)}[{k.pid}]: {_keys(k.keys)}") for k in s.input]
        out.extend(f"    {local_time(t)}  {line}\n" for t, _, line in sorted(timeline))
    return "".join(out)


# A byte that is not UTF-8, as _text keeps it (a lone surrogate), in json.dumps' output.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def render_json(sessions: list[Session], host: str | None) -> str:
    """One object a line. Every value is exact: a byte that is not UTF-8 is the escape \\udcXX (XX the
    byte; Python's json.loads and .encode("utf-8", "surrogateescape") give it back), which no character
    a value holds is written as (the text is UTF-8, and JSON escapes only control characters)."""
    lines = []
    for s in sessions:
        obj = s.to_json()
        obj["host"] = s.node or host
        line = json.dumps(obj, sort_keys=True, ensure_ascii=False)
        lines.append(_NOT_UTF8.sub(lambda m: f"\\u{ord(m[0]):04x}", line))
    return "".join(line + "\n" for line in lines)
