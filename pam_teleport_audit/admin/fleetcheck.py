"""Fleet checks for doctor (docs/fleet.md): is a collector sized for its senders,
is a sender set up so that the collector keeps its records?

The sizing rule here is the one the Ansible role applies (tests/system/test_ansible.py
compares them): every connected sender is an open file of the collector's auditd; past
its file limit auditd spins on a failing accept and logs nothing, so the limit must be
well above the senders; about 2 MB of records per node per day decide the disk.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from collections.abc import Iterator

from .auditlog import au_remote_active, read_conf
from .doctor import FAIL, PASS, WARN, Check, log_folder, space_mb

MB_PER_NODE_DAY = 2
RETENTION_DAYS = 30
# The tcp_listen_queue measured to take 128 senders starting together with no overflow (issue 18); senders
# that still miss it retry every second.
MAX_LISTEN_QUEUE = 128
MIN_QUEUE_DEPTH = 2048
# Past this a sender manages fewer than 10 records/s (a busy host's login burst queues up).
MAX_ROUND_TRIP = 0.1
# audisp-remote's queue file (mode = forward), audit-userspace audisp/plugins/remote/queue.c: a header of
# magic "\0audisp-remote", version 0, a reserved byte, then big-endian num_entries (queue_depth), entry_size,
# queue_head and queue_length (the records waiting for the collector's acknowledgement).
QUEUE_MAGIC = b"\0audisp-remote"
QUEUE_HEADER = struct.Struct(">14sBBIIII")
# overflow_action values that keep running and drop each record that finds the queue full
# (single and halt stop the host instead).
DROPPING = ("ignore", "syslog", "exec", "suspend")
# Files auditd holds besides its senders (log, config, plugins, netlink), with a margin.
OWN_FILES = 64


def sizing(nodes: int, mb_per_node_day: int = MB_PER_NODE_DAY, retention_days: int = RETENTION_DAYS) -> dict[str, int]:
    """The collector settings for `nodes` senders (the role's defaults/main.yml computes the same)."""
    day = nodes * mb_per_node_day
    max_log_file = max(8, math.ceil(day / 24))  # about an hour of the fleet's records per file
    return {
        "LimitNOFILE": 2 * nodes + 1024,
        "tcp_listen_queue": min(max(nodes, 5), MAX_LISTEN_QUEUE),
        "max_log_file": max_log_file,
        "num_logs": min(999, max(2, math.ceil(day * retention_days / max_log_file) + 1)),
        "space_left": max(75, day),  # warn while a day of records still fits
        "admin_space_left": max(50, math.ceil(day / 2)),
    }


def _int(conf: dict[str, str], key: str, default: int) -> int:
    try:
        return int(conf.get(key, default))
    except ValueError:
        return default


def collector_checks(
    conf: dict[str, str], nofile: int | None, connected: int, free_mb: float | None, expected: int = 0
) -> Iterator[Check]:
    """A collector's auditd.conf, its file limit, its connected senders and free log space.
    expected: the senders it is meant to take (all of them connect after a restart), 0 when not known."""
    senders = max(connected, expected)
    if nofile is None:
        yield Check(
            "collector file limit", WARN, "auditd's file limit could not be read (is auditd running?)", "start auditd"
        )
    elif connected + OWN_FILES >= nofile:
        yield Check(
            "collector file limit",
            FAIL,
            f"{connected} senders connected, auditd may open {nofile} files: it cannot accept more",
            f"raise LimitNOFILE in a drop-in for auditd.service to at least {sizing(connected)['LimitNOFILE']}",
        )
    elif 2 * senders > nofile:
        yield Check(
            "collector file limit",
            WARN,
            f"{connected} senders connected ({senders} expected), auditd may open {nofile} files: little room",
            f"raise LimitNOFILE for auditd.service to {sizing(senders)['LimitNOFILE']}",
        )
    else:
        yield Check("collector file limit", PASS, f"{connected} senders connected, auditd may open {nofile} files")

    queue = _int(conf, "tcp_listen_queue", 5)
    wanted = sizing(senders)["tcp_listen_queue"]
    if queue < wanted:
        yield Check(
            "collector listen queue",
            WARN,
            f"tcp_listen_queue = {queue} for {senders} senders: after a restart they overflow it and retry",
            f"set tcp_listen_queue = {wanted} in auditd.conf",
        )
    else:
        yield Check("collector listen queue", PASS, f"tcp_listen_queue = {queue}")

    per_addr = _int(conf, "tcp_max_per_addr", 1)
    if per_addr < 2:
        yield Check(
            "collector per-address limit",
            WARN,
            f"tcp_max_per_addr = {per_addr}: senders behind one (NAT) address are refused (DAEMON_ACCEPT op=dup)",
            "set tcp_max_per_addr = 10 in auditd.conf",
        )
    else:
        yield Check("collector per-address limit", PASS, f"tcp_max_per_addr = {per_addr}")

    # Unset, auditd takes any client port (auditd.conf(5); auditd-config.c clear_config: 0-65535).
    ports = conf.get("tcp_client_ports", "1-65535")
    top = _int({"p": ports.rpartition("-")[2]}, "p", 65535)
    if top < 1024:
        yield Check(
            "collector client ports",
            FAIL,
            f"tcp_client_ports = {ports}: audisp-remote connects from an unprivileged port and is refused",
            "set tcp_client_ports = 1024-65535 in auditd.conf",
        )

    day = max(senders, 1) * MB_PER_NODE_DAY
    if free_mb is None:
        return
    if free_mb < day:
        yield Check(
            "collector disk",
            FAIL,
            f"{free_mb:.0f} MB free for the log, less than a day of {senders} senders (~{day} MB)",
            "free or add disk for the audit log, or shard the senders across collectors",
        )
    elif free_mb < 7 * day:
        yield Check(
            "collector disk",
            WARN,
            f"{free_mb:.0f} MB free for the log: less than a week of {senders} senders (~{day} MB a day)",
            "add disk for the audit log and size max_log_file, num_logs (docs/fleet.md)",
        )
    else:
        yield Check("collector disk", PASS, f"{free_mb:.0f} MB free, ~{day} MB a day from {senders} senders")


def sender_checks(
    remote: dict[str, str], round_trip: float | None = None, queue: tuple[int, int] | None = None
) -> Iterator[Check]:
    """A sender's audisp-remote.conf: will the collector keep what it sends, how fast can it send?
    round_trip: seconds to the collector (a TCP connect), None when not measured.
    queue: (records waiting, entries) of its queue file (queue_state), None when not read."""
    fmt = remote.get("format", "managed").lower()
    if fmt != "managed":
        yield Check(
            "sender format",
            FAIL,
            f"format = {fmt}: the collector's auditd keeps no record of this sender",
            "set format = managed in audisp-remote.conf",
        )
    else:
        yield Check("sender format", PASS, "format = managed: the collector acknowledges each record")
    mode = remote.get("mode", "immediate").lower()
    depth = _int(remote, "queue_depth", 2048)
    if mode != "forward":
        yield Check(
            "sender queue",
            WARN,
            f"mode = {mode}: records waiting for the collector are lost when audisp-remote restarts",
            "set mode = forward and queue_file in audisp-remote.conf",
        )
    elif depth < MIN_QUEUE_DEPTH:
        yield Check(
            "sender queue",
            WARN,
            f"queue_depth = {depth}: a short outage fills it",
            f"set queue_depth = {MIN_QUEUE_DEPTH * 10} in audisp-remote.conf",
        )
    else:
        yield Check("sender queue", PASS, f"mode = forward, queue_depth = {depth}")
    if queue is not None:
        yield queue_check(remote, *queue)
    if round_trip is not None:
        # managed format waits for each acknowledgement: one record per round trip.
        rate = 1 / max(round_trip, 1e-4)
        status = WARN if round_trip > MAX_ROUND_TRIP else PASS
        yield Check(
            "sender round trip",
            status,
            f"{round_trip * 1000:.1f} ms to the collector: at most ~{rate:,.0f} records/s from this host",
            "use a collector closer to this host (one per site or region)",
        )


def queue_state(path: str) -> tuple[int, int] | None:
    """(records waiting, entries) from the header of audisp-remote's queue file; None when it is absent or
    not that format (mode = immediate keeps the queue in memory only)."""
    try:
        with open(path, "rb") as f:
            head = f.read(QUEUE_HEADER.size)
    except OSError:
        return None
    if len(head) < QUEUE_HEADER.size:
        return None
    magic, version, _, entries, _, _, waiting = QUEUE_HEADER.unpack(head)
    if magic != QUEUE_MAGIC or version != 0 or waiting > entries:
        return None
    return waiting, entries


def queue_check(remote: dict[str, str], waiting: int, entries: int) -> Check:
    """Fail when the queue is full and audisp-remote drops what comes next; warn past half full."""
    overflow = remote.get("overflow_action", "syslog").lower()
    network = remote.get("network_failure_action", "stop").lower()
    state = f"{waiting} of {entries} records waiting for the collector"
    if waiting >= entries and overflow in DROPPING:
        return Check(
            "sender queue depth",
            FAIL,
            f"{state}: the queue is full, overflow_action = {overflow} drops every new record",
            "bring the collector back (see sender round trip), and raise queue_depth in audisp-remote.conf",
        )
    if 2 * waiting > entries or waiting >= entries:
        return Check(
            "sender queue depth",
            WARN,
            f"{state}: the collector is not keeping up (network_failure_action = {network}, "
            f"overflow_action = {overflow})",
            "check the collector and the network to it; raise queue_depth in audisp-remote.conf",
        )
    return Check("sender queue depth", PASS, state)


def auditd_pid(proc: str = "/proc") -> int | None:
    for pid in os.listdir(proc):
        if pid.isdigit():
            try:
                with open(f"{proc}/{pid}/comm", errors="surrogateescape") as f:  # any bytes: prctl(PR_SET_NAME)
                    if f.read().strip() == "auditd":
                        return int(pid)
            except OSError:
                continue
    return None


def open_files_limit(pid: int, proc: str = "/proc") -> int | None:
    """The soft 'Max open files' of a process (what accept() runs into)."""
    try:
        with open(f"{proc}/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line[len("Max open files") :].split()[0]
                    return 2**31 if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        return None
    return None


def established(port: int, proc: str = "/proc") -> int:
    """TCP connections established to a local port (/proc/net/tcp and tcp6: state 01)."""
    count = 0
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/net/{name}") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "01" and int(fields[1].rpartition(":")[2], 16) == port:
                        count += 1
        except (OSError, ValueError):
            continue
    return count


def connect_time(server: str, port: str, timeout: float = 2.0) -> float | None:
    """Seconds a TCP connect to the collector takes (one round trip); None when it fails."""
    started = time.monotonic()
    try:
        with socket.create_connection((server, int(port)), timeout=timeout):
            return time.monotonic() - started
    except (OSError, ValueError):
        return None  # doctor.remote_checks reports an unreachable collector


def log_free_mb(conf: dict[str, str]) -> float | None:
    """MB free to an unprivileged writer in the folder of auditd's log_file."""
    try:
        return space_mb(os.statvfs(log_folder(conf)))[0]
    except OSError:
        return None


def checks(audit_dir: str = "/etc/audit", proc: str = "/proc", expected: int = 0) -> Iterator[Check]:
    """The collector checks where auditd listens, the sender checks where au-remote is active; else none.
    expected: the senders a collector is meant to take."""
    try:
        conf = read_conf(os.path.join(audit_dir, "auditd.conf"))
    except OSError:
        conf = {}
    port = _int(conf, "tcp_listen_port", 0)
    if port:
        pid = auditd_pid(proc)
        nofile = open_files_limit(pid, proc) if pid else None
        yield from collector_checks(conf, nofile, established(port, proc), log_free_mb(conf), expected)
    try:
        remote = read_conf(os.path.join(audit_dir, "audisp-remote.conf")) if au_remote_active(audit_dir) else None
    except OSError:
        remote = None  # doctor.remote_checks reports an unreadable config
    if remote is not None:
        server = remote.get("remote_server", "")
        round_trip = connect_time(server, remote.get("port", "60")) if server else None
        forward = remote.get("mode", "immediate").lower() == "forward"
        queue = queue_state(remote.get("queue_file", "/var/spool/audit/remote.log")) if forward else None
        yield from sender_checks(remote, round_trip, queue)
