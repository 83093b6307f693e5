"""pam-teleport-audit search: sessions and keystrokes of one Teleport user,
on fixture logs (rotated, RAW and ENRICHED) and on sessions made right now."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from pam_teleport_audit.admin import search
from pam_teleport_audit.admin.auditlog import ausearch_raw, since_args

from .conftest import ROOT, debian_stack, driver_argv, unique, wait_for_records

FIXTURES = ROOT / "tests" / "fixtures" / "audit"
TELEPORT_REFUSED = "refused by Teleport itself (invalid_user: no such login, or certificate or roles denied)"
TYPED = {
    "alice": ["echo alice-one\n", "sleep 0.5\n", "echo alice-two\n", "exit\n"],
    'bob "the admin" smith': ["echo bob-one\n", "echo bob-two\n", "exit\n"],
    "carol": ["echo carol-one\n", "exit\n"],
}


def run_search(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """The command as an administrator runs it; path: its PATH instead of ours."""
    return subprocess.run(
        ["/usr/bin/python3", "-m", "pam_teleport_audit", "search", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PATH": path} if path is not None else None,
        check=False,
    )


def json_sessions(*args: str) -> list[dict]:
    proc = run_search(*args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("fmt", ["raw", "enriched"])
@pytest.mark.parametrize("name", list(TYPED))
def test_fixture_logs_attribute_every_keystroke(fmt: str, name: str) -> None:
    files = [str(FIXTURES / fmt / "audit.log.1"), str(FIXTURES / fmt / "audit.log")]
    (session,) = json_sessions("--teleport-user", name, "--input", *files)
    assert session["teleport_user"] == name
    assert [k["text"] for k in session["input"]] == TYPED[name]
    assert session["login"] == "tpdemo" and session["auid"] == 1002
    assert session["end"] is not None and session["end_result"] == "success"
    ops = [e["op"] for e in session["events"]]
    assert ops[:2] == ["teleport:accounting", "PAM:accounting"]
    assert "teleport:session_open" in ops and "teleport:session_close" in ops
    assert {e["pid"] for e in session["events"]} == {session["pid"]}


def test_fixture_roles_hex_name_and_keys_as_aureport_shows_them() -> None:
    files = [str(FIXTURES / "raw" / "audit.log.1"), str(FIXTURES / "raw" / "audit.log")]
    (bob,) = json_sessions("--teleport-user", 'bob "the admin" smith', "--input", *files)
    assert bob["roles"] == ["editor", "root=all"]
    assert bob["input"][0]["keys"] == '"echo bob-one",<nl>'
    assert bob["ses"] == 72 and bob["host"] is None
    # Part of a name, or its hex form, is not the name.
    assert json_sessions("--teleport-user", "bob", "--input", *files) == []
    assert json_sessions("--teleport-user", "616C696365", "--input", *files) == []


def test_a_session_cut_by_rotation_needs_both_files() -> None:
    (alice,) = json_sessions("--teleport-user", "alice", "--input", str(FIXTURES / "raw" / "audit.log.1"))
    assert alice["end"] is None
    assert [k["text"] for k in alice["input"]] == TYPED["alice"][:2]


def test_time_window_selects_sessions_with_a_record_in_it() -> None:
    files = [str(FIXTURES / "enriched" / "audit.log.1"), str(FIXTURES / "enriched" / "audit.log")]
    # alice started at 1795842017.826 and ended at 1795842018.634, carol started at 1795842020.078
    assert len(json_sessions("--teleport-user", "carol", "--since", "@1795842020", "--input", *files)) == 1
    assert json_sessions("--teleport-user", "carol", "--until", "@1795842020", "--input", *files) == []
    (alice,) = json_sessions("--teleport-user", "alice", "--since", "@1795842018", "--input", *files)
    assert alice["start"] == "2026-11-28T05:00:17.826Z" and [k["text"] for k in alice["input"]] == TYPED["alice"]
    assert json_sessions("--teleport-user", "alice", "--since", "@1795842018.7", "--input", *files) == []


def test_text_output_and_errors() -> None:
    files = [str(FIXTURES / "raw" / "audit.log.1"), str(FIXTURES / "raw" / "audit.log")]
    out = run_search("--teleport-user", "carol", "--input", *files).stdout
    assert out.splitlines()[0].startswith("session 73 on ?: Teleport user carol as tpdemo (auid 1002)")
    assert '"echo carol-one",<nl>' in out
    assert run_search("--teleport-user", "nobody", "--input", *files).stdout == "no sessions found\n"
    bad = run_search("--teleport-user", "carol", "--since", "last tuesday")
    assert bad.returncode == 2 and "cannot read time" in bad.stderr
    missing = run_search("--teleport-user", "carol", "--input", "/nonexistent/audit.log")
    assert missing.returncode == 5 and "cannot read the audit log" in missing.stderr


def test_parse_time_forms() -> None:
    now = 1_800_000_000.0
    assert search.parse_time("@1795842020") == 1795842020.0
    assert search.parse_time("2026-11-28T05:00:20Z") == 1795842020.0
    assert search.parse_time("recent", now) == now - 600
    assert search.parse_time("yesterday", now) == search.parse_time("today", now) - 86400
    assert search.parse_time("2026-11-28") == time.mktime((2026, 11, 28, 0, 0, 0, 0, 0, -1))
    assert search.parse_time("2026-11-28 00:00:20.250 -0500") == search.parse_time("2026-11-28T10:30:20.25+05:30")
    assert search.parse_time("2026-11-28T05:00:20.250Z") == 1795842020.25
    for bad in ("2026-13-01", "2026-11-28T25:00", "2026-11-28T05", "2026-11-28 05:00 EST", "last tuesday"):
        with pytest.raises(ValueError, match="cannot read time"):
            search.parse_time(bad)


def test_a_time_as_either_output_prints_it_is_a_valid_since() -> None:
    """An operator copies a session's start from the report into --since: it must be read as the
    same instant, in any zone (the text's local time with its offset, JSON's UTC)."""
    files = [str(FIXTURES / "raw" / "audit.log.1"), str(FIXTURES / "raw" / "audit.log")]
    (carol,) = json_sessions("--teleport-user", "carol", "--input", *files)
    text = run_search("--teleport-user", "carol", "--input", *files).stdout.splitlines()[1]
    printed = text.split("started ", 1)[1].split(" (", 1)[0]  # "YYYY-MM-DD HH:MM:SS.fff +HHMM"
    for since in (carol["start"], printed):
        assert [s["ses"] for s in json_sessions("--teleport-user", "carol", "--since", since, "--input", *files)] == [
            carol["ses"]
        ], since
    assert search.parse_time(printed) == search.parse_time(carol["start"])


def test_interleaved_live_sessions_on_one_login(driver, pam_service, linux_user) -> None:
    login = linux_user()
    service = pam_service(debian_stack())
    users = {unique("ann-"): "one", unique('zed "x"=y ') + "\u00e9": "two"}
    started = time.time()
    procs = []
    for name, word in users.items():
        lines = [f"echo {word}-a", "sleep 0.6", f"echo {word}-b"]
        procs.append(
            subprocess.Popen(
                driver_argv(driver, service, login, user=name, lines=lines), stdout=subprocess.PIPE, text=True
            )
        )
        time.sleep(0.3)
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    # libpam's USER_END and ours, of these two processes: another suite's logins must not end the wait.
    pids = {p.pid for p in procs}
    wait_for_records(
        started, lambda rs: sum(r.type == "USER_END" and r.int("pid") in pids for r in rs) >= 4, "-m", "USER_END"
    )
    time.sleep(0.5)
    found = {}
    for name in users:
        sessions = json_sessions("--teleport-user", name, "--since", f"@{int(started)}")
        assert len(sessions) == 1, sessions
        found[name] = sessions[0]
    (a, b) = found.values()
    assert a["ses"] != b["ses"] and a["login"] == b["login"] == login
    assert a["start"] < b["start"] < a["end"]  # they overlapped
    for name, word in users.items():
        typed = [k["text"] for k in found[name]["input"]]
        assert typed == [f"echo {word}-a\n", "sleep 0.6\n", f"echo {word}-b\n", "exit\n"], (name, typed)
        assert found[name]["host"] == __import__("os").uname().nodename


def full_parse(files: list[str], name: str) -> list[dict]:
    """The reference: every record of the files through auparse, no narrowing."""
    import auparse

    parser = auparse.AuParser(auparse.AUSOURCE_FILE_ARRAY, files)
    return [s.to_json() for s in search.find_sessions(search.iter_records(parser), name)]


def test_narrowed_parse_equals_the_full_parse(tmp_path) -> None:
    from benchmarks.search_cost import generate

    log = tmp_path / "audit.log"
    generate(log, 20_000)  # ~280 copies of the fixture sessions, 100 Teleport users
    cases = [
        ([str(FIXTURES / f / n) for n in ("audit.log.1", "audit.log")], name)
        for f in ("raw", "enriched")
        for name in TYPED
    ]
    cases += [([str(log)], name) for name in ("user7xali", "user42xcar", 'bob "the admin" smith', "nobody")]
    for files, name in cases:
        narrowed = search.find_sessions(search.iter_records(search.candidate_parser(files, name)), name)
        assert [s.to_json() for s in narrowed] == full_parse(files, name), (files, name)
    assert len(full_parse([str(log)], "user7xali")) > 0
    assert len(full_parse([str(log)], 'bob "the admin" smith')) > 100


def test_log_files_are_the_rotated_ones_oldest_first(tmp_path) -> None:
    for name in ("audit.log", "audit.log.1", "audit.log.2", "audit.log.10", "audit.log.bak"):
        (tmp_path / name).write_text("")
    conf = tmp_path / "auditd.conf"
    conf.write_text(f"log_format = ENRICHED\nlog_file = {tmp_path / 'audit.log'}\n")
    assert search.log_files(None, str(conf)) == [
        str(tmp_path / n) for n in ("audit.log.10", "audit.log.2", "audit.log.1", "audit.log")
    ]
    given = tmp_path / "given.log"
    given.write_text("")
    assert search.log_files([str(given)], str(conf)) == [str(given)]


def test_aggregated_logs_key_sessions_by_node(tmp_path) -> None:
    """Two hosts forwarding to one collector (name_format): the same ses numbers on both."""
    base = b"".join((FIXTURES / "raw" / n).read_bytes() for n in ("audit.log.1", "audit.log"))
    a = b"".join(b"node=host-a " + line + b"\n" for line in base.split(b"\n") if line)
    typed_b = base.replace(b"alice-".hex().upper().encode(), b"ALICE-".hex().upper().encode())  # TTY data is hex
    b = b"".join(b"node=host-b " + line + b"\n" for line in typed_b.split(b"\n") if line)
    log = tmp_path / "collector.log"
    log.write_bytes(a + b)  # host-b's records after host-a's, same ses 71, 72, 73
    both = json_sessions("--teleport-user", "alice", "--input", str(log))
    assert [(s["node"], s["ses"]) for s in both] == [("host-a", 71), ("host-b", 71)]
    assert [k["text"] for k in both[0]["input"]] == TYPED["alice"]
    assert [k["text"] for k in both[1]["input"]] == [t.replace("alice-", "ALICE-") for t in TYPED["alice"]]
    assert all(s["host"] == s["node"] for s in both)
    (only_b,) = json_sessions("--teleport-user", "alice", "--node", "host-b", "--input", str(log))
    assert only_b["node"] == "host-b" and only_b["input"] == both[1]["input"]
    out = run_search("--teleport-user", "carol", "--input", str(log)).stdout
    assert "session 73 on host-a:" in out and "session 73 on host-b:" in out


def teleport_fixture(tmp_path, fmt: str) -> str:
    """tests/fixtures/audit/teleport/audit.log, RAW as written, or ENRICHED as auditd would write it."""
    raw = FIXTURES / "teleport" / "audit.log"
    if fmt == "raw":
        return str(raw)
    enriched = tmp_path / "enriched.log"
    suffix = '\x1dUID="root" AUID="unset"'
    enriched.write_text("".join(line + suffix + "\n" for line in raw.read_text().splitlines()))
    return str(enriched)


@pytest.mark.parametrize("fmt", ["raw", "enriched"])
def test_refusals_teleport_records_and_a_reused_pid_through_auparse(tmp_path, fmt: str) -> None:
    log = teleport_fixture(tmp_path, fmt)
    (smith,) = json_sessions("--teleport-user", "alice smith", "--input", log)
    assert smith["ses"] == 80 and smith["refused"] is None and smith["child"] == "exec"
    assert smith["teleport_addr"] == "203.0.113.7:53422"  # from Teleport's raw `teleportUser=alice smith`
    assert [k["text"] for k in smith["input"]] == ["echo smith-one\n", "exit\n"]
    assert (smith["events"][0]["type"], smith["events"][0]["op"]) == ("USER_LOGIN", "login")
    assert smith["events"][-1]["op"] == "session_close" and smith["end_result"] == "success"

    alice = json_sessions("--teleport-user", "alice", "--input", log)
    assert [(s["ses"], s["pid"], s["refused"]) for s in alice] == [
        (None, 20200, "refused by the account stack"),
        (81, 20300, None),
        (82, 20400, "refused by a session module"),
        (83, 20500, None),
        (None, 20600, TELEPORT_REFUSED),
    ]
    refused, reused, by_session, forwarding, no_login = alice
    assert refused["teleport_addr"] == "198.51.100.9:40022" and refused["result"] == "failed"
    assert [e["op"] for e in refused["events"]] == ["login", "PAM:accounting", "teleport:login", "session_close"]
    # The session after the refusal: its shell got the refused process's pid, its input stays.
    assert [(k["pid"], k["text"]) for k in reused["input"]] == [(20200, "echo reused-pid\n"), (20200, "exit\n")]
    assert reused["teleport_addr"] == "198.51.100.9:40023" and reused["result"] == "success"
    assert by_session["result"] == "failed" and by_session["end"] is None
    assert (forwarding["child"], forwarding["roles_omitted"], forwarding["teleport_addr"]) == ("networking", 3, None)
    assert no_login["login"] == "nosuch" and no_login["teleport_addr"] == "198.51.100.9:40026"

    out = run_search("--teleport-user", "alice", "--input", log).stdout
    assert "REFUSED login on ?: Teleport user alice as tpdemo, roles access\n" in out
    assert "refused by the account stack" in out and "198.51.100.9:40023 as Teleport recorded" in out
    assert "port/agent/X11 forwarding (teleport networking)" in out and "and 3 more (cut to fit the record)" in out


def test_narrowed_parse_equals_the_full_parse_on_teleport_records(tmp_path) -> None:
    for fmt in ("raw", "enriched"):
        files = [teleport_fixture(tmp_path, fmt)]
        for name in ("alice", "alice smith", "smith", "nosuch"):
            narrowed = search.find_sessions(search.iter_records(search.candidate_parser(files, name)), name)
            assert [s.to_json() for s in narrowed] == full_parse(files, name), (fmt, name)


# Teleport's USER_LOGIN, sent before PAM by the process that then runs it: a Python process sends it
# in Teleport's exact text (lib/auditd/auditd_linux.go msgDataTmpl, teleportUser raw), then becomes
# the driver by exec, so both carry one pid, as in `teleport exec`.
SEND_THEN_EXEC = """
import os, sys
sys.path.insert(0, sys.argv[1])
from pam_teleport_audit.pam_module import AuditSocket
with AuditSocket() as audit:
    audit.send_user(1112, sys.argv[2])
os.execv(sys.argv[3], sys.argv[3:])
"""


def as_teleport(driver, argv: list[str], login: str, name: str, addr: str) -> list[str]:
    where = f"hostname=? addr={addr} terminal=teleport"
    text = f'op=login acct="{login}" exe="{driver}" {where} teleportUser={name} res=success'
    return ["/usr/bin/python3", "-c", SEND_THEN_EXEC, str(ROOT), text, *argv]


def stack_with(after_ours: str | None = None, replace: tuple[str, str] | None = None, drop: str = "") -> str:
    """The shipped stack with a line added after our session line, one line replaced, or lines dropped."""
    lines = []
    for line in debian_stack().splitlines():
        if drop and drop in line:
            continue
        if replace and line.startswith(replace[0]):
            line = replace[1]
        lines.append(line)
        if after_ours and line.startswith("session") and "pam_python.so" in line:
            lines.append(after_ours)
    return "\n".join(lines) + "\n"


REFUSE_ACCOUNT = ("account    required     pam_nologin.so", "account    required     pam_deny.so")


def wait_for_search(*args: str, until, timeout: float = 10.0) -> list[dict]:
    """search's JSON, polled until the predicate holds (auditd writes asynchronously)."""
    deadline = time.time() + timeout
    while True:
        found = json_sessions(*args)
        if until(found) or time.time() > deadline:
            return found
        time.sleep(0.3)


def test_live_refusals_and_teleport_records_of_the_same_process(driver, pam_service, linux_user, tmp_path) -> None:
    """Each refusal of issue 13 (a required account module, an expired account, pam_nologin, a session
    module after ours), then a good login: search lists the four as refused, each with Teleport's address."""
    login, expired = linux_user(), linux_user()
    subprocess.run(["chage", "-E", "0", expired], check=True)
    flag = tmp_path / "nologin"
    flag.write_text("maintenance\n")
    flag.chmod(0o644)
    name = unique("tp user ")  # a space: hex in our records, raw in Teleport's
    nologin = ("account    required     pam_nologin.so", f"account    required     pam_nologin.so file={flag}")
    runs = [  # service, login, refused by, driver's exit code (10+: acct_mgmt, 40+: open_session)
        (pam_service(stack_with(replace=REFUSE_ACCOUNT)), login, "refused by the account stack", 10),
        (pam_service(debian_stack()), expired, "refused by the account stack", 10),
        (pam_service(stack_with(replace=nologin)), login, "refused by the account stack", 10),
        (
            pam_service(stack_with(after_ours="session    required   pam_deny.so")),
            login,
            "refused by a session module",
            40,
        ),
        (pam_service(debian_stack()), login, None, 0),
    ]
    started = time.time()
    pids = []
    for number, (service, user, _, expected) in enumerate(runs):
        argv = driver_argv(driver, service, user, user=name, lines=["echo live-one"])
        addr = f"198.51.100.7:{40000 + number}"
        proc = subprocess.run(as_teleport(driver, argv, user, name, addr), capture_output=True, text=True, check=False)
        assert expected <= proc.returncode < expected + 30 and bool(proc.returncode) == bool(expected), proc
        pids.append(int(next(x for x in proc.stdout.splitlines() if x.startswith("pid=")).partition("=")[2]))
    found = wait_for_search(
        "--teleport-user", name, "--since", f"@{int(started)}", until=lambda f: len(f) == 5 and f[4]["end"]
    )
    assert [(s["pid"], s["login"], s["refused"], s["teleport_addr"]) for s in found] == [
        (pid, user, refused, f"198.51.100.7:{40000 + number}")
        for number, (pid, (_, user, refused, _)) in enumerate(zip(pids, runs, strict=True))
    ]
    *accounts, session_module, ok = found
    for account in accounts:
        assert account["ses"] is None and account["result"] == "failed"
        ops = [(e["op"], e["res"]) for e in account["events"]]
        assert ops[:2] == [("login", "success"), ("PAM:accounting", "failed")], ops
        assert ("teleport:login", "failed") in ops and not any(
            (op or "").startswith("teleport:") and res == "success" for op, res in ops
        )
    assert session_module["ses"] is not None and session_module["result"] == "failed"
    assert not any(e["res"] == "success" and e["op"] == "teleport:session_open" for e in session_module["events"])
    assert ok["result"] == ok["end_result"] == "success" and ok["child"] == "exec" and ok["refused"] is None
    assert [k["text"] for k in ok["input"]] == ["echo live-one\n", "exit\n"]
    assert all(s["teleport_user"] == name for s in found)
    out = run_search("--teleport-user", name, "--since", f"@{int(started)}").stdout
    assert out.count("REFUSED login") == 4 and "198.51.100.7:40004 as Teleport recorded" in out


def test_live_a_process_that_reuses_a_refused_logins_pid_keeps_its_input(driver, pam_service, linux_user) -> None:
    """A refused login at pid P; then, in a session, a program that gets P reads typed input.

    The session's shell (as root) sets ns_last_pid just before it forks `head`, so that head gets P.
    """
    name = unique("reuse-")
    started = time.time()
    refused = subprocess.run(
        driver_argv(driver, pam_service(stack_with(replace=REFUSE_ACCOUNT)), linux_user(), user=name, shell=False),
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode > 10, refused.stdout + refused.stderr
    reused = int(next(x for x in refused.stdout.splitlines() if x.startswith("pid=")).partition("=")[2])
    service = pam_service(debian_stack())
    for attempt in range(5):
        typed = [f"echo {reused - 1} > /proc/sys/kernel/ns_last_pid; head -n 1", f"read-by-pid-{attempt}"]
        proc = subprocess.run(driver_argv(driver, service, "root", user=name, lines=typed), capture_output=True)
        assert proc.returncode == 0, proc
        found = wait_for_search(
            "--teleport-user", name, "--since", f"@{int(started)}", until=lambda f, n=attempt: len(f) == n + 2
        )
        assert len(found) == attempt + 2 and found[0]["refused"] == "refused by the account stack", found
        assert found[0]["pid"] == reused
        session = found[-1]
        assert session["refused"] is None and session["login"] == "root"
        typed_by = [(k["pid"], k["text"]) for k in session["input"]]
        assert [text for _, text in typed_by] == [typed[0] + "\n", typed[1] + "\n", "exit\n"], typed_by
        if typed_by[1][0] == reused:
            break  # head got P, and its input is in the session
    else:
        pytest.fail(f"head never got pid {reused} in 5 sessions: other processes forked in between each time")


@pytest.mark.parametrize("seed", range(5))
def test_random_logs_through_auparse_narrowed_and_full(tmp_path, seed: int) -> None:
    """The unit test's random logins (pids reused, both sequences, refusals, Teleport's records), through
    auparse: the narrowed parse finds what the full parse finds, and that is what each login was."""
    from tests.unit.test_search_sessions import random_log

    log, expected = random_log(seed)
    path = tmp_path / "audit.log"
    path.write_text("".join(line + "\n" for line in log.lines))
    for user, wanted in expected.items():
        narrowed = search.find_sessions(search.iter_records(search.candidate_parser([str(path)], user)), user)
        assert [s.to_json() for s in narrowed] == full_parse([str(path)], user), (seed, user)
        got = [(s.ses, s.refused, [k.text for k in s.input], s.teleport_addr) for s in narrowed]
        assert got == wanted, (seed, user)


def real_login_lines(driver, service: str, login: str, name: str, typed: list[str]) -> tuple[list[str], list[dict]]:
    """The log lines of one real login (its process's and its ses's, in log order), once search sees
    it ended with all its input; and what search finds in them."""
    started = time.time()
    run = subprocess.run(driver_argv(driver, service, login, user=name, lines=typed), capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    pid = next(x for x in run.stdout.splitlines() if x.startswith("pid=")).partition("=")[2]
    want = [line + "\n" for line in typed] + ["exit\n"]
    (live,) = wait_for_search(
        "--teleport-user",
        name,
        "--since",
        f"@{int(started)}",
        until=lambda f: len(f) == 1 and f[0]["end"] and [k["text"] for k in f[0]["input"]] == want,
    )
    assert [k["text"] for k in live["input"]] == want, live
    since = since_args(started)
    text = ausearch_raw(*since, "-p", pid) + ausearch_raw(*since, "--session", str(live["ses"]))
    lines = sorted(set(text.splitlines()) - {""}, key=lambda line: [int(n) for n in re.findall(r"\d+", line)[:3]])
    return lines, live


def write_lines(path, lines: list[str], after: bytes = b"") -> str:
    path.write_bytes("".join(line + "\n" for line in lines).encode() + after)
    return str(path)


def test_real_login_read_through_nuls_in_any_file_order_and_after_its_start_rotated_out(
    driver, pam_service, linux_user, tmp_path
) -> None:
    """One real login, its input more than auparse's 2 s event window apart, rearranged as a crash
    (NULs), a shell glob (newest file first) and rotation (its start gone) leave it."""
    name = unique("rot-")
    typed = ["echo before-the-cut", "sleep 3", "echo after-the-cut"]
    lines, live = real_login_lines(driver, pam_service(debian_stack()), linux_user(), name, typed)
    (reference,) = json_sessions("--teleport-user", name, "--input", write_lines(tmp_path / "all.log", lines))
    assert reference["ses"] == live["ses"] and reference["start_in_log"] and reference["end_result"] == "success"
    # Cut after the input typed before the sleep: what follows is more than 2 s later.
    cut = next(i for i, line in enumerate(lines) if "type=TTY" in line and b"sleep 3".hex().upper() in line)
    older, newer = lines[: cut + 1], lines[cut + 1 :]
    assert any("teleport:session_close" in line for line in newer)
    assert not any("type=LOGIN" in line or "teleport:accounting" in line for line in newer)

    # A crash: a record cut short, then zeros, then the rest on the same "line".
    crashed = tmp_path / "crashed.log"
    cut_short = b"type=SYSCALL msg=audit(1.000:1): arch=c000003e sysc" + b"\0" * 4096
    write_lines(crashed, older, cut_short + "\n".join(newer).encode() + b"\n")
    assert json_sessions("--teleport-user", name, "--input", str(crashed)) == [reference]

    # Rotated: given newest first, as audit.log* expands.
    rotated = tmp_path / "rotated"
    rotated.mkdir()
    first, last = write_lines(rotated / "audit.log.1", older), write_lines(rotated / "audit.log", newer)
    assert json_sessions("--teleport-user", name, "--input", last, first) == [reference]

    # Its start rotated out: listed, marked, with the input and the end that are left.
    (partial,) = json_sessions("--teleport-user", name, "--input", last)
    assert (partial["ses"], partial["pid"], partial["start_in_log"]) == (reference["ses"], reference["pid"], False)
    assert [k["text"] for k in partial["input"]] == ["echo after-the-cut\n", "exit\n"]
    assert (partial["end"], partial["end_result"], partial["result"]) == (reference["end"], "success", "success")
    assert partial["start"] == partial["input"][0]["time"]
    out = run_search("--teleport-user", name, "--input", last).stdout
    assert f"session {reference['ses']} on ?:" in out and "start not in the log, first record" in out


def test_live_login_without_pam_loginuid_is_a_session_without_id(driver, pam_service, linux_user, tmp_path) -> None:
    """pam_loginuid missing from the stack: every record has ses unset; search lists the login, joined
    by the Teleport process's pid, and says its input cannot be joined. With its accounting rotated
    out, what is left is listed, marked as start not in the log."""
    name = unique("noses-")
    started = time.time()
    service = pam_service(stack_with(drop="pam_loginuid"))
    run = subprocess.run(driver_argv(driver, service, linux_user(), user=name, lines=["echo x"]), capture_output=True)
    assert run.returncode == 0, run
    args = ("--teleport-user", name, "--since", f"@{int(started)}")
    (session,) = wait_for_search(*args, until=lambda f: len(f) == 1 and f[0]["end"])
    assert (session["ses"], session["refused"], session["input_joined"]) == (None, None, False)
    assert session["result"] == session["end_result"] == "success" and session["input"] == []
    ops = [e["op"] for e in session["events"]]
    assert ops[:2] == ["PAM:accounting", "teleport:accounting"] and "teleport:session_close" in ops
    assert {e["pid"] for e in session["events"]} == {session["pid"]}
    out = run_search(*args).stdout
    assert out.startswith("session (no id) on ") and "its typed input cannot be joined to it" in out

    lines = ausearch_raw(*since_args(started), "-p", str(session["pid"])).splitlines()
    cut = next(i for i, line in enumerate(lines) if "op=teleport:accounting" in line) + 1
    (partial,) = json_sessions("--teleport-user", name, "--input", write_lines(tmp_path / "audit.log", lines[cut:]))
    assert (partial["ses"], partial["pid"], partial["start_in_log"], partial["input_joined"]) == (
        None,
        session["pid"],
        False,
        False,
    )
    assert (partial["result"], partial["end"], partial["end_result"]) == ("success", session["end"], "success")
    assert partial["events"] == session["events"][ops.index("teleport:accounting") + 1 :]
    assert partial["start"] == partial["events"][0]["time"]


def test_since_lists_a_session_that_ran_into_the_window_whole_from_its_real_start(tmp_path) -> None:
    """A two-hour session: --since inside it lists it whole, from its real start (never as one whose
    start is not in the log), as --since before it does; --since after its last record does not,
    nor --until before its start."""
    t, u = 1795900000, 4294967295
    teleport = 'acct="tpdemo" exe="/usr/local/bin/teleport" hostname=? addr=? terminal=ssh'
    lines = [
        f"type=USER_ACCT msg=audit({t}.000:1): pid=500 uid=0 auid={u} ses={u} msg='op=PAM:accounting"
        f" grantors=pam_permit {teleport} res=success'",
        f"type=LOGIN msg=audit({t}.001:2): pid=500 uid=0 old-auid={u} auid=1001 tty=(none) old-ses={u} ses=101 res=1",
        f"type=USER_ACCT msg=audit({t}.002:3): pid=500 uid=0 auid=1001 ses=101 msg='op=teleport:accounting"
        f" {teleport} teleportUser=since-user teleportRoles=access teleportChild=exec res=success'",
        f'type=TTY msg=audit({t + 10}.000:4): tty pid=503 uid=1001 auid=1001 ses=101 major=136 minor=0 comm="sh"'
        " data=69640A",
        f"type=TTY msg=audit({t + 3600}.000:5): tty pid=503 uid=1001 auid=1001 ses=101 major=136 minor=0"
        ' comm="sh" data=77686F616D690A',
        f"type=USER_START msg=audit({t + 7200}.000:6): pid=500 uid=0 auid=1001 ses=101 msg='op=teleport:session_open"
        f" {teleport} teleportUser=since-user teleportRoles=access teleportChild=exec res=success'",
        f"type=USER_END msg=audit({t + 7200}.001:7): pid=500 uid=0 auid=1001 ses=101 msg='op=teleport:session_close"
        f" {teleport} teleportUser=since-user teleportRoles=access teleportChild=exec res=success'",
    ]
    log = tmp_path / "audit.log"
    log.write_text("\n".join(lines) + "\n")
    args = ("--teleport-user", "since-user", "--input", str(log))
    for since in (t - 60, t + 1800, t + 5400, t + 7200):
        (whole,) = json_sessions(*args, "--since", f"@{since}")
        assert whole["start_in_log"] and whole["ses"] == 101 and whole["start"] == search.iso(t + 0.002)
        assert [k["text"] for k in whole["input"]] == ["id\n", "whoami\n"]
    assert json_sessions(*args, "--since", f"@{t + 7201}") == []
    assert json_sessions(*args, "--until", f"@{t - 1}") == []
    assert len(json_sessions(*args, "--since", f"@{t + 3600}", "--until", f"@{t + 3600}")) == 1


def search_with_auditd_conf(conf: str, *args: str) -> subprocess.CompletedProcess[str]:
    """search as an administrator runs it on a host whose /etc/audit/auditd.conf is conf (bound over the
    real one in a private mount namespace: the host's file is never touched)."""
    from .namespaces import private_mounts

    script = f"mount --bind {conf} /etc/audit/auditd.conf && exec /usr/bin/python3 -m pam_teleport_audit search"
    return subprocess.run(
        [*private_mounts(script + "".join(f" '{a}'" for a in args))], capture_output=True, text=True, cwd=ROOT
    )


def test_this_hosts_log_as_auditd_conf_names_it_in_any_case_and_what_it_says_about_it(tmp_path) -> None:
    """auditd reads its keywords in any case (strcasecmp): `LOG_FILE = ...` is the log search reads.
    write_logs = no: auditd keeps no log, said on stderr. A collector (tcp_listen_port): records
    without node= may come from any sender, so they are not labelled as this host's."""
    folder = tmp_path / "log"
    folder.mkdir()
    for name in ("audit.log.1", "audit.log"):
        (folder / name).write_bytes((FIXTURES / "raw" / name).read_bytes())
    (reference,) = json_sessions("--teleport-user", "alice", "--input", str(folder))
    conf = tmp_path / "auditd.conf"
    args = ("--teleport-user", "alice", "--format", "json")

    conf.write_text(f"LOG_FILE = {folder / 'audit.log'}\nWrite_Logs = Yes\n")
    proc = search_with_auditd_conf(str(conf), *args)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    (session,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert session == {**reference, "host": os.uname().nodename}

    conf.write_text(f"log_file = {folder / 'audit.log'}\nwrite_logs = NO\n")
    proc = search_with_auditd_conf(str(conf), *args)
    assert proc.returncode == 0 and "write_logs = no: auditd keeps no log on this host" in proc.stderr, proc.stderr
    # The deprecated log_format = NOLOG: auditd 3.0.9 still turns write_logs off for it.
    conf.write_text(f"log_file = {folder / 'audit.log'}\nlog_format = NOLOG\n")
    proc = search_with_auditd_conf(str(conf), *args)
    assert proc.returncode == 0 and "log_format = NOLOG (deprecated" in proc.stderr, proc.stderr

    conf.write_text(f"log_file = {folder / 'audit.log'}\ntcp_listen_port = 60\n")
    proc = search_with_auditd_conf(str(conf), *args)
    (session,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert session == {**reference, "host": None}
    assert "some records have no node=" in proc.stderr, proc.stderr
    out = search_with_auditd_conf(str(conf), "--teleport-user", "alice").stdout
    assert out.startswith(f"session {reference['ses']} on ?:"), out


def test_a_name_longer_than_the_record_keeps_is_found_by_its_full_name(driver, pam_service, linux_user) -> None:
    """The record keeps the first 2,048 bytes of a Teleport user name (docs/records.md, Bounds): searching
    for the whole name finds its session, and says the record holds only the beginning."""
    login = linux_user()
    service = pam_service(debian_stack())
    name = unique("long-") + "\u00e9" * 1500  # 3,013 bytes
    started = time.time()
    proc = subprocess.run(driver_argv(driver, service, login, user=name, shell=False), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    wait_for_records(started, lambda rs: sum(r.type == "USER_END" for r in rs) >= 2, "-m", "USER_END")
    time.sleep(0.5)
    result = run_search("--teleport-user", name, "--since", f"@{int(started)}", "--format", "json")
    assert result.returncode == 0, result.stderr
    sessions = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(sessions) == 1 and sessions[0]["login"] == login, result.stdout
    # Cut inside the last character: its lone byte comes back exactly (JSON \\udcXX, surrogateescape).
    assert sessions[0]["teleport_user"] == name.encode()[:2048].decode("utf-8", "surrogateescape")
    assert "2048 bytes" in result.stderr
    # The record says it was cut, and by how much, as ausearch -i shows it; so does search.
    assert sessions[0]["user_omitted"] == len(name.encode()) - 2048 == 965
    shown = subprocess.run(
        ["ausearch", "--input-logs", "-i", *since_args(started), "-p", str(sessions[0]["pid"]), "-m", "USER_END"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert " teleportUserOmitted=965 teleportRoles=" in shown, shown
    text = run_search("--teleport-user", name, "--since", f"@{int(started)}").stdout
    assert "(and 965 more bytes, cut to fit the record) as " in text.splitlines()[0], text


def test_names_and_roles_that_could_read_as_others_are_told_apart(driver, pam_service, linux_user) -> None:
    """Two real logins whose values used to print the same: a Teleport user name holding the byte 0xFF
    (not UTF-8) and one holding the four characters \\xff; roles `ops,dev` and `qa` (Teleport allows a
    comma in a role name) and roles `ops`, `dev` and `qa`. JSON gives each value exactly (a byte that
    is not UTF-8 as the escape \\udcXX, Python's surrogateescape); the text quotes what it escapes, so
    that a bare value is always literal, and quotes a role holding a comma."""
    login = linux_user()
    service = pam_service(debian_stack())
    base = unique("amb-")
    byte, chars = base + "\udcff", base + "\\xff"  # the name with the byte 0xFF; with a backslash, x, f, f
    started = time.time()
    for user, roles in ((byte, "ops,dev qa"), (chars, "ops dev qa")):
        argv = driver_argv(driver, service, login, user=user, roles=roles, shell=False)
        proc = subprocess.run(argv, capture_output=True, check=False)
        assert proc.returncode == 0, proc.stderr
    wait_for_records(started, lambda rs: sum(r.type == "USER_END" for r in rs) >= 4, "-m", "USER_END")
    time.sleep(0.5)
    since = ("--since", f"@{int(started)}")
    found = {}
    for user in (byte, chars):
        proc = run_search("--teleport-user", user, *since, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        (found[user],) = [json.loads(line) for line in proc.stdout.splitlines()]
        assert found[user]["teleport_user"] == user, (user, proc.stdout)
    assert (found[byte]["roles"], found[chars]["roles"]) == (["ops,dev", "qa"], ["ops", "dev", "qa"]), found
    texts = {user: run_search("--teleport-user", user, *since).stdout.splitlines()[0] for user in (byte, chars)}
    assert f"Teleport user '{base}\\xff' as {login} " in texts[byte], texts[byte]
    assert texts[byte].endswith("roles 'ops,dev',qa"), texts[byte]
    assert f"Teleport user {base}\\xff as {login} " in texts[chars], texts[chars]
    assert texts[chars].endswith("roles ops,dev,qa"), texts[chars]


def close_then_delete(driver, service: str, login: str, name: str) -> subprocess.CompletedProcess[str]:
    """A session whose Linux user is deleted while it is open (userdel by an administrator or a tool; Teleport's
    insecure-drop host users are deleted only after the close): the driver pauses before its close."""
    argv = driver_argv(driver, service, login, user=name, shell=False, extra=("-P", "close"))
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        lines = []
        while (line := proc.stdout.readline()) and line != "pause=close\n":
            lines.append(line)
        subprocess.run(["userdel", login], check=True, capture_output=True)
        out, _ = proc.communicate("\n", timeout=30)
    return subprocess.CompletedProcess(argv, proc.returncode, "".join(lines) + out, "")


@pytest.mark.parametrize("how", ["a close module fails", "the user is deleted"])
def test_live_a_close_libpam_records_as_failed_ends_the_session_failed(driver, pam_service, linux_user, tmp_path, how):
    """A close that fails after our line: a session module that fails only at close (pam_exec of a script
    that fails when PAM_TYPE is close_session), or the Linux user deleted while the session is open
    (pam_close_session then fails with PAM_USER_UNKNOWN and libpam's record says acct="?"). Our
    teleport:session_close says success, written where our line runs; libpam's session_close, written
    after the whole stack, says failed. search used to end the session `(success)`; the end is what libpam
    says of the close."""
    script = tmp_path / "fail-close"
    script.write_text('#!/bin/sh\n[ "$PAM_TYPE" != close_session ]\n')
    script.chmod(0o755)
    tmp_path.chmod(0o755)
    login = linux_user()
    name = unique("closefail-")
    started = time.time()
    if how == "a close module fails":
        service = pam_service(stack_with(after_ours=f"session    required   pam_exec.so quiet {script}"))
        argv = driver_argv(driver, service, login, user=name, shell=False)
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        code = 4  # PAM_SYSTEM_ERR
    else:
        proc = close_then_delete(driver, pam_service(debian_stack()), login, name)
        code = 10  # PAM_USER_UNKNOWN
    assert proc.returncode == 70 + code and "open_session=0" in proc.stdout, proc
    (found,) = wait_for_search(
        "--teleport-user", name, "--since", f"@{int(started)}", until=lambda f: f and f[0]["end"]
    )
    closes = [(e["op"], e["res"]) for e in found["events"] if e["type"] == "USER_END"]
    assert closes == [("teleport:session_close", "success"), ("PAM:session_close", "failed")]
    assert (found["result"], found["end_result"], found["refused"]) == ("success", "failed", None)
    out = run_search("--teleport-user", name, "--since", f"@{int(started)}").stdout
    assert re.search(r"\bended .* \(failed\)", out), out
