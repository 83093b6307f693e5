"""Teleport's own upgrade while logins run, the three ways Teleport ships it (docs/security.md,
"Teleport upgrades"):

- dpkg (the deb/rpm): the new file is unpacked beside the old one and renamed over it;
- the tarball's `install` script: `cp -f teleport /usr/local/bin/`, which cannot open a running
  binary (ETXTBSY), so it unlinks it and writes a new file;
- teleport-update (managed updates, lib/autoupdate/agent): each version in
  /opt/teleport/default/versions/<version>/bin, /usr/local/bin/teleport a symlink to the linked one,
  switched by writing a new link and renaming it over the old (renameio.Symlink), then `systemctl
  reload teleport`: the new process starts from the link (the new version) and the old one keeps
  serving its connections; a later update removes the old version's folder.

A running binary that was replaced or removed reads `PATH (deleted)` in /proc/PID/exe. Teleport runs
each session's PAM in a `teleport exec` child that re-executes /proc/self/exe, so the child runs the
daemon's binary: here the daemon is the C stand-in started as `teleport start`, and each login is a
child exec'd from /proc/DAEMON/exe, as Teleport does it.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pam_teleport_audit.admin.auditlog import AuditRecord, decode_value, records_since
from pam_teleport_audit.admin.stanza import entry_script

from .conftest import ROOT, SyslogCatcher, debian_stack, unique

METHODS = ("dpkg", "tarball", "teleport-update")
V1, V2 = "18.1.0", "18.2.0"
RECORD_TYPES = "USER_ACCT,USER_START,USER_END,USER_LOGIN"


@dataclass
class Install:
    """A Teleport installation under root, laid out and upgraded as `method` does it."""

    root: Path
    method: str
    driver: Path

    def __post_init__(self) -> None:
        self.path = self.root / "usr" / "local" / "bin" / "teleport"  # what the unit starts, and teleport_exe= names
        self.path.parent.mkdir(parents=True)
        if self.method == "teleport-update":
            self.binary(V1).parent.mkdir(parents=True)
            shutil.copy2(self.driver, self.binary(V1))
            self.path.symlink_to(self.binary(V1))
        else:
            shutil.copy2(self.driver, self.path)
        for folder, _, _ in os.walk(self.root):
            os.chmod(folder, 0o755)
        self.first = str(self.binary(V1) if self.method == "teleport-update" else self.path)  # exe before

    def binary(self, version: str) -> Path:
        return self.root / "opt" / "teleport" / "default" / "versions" / version / "bin" / "teleport"

    def upgrade(self) -> None:
        if self.method == "dpkg":
            new = self.path.with_name("teleport.dpkg-new")
            shutil.copy2(self.driver, new)
            new.rename(self.path)
        elif self.method == "tarball":
            subprocess.run(["cp", "-f", str(self.driver), str(self.path)], check=True)  # build.assets/install
        else:
            self.binary(V2).parent.mkdir(parents=True, mode=0o755)
            shutil.copy2(self.driver, self.binary(V2))
            link = self.path.with_name(".teleport.tmp")
            link.symlink_to(self.binary(V2))
            link.rename(self.path)

    def retire(self) -> None:
        """teleport-update's next update removes the backup version (LocalInstaller.Remove)."""
        shutil.rmtree(self.binary(V1).parent.parent)


@pytest.fixture
def teleport_install(tmp_path: Path, driver: Path) -> Callable[[str], Install]:
    """Factory: an installation under tmp_path (removed with it)."""
    return lambda method: Install(tmp_path / "root", method, driver)


@pytest.fixture
def daemons() -> Iterator[Callable[[Path], subprocess.Popen]]:
    """Factory: `teleport start` from a path, as systemd starts it; ended afterwards."""
    started: list[subprocess.Popen] = []

    def start(path: Path, *args: str) -> subprocess.Popen:
        started.append(subprocess.Popen([str(path), "start", *args], stdin=subprocess.PIPE))
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()
        daemon.wait()


def child_argv(daemon: subprocess.Popen, service: str, tp_user: str, login: str, *extra: str) -> list[str]:
    """`teleport exec` as Teleport runs it: the daemon's own binary, through /proc/DAEMON/exe."""
    return [f"/proc/{daemon.pid}/exe", "exec", "-S", "-n", "-s", service, "-u", tp_user, *extra, login]


def records_by_pid(started: float, pids: set[int], complete: Callable[[dict[int, list]], bool]) -> dict[int, list]:
    """Our and libpam's records of these processes, polled until complete (auditd writes asynchronously)."""
    deadline = time.time() + 15
    while True:
        found: dict[int, list[AuditRecord]] = collections.defaultdict(list)
        for rec in records_since(started, "-m", RECORD_TYPES):
            if rec.int("pid") in pids:
                found[rec.int("pid")].append(rec)
        if complete(found) or time.time() > deadline:
            return found
        time.sleep(0.3)


def exe_of(rec: AuditRecord) -> str:
    return decode_value(rec["exe"]).decode()


def paused(argv: list[str], point: str) -> tuple[subprocess.Popen, int]:
    """The driver started with -P POINT, once it waits there (a line on its stdin lets it go on), and its pid."""
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin and child.stdout
    pid = int(child.stdout.readline().removeprefix("pid="))
    for line in child.stdout:
        if line.strip() == f"pause={point}":
            return child, pid
    raise AssertionError(f"the driver ended before pause={point}: exit {child.wait()}")


# ---- (1) and (2): one login, the binary replaced between its account and session phases, or while
# its session is open (close_session, then pam_end: a refused login's record is written there)

PHASES = {
    "open": "between acct_mgmt and open_session",
    "close": "while the session is open",
}


@pytest.mark.parametrize("listed", [False, True], ids=["default rule", "teleport_exe=/usr/local/bin/teleport"])
@pytest.mark.parametrize("point", list(PHASES), ids=list(PHASES.values()))
@pytest.mark.parametrize("method", METHODS)
def test_an_upgrade_during_a_login(
    teleport_install, daemons, pam_service, linux_user, method: str, point: str, listed: bool
) -> None:
    """Trust is decided at acct_mgmt, on the binary as it was then, and kept: all three records are
    written, with the exe= libpam's own records of the process have (libaudit reads /proc/self/exe once
    per process, at its first record), the path as it was at acct_mgmt."""
    install = teleport_install(method)
    service = pam_service(debian_stack(*([f"teleport_exe={install.path}"] if listed else [])))
    login = linux_user()
    daemon = daemons(install.path)
    time.sleep(0.1)
    tp_user = unique("upgraded-")
    started = time.time()
    child, pid = paused(child_argv(daemon, service, tp_user, login, "-P", point), point)
    assert os.readlink(f"/proc/{pid}/exe") == install.first
    install.upgrade()
    if method == "teleport-update":
        install.retire()
    assert os.readlink(f"/proc/{pid}/exe") == install.first + " (deleted)"
    out, _ = child.communicate("\n", timeout=60)
    assert child.returncode == 0, out
    records = records_by_pid(started, {pid}, lambda found: len(found[pid]) >= 6)[pid]
    ours = [r for r in records if r.get("teleportUser") == tp_user]
    libpam = [r for r in records if r.get("op", "").startswith("PAM:")]
    assert [r["op"] for r in ours] == ["teleport:accounting", "teleport:session_open", "teleport:session_close"]
    assert [r["op"] for r in libpam] == ["PAM:accounting", "PAM:session_open", "PAM:session_close"]
    assert {exe_of(r) for r in ours + libpam} == {install.first}


@pytest.mark.parametrize("listed", [False, True], ids=["default rule", "teleport_exe=/usr/local/bin/teleport"])
def test_an_upgrade_before_pam_end_of_a_refused_login(
    teleport_install, daemons, pam_service, linux_user, listed: bool
) -> None:
    """A login the account stack refuses gets its record at pam_end: after the upgrade, still the
    Teleport user's, with the exe of acct_mgmt."""
    install = teleport_install("dpkg")
    module = f"pam_python.so {entry_script()}" + (f" teleport_exe={install.path}" if listed else "")
    service = pam_service(
        f"account optional {module}\naccount required pam_deny.so\n"
        f"session required pam_loginuid.so\nsession optional {module}\n"
    )
    daemon = daemons(install.path)
    time.sleep(0.1)
    tp_user = unique("refused-")
    started = time.time()
    child, pid = paused(child_argv(daemon, service, tp_user, linux_user(), "-P", "end"), "end")
    install.upgrade()
    child.communicate("\n", timeout=60)
    assert child.returncode != 0  # refused
    records = records_by_pid(started, {pid}, lambda found: len(found[pid]) >= 2)[pid]
    ours = [r for r in records if r.get("teleportUser") == tp_user]
    assert [(r.type, r["op"], r["res"]) for r in ours] == [("USER_LOGIN", "teleport:login", "failed")]
    assert exe_of(ours[0]) == install.first


@pytest.mark.parametrize("listed", [False, True], ids=["default rule", "teleport_exe=/usr/local/bin/teleport"])
def test_an_upgrade_to_a_binary_a_user_owns(
    teleport_install, daemons, pam_service, linux_user, tmp_path: Path, listed: bool
) -> None:
    """The new file owned by a user (say a tarball unpacked as root with tar's --same-owner): the old
    process still runs root's binary and is trusted; the new one is not, by the default rule (its
    user could have written anything). teleport_exe= matches the listed path as configured, without
    the file check (tests/unit/test_identity.py): that binary is trusted."""
    install = teleport_install("dpkg")
    login = linux_user()
    catcher = SyslogCatcher(tmp_path / "log.sock")
    options = [f"log_socket={catcher.path}"] + ([f"teleport_exe={install.path}"] if listed else [])
    service = pam_service(debian_stack(*options))
    old = daemons(install.path)
    install.upgrade()
    owner = int(subprocess.run(["id", "-u", login], capture_output=True, text=True, check=True).stdout)
    os.chown(install.path, owner, -1)
    new = daemons(install.path)
    users = {name: unique(f"{name}-") for name in ("old", "new")}
    started = time.time()
    pids = {}
    for name, daemon in (("old", old), ("new", new)):
        proc = subprocess.run(
            child_argv(daemon, service, users[name], login), capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        pids[name] = int(proc.stdout.partition("\n")[0].removeprefix("pid="))
    expect = {"old": 3, "new": 3 if listed else 0}
    found = records_by_pid(started, set(pids.values()), lambda f: all(len(f[pids[n]]) >= 3 + expect[n] for n in pids))
    for name, pid in pids.items():
        assert len([r for r in found[pid] if r.get("teleportUser") == users[name]]) == expect[name], name
    lines = catcher.lines()
    catcher.sock.close()
    warned = [line for line in lines if "is not a trusted Teleport binary (default rule" in line]
    assert len(warned) == (0 if listed else 1), lines


# ---- (3): logins without pause while each upgrade runs: the old daemon's children, and after the
# reload the new daemon's too (Teleport's old process keeps serving the connections it had: a new
# session on one of them is a child of the old process)


@dataclass
class Login:
    phase: str  # before, replaced (the file), reloaded (a new daemon runs), retired (old version removed)
    daemon: str  # old, new
    pid: int
    tp_user: str
    returncode: int
    steady: bool  # started and ended in the same phase, no step under way: its outcome is known


@dataclass
class Loop:
    logins: list[Login] = field(default_factory=list)
    phase: str = "before"
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, service: str, login: str) -> None:
        n = 0
        while not self.stop.is_set():
            for name, daemon in list(self.daemons.items()):
                tp_user = f"{service}-{n}"
                phase = self.phase
                proc = subprocess.run(
                    child_argv(daemon, service, tp_user, login), capture_output=True, text=True, check=False
                )
                pid = int(proc.stdout.partition("\n")[0].removeprefix("pid="))
                steady = phase == self.phase and not phase.startswith("->")
                self.logins.append(Login(phase, name, pid, tp_user, proc.returncode, steady))
                n += 1

    def step(self, action: Callable[[], object], phase: str) -> None:
        """Do action while logins go on; the logins under way meanwhile may see either side of it."""
        self.phase = "->" + phase
        action()
        self.phase = phase
        time.sleep(1.0)


# What is expected of a login by (method, teleport_exe= names the link, its daemon, its phase):
# trusted, or not. Only one case is not: teleport-update with teleport_exe= naming its symlink, from
# the old process once the link names the new version (the module resolves the link at each login).
def trusted(method: str, listed: bool, daemon: str, phase: str) -> bool:
    return not (method == "teleport-update" and listed and daemon == "old" and phase != "before")


def search(tp_user: str, since: float) -> list[dict]:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pam_teleport_audit", "search", "--teleport-user", tp_user, "--format", "json"),
            *("--since", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since - 1))),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("listed", [False, True], ids=["default rule", "teleport_exe=/usr/local/bin/teleport"])
@pytest.mark.parametrize("method", METHODS)
def test_logins_during_an_upgrade(
    teleport_install, daemons, pam_service, linux_user, tmp_path: Path, method: str, listed: bool
) -> None:
    install = teleport_install(method)
    catcher = SyslogCatcher(tmp_path / "log.sock")
    options = [f"log_socket={catcher.path}"] + ([f"teleport_exe={install.path}"] if listed else [])
    service = pam_service(debian_stack(*options))
    login = linux_user()
    loop = Loop()
    loop.daemons["old"] = daemons(install.path)
    time.sleep(0.1)
    started = time.time()
    thread = threading.Thread(target=loop.run, args=(service, login))
    thread.start()
    # Read the log as it comes: a datagram socket queues 10 lines, then the module's next line waits
    # out its 0.5 s timeout.
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.extend(catcher.lines()) for _ in iter(loop.stop.is_set, True)])
    reader.start()
    try:
        time.sleep(1.0)
        loop.step(install.upgrade, "replaced")
        # systemctl reload: a new process, from the unit's path
        loop.step(lambda: loop.daemons.setdefault("new", daemons(install.path)), "reloaded")
        if method == "teleport-update":
            loop.step(install.retire, "retired")
    finally:
        loop.stop.set()
        thread.join()
        reader.join()
    lines += catcher.lines()
    catcher.sock.close()

    def expected(login: Login) -> int:
        return 3 if trusted(method, listed, login.daemon, login.phase.removeprefix("->")) else 0

    def complete(found: dict[int, list]) -> bool:
        return all(len(found[x.pid]) >= 3 + expected(x) for x in loop.logins if x.steady)

    found = records_by_pid(started, {x.pid for x in loop.logins}, complete)
    # Each case ran: at least three steady logins of each daemon in each of its phases.
    phases = collections.Counter((x.daemon, x.phase) for x in loop.logins if x.steady)
    assert all(n >= 3 for n in phases.values()) and ("old", "reloaded") in phases, phases
    tally: collections.Counter[tuple[str, str, int, str]] = collections.Counter()
    for x in loop.logins:
        assert x.returncode == 0, x
        ours = [r for r in found[x.pid] if r.get("teleportUser") == x.tp_user]
        libpam = [r for r in found[x.pid] if r.get("op", "").startswith("PAM:")]
        assert len(libpam) == 3, (x, found[x.pid])  # libpam's records, whatever the module decides
        # A login under way at a step may see either side of it, never a part of its records.
        assert len(ours) == expected(x) if x.steady else len(ours) in (0, 3), (x, found[x.pid])
        # exe= of ours is /proc/self/exe at our acct_mgmt, libpam's at its first record, just after
        # (libaudit reads it once per process): only a login under way at a step may see them differ.
        exes = {exe_of(r) for r in ours + libpam}
        assert len({exe_of(r) for r in ours}) <= 1 and len({exe_of(r) for r in libpam}) == 1, (x, exes)
        if x.steady:
            assert len(exes) == 1, (x, exes)
            tally[(x.daemon, x.phase, len(ours), exes.pop().replace(str(install.root), ""))] += 1
    print(method, listed, dict(tally))  # the measured table, with -s
    # The old daemon's children read "(deleted)" once its file is gone: replaced, or its version removed.
    gone = ("retired",) if method == "teleport-update" else ("replaced", "reloaded")
    assert all(exe.endswith(" (deleted)") == (daemon == "old" and phase in gone) for daemon, phase, _, exe in tally), (
        tally
    )
    # A login not believed is never silent: the module says why (a warning, once per login).
    unrecorded = [x for x in loop.logins if not any(r.get("teleportUser") == x.tp_user for r in found[x.pid])]
    warned = [line for line in lines if "is not a trusted Teleport binary (teleport_exe=)" in line]
    assert len(warned) == len(unrecorded)
    # search lists a session of the old daemon after the upgrade, with the program it ran.
    sample = next(x for x in loop.logins if x.steady and x.daemon == "old" and x.phase == gone[-1])
    sessions = search(sample.tp_user, started)
    if expected(sample):
        assert [(s["result"], s["pid"]) for s in sessions] == [("success", sample.pid)], sessions
        assert sessions[0]["exe"].endswith(" (deleted)")
    else:
        assert sessions == []


# ---- doctor afterwards: the old process still runs (its connections), the new one too


def doctor_checks(service: str, config: Path) -> dict[str, list[dict]]:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pam_teleport_audit", "doctor", "--json"),
            *("--pam-file", f"/etc/pam.d/{service}", "--teleport-config", str(config)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    by_name: dict[str, list[dict]] = {}
    for check in json.loads(proc.stdout)["checks"]:
        by_name.setdefault(check["name"], []).append(check)
    return by_name


@pytest.mark.parametrize("listed", [False, True], ids=["default rule", "teleport_exe=/usr/local/bin/teleport"])
@pytest.mark.parametrize("method", METHODS)
def test_doctor_after_an_upgrade(
    teleport_install, daemons, pam_service, tmp_path: Path, method: str, listed: bool
) -> None:
    """doctor judges each running `teleport start` by the module's trust rule as a login now would:
    it fails the old process after teleport-update switched the link teleport_exe= names, and only that."""
    install = teleport_install(method)
    service = pam_service(debian_stack(*([f"teleport_exe={install.path}"] if listed else [])))
    config = tmp_path / "teleport.yaml"
    config.write_text(f"ssh_service:\n  enabled: true\n  pam:\n    enabled: true\n    service_name: {service}\n")
    old = daemons(install.path, "--config", str(config))
    time.sleep(0.1)
    install.upgrade()
    if method == "teleport-update":
        install.retire()
    new = daemons(install.path, "--config", str(config))
    time.sleep(0.1)
    checks = doctor_checks(service, config)
    verdicts = {pid: [(c["status"], c["message"]) for c in checks[f"teleport pid {pid}"]] for pid in (old.pid, new.pid)}
    assert [status for status, _ in verdicts[new.pid]] == ["pass"], verdicts
    if trusted(method, listed, "old", "retired"):
        assert [status for status, _ in verdicts[old.pid]] == ["pass"], verdicts
        assert "the module trusts it" in verdicts[old.pid][0][1]
    else:
        ((status, message),) = verdicts[old.pid]
        assert status == "fail" and message.startswith(
            f"its binary {install.first} (deleted) is not one teleport_exe="
        ), message
