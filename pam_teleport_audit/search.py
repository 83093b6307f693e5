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
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from .auditlog import interpret
from .constants import OP_ACCOUNTING, OP_SESSION_CLOSE, OP_SESSION_OPEN, UNSET_ID
from .record import decode_value

# Record types a session timeline is made of.
TIMELINE_TYPES = ("USER_ACCT", "USER_START", "USER_END", "LOGIN", "CRED_ACQ", "CRED_DISP", "TTY", "USER_TTY")
DEFAULT_LOG = "/var/log/audit/audit.log"
# Our account record precedes its USER_START by milliseconds; look back this far for it.
ACCOUNT_LOOKBACK = 60.0


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


class _Record:
    """The fields of the record the parser stands on, read once."""

    def __init__(self, parser: Any) -> None:  # an auparse.AuParser
        self.type = parser.get_type_name()
        stamp = parser.get_timestamp()
        self.time = stamp.sec + stamp.milli / 1000
        self.serial = stamp.serial
        self.fields: dict[str, str] = {}
        self.interpreted: dict[str, str] = {}
        parser.first_field()
        while True:
            name = parser.get_field_name()
            if name not in self.fields:  # the first one counts, as for ausearch
                self.fields[name] = parser.get_field_str()
                if name == "data":
                    self.interpreted[name] = interpret(parser)
            if not parser.next_field():
                break

    def int(self, name: str) -> int:
        try:
            return int(self.fields.get(name, ""))
        except ValueError:
            return -1


def open_parser(inputs: Iterable[str] | None) -> Any:
    """An auparse parser over files (oldest first) or over auditd's logs with their rotated files."""
    import auparse

    files = list(inputs or [])
    if files:
        return auparse.AuParser(auparse.AUSOURCE_FILE_ARRAY, files)
    return auparse.AuParser(auparse.AUSOURCE_LOGS)


def iter_records(parser: Any, since: float | None = None) -> Iterator[_Record]:
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
                yield _Record(parser)
            if not parser.next_record():
                break
        # search_next_event() resumes after the current event
        # (AUSEARCH_STOP_EVENT), so nothing is read twice.


def find_sessions(
    records: Iterable[_Record],
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
    before_start: dict[tuple[str | None, int], list[_Record]] = {}  # (node, pid) → ACCT/LOGIN
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


def _event(rec: _Record) -> Event:
    return Event(rec.time, rec.serial, rec.type, rec.fields.get("op"), rec.fields.get("res"), rec.int("pid"))


def _new_session(rec: _Record, rec_node: str | None, ses: int) -> Session:
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
