"""Fleet scale: N audisp-remote senders, each in its own network namespace, forward
USER_START-shaped records (286 bytes, `node=sI` as a sender's name_format stamps them)
to one collector auditd in another namespace (tests/system/fleet.py builds both).
For a few N: records sent and received, records/s, the collector's CPU and peak memory.

Not a test and not timed in CI. `python3 -m benchmarks fleet` runs it with the defaults, or:

    python3 -m benchmarks.fleet_scale [N ...] [--records TOTAL]

Only namespaces and veth pairs it creates; everything is removed on exit.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

from pam_teleport_audit.admin.fleetcheck import sizing
from tests.system.fleet import Fleet

RECORD_BYTES = 286
SENDERS = (1, 8, 32, 128)
RECORDS = 200_000
TICKS = os.sysconf("SC_CLK_TCK")


def records(node: str, count: int) -> bytes:
    """`count` records of one sender, each RECORD_BYTES long with its newline."""
    now = int(time.time())
    lines = []
    for k in range(count):
        line = (
            f"node={node} type=USER_START msg=audit({now}.{k % 1000:03d}:{1_000_000 + k}): pid=4242 uid=0 "
            f'auid=1000 ses={k} msg=\'op=teleport:session_open acct="alice" exe="/usr/local/bin/teleport" '
            f"hostname={node} addr=? terminal=ssh teleportUser=alice@example.com teleportChild=exec res=success"
        )
        lines.append(line.ljust(RECORD_BYTES - 2, " ") + "'\n")
    return "".join(lines).encode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Received:
    """Counts the senders' records in the collector's log as it grows (only whole lines)."""

    def __init__(self, log: Path) -> None:
        self.log, self.offset, self.count = log, 0, 0

    def __call__(self) -> int:
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        whole = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(whole)
        self.count += sum(1 for line in whole.split(b"\n") if line.startswith(b"node=s"))
        return self.count


def measure(senders: int, total: int, stall: float = 30.0) -> dict[str, float]:
    per = total // senders
    fleet = Fleet([f"s{i}" for i in range(senders)], listen_queue=sizing(senders)["tcp_listen_queue"])
    try:
        feeds = {name: records(name, per) for name in fleet.senders}
        procs = {name: fleet.sender(name) for name in fleet.senders}
        deadline = time.time() + 30
        while fleet.accepted() < senders and time.time() < deadline:
            time.sleep(0.1)
        received = Received(fleet.log)
        pid = fleet.auditd.pid
        cpu0, started = cpu_seconds(pid), time.time()

        def feed(name: str) -> None:
            stdin = procs[name].stdin
            stdin.write(feeds[name])
            stdin.flush()

        writers = [threading.Thread(target=feed, args=(name,), daemon=True) for name in fleet.senders]
        for writer in writers:
            writer.start()
        last, progress = 0, time.time()
        while (got := received()) < senders * per and time.time() - progress < stall:
            if got != last:
                last, progress = got, time.time()
            time.sleep(0.05)
        elapsed = (progress if got < senders * per else time.time()) - started
        cpu = cpu_seconds(pid) - cpu0
        memory = peak_rss_mb(pid)
        for proc in procs.values():
            proc.stdin.close()
        return {
            "senders": senders,
            "sent": senders * per,
            "received": got,
            "lost": senders * per - got,
            "records/s": got / elapsed,
            "cpu": 100 * cpu / elapsed,
            "memory": memory,
            "seconds": elapsed,
        }
    finally:
        fleet.close()


def run(senders: tuple[int, ...] = SENDERS, total: int = RECORDS) -> None:
    print(f"## Fleet: N senders, one collector ({total:,} records of {RECORD_BYTES} bytes a run)\n")
    print("| senders | sent | received | lost | records/s | collector CPU | collector peak RSS | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for n in senders:
        r = measure(n, total)
        print(
            f"| {r['senders']} | {r['sent']:,} | {r['received']:,} | {r['lost']:,} | {r['records/s']:,.0f} "
            f"| {r['cpu']:.0f} % | {r['memory']:.1f} MB | {r['seconds']:.1f} |",
            flush=True,
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("senders", nargs="*", type=int, default=list(SENDERS))
    parser.add_argument("--records", type=int, default=RECORDS, help="records per run, split across the senders")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces)")
    run(tuple(args.senders), args.records)


if __name__ == "__main__":
    main()
