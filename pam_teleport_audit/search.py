"""What a Teleport user did: sessions and typed input, from the audit log.

One pass over the log with auparse (python3-audit). libauparse does the
filtering in C: only events holding a record of a type below reach Python.

A session is keyed by (node, ses): our USER_START names the Teleport user
and gives the session id pam_loginuid assigned; every later record with that
ses on that node belongs to it (TTY input included) until the kernel's LOGIN
record gives the id to a new session (ids restart at boot). Our USER_ACCT and
the kernel's LOGIN come before the USER_START (ses unset, or set by
pam_loginuid just before us): they are joined by the pid that wrote it.
"""

from __future__ import annotations

import calendar
import json
import mmap
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from .auditlog import AuditRecord, read_conf, read_record
from .constants import OP_ACCOUNTING, OP_SESSION_CLOSE, OP_SESSION_OPEN, UNSET_ID
from .record import bare_value, decode_value

# Record types a session timeline is made of.
TIMELINE_TYPES = ("USER_ACCT", "USER_START", "USER_END", "LOGIN", "CRED_ACQ", "CRED_DISP", "TTY", "USER_TTY")
DEFAULT_LOG = "/var/log/audit/audit.log"
# Our account record precedes its USER_START by milliseconds; look back this far for it.
ACCOUNT_LOOKBACK = 60.0
# Fields shown as auparse interprets them: keystrokes, as aureport --tty shows them.
_INTERPRETED = frozenset({"data"})


@dataclass
class Keystrokes:
    time: float
    serial: int  # the audit event's serial number (ausearch -a)
    pid: int
    comm: str
    keys: str  # as aureport --tty shows them: "ls -l",<nl>
    text: str  # the bytes typed, decoded (UTF-8, invalid bytes escaped)


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
    node: str | None
    ses: int
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

    def to_json(self) -> dict[str, object]:
        """A stable object for SIEM ingestion: times in ISO 8601 UTC."""
        out = asdict(self)
        out["start"] = iso(self.start)
        out["end"] = iso(self.end) if self.end is not None else None
        for item in out["events"] + out["input"]:
            item["time"] = iso(item["time"])
        return out


def parse_time(text: str, now: float | None = None) -> float:
    """--since/--until: ISO 8601 (local time unless it ends in Z), @EPOCH, today, yesterday, recent."""
    now = time.time() if now is None else now
    midnight = time.mktime((*time.localtime(now)[:3], 0, 0, 0, 0, 0, -1))
    words = {"recent": now - 600, "today": midnight, "yesterday": midnight - 86400, "now": now}
    if text in words:
        return words[text]
    if text.startswith("@"):
        return float(text[1:])
    utc = text.endswith("Z")
    body = text[:-1] if utc else text
    for layout in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            parsed = time.strptime(body, layout)
        except ValueError:
            continue
        return float(calendar.timegm(parsed)) if utc else time.mktime((*parsed[:8], -1))
    raise ValueError(f"cannot read time {text!r}: use YYYY-MM-DD[THH:MM[:SS]][Z], @EPOCH, today, yesterday or recent")


def iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}Z"


def _text(raw: str) -> str:
    return decode_value(raw).decode("utf-8", "backslashreplace") if raw not in ("", "?") else raw


def log_files(inputs: Iterable[str] | None, auditd_conf: str = "/etc/audit/auditd.conf") -> list[str]:
    """The files to read, oldest first: the given ones, or auditd's log with its rotated files."""
    files = list(inputs or [])
    if files:
        return files
    try:
        log = read_conf(auditd_conf).get("log_file") or DEFAULT_LOG
    except OSError:
        log = DEFAULT_LOG
    folder, base = os.path.split(log)
    rotated = []
    for name in os.listdir(folder or "."):
        suffix = name[len(base) + 1 :]
        if name.startswith(base + ".") and suffix.isdigit():
            rotated.append((int(suffix), os.path.join(folder, name)))
    return [path for _, path in sorted(rotated, reverse=True)] + [log]


def _lines_around(data: mmap.mmap | bytes, pattern: re.Pattern[bytes]) -> list[tuple[int, int]]:
    """(start, end) of every line holding a match."""
    spans = []
    for match in pattern.finditer(data):
        start = data.rfind(b"\n", 0, match.start()) + 1
        end = data.find(b"\n", match.end())
        spans.append((start, len(data) if end < 0 else end + 1))
    return spans


def _grep(files: list[str], *patterns: re.Pattern[bytes]) -> str:
    """The lines of the files that match any pattern, in file order, as one buffer for auparse."""
    out = []
    for path in files:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                continue
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
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
    """auparse over the only lines that can belong to the user's sessions.

    Two byte scans narrow a log of millions of records down for auparse: the
    lines naming the user as we write the name (record.bare_value), whose
    USER_START records give the session ids and pids; then every line with one
    of those ses= or pid= values. A superset of what find_sessions() keeps, so
    the result is the same as parsing the whole log; auparse parses what is left.
    """
    import auparse

    encoded = bare_value(teleport_user.encode("utf-8", "surrogateescape")).encode()
    named = _grep(files, re.compile(rb" teleportUser=" + re.escape(encoded) + rb" "))
    ses, pids = set(), set()
    for rec in iter_records(auparse.AuParser(auparse.AUSOURCE_BUFFER, named)) if named else ():
        if rec.type == "USER_START" and rec.fields.get("op") == OP_SESSION_OPEN:
            ses.add(rec.fields.get("ses", ""))
        pids.add(rec.fields.get("pid", ""))
    # One scan per field name: a pattern that starts with a literal (" ses=") is searched fast.
    patterns = []
    for name, values in (("ses", ses), ("pid", pids)):
        numbers = [x for x in values if x.isdigit()]
        if numbers:
            patterns.append(re.compile(f" {name}={_digit_trie(numbers)} ".encode()))
    text = _grep(files, *patterns) if patterns else ""
    return auparse.AuParser(auparse.AUSOURCE_BUFFER, text)


def iter_records(parser: Any, since: float | None = None) -> Iterator[AuditRecord]:
    """Records of the timeline types, filtered in C by libauparse."""
    expression = " || ".join(f"\\record_type == {t}" for t in TIMELINE_TYPES)
    if since is not None:
        expression = f"(\\timestamp >= ts:{int(since)}.{int(since * 1000) % 1000:03d}) && ({expression})"
    import auparse

    parser.search_add_expression(expression, auparse.AUSEARCH_RULE_CLEAR)
    parser.search_set_stop(auparse.AUSEARCH_STOP_EVENT)
    while parser.search_next_event():
        parser.first_record()
        while True:
            if parser.get_type_name() in TIMELINE_TYPES:
                yield read_record(parser, _INTERPRETED)
            if not parser.next_record():
                break
        # search_next_event() resumes after the current event
        # (AUSEARCH_STOP_EVENT), so nothing is read twice.


def find_sessions(
    records: Iterable[AuditRecord],
    teleport_user: str,
    *,
    since: float | None = None,
    until: float | None = None,
    node: str | None = None,
) -> list[Session]:
    """Sessions of one Teleport user, in the order they started."""
    wanted = teleport_user.encode("utf-8", "surrogateescape")
    sessions: list[Session] = []
    open_by_key: dict[tuple[str | None, int], Session] = {}  # (node, ses) → its session
    before_start: dict[tuple[str | None, int], list[AuditRecord]] = {}  # (node, pid) → ACCT/LOGIN
    for rec in records:
        rec_node = rec.fields.get("node")
        if node is not None and rec_node != node:
            continue
        op = rec.fields.get("op")
        ses = rec.int("ses")
        pid_key = (rec_node, rec.int("pid"))
        ours = "teleportUser" in rec.fields and decode_value(rec.fields["teleportUser"]) == wanted
        if rec.type == "USER_ACCT" and op == OP_ACCOUNTING and ours:
            before_start[pid_key] = [rec]  # a new PAM transaction of this process
            continue
        if rec.type == "LOGIN":
            open_by_key.pop((rec_node, ses), None)  # this id now names another session
        if pid_key in before_start and rec.type != "USER_START":
            before_start[pid_key].append(rec)  # libpam's USER_ACCT, the kernel's LOGIN
            continue
        if rec.type == "USER_START" and op == OP_SESSION_OPEN and ours and ses != UNSET_ID:
            early = before_start.pop(pid_key, [])
            if (since is None or rec.time >= since) and (until is None or rec.time <= until):
                session = _new_session(rec, rec_node, ses)
                session.events = [_event(r) for r in early if rec.time - r.time <= ACCOUNT_LOOKBACK]
                sessions.append(session)
                open_by_key[(rec_node, ses)] = session
        session = open_by_key.get((rec_node, ses))
        if session is None:
            continue
        if rec.type in ("TTY", "USER_TTY"):
            data = rec.fields.get("data", rec.fields.get("msg", ""))
            session.input.append(
                Keystrokes(
                    rec.time,
                    rec.serial,
                    rec.int("pid"),
                    _text(rec.fields.get("comm", "?")),
                    rec.interpreted.get("data", data),
                    _text(data),
                )
            )
            continue
        session.events.append(_event(rec))
        if rec.type == "USER_END" and op == OP_SESSION_CLOSE and ours:
            session.end, session.end_result = rec.time, rec.fields.get("res")
    return sessions


def _event(rec: AuditRecord) -> Event:
    return Event(rec.time, rec.serial, rec.type, rec.fields.get("op"), rec.fields.get("res"), rec.int("pid"))


def _new_session(rec: AuditRecord, rec_node: str | None, ses: int) -> Session:
    f = rec.fields
    roles = _text(f.get("teleportRoles", "?"))
    return Session(
        node=rec_node,
        ses=ses,
        teleport_user=_text(f["teleportUser"]),
        login=_text(f.get("acct", "?")),
        auid=rec.int("auid"),
        roles=[] if roles == "?" else roles.split(","),
        terminal=_text(f.get("terminal", "?")),
        hostname=_text(f.get("hostname", "?")),
        addr=_text(f.get("addr", "?")),
        exe=_text(f.get("exe", "?")),
        pid=rec.int("pid"),
        start=rec.time,
        result=f.get("res", "?"),
    )


def local_time(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"


def render_text(sessions: list[Session], host: str | None) -> str:
    if not sessions:
        return "no sessions found\n"
    out = []
    for s in sessions:
        where = s.node or host or "?"
        ended = f"ended {local_time(s.end)} ({s.end_result})" if s.end is not None else "not ended in the log"
        out.append(
            f"session {s.ses} on {where}: Teleport user {s.teleport_user} as {s.login} (auid {s.auid}),"
            f" roles {','.join(s.roles) or '-'}\n"
            f"  started {local_time(s.start)} ({s.result}), {ended}\n"
            f"  terminal {s.terminal}, client {s.hostname} {s.addr}, program {s.exe}, pid {s.pid}\n"
        )
        timeline = [(e.time, e.serial, f"{e.type:<10} {e.op + ' ' if e.op else ''}res={e.res}") for e in s.events]
        timeline += [(k.time, k.serial, f"{'input':<10} {k.comm}[{k.pid}]: {k.keys}") for k in s.input]
        out.extend(f"    {local_time(t)}  {line}\n" for t, _, line in sorted(timeline))
    return "".join(out)


def render_json(sessions: list[Session], host: str | None) -> str:
    lines = []
    for s in sessions:
        obj = s.to_json()
        obj["host"] = s.node or host
        lines.append(json.dumps(obj, sort_keys=True, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)
