"""Fleet: two hosts forward their records with audisp-remote to a collector
auditd in its own network namespace; search on the collector's log puts every
session and keystroke on the right Teleport user and node; a network cut in
the middle of a burst loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from pam_teleport_audit.auditlog import ausearch_raw, since_args

from .conftest import ROOT, debian_stack, run_driver, unique, wait_for_records
from .fleet import Fleet

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


def search(log: Path, *args: str) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "pam_teleport_audit", "search", "--input", str(log), "--format", "json", *args],
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
    finally:
        fleet.close()
