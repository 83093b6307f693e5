"""1. Login cost: whole Teleport-like logins through three stacks that differ
only by their pam_python lines:

  (a) no pam_python;  (b) a no-op pam_python module;  (c) our module, writing real records.

Each login is a fresh C process (the test driver without a shell: acct_mgmt,
open_session, close_session), timed from fork to exit by login_timer.c, with
a b c interleaved, on a minimal stack and on Debian's stock sshd stack. Also
reports the instructions each login executes (callgrind, repeatable where wall
time is not) and `python -X importtime` of the in-PAM import path.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from . import common

ROUNDS = 50
STACKS = {"minimal": common.minimal_stack, "debian-sshd": common.debian_stack}
VARIANTS = {"a": None, "b": common.NOOP, "c": common.ENTRY}
# What pam_python runs in a fresh interpreter before our script (it imports
# traceback for its error reports), then the script itself.
IN_PAM_IMPORTS = """\
import traceback, sys
sys.stderr.write("--entry--\\n")
path = {entry!r}
exec(compile(open(path).read(), path, "exec"), {{"__file__": path, "__name__": "pam_entry"}})
"""


def timed_logins(rounds: int, driver: Path, login: str, tpuser: str, services: list[str]) -> dict[str, list[float]]:
    timer = common.compile_c(Path(__file__).with_name("login_timer.c"), "login_timer")
    out = subprocess.run(
        [str(timer), str(rounds), str(driver), login, tpuser, *services], capture_output=True, text=True, check=True
    ).stdout
    times: dict[str, list[float]] = {name: [] for name in services}
    for line in out.splitlines():
        name, micros = line.split()
        times[name].append(float(micros))
    return times


def instructions(driver: Path, login: str, tpuser: str, name: str) -> int:
    """Instructions one whole login executes in user space (callgrind: deterministic)."""
    login_argv = [str(driver), "-n", "-s", name, "-u", tpuser, login]
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *login_argv],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if not match:
        raise RuntimeError(f"no callgrind total for {name}: {proc.stderr[-500:]}")
    return int(match.group(1))


def importtime(runs: int = 7) -> tuple[float, list[str]]:
    """The in-PAM import path under -X importtime: total ms, and the lines of the median run."""
    measured = []
    for _ in range(runs):
        proc = subprocess.run(
            ["/usr/bin/python3", "-I", "-X", "importtime", "-c", IN_PAM_IMPORTS.format(entry=str(common.ENTRY))],
            capture_output=True,
            text=True,
            check=True,
        )
        lines = proc.stderr.split("--entry--\n", 1)[1].splitlines()
        # Top-level imports (no indentation in the name column) hold their children's time.
        total = sum(int(line.split("|")[1]) for line in lines if not line.split("|")[2].startswith("  "))
        measured.append((total, lines))
    measured.sort(key=lambda item: item[0])
    total, lines = measured[len(measured) // 2]
    return total / 1000, lines


def run(rounds: int = ROUNDS) -> None:
    driver = common.driver()
    login = common.linux_user()
    tpuser = common.unique("bench-login-")
    services = {}
    for stack, make in STACKS.items():
        for variant, script in VARIANTS.items():
            services[stack, variant] = common.service(make(script))
    print(f"## 1. Login cost: {rounds} logins per stack, fresh process each, a b c interleaved\n")
    times = timed_logins(rounds, driver, login, tpuser, list(services.values()))
    rows = []
    for stack in STACKS:
        med = {variant: common.median(times[services[stack, variant]]) for variant in VARIANTS}
        ratios = (f"{med['c'] / med['b']:.3f}", f"{med['c'] / med['a']:.2f}")
        rows.append((stack, *(f"{med[v] / 1000:.2f}" for v in VARIANTS), *ratios))
    print(common.table(("stack", "a ms", "b ms", "c ms", "c/b", "c/a"), rows))
    print("\nmedian wall time of a whole login (fork, exec, pam_start … pam_end, exit); target c/b <= 1.05\n")

    if shutil.which("valgrind"):
        rows = []
        for stack in STACKS:
            count = {v: instructions(driver, login, tpuser, services[stack, v]) for v in VARIANTS}
            extra = (f"{count['c'] / count['b']:.3f}", f"{(count['c'] - count['b']) / 1e6:.1f}")
            rows.append((stack, *(f"{count[v] / 1e6:.1f}" for v in VARIANTS), *extra))
        print(common.table(("stack", "a Minstr", "b Minstr", "c Minstr", "c/b", "c-b Minstr"), rows))
        print("\nuser-space instructions of one login (valgrind callgrind; repeatable, kernel time not counted)\n")

    total, lines = importtime()
    print(f"in-PAM import path, python -X importtime (median of 7 runs): {total:.2f} ms\n")
    print("```\n" + "\n".join(lines) + "\n```\n")
