"""3. Burst: 1,000 Teleport-like sessions (the C driver without a shell:
acct_mgmt, open_session, close_session), 4 at a time, through Debian's sshd
stack with our module, against the real kernel audit and auditd. Counts the
USER_START records carrying the run's unique Teleport user, and reads the
kernel's `lost` counter (AUDIT_GET) before and after.

Then the same burst with the kernel backlog cut to 64; the setting is
restored. No system test runs meanwhile: benchmarks/__main__.py holds their lock.
"""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from pam_teleport_audit.admin.auditlog import ausearch_raw
from pam_teleport_audit.pam_module import AuditSocket

from . import common

if TYPE_CHECKING:
    from pam_teleport_audit.pam_module import AuditStatus

SESSIONS = 1000
PARALLEL = 4
SMALL_BACKLOG = 64


def status() -> AuditStatus:
    with AuditSocket() as audit:
        return audit.status()


def count_records(tpuser: str, since: float) -> dict[str, int]:
    stamp = time.strftime("%m/%d/%y %H:%M:%S", time.localtime(int(since))).split()
    text = ausearch_raw("-ts", *stamp, "-m", "USER_ACCT,USER_START,USER_END")
    needle = f" teleportUser={tpuser} "
    counts = {"USER_ACCT": 0, "USER_START": 0, "USER_END": 0}
    for line in text.splitlines():
        if needle in line:
            kind = line.split(" ", 1)[0].removeprefix("type=")
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def burst(driver: Path, name: str, login: str, tpuser: str, sessions: int) -> dict[str, object]:
    """Run the sessions; poll the kernel backlog meanwhile; wait for auditd to write everything."""
    before = status()
    peak = [0]
    running = threading.Event()
    running.set()

    def watch() -> None:
        with AuditSocket() as audit:
            while running.is_set():
                peak[0] = max(peak[0], audit.status()["backlog"])
                time.sleep(0.005)

    def session(_: int) -> int:
        argv = [str(driver), "-n", "-s", name, "-u", tpuser, login]
        return subprocess.run(argv, capture_output=True, check=False).returncode

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.time()
    with ThreadPoolExecutor(PARALLEL) as pool:
        failed = sum(1 for rc in pool.map(session, range(sessions)) if rc != 0)
    took = time.time() - start
    running.clear()
    watcher.join()
    after = status()
    counts: dict[str, int] = {}
    for _ in range(60):  # auditd writes asynchronously; wait until the count settles
        counts = count_records(tpuser, start)
        if counts["USER_START"] >= sessions:
            break
        time.sleep(1)
    return {
        "failed": failed,
        "took": took,
        "counts": counts,
        "lost": (before["lost"], after["lost"]),
        "peak": peak[0],
        "backlog_limit": before["backlog_limit"],
        "wait": before["backlog_wait_time"],
    }


def row(label: str, result: dict[str, object], sessions: int) -> tuple[object, ...]:
    counts = result["counts"]
    lost_before, lost_after = result["lost"]
    return (
        label,
        f"{result['backlog_limit']} / {result['wait']}",
        f"{counts['USER_START']}/{sessions}",
        f"{counts['USER_ACCT']}/{sessions}",
        f"{counts['USER_END']}/{sessions}",
        f"{lost_before} → {lost_after}",
        result["peak"],
        result["failed"],
        f"{sessions / result['took']:.0f}",
    )


def run(sessions: int = SESSIONS) -> None:
    driver = common.driver()
    login = common.linux_user()
    name = common.service(common.debian_stack(common.ENTRY))
    print(f"## 3. Burst: {sessions} sessions, {PARALLEL} at a time, no shell, Debian sshd stack with the module\n")
    rows = [row("as configured", burst(driver, name, login, common.unique("bench-burst-"), sessions), sessions)]
    original = status()["backlog_limit"]
    subprocess.run(["auditctl", "-b", str(SMALL_BACKLOG)], check=True, capture_output=True)
    try:
        small = burst(driver, name, login, common.unique("bench-burst-"), sessions)
    finally:
        subprocess.run(["auditctl", "-b", str(original)], check=True, capture_output=True)
    rows.append((f"backlog cut to {SMALL_BACKLOG}", *row("", small, sessions)[1:]))
    print(
        common.table(
            (
                "run",
                "backlog_limit / backlog_wait_time",
                "USER_START found",
                "USER_ACCT",
                "USER_END",
                "lost before → after",
                "peak backlog",
                "failed logins",
                "sessions/s",
            ),
            rows,
        )
    )
    print(f"\nbacklog restored to {status()['backlog_limit']}; target: all USER_START found, lost unchanged\n")
