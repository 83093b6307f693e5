"""5. Memory: one C process running 1,000 PAM handles in a row (the driver's
-c loop, no shell), through the minimal stack with (a) no pam_python,
(b) the no-op module, (c) our module. pam_python starts and finalises an
interpreter per handle; VmRSS is polled from outside to show whether it grows.
"""

from __future__ import annotations

import subprocess
import time

from . import common

HANDLES = 1000
HEADER = ("stack", "exit", "first MB", "at 10% MB", "at 50% MB", "last MB", "maxrss MB", "growth 10%→end MB")
HEADER += ("≈ KB per handle",)
VARIANTS = {"a": None, "b": common.NOOP, "c": common.ENTRY}


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def run(handles: int = HANDLES) -> None:
    driver = common.driver()
    login = common.linux_user()
    tpuser = common.unique("bench-memory-")
    procs: dict[str, subprocess.Popen[str]] = {}
    samples: dict[str, list[int]] = {v: [] for v in VARIANTS}
    for variant, script in VARIANTS.items():  # all three at once: memory does not mind the noise
        name = common.service(common.minimal_stack(script))
        argv = [str(driver), "-n", "-c", str(handles), "-s", name, "-u", tpuser, login]
        procs[variant] = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    while any(proc.poll() is None for proc in procs.values()):
        for variant, proc in procs.items():
            kb = rss_kb(proc.pid) if proc.poll() is None else None
            if kb:
                samples[variant].append(kb)
        time.sleep(0.1)
    rows = []
    for variant, proc in procs.items():
        out = proc.stdout.read() if proc.stdout else ""
        maxrss = int(out.split("maxrss_kb=")[1]) if "maxrss_kb=" in out else 0
        seen = samples[variant] or [0]
        tenth = seen[len(seen) // 10]
        rows.append(
            (
                variant,
                proc.returncode,
                f"{seen[0] / 1024:.1f}",
                f"{tenth / 1024:.1f}",
                f"{seen[len(seen) // 2] / 1024:.1f}",
                f"{seen[-1] / 1024:.1f}",
                f"{maxrss / 1024:.1f}",
                f"{(seen[-1] - tenth) / 1024:.1f}",
                f"{(seen[-1] - tenth) / (0.9 * handles):.0f}",
            )
        )
    print(f"## 5. Memory: {handles} PAM handles in one process (minimal stack)\n")
    print(
        common.table(
            HEADER,
            rows,
        )
    )
    print("\nVmRSS polled every 0.1 s from outside (samples are by time, so per-handle growth is approximate);")
    print("a: no pam_python, b: no-op pam_python module, c: our module. Target: bounded.\n")
