"""Fleet: two hosts forward their records with audisp-remote to a collector
auditd in its own network namespace; search on the collector's log puts every
session and keystroke on the right Teleport user and node; a network cut in
the middle of a burst loses nothing; a collector sized for its senders takes
more of them than a low file limit allows."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pam_teleport_audit.admin import fleetcheck
from pam_teleport_audit.admin.auditlog import ausearch_raw, read_conf, since_args

from .conftest import ROOT, debian_stack, run_driver, unique, wait_for_records
from .fleet import PORT, Fleet

BURST = 3000


def session_lines(started: float, pid: int) -> list[bytes]:
    """The raw log lines of one Teleport-like session: by pid before pam_loginuid, by ses after."""
    login = wait_for_records(started, lambda rs: any(r.type == "LOGIN" for r in rs), "-p", str(pid), "-m", "LOGIN")
    ses = next(r["ses"] for r in login if r.type == "LOGIN")
    wait_for_records(started, lambda rs: any(r.type == "USER_END" for r in rs), "--session", ses, "-m", "USER_END")
    text = ausearch_raw(*since_args(started), "-p", str(pid)) + ausearch_raw(*since_args(started), "--session", ses)
    seen: dict[bytes, None] = {}
    for line in text.encode().split(b"\n"):
        if line:
            seen.setdefault(line, None)
    serial = lambda line: int(line.split(b":", 2)[1].split(b")")[0])  # noqa: E731 - msg=audit(T:SERIAL)
    return sorted(seen, key=serial)


def wait_received(fleet: Fleet, node: str, count: int, timeout: float = 60.0) -> int:
    deadline = time.time() + timeout
    while (got := fleet.received(node)) < count and time.time() < deadline:
        time.sleep(0.2)
    return got


def search(logs: Path | list[Path], *args: str) -> list[dict]:
    files = [str(log) for log in (logs if isinstance(logs, list) else [logs])]
    proc = subprocess.run(
        [sys.executable, "-m", "pam_teleport_audit", "search", "--input", *files, "--format", "json", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_two_senders_one_collector_and_a_cut_network(driver, pam_service, linux_user) -> None:
    service = pam_service(debian_stack())
    login = linux_user()
    fleet = Fleet(["host-a", "host-b"])
    try:
        users = {node: unique(f"{node}-user-") for node in fleet.senders}
        lines = {}
        for node, tp_user in users.items():
            session = run_driver(driver, service, login, user=tp_user, lines=[f"echo typed-on-{node}"])
            assert session.returncode == 0, session.output
            lines[node] = [
                b"node=" + node.encode() + b" " + line + b"\n" for line in session_lines(session.started, session.pid)
            ]
        now = int(time.time())
        burst = [
            f"node=host-a type=USER_ACCT msg=audit({now}.{k % 1000:03d}:{900_000_000 + k}): pid=1 uid=0 "
            f"auid=4294967295 ses=4294967295 msg='op=pta-fleet-burst-{k} res=success'\n".encode()
            for k in range(BURST)
        ]
        sent = {"host-a": lines["host-a"] + burst, "host-b": lines["host-b"]}

        senders = {node: fleet.sender(node) for node in fleet.senders}
        senders["host-b"].stdin.write(b"".join(sent["host-b"]))
        senders["host-b"].stdin.flush()
        feed = senders["host-a"].stdin
        writer = threading.Thread(target=lambda: (feed.write(b"".join(sent["host-a"])), feed.flush()))
        writer.start()
        # The link goes down in the middle of the burst, for 3 s, then comes back.
        deadline = time.time() + 30
        while fleet.received("host-a") < len(sent["host-a"]) // 10 and time.time() < deadline:
            time.sleep(0.01)
        fleet.cut("host-a", up=False)
        time.sleep(3.0)
        assert fleet.received("host-a") < len(sent["host-a"])  # the cut did stop the burst
        fleet.cut("host-a", up=True)
        writer.join(timeout=60)
        for node in fleet.senders:
            assert wait_received(fleet, node, len(sent[node])) == len(sent[node]), node
        for proc in senders.values():
            proc.stdin.close()
            proc.wait(timeout=30)
        assert {node: fleet.received(node) for node in fleet.senders} == {n: len(s) for n, s in sent.items()}

        for node, tp_user in users.items():
            (session,) = search(fleet.log, "--teleport-user", tp_user)
            assert session["node"] == session["host"] == node
            assert [k["text"] for k in session["input"]] == [f"echo typed-on-{node}\n", "exit\n"]
            assert session["end"] is not None and session["login"] == login
            other = next(n for n in fleet.senders if n != node)
            assert search(fleet.log, "--teleport-user", tp_user, "--node", other) == []

        # Past one collector (senders sharded): each node's lines in its own collector's log; one search
        # over both logs finds each session on its node, and --node still narrows.
        shards = []
        for node in fleet.senders:
            shard = fleet.dir / f"collector-of-{node}.log"
            prefix = f"node={node} ".encode()
            shard.write_bytes(b"".join(x + b"\n" for x in fleet.log.read_bytes().split(b"\n") if x.startswith(prefix)))
            shards.append(shard)
        for node, tp_user in users.items():
            (session,) = search(shards, "--teleport-user", tp_user)
            assert session["node"] == node
            assert [k["text"] for k in session["input"]] == [f"echo typed-on-{node}\n", "exit\n"]
            assert search(shards[::-1], "--teleport-user", tp_user, "--node", node) == [session]
            other = next(n for n in fleet.senders if n != node)
            assert search(shards, "--teleport-user", tp_user, "--node", other) == []
    finally:
        fleet.close()


def settle(count: Callable[[], int], target: int, timeout: float = 15.0) -> int:
    """count() once it reaches target or has not changed for 2 s."""
    deadline, last, since = time.time() + timeout, -1, time.time()
    while (now := count()) < target and time.time() < deadline:
        if now != last:
            last, since = now, time.time()
        elif time.time() - since > 2:
            break
        time.sleep(0.2)
    return now


def test_collector_sized_for_its_senders_accepts_past_a_low_file_limit() -> None:
    """Scaled down from 2,000 nodes: 100 senders' connections against a collector auditd held to 64 files
    (every client is a file; past the limit auditd spins on a failing accept) and the same collector with
    the role's sizing for 100 nodes. doctor's collector check reads the live auditd and flags the first."""
    senders = 100
    sized = fleetcheck.sizing(senders)
    results = {}
    for nofile in (64, sized["LimitNOFILE"]):
        fleet = Fleet([], nofile=nofile, listen_queue=sized["tcp_listen_queue"])
        try:
            clients = fleet.connect(senders)
            assert clients.stdout.readline().strip() == str(senders)  # the kernel completed every handshake
            accepted = settle(fleet.accepted, senders)
            proc = f"/proc/{fleet.auditd.pid}"  # its /proc/PID/net is the collector namespace's
            conf = read_conf(str(fleet.dir / "collector" / "auditd.conf"))
            limit = fleetcheck.open_files_limit(fleet.auditd.pid)
            connected = fleetcheck.established(PORT, proc)
            checks = {c.name: c for c in fleetcheck.collector_checks(conf, limit, connected, None)}
            results[nofile] = (accepted, limit, connected, checks["collector file limit"].status)
            clients.stdin.close()
            clients.wait(timeout=10)
        finally:
            fleet.close()
    assert results[64][0] < 64 and results[64][1:] == (64, senders, "fail"), results
    assert results[sized["LimitNOFILE"]] == (senders, sized["LimitNOFILE"], senders, "pass"), results


def test_a_sender_in_ascii_format_loses_everything_and_doctor_says_so() -> None:
    """format = ascii: audisp-remote sends, the collector keeps none of it; doctor's sender check fails that
    config and passes the managed one, whose records all arrive."""
    fleet = Fleet(["host-a", "host-b"])
    try:
        formats = {"host-a": "managed", "host-b": "ascii"}
        now = int(time.time())
        for node, fmt in formats.items():
            proc = fleet.sender(node, fmt)
            proc.stdin.write(
                b"".join(
                    f"node={node} type=USER_ACCT msg=audit({now}.000:{950_000_000 + k}): pid=1 uid=0 "
                    f"auid=4294967295 ses=4294967295 msg='op=pta-fleet-format-{k} res=success'\n".encode()
                    for k in range(100)
                )
            )
            proc.stdin.close()
        assert wait_received(fleet, "host-a", 100) == 100
        time.sleep(2)  # host-b was fed at the same time
        assert fleet.accepted("host-b") >= 1  # it did connect and send
        assert fleet.received("host-b") == 0
        status = {
            node: {
                c.name: c.status
                for c in fleetcheck.sender_checks(read_conf(str(fleet.dir / node / "audisp-remote.conf")))
            }
            for node in formats
        }
        assert status["host-a"]["sender format"] == "pass" and status["host-b"]["sender format"] == "fail"
    finally:
        fleet.close()


def test_a_listen_queue_sized_for_its_senders_takes_them_all_at_once() -> None:
    """100 senders connecting while the collector auditd cannot accept (stopped for the moment, as in a busy
    restart): tcp_listen_queue = 5 (auditd's default) drops most handshakes, the role's sizing takes all."""
    senders = 100
    sized = fleetcheck.sizing(senders)
    results = {}
    for queue in (5, sized["tcp_listen_queue"]):
        fleet = Fleet([], nofile=sized["LimitNOFILE"], listen_queue=queue)
        proc = f"/proc/{fleet.auditd.pid}"
        try:
            os.kill(fleet.auditd.pid, signal.SIGSTOP)
            try:
                clients = fleet.connect(senders, wait=0.8)  # before the first SYN retransmit (1 s)
                results[queue] = (int(clients.stdout.readline()), fleet.listen_overflows())
            finally:
                os.kill(fleet.auditd.pid, signal.SIGCONT)
            # doctor, told the fleet to expect, flags the default queue whoever is connected at the moment.
            conf = read_conf(str(fleet.dir / "collector" / "auditd.conf"))
            limit, connected = fleetcheck.open_files_limit(fleet.auditd.pid), fleetcheck.established(PORT, proc)
            (check,) = [
                c for c in fleetcheck.collector_checks(conf, limit, connected, None, senders) if "queue" in c.name
            ]
            results[queue] += (check.status,)
            clients.stdin.close()
            clients.wait(timeout=10)
        finally:
            fleet.close()
    connected, overflows, status = results[5]
    assert connected <= 10 and overflows > 0 and status == "warn", results
    assert results[sized["tcp_listen_queue"]] == (senders, 0, "pass"), results


def test_senders_behind_one_address_need_tcp_max_per_addr() -> None:
    """Three senders from one (NAT) address: auditd's default tcp_max_per_addr = 1 refuses two
    (DAEMON_ACCEPT op=dup res=no) and doctor warns about that config; the role's 10 takes all three."""
    results = {}
    for per_addr in (1, 10):
        fleet = Fleet([], max_per_addr=per_addr)
        try:
            clients = fleet.connect(3, one_address=True)
            assert clients.stdout.readline().strip() == "3"  # the kernel completed every handshake
            settle(lambda f=fleet: f.accepted() + f.refused(), 3)
            dups = [x for x in fleet.log.read_text().splitlines() if "type=DAEMON_ACCEPT" in x and " res=no" in x]
            assert all(" op=dup " in x for x in dups), dups
            conf = read_conf(str(fleet.dir / "collector" / "auditd.conf"))
            (check,) = [c for c in fleetcheck.collector_checks(conf, 1024, 3, None) if "per-address" in c.name]
            results[per_addr] = (fleet.accepted(), len(dups), check.status)
            clients.stdin.close()
            clients.wait(timeout=10)
        finally:
            fleet.close()
    assert results == {1: (1, 2, "warn"), 10: (3, 0, "pass")}


def feed(proc: subprocess.Popen, node: str, first: int, count: int) -> None:
    now = int(time.time())
    proc.stdin.write(
        b"".join(
            f"node={node} type=USER_ACCT msg=audit({now}.000:{960_000_000 + k}): pid=1 uid=0 "
            f"auid=4294967295 ses=4294967295 msg='op=pta-fleet-queue-{k} res=success'\n".encode()
            for k in range(first, first + count)
        )
    )
    proc.stdin.flush()


def test_a_sender_queue_fills_while_its_collector_is_cut_off_and_doctor_says_so() -> None:
    """mode = forward, queue_depth = 16, the link to the collector down: audisp-remote's queue file holds what
    waits. doctor reads its header: 10 waiting warns, full fails (overflow_action = syslog drops the rest),
    and once the link is back the 16 kept records arrive and the queue is empty again."""
    fleet = Fleet(["host-a"])
    try:
        fleet.cut("host-a", up=False)
        sender = fleet.sender("host-a", mode="forward", depth=16)
        remote = read_conf(str(fleet.dir / "host-a" / "audisp-remote.conf"))

        def doctor_says(waiting: int) -> tuple[tuple[int, int] | None, str]:
            deadline = time.time() + 15
            while (state := fleetcheck.queue_state(remote["queue_file"])) != (waiting, 16) and time.time() < deadline:
                time.sleep(0.1)
            (check,) = [c for c in fleetcheck.sender_checks(remote, None, state) if c.name == "sender queue depth"]
            return state, check.status

        feed(sender, "host-a", 0, 10)
        assert doctor_says(10) == ((10, 16), "warn")
        feed(sender, "host-a", 10, 10)
        assert doctor_says(16) == ((16, 16), "fail")
        fleet.cut("host-a", up=True)
        # audisp-remote tries the collector again when the next record comes (auditd sends them all the time).
        feed(sender, "host-a", 20, 1)
        assert wait_received(fleet, "host-a", 16) == 16
        assert doctor_says(0) == ((0, 16), "pass")
        time.sleep(1)
        assert fleet.received("host-a") == 16  # the records that found the queue full are gone
    finally:
        fleet.close()


def test_collector_disk_check_reads_the_log_folder_it_writes_to() -> None:
    """The collector's log folder is a tmpfs of 1, 8 and 64 MB in its own mount namespace; doctor's free-space
    reader on that folder: under a day of records fails, under a week warns, more passes, and 64 MB is under
    a day of an expected 100 senders (2 MB a node)."""
    results = {}
    for size in (1, 8, 64):
        fleet = Fleet([], log_mb=size)
        try:
            conf = read_conf(str(fleet.dir / "collector" / "auditd.conf"))
            conf["log_file"] = str(fleet.log)  # the folder as auditd's mount namespace has it
            assert "DAEMON_START" in fleet.log.read_text()
            free = fleetcheck.log_free_mb(conf)
            disk = {
                expected: next(
                    c for c in fleetcheck.collector_checks(conf, 1024, 0, free, expected) if "disk" in c.name
                )
                for expected in (1, 100)
            }
            results[size] = (free is not None and 0 < free <= size, disk[1].status, disk[100].status)
        finally:
            fleet.close()
    assert results == {1: (True, "fail", "fail"), 8: (True, "warn", "fail"), 64: (True, "pass", "fail")}


def test_sender_round_trip_is_measured_to_the_collector() -> None:
    """doctor's sender checks run in the sender's network namespace time a connect to the collector over the
    veth link and print it (no sch_netem here to add a delay: the number is the link's real one)."""
    fleet = Fleet(["host-a"])
    try:
        fleet.sender("host-a", mode="forward")
        conf = fleet.dir / "host-a" / "audisp-remote.conf"
        script = (
            "from pam_teleport_audit.admin import fleetcheck\n"
            "from pam_teleport_audit.admin.auditlog import read_conf\n"
            f"remote = read_conf({str(conf)!r})\n"
            "rtt = fleetcheck.connect_time(remote['remote_server'], remote['port'])\n"
            "for check in fleetcheck.sender_checks(remote, rtt):\n"
            "    print(check.line())\n"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", fleet.senders["host-a"], sys.executable, "-c", script],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout
        (line,) = [x for x in out.splitlines() if "sender round trip" in x]
        match = re.search(r"([0-9.]+) ms to the collector: at most ~([0-9,]+) records/s", line)
        assert match, out
        rtt_ms = float(match[1])
        assert rtt_ms >= 0 and line.startswith("PASS" if rtt_ms <= fleetcheck.MAX_ROUND_TRIP * 1000 else "WARN"), line
        assert fleet.accepted("host-a") >= 1  # its audisp-remote reached the same collector
    finally:
        fleet.close()


def test_client_ports_unset_take_any_port_and_doctor_passes_them() -> None:
    """auditd.conf without tcp_client_ports (Debian's ships it commented out) takes audisp-remote from its
    unprivileged port, as auditd.conf(5) says; doctor's collector check must not call that refused. With
    1-1023 the same sender is refused and doctor fails it."""
    results = {}
    for ports in (None, "1-1023"):
        fleet = Fleet(["host-a"], client_ports=ports)
        try:
            sender = fleet.sender("host-a")
            feed(sender, "host-a", 0, 10)
            results[ports] = [wait_received(fleet, "host-a", 10, timeout=8 if ports else 30)]
            conf = read_conf(str(fleet.dir / "collector" / "auditd.conf"))
            checks = {c.name: c.status for c in fleetcheck.collector_checks(conf, 1024, 1, None)}
            results[ports].append(checks.get("collector client ports", "none"))
        finally:
            fleet.close()
    assert results == {None: [10, "none"], "1-1023": [0, "fail"]}, results
