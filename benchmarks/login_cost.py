"""1. Login cost: whole logins through three stacks that differ only by their
pam_python lines:

  (a) no pam_python;  (b) a no-op pam_python module;  (c) our module.

Each stack is driven by the same C driver (tests/c/teleport_driver.c, no
shell: acct_mgmt, open_session, close_session) under two names: `teleport`,
a Teleport-like login for which pam_entry.py loads pam_module.py and real
records are written, and `sshd-stand-in`, a non-Teleport login (OpenSSH's
sshd, pamtester) for which pam_entry.py returns before importing anything.

Each login is a fresh C process, timed from fork to exit by login_timer.c,
with every stack, variant and driver interleaved in the same rounds, on a
minimal stack and on Debian's stock sshd stack. Also reports the
instructions each login executes (callgrind, repeatable where wall time is
not), beside (f), the floor: the same script loading floor_module.py, which
sends the three records as fixed text and does nothing else, and the floor's
steps below it (i: the module is imported, s: and imports _socket); above it,
(l) lean_module.py, a login's everyday work written for speed, and (m) the
same importing pam_module.py without using it. Then it
checks in the audit log which logins wrote records, and shows `python -X
importtime` of the in-PAM path.
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from pam_teleport_audit.pam_loader import IN_PAM_MODULES

from . import common

ROUNDS = 100  # 12 logins a round (2 stacks x a b c x 2 drivers): ~0.5 s
CALLGRIND_RUNS = 9  # the interpreter's random hash seed moves one count by about 0.1 M
STACKS = {"minimal": common.minimal_stack, "debian-sshd": common.debian_stack}
VARIANTS = {"a": None, "b": common.NOOP, "c": common.ENTRY}
# The same driver binary under each name: pam_entry.py decides from /proc/self/exe.
LOGINS = {"teleport": "teleport", "non-teleport": "sshd-stand-in"}
# Targets for c/b (issue #16): instructions on both stacks, wall time on Debian's.
INSTRUCTION_TARGETS = {"teleport": 1.03, "non-teleport": 1.005}
WALL_TARGETS = {("debian-sshd", "teleport"): 1.05}
# What pam_python does in a fresh interpreter for a PAM handle: it imports
# traceback for its error reports, execs the script (compiled from source),
# and pam_sm_acct_mgmt, called with the line's arguments (args[0] is the
# script), loads pam_loader and pam_module for Teleport only, whose pam_sm_*
# then stand in the script's globals. Then what it imported.
IN_PAM_PATH = """\
import traceback, sys, os, time
imported = set()  # our modules leave sys.modules once loaded: an audit hook sees every import
sys.addaudithook(lambda event, args: imported.add(args[0]) if event == "import" else None)
path, teleport = {entry!r}, {teleport!r}
args = [path] + (["teleport_exe=" + os.readlink("/proc/self/exe")] if teleport else [])
sys.stderr.write("--entry--\\n")
start = time.perf_counter_ns()
script = {{"__file__": path, "__name__": "pam_entry"}}
exec(compile(open(path).read(), path, "exec"), script)
class Pamh:  # no user and no environment: the module, once loaded, records nothing
    user = tty = rhost = service = None
    env = {{}}
script["pam_sm_acct_mgmt"](Pamh(), 0, args)
handle = [name for name in script if name.startswith("pam_sm_")]
took = time.perf_counter_ns() - start
loaded = sorted(name for name in imported if name.startswith(("pam_", "_socket")))
sys.stderr.write(f"--end-- {{took}} {{sorted(handle)}} {{loaded}}\\n")
"""

# The ladder from (b) to (c), each rung a Teleport-like login through pam_entry.py loading another
# module: which one (floor_module.py or lean_module.py), its argument on the pam.d line, and what the
# rung adds to the one before.
LADDER = {
    "i": ("floor", "floor=import", "i: pam_entry.py loads a small module that does nothing"),
    "s": ("floor", "floor=socket", "s: i, and the module imports _socket"),
    "f": ("floor", "floor=records", "f: s, and it sends the three records as fixed text (the floor)"),
    "l": ("lean", "", "l: lean_module.py: a login's everyday work written for speed (no options, refusals, warnings)"),
    "m": ("lean", "lean=load", "m: l, and it imports pam_module.py without using it"),
}

Row = tuple[object, ...]


def drivers() -> dict[str, Path]:
    """The C driver under each name of LOGINS: one binary, copied."""
    teleport = common.driver()
    paths = {}
    for login, name in LOGINS.items():
        paths[login] = teleport.with_name(name)
        if paths[login] != teleport:
            shutil.copy2(teleport, paths[login])
    return paths


def floor_entry() -> Path:
    """pam_entry.py as it is, beside floor_module.py, which it loads in place of pam_loader.py."""
    folder = common.scratch_folder("floor")
    script = common.ENTRY.read_text()
    assert script.count('"pam_loader"') == 1, "pam_entry.py no longer loads pam_loader by that name"
    (folder / "pam_entry.py").write_text(script.replace('"pam_loader"', '"floor_module"'))
    shutil.copy2(Path(__file__).with_name("floor_module.py"), folder / "floor_module.py")
    compileall.compile_file(str(folder / "floor_module.py"), quiet=1)
    return folder / "pam_entry.py"


def lean_entry() -> Path:
    """pam_entry.py as it is, beside lean_module.py, which it loads in place of pam_loader.py, and
    pam_module.py, which lean_module.py imports with its lean=load argument."""
    folder = common.scratch_folder("lean")
    script = common.ENTRY.read_text()
    assert script.count('"pam_loader"') == 1, "pam_entry.py no longer loads pam_loader by that name"
    (folder / "pam_entry.py").write_text(script.replace('"pam_loader"', '"lean_module"'))
    shutil.copy2(Path(__file__).with_name("lean_module.py"), folder / "lean_module.py")
    shutil.copy2(common.PACKAGE / "pam_module.py", folder / "pam_module.py")
    for name in ("lean_module.py", "pam_module.py"):
        compileall.compile_file(str(folder / name), quiet=1)
    return folder / "pam_entry.py"


def source_only_entry() -> Path:
    """pam_entry.py and the modules it loads, copied without bytecode: what doctor's bytecode check warns of."""
    folder = common.scratch_folder("no-bytecode")
    for name in ("pam_entry", *IN_PAM_MODULES):
        shutil.copy2(common.PACKAGE / f"{name}.py", folder / f"{name}.py")
    return folder / "pam_entry.py"


def ladder_rows(stack: str, base: int, counts: dict[str, int]) -> list[Row]:
    """One row per step of the floor, then (c), each against (b) and against the step before."""
    rows: list[Row] = []
    budget = base * INSTRUCTION_TARGETS["teleport"]
    before = base
    for step, count in counts.items():
        what = LADDER[step][2] if step in LADDER else "c: pam_module (pam_loader, then pam_module)"
        cells = (
            f"{count / 1e6:.2f}",
            f"{count / base:.4f}",
            f"{(count - base) / 1e6:.2f}",
            f"{(count - before) / 1e6:.2f}",
        )
        rows.append((stack, what, *cells))
        before = count
    rows.append(
        (
            stack,
            "budget: the target times b",
            f"{budget / 1e6:.2f}",
            f"{INSTRUCTION_TARGETS['teleport']:.4f}",
            f"{(budget - base) / 1e6:.2f}",
            "-",
        )
    )
    return rows


def timed_logins(rounds: int, login: str, tpuser: str, items: list[str]) -> dict[str, list[float]]:
    """Microseconds per login for each DRIVER@SERVICE item, all interleaved in each round."""
    timer = common.compile_c(Path(__file__).with_name("login_timer.c"), "login_timer")
    out = subprocess.run(
        [str(timer), str(rounds), login, tpuser, *items], capture_output=True, text=True, check=True
    ).stdout
    times: dict[str, list[float]] = {item: [] for item in items}
    for line in out.splitlines():
        item, micros = line.split()
        times[item].append(float(micros))
    return times


def instructions(driver: Path, login: str, tpuser: str, service: str, runs: int = CALLGRIND_RUNS) -> int:
    """Instructions one whole login executes in user space (callgrind), median of runs.

    Repeatable to about 0.1 M, not exactly: the interpreter's hash seed is
    random at each start, and dict layouts with it.
    """
    login_argv = [str(driver), "-n", "-s", service, "-u", tpuser, login]
    counts = []
    for _ in range(runs):
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *login_argv],
            capture_output=True,
            text=True,
            check=True,
        )
        match = re.search(r"Collected : (\d+)", proc.stderr)
        if not match:
            raise RuntimeError(f"no callgrind total for {driver.name}@{service}: {proc.stderr[-500:]}")
        counts.append(int(match.group(1)))
    return sorted(counts)[len(counts) // 2]


def records_by_driver(since: float, tpuser: str, paths: dict[str, Path]) -> dict[str, int]:
    """How many of our records (teleportUser=tpuser) each driver's logins wrote since a time."""
    # ausearch reads -ts in the C locale's format: MM/DD/YY HH:MM:SS.
    start = time.localtime(since)
    day, second = time.strftime("%m/%d/%y", start), time.strftime("%H:%M:%S", start)
    proc = subprocess.run(
        ["ausearch", "--input-logs", "-m", "USER_ACCT,USER_START,USER_END,USER_LOGIN", "-ts", day, second],
        capture_output=True,
        text=True,
        check=False,  # exit 1 when nothing matched
        env={**os.environ, "LC_ALL": "C"},
    )
    ours = [line for line in proc.stdout.splitlines() if f"teleportUser={tpuser}" in line]
    return {login: sum(f'exe="{path}"' in line for line in ours) for login, path in paths.items()}


def target(value: float | None) -> str:
    return f"<= {value}" if value else "-"


def in_pam_path(teleport: bool, runs: int = 7) -> tuple[float, float, list[str], str]:
    """pam_entry.py's exec and loading for one handle, under -X importtime, median of runs.

    Returns the import total in ms, the exec+load wall time in ms, the
    importtime lines, and what was loaded (entry point names, modules).
    """
    measured = []
    code = IN_PAM_PATH.format(entry=str(common.ENTRY), teleport=teleport)
    for _ in range(runs):
        proc = subprocess.run(
            ["/usr/bin/python3", "-I", "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
        )
        body, end = proc.stderr.split("--entry--\n", 1)[1].split("--end-- ", 1)
        took, loaded = end.strip().split(" ", 1)
        lines = body.splitlines()
        # Top-level imports (no indentation in the name column) hold their children's time.
        total = sum(int(line.split("|")[1]) for line in lines if not line.split("|")[2].startswith("  "))
        measured.append((total, int(took), lines, loaded))
    measured.sort(key=lambda item: item[0])
    total, took, lines, loaded = measured[len(measured) // 2]
    return total / 1000, took / 1e6, lines, loaded


def run(rounds: int = ROUNDS) -> None:
    paths = drivers()
    login = common.linux_user()
    tpuser = common.unique("bench-login-")
    services = {}
    for stack, make in STACKS.items():
        for variant, script in VARIANTS.items():
            services[stack, variant] = common.service(make(script))

    def item(stack: str, variant: str, kind: str) -> str:
        return f"{paths[kind]}@{services[stack, variant]}"

    keys = [(stack, variant, kind) for stack in STACKS for variant in VARIANTS for kind in LOGINS]
    print(f"## 1. Login cost: {rounds} logins per stack, variant and driver, fresh process each, all interleaved\n")
    started = time.time() - 1  # ausearch's -ts has one-second resolution
    times = timed_logins(rounds, login, tpuser, [item(*key) for key in keys])
    rows: list[Row] = []
    for stack in STACKS:
        for kind in LOGINS:
            med = {v: common.median(times[item(stack, v, kind)]) for v in VARIANTS}
            wall_target = target(WALL_TARGETS.get((stack, kind)))
            ratios = (f"{med['c'] / med['b']:.3f}", wall_target, f"{med['c'] / med['a']:.2f}")
            rows.append((stack, kind, *(f"{med[v] / 1000:.2f}" for v in VARIANTS), *ratios))
    print(common.table(("stack", "login", "a ms", "b ms", "c ms", "c/b", "target", "c/a"), rows))
    print(
        "\nmedian wall time of a whole login (fork, exec, pam_start … pam_end, exit); login = the driver's name:"
        f" {', '.join(f'{kind}: {name}' for kind, name in LOGINS.items())} (the same binary)\n"
    )

    if shutil.which("valgrind"):
        entries, source_only = {"floor": floor_entry(), "lean": lean_entry()}, source_only_entry()
        rows, ladder, no_bytecode = [], [], []
        for stack, make in STACKS.items():
            for kind in LOGINS:
                count = {v: instructions(paths[kind], login, tpuser, services[stack, v]) for v in VARIANTS}
                ratio = count["c"] / count["b"]
                extra = (f"{ratio:.4f}", target(INSTRUCTION_TARGETS[kind]), f"{(count['c'] - count['b']) / 1e6:.2f}")
                floor_cols: tuple[str, ...] = ("-", "-")
                # The floor's steps differ from (c) only for a Teleport login (otherwise the script returns early).
                if kind == "teleport":
                    steps = {
                        step: instructions(paths[kind], login, tpuser, common.service(make(entries[entry], arg)))
                        for step, (entry, arg, _) in LADDER.items()
                    }
                    floor_cols = (f"{steps['f'] / count['b']:.4f}", f"{(count['c'] - steps['f']) / 1e6:.2f}")
                    ladder += ladder_rows(stack, count["b"], {**steps, "c": count["c"]})
                    source = instructions(paths[kind], login, tpuser, common.service(make(source_only)))
                    no_bytecode.append(
                        (
                            stack,
                            f"{count['c'] / 1e6:.1f}",
                            f"{source / 1e6:.1f}",
                            f"{count['c'] / count['b']:.4f}",
                            f"{source / count['b']:.4f}",
                            f"{(source - count['c']) / 1e6:.1f}",
                        )
                    )
                rows.append((stack, kind, *(f"{count[v] / 1e6:.1f}" for v in VARIANTS), *extra, *floor_cols))
        minstr = ("a Minstr", "b Minstr", "c Minstr", "c/b", "target", "c-b Minstr", "f/b", "c-f Minstr")
        head = ("stack", "login", *minstr)
        print(common.table(head, rows))
        print(
            "\nuser-space instructions of one login (valgrind callgrind; repeatable, kernel time not counted);"
            " f = the floor: pam_entry.py loading floor_module.py, three fixed records and nothing else\n"
        )
        print(
            common.table(
                ("stack", "Teleport-like login through", "Minstr", "/b", "-b Minstr", "step adds Minstr"), ladder
            )
        )
        print(
            "\nthe floor step by step (benchmarks/floor_module.py's floor= argument), the everyday work written for"
            " speed (benchmarks/lean_module.py), then pam_module;"
            f" the target c/b <= {INSTRUCTION_TARGETS['teleport']} is the budget line\n"
        )
        head = ("stack", "c Minstr", "c, no bytecode Minstr", "c/b", "no bytecode /b", "compiling adds Minstr")
        print(common.table(head, no_bytecode))
        print(
            "\na Teleport-like login through (c) as installed, and through a copy of the same files without"
            " __pycache__ (pam_python never writes bytecode: doctor's `bytecode` check)\n"
        )

    # Each Teleport-like login through (c) writes USER_ACCT, USER_START and USER_END: the timed
    # rounds, login_timer's warm-up round, and the callgrind logins with and without bytecode, on each
    # stack; so do the lean rungs (l, m), whose records carry the same names.
    logins = (rounds + 1 + (4 * CALLGRIND_RUNS if shutil.which("valgrind") else 0)) * len(STACKS)
    written = records_by_driver(started, tpuser, paths)
    print(
        f"records with teleportUser={tpuser} in the audit log since the first login:"
        f" {written['teleport']} from {LOGINS['teleport']} (expected 3 x {logins} logins = {3 * logins}),"
        f" {written['non-teleport']} from {LOGINS['non-teleport']} (expected 0)\n"
    )
    if not written["teleport"] or written["non-teleport"]:
        raise SystemExit("the Teleport-like logins must write records and the non-Teleport ones none")

    for kind, teleport in (("Teleport-like", True), ("non-Teleport", False)):
        total, took, lines, loaded = in_pam_path(teleport)
        print(
            f"in-PAM path of a {kind} handle (pam_entry.py exec, then its load for the first pam_sm_*), median of 7:"
            f" imports {total:.2f} ms (python -X importtime), exec+load {took:.2f} ms; loaded {loaded}\n"
        )
        if lines:
            print("```\n" + "\n".join(lines) + "\n```\n")
