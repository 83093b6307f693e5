"""search.find_sessions over crafted records: both record sequences, refusals, pid reuse,
and Teleport's own records (raw teleportUser). The same logic over real logs through
auparse is in tests/system/test_search.py."""

from __future__ import annotations

import random
import re

import pytest

from pam_teleport_audit.admin.auditlog import AuditRecord
from pam_teleport_audit.admin.search import find_sessions, teleport_fields

U = 4294967295
TELEPORT_REFUSED = "refused by Teleport itself (invalid_user: no such login, or certificate or roles denied)"
EXE = '"/usr/local/bin/teleport"'
_HEADER = re.compile(r"type=(\w+) msg=audit\((\d+)\.(\d+):(\d+)\): (.*)", re.DOTALL)
_FIELD = re.compile(r"([\w-]+)=('[^']*'|\S+)")


def parse(line: str) -> AuditRecord:
    """One log line as auparse splits it (first occurrence wins, msg='…' opened): enough for these lines."""
    node, _, rest = line.partition(" ") if line.startswith("node=") else ("", "", line)
    kind, sec, milli, serial, body = _HEADER.fullmatch(rest).groups()  # type: ignore[union-attr]
    fields: dict[str, str] = {"node": node[5:]} if node else {}
    for name, value in _FIELD.findall(body):
        inner = _FIELD.findall(value[1:-1]) if name == "msg" and value.startswith("'") else [(name, value)]
        for key, val in inner:
            fields.setdefault(key, val)
    return AuditRecord(kind, int(serial), int(sec) + int(milli) / 1000, fields, {}, line)


class Log:
    """Lines in the layout the kernel and auditd write, numbered as they come."""

    def __init__(self, start: float = 1795900000.0) -> None:
        self.start, self.serial, self.lines = start, 100, []

    def add(self, kind: str, at: float, pid: int, ses: int, body: str, auid: int = 1002) -> None:
        self.serial += 1
        auid = U if ses == U else auid
        stamp = f"{self.start + at:.3f}:{self.serial}"
        self.lines.append(f"type={kind} msg=audit({stamp}): pid={pid} uid=0 auid={auid} ses={ses} msg='{body}'")

    def login(self, at: float, pid: int, ses: int) -> None:
        self.serial += 1
        self.lines.append(
            f"type=LOGIN msg=audit({self.start + at:.3f}:{self.serial}): pid={pid} uid=0 old-auid={U} auid=1002"
            f" tty=(none) old-ses={U} ses={ses} res=1"
        )

    def tty(self, at: float, pid: int, ses: int, typed: str) -> None:
        self.serial += 1
        self.lines.append(
            f"type=TTY msg=audit({self.start + at:.3f}:{self.serial}): tty pid={pid} uid=1002 auid=1002 ses={ses}"
            f' major=136 minor=0 comm="sh" data={typed.encode().hex().upper()}'
        )

    def records(self) -> list[AuditRecord]:
        return [parse(line) for line in self.lines]


def ours(op: str, user: str, res: str, extra: str = "") -> str:
    where = "hostname=? addr=? terminal=ssh"
    return f'op=teleport:{op} acct="tpdemo" exe={EXE} {where} teleportUser={user}{extra} res={res}'


def pam(op: str, res: str, exe: str = EXE) -> str:
    return f'op=PAM:{op} grantors=? acct="tpdemo" exe={exe} hostname=? addr=? terminal=ssh res={res}'


def teleport(op: str, user: str, addr: str, res: str = "success", acct: str = "tpdemo") -> str:
    """Teleport's text (lib/auditd/auditd_linux.go msgDataTmpl): teleportUser raw."""
    return f'op={op} acct="{acct}" exe={EXE} hostname=? addr={addr} terminal=teleport teleportUser={user} res={res}'


def old_session(log: Log, at: float, pid: int, ses: int, user: str, shell: int, typed: list[str]) -> None:
    """The earlier sequence: USER_ACCT at acct time (ses unset), USER_START at open, USER_END at close."""
    log.add("USER_ACCT", at, pid, U, ours("accounting", user, "success"))
    log.add("USER_ACCT", at + 0.001, pid, U, pam("accounting", "success"))
    log.login(at + 0.002, pid, ses)
    log.add("USER_START", at + 0.003, pid, ses, ours("session_open", user, "success"))
    log.add("USER_START", at + 0.004, pid, ses, pam("session_open", "success"))
    for i, line in enumerate(typed):
        log.tty(at + 0.1 + i / 10, shell, ses, line)
    log.add("USER_END", at + 1, pid, ses, ours("session_close", user, "success"))


def old_refusal(log: Log, at: float, pid: int, user: str) -> None:
    """The earlier sequence refused by the account stack: ours said success, libpam failed."""
    log.add("USER_ACCT", at, pid, U, ours("accounting", user, "success"))
    log.add("USER_ACCT", at + 0.001, pid, U, pam("accounting", "failed"))


def test_old_sequence_refusal_then_a_shell_with_the_same_pid_keeps_its_input() -> None:
    log = Log()
    old_refusal(log, 0, 500, "alice")
    old_session(log, 2, 600, 71, "alice", 500, ["echo one\n", "exit\n"])  # its shell got pid 500
    refused, session = find_sessions(log.records(), "alice")
    assert refused.refused == "refused by the account stack" and refused.pid == 500 and refused.ses is None
    assert [e.op for e in refused.events] == ["teleport:accounting", "PAM:accounting"]
    assert session.refused is None and session.ses == 71 and session.pid == 600
    assert [k.text for k in session.input] == ["echo one\n", "exit\n"]
    assert {k.pid for k in session.input} == {500}


def test_new_sequence_refusal_then_a_shell_with_the_same_pid_keeps_its_input() -> None:
    log = Log()
    log.add("USER_ACCT", 0, 500, U, pam("accounting", "failed"))
    log.add("USER_LOGIN", 0.001, 500, U, ours("login", "alice", "failed"))
    log.add("USER_ACCT", 1, 600, U, pam("accounting", "success"))
    log.login(1.001, 600, 72)
    log.add("USER_ACCT", 1.002, 600, 72, ours("accounting", "alice", "success"))
    log.tty(1.2, 500, 72, "echo two\n")
    log.add("USER_START", 2, 600, 72, ours("session_open", "alice", "success"))
    log.add("USER_END", 2, 600, 72, ours("session_close", "alice", "success"))
    refused, session = find_sessions(log.records(), "alice")
    assert refused.refused == "refused by the account stack" and refused.result == "failed"
    assert (session.ses, session.result, session.end_result) == (72, "success", "success")
    assert session.start == log.start + 1.002  # today's USER_ACCT starts the session
    assert [k.text for k in session.input] == ["echo two\n"]


def test_a_reused_teleport_pid_starts_a_new_attempt() -> None:
    log = Log()
    old_refusal(log, 0, 500, "alice")
    old_session(log, 120, 500, 73, "alice", 501, ["echo later\n"])  # the same pid, two minutes on
    refused, session = find_sessions(log.records(), "alice")
    assert refused.refused and len(refused.events) == 2
    assert session.refused is None and [e.op for e in session.events][:3] == [
        "teleport:accounting",
        "PAM:accounting",
        None,  # LOGIN
    ]


def test_a_session_module_refusal_after_ours() -> None:
    log = Log()
    log.login(0, 700, 74)
    log.add("USER_ACCT", 0.001, 700, 74, ours("accounting", "alice", "success"))
    log.add("USER_START", 0.002, 700, 74, pam("session_open", "failed"))
    log.add("USER_START", 0.003, 700, 74, ours("session_open", "alice", "failed"))
    (session,) = find_sessions(log.records(), "alice")
    assert session.refused == "refused by a session module" and session.result == "failed"
    assert session.ses == 74 and session.end is None


def test_a_close_module_failing_after_ours_ends_the_session_failed() -> None:
    """Our teleport:session_close is written where our line runs; a module after it can still fail the
    close (pam_exec, pam_mount, pam_tty_audit as a user): libpam's record of the close, written after the
    whole stack, says failed, and so must the session's end (it used to say success)."""
    log = Log()
    log.login(0, 710, 75)
    log.add("USER_ACCT", 0.001, 710, 75, ours("accounting", "alice", "success"))
    log.add("USER_START", 0.002, 710, 75, pam("session_open", "success"))
    log.add("USER_START", 1, 710, 75, ours("session_open", "alice", "success"))
    log.add("USER_END", 1, 710, 75, ours("session_close", "alice", "success"))
    log.add("USER_END", 1.001, 710, 75, pam("session_close", "failed"))
    (session,) = find_sessions(log.records(), "alice")
    assert (session.result, session.end, session.end_result) == ("success", log.start + 1, "failed")
    assert session.refused is None


def test_a_session_module_refusal_before_ours_after_pam_loginuid() -> None:
    """`session requisite` (or default=die) between pam_loginuid and our line refuses: our line never ran,
    so our only record is teleport:accounting from pam_end, after libpam's failed session_open. That is a
    refusal, not a session that opened and never ended (tests/system/test_refusals.py, on the real stack)."""
    log = Log()
    log.add("USER_ACCT", 0, 710, U, pam("accounting", "success"))
    log.login(0.001, 710, 77)
    log.add("USER_START", 0.002, 710, 77, pam("session_open", "failed"))
    log.add("USER_ACCT", 0.003, 710, 77, ours("accounting", "alice", "success"))
    # the same, with the process's records before its ses rotated out
    log.add("USER_START", 5, 711, 78, pam("session_open", "failed"))
    log.add("USER_ACCT", 5.001, 711, 78, ours("accounting", "alice", "success"))
    first, second = find_sessions(log.records(), "alice")
    for session, ses in ((first, 77), (second, 78)):
        assert session.refused == "refused by a session module" and session.result == "failed"
        assert session.ses == ses and session.end is None


def test_a_good_login_whose_session_line_was_jumped_over_is_not_a_refusal() -> None:
    """The control: libpam's open and close succeeded, our accounting came from pam_end after them."""
    log = Log()
    log.add("USER_ACCT", 0, 720, U, pam("accounting", "success"))
    log.login(0.001, 720, 79)
    log.add("USER_START", 0.002, 720, 79, pam("session_open", "success"))
    log.add("USER_END", 1, 720, 79, pam("session_close", "success"))
    log.add("USER_ACCT", 1.001, 720, 79, ours("accounting", "alice", "success"))
    (session,) = find_sessions(log.records(), "alice")
    assert session.refused is None and session.result == "success"


def test_an_inner_program_failing_is_not_a_refusal_of_the_login() -> None:
    """su inside the session fails: same ses, another pid; the login itself succeeded."""
    log = Log()
    old_session(log, 0, 800, 75, "alice", 801, ["su\n"])
    log.add("USER_AUTH", 0.5, 802, 75, pam("authentication", "failed", exe='"/usr/bin/su"'))
    (session,) = find_sessions(log.records(), "alice")
    assert session.refused is None and "PAM:authentication" in [e.op for e in session.events]


def test_teleport_records_give_the_client_address_and_are_matched_on_the_raw_name() -> None:
    log = Log()
    log.add("USER_LOGIN", 0, 900, U, teleport("login", "alice smith", "203.0.113.7:53422"))
    log.add("USER_ACCT", 0.001, 900, U, pam("accounting", "success"))
    log.login(0.002, 900, 76)
    log.add("USER_ACCT", 0.003, 900, 76, ours("accounting", "616C69636520736D697468", "success"))
    log.add("USER_START", 1, 900, 76, ours("session_open", "616C69636520736D697468", "success"))
    log.add("USER_END", 1, 900, 76, ours("session_close", "616C69636520736D697468", "success"))
    log.add("USER_END", 1.01, 900, 76, teleport("session_close", "alice smith", "203.0.113.7:53422"))
    (session,) = find_sessions(log.records(), "alice smith")
    assert session.teleport_addr == "203.0.113.7:53422" and session.teleport_user == "alice smith"
    assert [(e.type, e.op) for e in session.events if e.op in ("login", "session_close")] == [
        ("USER_LOGIN", "login"),
        ("USER_END", "session_close"),
    ]
    # auparse would read teleportUser=alice from the same line: that is not alice's record.
    assert find_sessions(log.records(), "alice") == []


def test_a_login_teleport_refused_itself() -> None:
    log = Log()
    log.add("USER_LOGIN", 0, 950, U, teleport("login", "alice", "198.51.100.9:40026", acct="nosuch"))
    log.add("USER_ERR", 0.003, 950, U, teleport("invalid_user", "alice", "198.51.100.9:40026", "failed", "nosuch"))
    (attempt,) = find_sessions(log.records(), "alice")
    assert attempt.refused == TELEPORT_REFUSED and attempt.login == "nosuch"
    assert attempt.teleport_addr == "198.51.100.9:40026" and attempt.ses is None


def test_the_ssh_service_refusing_twice_is_two_refusals() -> None:
    """lib/srv/authhandlers.go: the SSH service's own pid sends USER_ERR for a refused certificate or role."""
    log = Log()
    for at in (0, 5):
        log.add("USER_ERR", at, 300, U, teleport("invalid_user", "alice", f"198.51.100.9:{at + 1}", "failed", "root"))
    found = find_sessions(log.records(), "alice")
    assert [(s.pid, s.refused, s.teleport_addr) for s in found] == [
        (300, TELEPORT_REFUSED, "198.51.100.9:1"),
        (300, TELEPORT_REFUSED, "198.51.100.9:6"),
    ]


def test_teleport_records_alone_are_not_a_session() -> None:
    """A node without the module: Teleport says success before and after; nothing to list."""
    log = Log()
    log.add("USER_LOGIN", 0, 960, U, teleport("login", "alice", "198.51.100.9:1"))
    log.add("USER_END", 5, 960, U, teleport("session_close", "alice", "198.51.100.9:1"))
    assert find_sessions(log.records(), "alice") == []


def test_child_and_roles_omitted() -> None:
    log = Log()
    log.login(0, 970, 77)
    extra = " teleportRoles=access,editor teleportChild=networking teleportRolesOmitted=3"
    log.add("USER_ACCT", 0.001, 970, 77, ours("accounting", "alice", "success", extra))
    (session,) = find_sessions(log.records(), "alice")
    assert (session.child, session.roles, session.roles_omitted) == ("networking", ["access", "editor"], 3)


OLD_EXE = 'op=login acct="x" exe=/opt/teleport hostname=? addr=? terminal=teleport teleportUser=bob res=success'
MEMFD_EXE = (
    'op=login acct="x" exe="/memfd:teleport-sessionhelper (deleted)" hostname=? addr=1.2.3.4:5 terminal=teleport'
    " teleportUser=bob res=success"
)


@pytest.mark.parametrize(
    ("body", "user", "exe", "addr"),
    [
        (teleport("login", "alice smith", "10.0.0.1:22"), "alice smith", "/usr/local/bin/teleport", "10.0.0.1:22"),
        # a name holding " res=": the last one ends it
        (teleport("login", "a res=failed b", "[::1]:9"), "a res=failed b", "/usr/local/bin/teleport", "[::1]:9"),
        # releases before 2023: exe= not quoted
        (OLD_EXE, "bob", "/opt/teleport", "?"),
        # the memfd session helper (18.8+): a space in exe
        (MEMFD_EXE, "bob", "/memfd:teleport-sessionhelper (deleted)", "1.2.3.4:5"),
    ],
)
def test_teleport_fields_from_the_raw_line(body: str, user: str, exe: str, addr: str) -> None:
    line = f"type=USER_LOGIN msg=audit(1795900000.000:1): pid=1 uid=0 auid={U} ses={U} msg='{body}'"
    for text in (line, line + '\x1dUID="root" AUID="unset"'):  # RAW and ENRICHED
        found = teleport_fields(AuditRecord("USER_LOGIN", 1, 0.0, {"op": "login"}, {}, text))
        assert found is not None and (found["user"], found["exe"], found["addr"]) == (user, exe, addr)
    # libpam's and sshd's records are not Teleport's.
    sshd = line.replace("op=login acct", "op=PAM:session_open acct")
    assert teleport_fields(parse(sshd)) is None


def test_a_new_process_soon_with_a_refused_logins_pid_is_not_joined_to_it() -> None:
    """Our pam_end record ends that process's PAM: what its pid writes next is another process's."""
    log = Log()
    log.add("USER_ACCT", 0, 500, U, pam("accounting", "failed"))
    log.add("USER_LOGIN", 0.001, 500, U, ours("login", "alice", "failed"))
    log.add("USER_ACCT", 5, 500, U, pam("accounting", "success"))  # pid 500 again, five seconds on
    log.login(5.001, 500, 78)
    log.add("USER_ACCT", 5.002, 500, 78, ours("accounting", "alice", "success"))
    refused, session = find_sessions(log.records(), "alice")
    assert [e.res for e in refused.events] == ["failed", "failed"]
    assert [(e.op, e.res) for e in session.events][:1] == [("PAM:accounting", "success")]
    assert session.refused is None


def new_session(log: Log, at: float, pid: int, ses: int, user: str, shell: int, typed: list[str]) -> None:
    """Today's sequence: our USER_ACCT at open (with the ses), USER_START and USER_END at close."""
    log.add("USER_ACCT", at, pid, U, pam("accounting", "success"))
    log.login(at + 0.001, pid, ses)
    log.add("USER_ACCT", at + 0.002, pid, ses, ours("accounting", user, "success"))
    log.add("USER_START", at + 0.003, pid, ses, pam("session_open", "success"))
    for i, line in enumerate(typed):
        log.tty(at + 0.1 + i / 10, shell, ses, line)
    log.add("USER_START", at + 1, pid, ses, ours("session_open", user, "success"))
    log.add("USER_END", at + 1, pid, ses, ours("session_close", user, "success"))
    log.add("USER_END", at + 1.001, pid, ses, pam("session_close", "success"))


def new_refusal(log: Log, at: float, pid: int, user: str) -> None:
    log.add("USER_ACCT", at, pid, U, pam("accounting", "failed"))
    log.add("USER_LOGIN", at + 0.001, pid, U, ours("login", user, "failed"))


def new_session_refusal(log: Log, at: float, pid: int, ses: int, user: str) -> None:
    log.add("USER_ACCT", at, pid, U, pam("accounting", "success"))
    log.login(at + 0.001, pid, ses)
    log.add("USER_ACCT", at + 0.002, pid, ses, ours("accounting", user, "success"))
    log.add("USER_START", at + 0.003, pid, ses, pam("session_open", "failed"))
    log.add("USER_START", at + 0.004, pid, ses, ours("session_open", user, "failed"))


Expected = dict[str, list[tuple[int | None, str | None, list[str], str | None]]]


def random_log(seed: int) -> tuple[Log, Expected]:
    """30 logins one after another, both sequences, refused or not, on three pids that keep coming
    back (as the Teleport process or as a session's shell), some with Teleport's own records around
    them; and what search must find for each user."""
    rng = random.Random(seed)
    log, at, ses = Log(), 0.0, 100
    expected: Expected = {"alice": [], "bob": []}
    for n in range(30):
        pid, shell = rng.sample([500, 501, 502], 2)
        user, kind = rng.choice(["alice", "bob"]), rng.choice(["old", "old-refused", "new", "refused", "session"])
        addr = f"192.0.2.1:{n}" if kind != "old" and rng.random() < 0.5 else None
        if addr:
            log.add("USER_LOGIN", at, pid, U, teleport("login", user, addr))
            at += 0.01
        ses += 1
        typed = [f"echo {n}\n", "exit\n"]
        if kind == "old":
            old_session(log, at, pid, ses, user, shell, typed)
            expected[user].append((ses, None, typed, addr))
        elif kind == "new":
            new_session(log, at, pid, ses, user, shell, typed)
            expected[user].append((ses, None, typed, addr))
        elif kind == "old-refused":
            old_refusal(log, at, pid, user)
            expected[user].append((None, "refused by the account stack", [], addr))
        elif kind == "refused":
            new_refusal(log, at, pid, user)
            expected[user].append((None, "refused by the account stack", [], addr))
        else:
            new_session_refusal(log, at, pid, ses, user)
            expected[user].append((ses, "refused by a session module", [], addr))
        if addr:
            end_ses = U if kind in ("refused", "old-refused") else ses
            log.add("USER_END", at + 1.5, pid, end_ses, teleport("session_close", user, addr))
        at += 1.6 + rng.choice([0.01, 2.0, 30.0, 70.0])
    return log, expected


@pytest.mark.parametrize("seed", range(40))
def test_random_logins_on_few_pids_each_keep_their_own_records(seed: int) -> None:
    log, expected = random_log(seed)
    records = log.records()
    for user, wanted in expected.items():
        got = [(s.ses, s.refused, [k.text for k in s.input], s.teleport_addr) for s in find_sessions(records, user)]
        assert got == wanted, (seed, user)


def test_text_shows_refusals_forwarding_cut_roles_and_teleports_address() -> None:
    from pam_teleport_audit.admin.search import render_json, render_text

    log = Log()
    log.add("USER_LOGIN", 0, 900, U, teleport("login", "alice", "203.0.113.7:53422"))
    new_refusal(log, 0.01, 900, "alice")
    log.login(1, 901, 79)
    extra = " teleportRoles=access teleportChild=networking teleportRolesOmitted=2"
    log.add("USER_ACCT", 1.001, 901, 79, ours("accounting", "alice", "success", extra))
    found = find_sessions(log.records(), "alice")
    text = render_text(found, "node-1").splitlines()
    assert text[0] == "REFUSED login on node-1: Teleport user alice as tpdemo, roles -"
    assert text[1].endswith(": refused by the account stack")
    assert "client ? ?, 203.0.113.7:53422 as Teleport recorded" in text[2]
    session = next(i for i, line in enumerate(text) if line.startswith("session 79 on node-1:"))
    assert text[session].endswith("roles access and 2 more (cut to fit the record)")
    # Teleport 17+ closes a forwarding session as the login user (tpdemo): said, not left to guess.
    assert text[session + 1].endswith(
        "not ended in the log (Teleport closes forwarding sessions as the login user: no end is ever recorded)"
    )
    assert text[session + 2].endswith("pid 901, port/agent/X11 forwarding (teleport networking)")
    objects = [__import__("json").loads(line) for line in render_json(found, "node-1").splitlines()]
    assert [(o["ses"], o["refused"], o["child"], o["roles_omitted"], o["host"]) for o in objects] == [
        (None, "refused by the account stack", None, None, "node-1"),
        (79, None, "networking", 2, "node-1"),
    ]


def test_a_session_whose_start_rotated_out_is_listed_with_what_is_left() -> None:
    """Only its later input and our close records remain: listed, marked, and given that input."""
    log = Log()
    new_session(log, 0, 600, 101, "alice", 603, ["id\n", "cat /etc/shadow\n"])
    log.lines = log.lines[5:]  # libpam's and our accounting, the LOGIN, the open and "id" rotated out
    (session,) = find_sessions(log.records(), "alice")
    assert (session.ses, session.pid, session.start_in_log, session.refused) == (101, 600, False, None)
    assert session.start == log.start + 0.2  # the first record left: the input
    assert [k.text for k in session.input] == ["cat /etc/shadow\n"]
    assert (session.result, session.end_result, session.end) == ("success", "success", log.start + 1)
    assert [e.op for e in session.events] == ["teleport:session_open", "teleport:session_close", "PAM:session_close"]
    from pam_teleport_audit.admin.search import render_text

    text = render_text([session], "vm").splitlines()
    assert text[0].startswith("session 101 on vm: Teleport user alice as tpdemo")
    assert text[1].startswith("  start not in the log, first record ") and "(success), ended" in text[1]
    # A complete session is not marked.
    full = Log()
    new_session(full, 0, 600, 101, "alice", 603, ["id\n"])
    assert [s.start_in_log for s in find_sessions(full.records(), "alice")] == [True]


def test_a_login_reassigning_the_ses_ends_what_a_rotated_session_is_given() -> None:
    log = Log()
    log.tty(0, 50, 101, "the previous boot\n")
    log.login(1, 700, 101)  # another login got ses 101: what came before is not the session's
    log.tty(2, 703, 101, "after\n")
    log.add("USER_START", 3, 800, 101, ours("session_open", "alice", "success"))
    log.add("USER_END", 3, 800, 101, ours("session_close", "alice", "success"))
    (session,) = find_sessions(log.records(), "alice")
    assert [k.text for k in session.input] == ["after\n"] and not session.start_in_log
    assert session.start == log.start + 2


def test_a_login_without_ses_is_a_session_kept_open_until_our_close() -> None:
    """pam_loginuid missing or failed: every record has ses unset; the session is joined by pid, past
    ACCOUNT_LOOKBACK (other logins' records in between make the sweeps run), until our close."""
    log = Log()
    log.add("USER_LOGIN", 0, 600, U, teleport("login", "alice", "203.0.113.7:1"))
    log.add("USER_ACCT", 0.01, 600, U, pam("accounting", "success"))
    log.add("USER_ACCT", 0.02, 600, U, ours("accounting", "alice", "success"))
    log.add("USER_START", 0.03, 600, U, pam("session_open", "success"))
    log.tty(1, 603, U, "id\n")  # no ses: nothing joins it to the session
    new_refusal(log, 90, 700, "alice")
    new_session(log, 150, 800, 5, "bob", 801, ["echo bob\n"])
    log.add("USER_START", 300, 600, U, ours("session_open", "alice", "success"))
    log.add("USER_END", 300, 600, U, ours("session_close", "alice", "success"))
    log.add("USER_END", 300.001, 600, U, pam("session_close", "success"))
    log.add("USER_END", 300.01, 600, U, teleport("session_close", "alice", "203.0.113.7:1"))
    new_refusal(log, 330, 600, "alice")  # pid 600 again: another process, refused
    session, refused, again = find_sessions(log.records(), "alice")
    assert (session.ses, session.refused, session.pid, session.input_joined) == (None, None, 600, False)
    assert (session.result, session.end, session.end_result) == ("success", log.start + 300, "success")
    assert session.teleport_addr == "203.0.113.7:1" and session.input == []
    assert [e.op for e in session.events] == [
        "login",
        "PAM:accounting",
        "teleport:accounting",
        "PAM:session_open",
        "teleport:session_open",
        "teleport:session_close",
        "PAM:session_close",
        "session_close",
    ]
    assert (refused.pid, refused.refused) == (700, "refused by the account stack")
    assert (again.pid, again.refused, [e.res for e in again.events]) == (
        600,
        "refused by the account stack",
        ["failed", "failed"],
    )
    assert again.input_joined  # only sessions without ses are marked
    from pam_teleport_audit.admin.search import render_json, render_text

    text = render_text([session], None).splitlines()
    assert text[0].startswith("session (no id) on ?: Teleport user alice")
    assert text[2] == "  no session id (pam_loginuid gave none): its typed input cannot be joined to it"
    obj = __import__("json").loads(render_json([session], None))
    assert (obj["ses"], obj["input_joined"], obj["start_in_log"]) == (None, False, True)


def test_a_login_without_ses_refused_by_a_session_module() -> None:
    log = Log()
    log.add("USER_ACCT", 0, 600, U, pam("accounting", "success"))
    log.add("USER_ACCT", 0.01, 600, U, ours("accounting", "alice", "success"))
    log.add("USER_START", 0.02, 600, U, pam("session_open", "failed"))
    log.add("USER_START", 0.03, 600, U, ours("session_open", "alice", "failed"))
    (session,) = find_sessions(log.records(), "alice")
    assert (session.ses, session.refused, session.result) == (None, "refused by a session module", "failed")


def login_without_ses(log: Log, at: float, pid: int, user: str, close: float) -> None:
    """Today's sequence without pam_loginuid: every record has ses unset."""
    log.add("USER_LOGIN", at, pid, U, teleport("login", user, "203.0.113.7:1"))
    log.add("USER_ACCT", at + 0.01, pid, U, pam("accounting", "success"))
    log.add("USER_ACCT", at + 0.02, pid, U, ours("accounting", user, "success"))
    log.add("USER_START", at + 0.03, pid, U, pam("session_open", "success"))
    log.add("CRED_ACQ", at + 0.04, pid, U, pam("setcred", "success"))
    log.add("USER_START", at + close, pid, U, ours("session_open", user, "success"))
    log.add("USER_END", at + close, pid, U, ours("session_close", user, "success"))
    log.add("USER_END", at + close + 0.001, pid, U, pam("session_close", "success"))
    log.add("USER_END", at + close + 0.01, pid, U, teleport("session_close", user, "203.0.113.7:1"))


@pytest.mark.parametrize("close", [300, 5])
def test_a_login_without_ses_whose_accounting_rotated_out_is_listed_with_what_is_left(close: float) -> None:
    """Its start (Teleport's USER_LOGIN, the accounting records) went with the older file: our open and
    close are left, with its pid. Listed, marked as start not in the log; a short one also takes what
    its pid wrote just before (libpam's open, setcred), a long one starts at our open."""
    log = Log()
    login_without_ses(log, 0, 600, "alice", close)
    new_refusal(log, close + 30, 600, "alice")  # pid 600 again: another process, refused
    log.lines = log.lines[3:]
    session, refused = find_sessions(log.records(), "alice")
    assert (session.ses, session.pid, session.start_in_log, session.input_joined) == (None, 600, False, False)
    assert (session.refused, session.result, session.end, session.end_result) == (
        None,
        "success",
        log.start + close,
        "success",
    )
    course = ["PAM:session_open", "PAM:setcred"] if close < 60 else []
    assert [e.op for e in session.events] == [
        *course,
        "teleport:session_open",
        "teleport:session_close",
        "PAM:session_close",
        "session_close",
    ]
    assert session.start == log.start + (0.03 if close < 60 else close)
    assert (refused.pid, refused.refused, [e.res for e in refused.events]) == (
        600,
        "refused by the account stack",
        ["failed", "failed"],
    )
    from pam_teleport_audit.admin.search import render_text

    text = render_text([session], "vm").splitlines()
    assert text[0].startswith("session (no id) on vm: Teleport user alice")
    assert text[1].startswith("  start not in the log, first record ")


def test_a_login_without_ses_left_with_only_its_refusal_or_after_another_process_of_its_pid() -> None:
    """A session module refused it (our open res=failed at pam_end): listed as that refusal. The pid's
    records before it that are not its course are another process's: not taken."""
    log = Log()
    log.add("USER_AUTH", 0, 600, U, pam("authentication", "failed", exe='"/usr/sbin/sshd"'))
    log.add("USER_START", 1.01, 600, U, ours("session_open", "alice", "failed"))
    log.add("USER_END", 1.02, 600, U, teleport("session_close", "alice", "203.0.113.7:1"))
    (session,) = find_sessions(log.records(), "alice")
    assert (session.ses, session.start_in_log, session.result, session.refused) == (
        None,
        False,
        "failed",
        "refused by a session module",
    )
    assert [e.op for e in session.events] == ["teleport:session_open", "session_close"]
    assert session.start == log.start + 1.01


def test_logins_sharing_a_ses_are_separate_sessions() -> None:
    """pam_loginuid writes no LOGIN when the loginuid is already right: two logins keep ses 7."""
    log = Log()
    for at, pid, typed in ((0, 5000, "first\n"), (30, 5100, "second\n")):
        log.add("USER_ACCT", at, pid, 7, pam("accounting", "success"))
        log.add("USER_ACCT", at + 0.01, pid, 7, ours("accounting", "alice", "success"))
        log.tty(at + 1, pid + 3, 7, typed)
        log.add("USER_START", at + 5, pid, 7, ours("session_open", "alice", "success"))
        log.add("USER_END", at + 5, pid, 7, ours("session_close", "alice", "success"))
    first, second = find_sessions(log.records(), "alice")
    assert [(s.ses, s.pid, s.end) for s in (first, second)] == [(7, 5000, log.start + 5), (7, 5100, log.start + 35)]
    assert [k.text for k in first.input] == ["first\n"] and [k.text for k in second.input] == ["second\n"]
    for session in (first, second):
        assert {e.pid for e in session.events} == {session.pid}
        assert [e.op for e in session.events][:2] == ["PAM:accounting", "teleport:accounting"]


@pytest.mark.parametrize("replaced", [(False, True), (True, False), (True, True)], ids=["second", "first", "both"])
def test_logins_sharing_a_ses_across_a_teleport_upgrade(replaced: tuple[bool, bool]) -> None:
    """The binary replaced (dpkg, cp -f) between two logins of a Teleport whose loginuid was already
    set: the same program, " (deleted)" in one exe= and not the other (tests/system/test_teleport_upgrade.py).
    Each session keeps its own records; libpam's accounting of the second once went to the first."""
    log = Log()
    deleted = b"/usr/local/bin/teleport (deleted)".hex().upper()  # libaudit's hex: it holds a space
    for at, pid, gone in ((0, 5000, replaced[0]), (30, 5100, replaced[1])):
        exe = deleted if gone else EXE
        log.add("USER_ACCT", at, pid, 7, pam("accounting", "success", exe=exe))
        log.add("USER_ACCT", at + 0.01, pid, 7, ours("accounting", "alice", "success").replace(EXE, exe))
        log.add("USER_START", at + 5, pid, 7, ours("session_open", "alice", "success").replace(EXE, exe))
        log.add("USER_END", at + 5, pid, 7, ours("session_close", "alice", "success").replace(EXE, exe))
    first, second = find_sessions(log.records(), "alice")
    for session in (first, second):
        assert {e.pid for e in session.events} == {session.pid}, session.events
        assert [e.op for e in session.events][:2] == ["PAM:accounting", "teleport:accounting"]


def test_another_users_login_on_a_shared_ses_takes_what_follows() -> None:
    log = Log()
    log.add("USER_ACCT", 0, 5000, 7, ours("accounting", "alice", "success"))
    log.tty(1, 5003, 7, "alice's\n")
    log.add("USER_ACCT", 2, 5100, 7, ours("accounting", "bob", "success"))
    log.tty(3, 5103, 7, "bob's\n")
    log.add("USER_END", 4, 5000, 7, ours("session_close", "alice", "success"))  # alice's own close still joins
    (alice,) = find_sessions(log.records(), "alice")
    assert [k.text for k in alice.input] == ["alice's\n"] and alice.end == log.start + 4
    assert [k.text for k in find_sessions(log.records(), "bob")[0].input] == ["bob's\n"]


def test_node_selects_records_without_node_by_the_name_the_output_gives_them() -> None:
    log = Log()
    new_session(log, 0, 600, 71, "alice", 603, ["id\n"])
    collected = Log(start=log.start + 10)
    new_session(collected, 0, 600, 71, "alice", 603, ["ls\n"])
    records = log.records() + [parse("node=db1 " + line) for line in collected.lines]
    assert [(s.node, s.input[0].text) for s in find_sessions(records, "alice", node="vm", local="vm")] == [
        (None, "id\n")
    ]
    assert [s.node for s in find_sessions(records, "alice", node="db1", local="vm")] == ["db1"]
    assert find_sessions(records, "alice", node="vm") == []  # files from elsewhere: no name for them


def test_a_killed_login_without_ses_keeps_nothing_of_a_later_process_with_its_pid() -> None:
    """No close (the Teleport process killed); hours later sshd gets the pid and fails a password."""
    log = Log()
    log.add("USER_LOGIN", 0, 6100, U, teleport("login", "alice", "203.0.113.7:1"))
    log.add("USER_ACCT", 0.01, 6100, U, pam("accounting", "success"))
    log.add("USER_ACCT", 0.02, 6100, U, ours("accounting", "alice", "success"))
    log.add("USER_START", 0.03, 6100, U, pam("session_open", "success"))
    sshd = '"/usr/sbin/sshd"'
    for at in (7200, 7203):
        log.add("USER_AUTH", at, 6100, U, pam("authentication", "failed", exe=sshd))
    (session,) = find_sessions(log.records(), "alice")
    assert (session.ses, session.refused, session.result, session.end) == (None, None, "success", None)
    assert {e.op for e in session.events} == {"login", "PAM:accounting", "teleport:accounting", "PAM:session_open"}


def test_a_refused_login_on_a_shared_ses_is_listed_between_the_sessions() -> None:
    """Teleport's loginuid already right: every login keeps ses 7, no LOGIN; the middle one is refused."""
    log = Log()
    new_shared = [(0, 5000), (60, 5300)]
    log.add("USER_LOGIN", 29.9, 5100, 7, teleport("login", "alice", "203.0.113.7:2"))
    log.add("USER_ACCT", 30, 5100, 7, pam("accounting", "failed"))
    log.add("USER_LOGIN", 30.01, 5100, 7, ours("login", "alice", "failed"))
    log.add("USER_END", 30.02, 5100, 7, teleport("session_close", "alice", "203.0.113.7:2"))
    for at, pid in new_shared:
        log.add("USER_ACCT", at, pid, 7, pam("accounting", "success"))
        log.add("USER_ACCT", at + 0.01, pid, 7, ours("accounting", "alice", "success"))
        log.add("USER_START", at + 5, pid, 7, ours("session_open", "alice", "success"))
        log.add("USER_END", at + 5, pid, 7, ours("session_close", "alice", "success"))
    log.lines.sort(key=lambda line: float(line.split("audit(")[1].split(":")[0]))
    first, refused, second = find_sessions(log.records(), "alice")
    assert [(s.pid, s.refused) for s in (first, refused, second)] == [
        (5000, None),
        (5100, "refused by the account stack"),
        (5300, None),
    ]
    assert (refused.ses, refused.teleport_addr) == (7, "203.0.113.7:2")
    assert {e.pid for e in first.events} == {5000} and {e.pid for e in second.events} == {5300}


def test_what_a_process_that_outlives_its_session_writes_stays_in_it() -> None:
    """tmux keeps a shell of session 101 after it ended: sudo there is still that session's."""
    log = Log()
    new_session(log, 0, 4000, 101, "alice", 4003, ["tmux\n"])
    sudo = '"/usr/bin/sudo"'
    log.add("USER_AUTH", 600, 4010, 101, pam("authentication", "success", exe=sudo))
    log.add("USER_ACCT", 600.01, 4010, 101, pam("accounting", "failed", exe=sudo))
    (session,) = find_sessions(log.records(), "alice")
    assert session.refused is None
    assert [(e.pid, e.op, e.res) for e in session.events if e.pid == 4010] == [
        (4010, "PAM:authentication", "success"),
        (4010, "PAM:accounting", "failed"),
    ]


@pytest.mark.parametrize(
    ("zone", "shown"), [("UTC0", "2026-11-28 17:46:41.250 +0000"), ("EST5", "2026-11-28 12:46:41.250 -0500")]
)
def test_text_times_carry_the_zone_offset(monkeypatch: pytest.MonkeyPatch, zone: str, shown: str) -> None:
    """The same instant read on hosts in different zones must not look like two different times."""
    import time

    from pam_teleport_audit.admin.search import render_text

    log = Log(start=1795887999.75)
    new_session(log, 0.5, 600, 101, "alice", 603, ["id\n"])
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        text = render_text(find_sessions(log.records(), "alice"), "vm").splitlines()
    finally:
        monkeypatch.undo()
        time.tzset()
    assert text[1].endswith(f", ended {shown} (success)"), text[1]


def test_text_output_shows_control_characters_in_names_escaped() -> None:
    """A name from the log (SSO claims can carry anything; the module records any bytes) must not
    add a line to the report or drive the terminal: control characters are shown escaped."""
    from pam_teleport_audit.admin.search import Session, render_text

    forged = "bob\n  started 2026-01-01 00:00:00.000 (success), ended never\x1b[2K"
    session = Session(
        node=None,
        ses=7,
        teleport_user=forged,
        login="tp\tdemo",
        auid=1001,
        roles=["access", "ed\ritor"],
        terminal="ssh",
        hostname="?",
        addr="?",
        exe="/usr/local/bin/teleport",
        pid=42,
        start=0.0,
        result="success",
    )
    text = render_text([session], "vm")
    assert "\x1b" not in text and "\r" not in text and "\t" not in text
    lines = text.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("session 7 on vm: Teleport user " + repr(forged) + " as 'tp\\tdemo' (auid 1001)")
    assert lines[0].endswith("roles access,'ed\\ritor'")
    # Printable names, unicode and DOMAIN\\user included, are shown as they are.
    session.teleport_user, session.login, session.roles = "josé 用户", "AD\\alice", ["access"]
    assert render_text([session], "vm").startswith("session 7 on vm: Teleport user josé 用户 as AD\\alice (auid 1001)")


def test_values_that_used_to_print_the_same_are_told_apart_in_text_and_json() -> None:
    """A name holding the byte 0xFF and one holding the characters \\xff; roles `ops,dev`, `qa` (recorded
    each after a space, pam_module._joined) and `ops`, `dev`, `qa`. JSON is exact (the byte as the escape
    \\udcff, surrogateescape); the text quotes what it escapes and a role holding a comma."""
    import json

    from pam_teleport_audit.admin.search import render_json, render_text

    byte, chars = b"amb\xff", b"amb\\xff"
    log = Log()
    for pid, ses, name, roles in ((980, 81, byte, b" ops,dev qa"), (981, 82, chars, b"ops,dev,qa")):
        log.login(pid - 980, pid, ses)
        extra = f" teleportRoles={roles.hex().upper() if roles.startswith(b' ') else roles.decode()}"
        log.add("USER_ACCT", pid - 979.999, pid, ses, ours("accounting", name.hex().upper(), "success", extra))
    found = {}
    for name in (byte, chars):
        user = name.decode("utf-8", "surrogateescape")
        (found[name],) = find_sessions(log.records(), user)
        obj = json.loads(render_json([found[name]], "vm"))
        assert obj["teleport_user"].encode("utf-8", "surrogateescape") == name
    line = render_json([found[byte]], "vm")
    assert '"teleport_user": "amb\\udcff"' in line and line.isascii(), line
    assert '"roles": ["ops,dev", "qa"]' in line, line
    assert json.loads(render_json([found[chars]], "vm"))["roles"] == ["ops", "dev", "qa"]
    text = {name: render_text([found[name]], "vm").splitlines()[0] for name in (byte, chars)}
    assert "Teleport user 'amb\\xff' as tpdemo" in text[byte] and text[byte].endswith("roles 'ops,dev',qa")
    assert "Teleport user amb\\xff as tpdemo" in text[chars] and text[chars].endswith("roles ops,dev,qa")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("alice", "alice"),
        ("AD\\alice", "AD\\alice"),  # printable: a backslash is a backslash
        ("amb\udcff", "'amb\\xff'"),  # the byte 0xFF, not UTF-8
        ("amb\\\udcff", "'amb\\\\\\xff'"),  # a backslash, then the byte
        ("'quoted'", "\"'quoted'\""),  # begins with a quote: quoted, so a quoted value is always a literal
        ("nb\xa0sp", "'nb\\u00a0sp'"),  # U+00A0, not the byte A0
        ("tp\tdemo", "'tp\\tdemo'"),
    ],
)
def test_shown_never_prints_two_values_the_same(value: str, text: str) -> None:
    import ast

    from pam_teleport_audit.admin.search import shown

    assert shown(value) == text
    if text != value:  # a literal: read back, with \xNN (NN from 80) as the byte NN
        byte = re.sub(r"(\\\\)|\\x([89a-f][0-9a-f])", lambda m: m[1] or f"\\udc{m[2]}", text)
        assert ast.literal_eval(byte) == value
