"""doctor's fleet checks (fleetcheck) on given config texts, file limits, connections and disk."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pam_teleport_audit.admin import fleetcheck

COLLECTOR = """\
log_file = {log}
tcp_listen_port = 60
tcp_listen_queue = 128
tcp_max_per_addr = 10
tcp_client_ports = 1024-65535
"""
SENDER = """\
remote_server = 127.0.0.1
port = 1
mode = forward
queue_depth = 20480
format = managed
"""


def write_audit(root: Path, auditd_conf: str, remote: str | None, active: str = "yes") -> Path:
    audit = root / "audit"
    (audit / "plugins.d").mkdir(parents=True)
    (audit / "auditd.conf").write_text(auditd_conf.format(log=root / "log" / "audit.log"))
    (root / "log").mkdir()
    if remote is not None:
        (audit / "audisp-remote.conf").write_text(remote)
        (audit / "plugins.d" / "au-remote.conf").write_text(f"active = {active}\n")
    return audit


def fake_proc(root: Path, nofile: str, port: int, established: int) -> Path:
    """/proc with one auditd (pid 7) and `established` connections to `port`, plus one of each kind that is not."""
    proc = root / "proc"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "comm").write_text("auditd\n")
    (proc / "7" / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        f"Max open files            {nofile}                 524288               files     \n"
    )
    (proc / "net").mkdir()
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = [
        f"   {i}: 0100000A:{port:04X} 0201000A:{40000 + i:04X} 01 00000000:00000000 00:00000000 0 0 1"
        for i in range(established)
    ]
    rows.append(f"  90: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 0 0 1")  # the listener
    rows.append("  91: 0100000A:1F90 0201000A:9C40 01 00000000:00000000 00:00000000 0 0 1")  # another port
    (proc / "net" / "tcp").write_text(head + "\n".join(rows) + "\n")
    return proc


def statuses(checks: list) -> dict[str, str]:
    return {c.name: c.status for c in checks}


@pytest.mark.parametrize(
    ("conf", "nofile", "connected", "free_mb", "expected"),
    [
        (
            COLLECTOR,
            "1024",
            10,
            10**6,
            {
                "collector file limit": "pass",
                "collector listen queue": "pass",
                "collector per-address limit": "pass",
                "collector disk": "pass",
            },
        ),
        (COLLECTOR, "64", 10, 10**6, {"collector file limit": "fail"}),
        (COLLECTOR, "1024", 980, 10**6, {"collector file limit": "fail"}),
        (COLLECTOR, "1024", 600, 10**6, {"collector file limit": "warn"}),
        (COLLECTOR, "5024", 2000, 10**6, {"collector file limit": "pass"}),
        (COLLECTOR, "unlimited", 2000, 10**6, {"collector file limit": "pass"}),
        (COLLECTOR, "many", 2000, 10**6, {"collector file limit": "warn"}),  # unreadable: say so
        (COLLECTOR.replace("tcp_listen_queue = 128\n", ""), "4096", 200, 10**6, {"collector listen queue": "warn"}),
        (COLLECTOR.replace("= 128", "= 5"), "4096", 3, 10**6, {"collector listen queue": "pass"}),
        (COLLECTOR.replace("= 128", "= 5"), "4096", 100, 10**6, {"collector listen queue": "warn"}),
        (COLLECTOR.replace("tcp_max_per_addr = 10\n", ""), "1024", 1, 10**6, {"collector per-address limit": "warn"}),
        (COLLECTOR.replace("= 10\n", "= 1\n"), "1024", 1, 10**6, {"collector per-address limit": "warn"}),
        (COLLECTOR.replace("1024-65535", "1-1023"), "1024", 1, 10**6, {"collector client ports": "fail"}),
        # Unset, auditd takes any client port (auditd.conf(5)): nothing to flag (test_fleet.py shows it).
        (
            COLLECTOR.replace("tcp_client_ports = 1024-65535\n", ""),
            "1024",
            1,
            10**6,
            {"collector per-address limit": "pass"},
        ),
        (COLLECTOR, "4096", 1000, 1500, {"collector disk": "fail"}),  # less than a day of 1,000 nodes (2,000 MB)
        (COLLECTOR, "4096", 1000, 10_000, {"collector disk": "warn"}),  # less than a week
        (COLLECTOR, "4096", 1000, 20_000, {"collector disk": "pass"}),
    ],
)
def test_collector(tmp_path: Path, conf: str, nofile: str, connected: int, free_mb: float, expected: dict) -> None:
    audit = write_audit(tmp_path, conf, None)
    proc = fake_proc(tmp_path, nofile, 60, connected)
    found = fleetcheck.collector_checks(
        fleetcheck.read_conf(str(audit / "auditd.conf")),
        fleetcheck.open_files_limit(7, str(proc)),
        fleetcheck.established(60, str(proc)),
        free_mb,
    )
    got = statuses(list(found))
    assert {name: got.get(name) for name in expected} == expected
    if "collector client ports" not in expected:
        assert "collector client ports" not in got


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        (SENDER, {"sender format": "pass", "sender queue": "pass"}),
        (SENDER.replace("managed", "ascii"), {"sender format": "fail"}),
        (SENDER.replace("format = managed\n", ""), {"sender format": "pass"}),  # audisp-remote's default
        (SENDER.replace("forward", "immediate"), {"sender queue": "warn"}),
        (SENDER.replace("mode = forward\n", ""), {"sender queue": "warn"}),
        (SENDER.replace("20480", "100"), {"sender queue": "warn"}),
    ],
)
def test_sender(tmp_path: Path, remote: str, expected: dict) -> None:
    audit = write_audit(tmp_path, "", remote)
    got = statuses(list(fleetcheck.checks(str(audit), str(fake_proc(tmp_path, "1024", 60, 0)))))
    assert {name: got.get(name) for name in expected} == expected
    assert not any(name.startswith("collector") for name in got)  # no tcp_listen_port: not a collector
    assert "sender round trip" not in got  # nothing listens on 127.0.0.1:1: not measured


@pytest.mark.parametrize(("round_trip", "expected"), [(0.0004, "pass"), (0.01, "pass"), (0.25, "warn")])
def test_sender_round_trip(round_trip: float, expected: str) -> None:
    (check,) = [c for c in fleetcheck.sender_checks({"format": "managed"}, round_trip) if c.name == "sender round trip"]
    assert check.status == expected and f"{round_trip * 1000:.1f} ms" in check.message


def test_sender_round_trip_measured(tmp_path: Path) -> None:
    """checks() times a connect to remote_server:port (here a listener of this test on loopback)."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        remote = SENDER.replace("port = 1\n", f"port = {port}\n")
        got = {c.name: c for c in fleetcheck.checks(str(write_audit(tmp_path, "", remote)), str(tmp_path))}
    check = got["sender round trip"]
    measured = re.search(r"([0-9.]+) ms to the collector", check.message)
    assert measured, check.message
    assert check.status == ("pass" if float(measured[1]) <= fleetcheck.MAX_ROUND_TRIP * 1000 else "warn")


def test_neither_collector_nor_sender_checks_nothing(tmp_path: Path) -> None:
    audit = write_audit(tmp_path, "log_file = {log}\n", SENDER, active="no")
    assert list(fleetcheck.checks(str(audit), str(fake_proc(tmp_path, "1024", 60, 3)))) == []


def test_collector_through_checks(tmp_path: Path) -> None:
    """checks() finds auditd, its limit, the connections to tcp_listen_port and the log's disk by itself."""
    audit = write_audit(tmp_path, COLLECTOR, None)
    got = statuses(list(fleetcheck.checks(str(audit), str(fake_proc(tmp_path, "64", 60, 40)))))
    assert got["collector file limit"] == "fail" and got["collector listen queue"] == "pass"
    assert "collector disk" in got


def test_sizing_grows_with_the_fleet() -> None:
    small, large = fleetcheck.sizing(1), fleetcheck.sizing(2000)
    assert small["LimitNOFILE"] >= 1024 and large["LimitNOFILE"] > 2 * 2000
    assert large["tcp_listen_queue"] == fleetcheck.MAX_LISTEN_QUEUE and small["tcp_listen_queue"] == 5
    for sized in (small, large, fleetcheck.sizing(30), fleetcheck.sizing(10**6)):
        assert 2 <= sized["num_logs"] <= 999 and sized["admin_space_left"] < sized["space_left"]
    # Log files hold the retention days of the fleet's records (2 MB per node per day, 30 days).
    assert large["max_log_file"] * (large["num_logs"] - 1) >= 2000 * 2 * 30


def test_expected_senders_size_the_listen_queue_and_disk() -> None:
    """A collector restarted with few senders back yet: its expected fleet decides, not who is connected now."""
    conf = {"tcp_listen_queue": "5", "tcp_max_per_addr": "10", "tcp_client_ports": "1024-65535"}
    now = statuses(list(fleetcheck.collector_checks(conf, 8192, 3, 100.0)))
    later = statuses(list(fleetcheck.collector_checks(conf, 8192, 3, 100.0, expected=2000)))
    assert now["collector listen queue"] == "pass" and later["collector listen queue"] == "warn"
    assert now["collector disk"] == "pass" and later["collector disk"] == "fail"  # 4,000 MB a day for 2,000
    assert statuses(list(fleetcheck.collector_checks(conf, 2048, 3, None, expected=2000)))["collector file limit"] == (
        "warn"
    )


def queue_file(path: Path, entries: int, waiting: int, magic: bytes = fleetcheck.QUEUE_MAGIC) -> str:
    """A queue file as audisp-remote writes it (header, then queue_depth entries of entry_size bytes)."""
    entry_size = 64
    path.write_bytes(fleetcheck.QUEUE_HEADER.pack(magic, 0, 0, entries, entry_size, 3, waiting).ljust(entry_size))
    return str(path)


@pytest.mark.parametrize(
    ("remote", "entries", "waiting", "expected"),
    [
        (SENDER, 100, 0, "pass"),
        (SENDER, 100, 50, "pass"),
        (SENDER, 100, 51, "warn"),  # filling: the collector is not keeping up
        (SENDER, 100, 100, "fail"),  # full: overflow_action's default (syslog) drops new records
        (SENDER + "overflow_action = ignore\n", 100, 100, "fail"),
        (SENDER + "overflow_action = halt\n", 100, 100, "warn"),  # stops the host instead of dropping
    ],
)
def test_sender_queue_depth(tmp_path: Path, remote: str, entries: int, waiting: int, expected: str) -> None:
    remote += f"queue_file = {queue_file(tmp_path / 'remote.log', entries, waiting)}\n"
    got = {c.name: c for c in fleetcheck.checks(str(write_audit(tmp_path, "", remote)), str(tmp_path))}
    assert got["sender queue depth"].status == expected
    assert f"{waiting} of {entries} records waiting" in got["sender queue depth"].message


def test_sender_queue_depth_unreadable(tmp_path: Path) -> None:
    """No queue file, another format, or mode = immediate (the queue is in memory): no depth check."""
    assert fleetcheck.queue_state(str(tmp_path / "absent")) is None
    assert fleetcheck.queue_state(queue_file(tmp_path / "other", 100, 5, magic=b"\0something-els")) is None
    assert fleetcheck.queue_state(queue_file(tmp_path / "odd", 100, 101)) is None
    (tmp_path / "short").write_bytes(fleetcheck.QUEUE_MAGIC)
    assert fleetcheck.queue_state(str(tmp_path / "short")) is None
    remote = SENDER.replace("forward", "immediate") + f"queue_file = {queue_file(tmp_path / 'q', 100, 100)}\n"
    got = statuses(list(fleetcheck.checks(str(write_audit(tmp_path, "", remote)), str(tmp_path))))
    assert "sender queue depth" not in got and got["sender queue"] == "warn"


def test_doctor_takes_the_expected_senders(tmp_path: Path) -> None:
    """`doctor --expected-senders N` reaches the collector checks: 3 connected but 2,000 expected."""
    from pam_teleport_audit.admin.cli import build_parser

    assert build_parser().parse_args(["doctor", "--expected-senders", "2000"]).expected_senders == 2000
    assert build_parser().parse_args(["doctor"]).expected_senders == 0
    audit = write_audit(tmp_path, COLLECTOR.replace("= 128", "= 5"), None)
    proc = str(fake_proc(tmp_path, "8192", 60, 3))
    assert statuses(list(fleetcheck.checks(str(audit), proc)))["collector listen queue"] == "pass"
    assert statuses(list(fleetcheck.checks(str(audit), proc, expected=2000)))["collector listen queue"] == "warn"


def test_a_process_named_in_any_bytes_does_not_stop_the_search_for_auditd(tmp_path: Path) -> None:
    """Any user may name a process in bytes that are not UTF-8 (prctl PR_SET_NAME); reading its
    comm raised UnicodeDecodeError, and doctor on a collector with it."""
    for pid, name in ((100, b"bad\xff\xfename\n"), (200, b"auditd\n")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_bytes(name)
    assert fleetcheck.auditd_pid(str(tmp_path)) == 200
