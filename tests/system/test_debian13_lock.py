"""`scripts/debian13 run` holds the host's test lock, as `test` and the host suites do, and does not wait
for it when its caller holds it (this suite does: conftest's real_audit).

Runs the script on the host, in the cached trixie root (built if missing), with a scratch lock file
(PTA_HOST_LOCK) except where the real one is the point. Not a node test (a root has no root of its own).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

from .conftest import ROOT

SCRIPT = ROOT / "scripts" / "debian13"
REAL_LOCK = "/run/pam-teleport-audit-tests.lock"


class Run:
    """`scripts/debian13 run CMD`, started; its output goes to files (a daemon CMD leaves behind may keep
    a pipe open, not the script)."""

    def __init__(self, cmd: str, lock: Path | None, folder: Path) -> None:
        env = dict(os.environ, PTA_SUITE="trixie")
        env.pop("PTA_ROOT", None)
        if lock is not None:
            env["PTA_HOST_LOCK"] = str(lock)
        self.out, self.err = folder / f"out-{id(self)}", folder / f"err-{id(self)}"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen([str(SCRIPT), "run", cmd], cwd=ROOT, env=env, stdout=out, stderr=err)

    def result(self, timeout: float = 120) -> tuple[str, str]:
        """stdout and stderr, once it exited 0."""
        code = self.process.wait(timeout)
        assert code == 0, self.err.read_text()
        return self.out.read_text(), self.err.read_text()


def is_locked(lock: Path) -> bool:
    with open(lock, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def wait_until(predicate, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_run_waits_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "tests.lock"
    # one process holds it (flock(1) would leave its child sleep holding it after the kill)
    holder = subprocess.Popen(["sh", "-c", 'exec 9>"$1" && flock 9 && exec sleep 120', "sh", str(lock)])
    try:
        assert wait_until(lambda: is_locked(lock), 10)
        waiting = Run("echo ran", lock, tmp_path)
        time.sleep(3)
        assert waiting.process.poll() is None, waiting.err.read_text()  # still waiting for the lock
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait()
    out, err = waiting.result()
    assert "waiting for the host's test lock" in err and out.strip().endswith("ran")


def test_run_holds_the_lock_while_its_command_runs_and_no_daemon_keeps_it(tmp_path: Path) -> None:
    """A daemon the command leaves behind does not inherit the lock (nor the root's): it is the script's."""
    lock = tmp_path / "tests.lock"
    # the daemon says its pid on fd 3, and keeps whatever else the root's shell lets it inherit
    cmd = "sh -c 'echo daemon=$$ >&3; exec sleep 120 3>&-' 3>&1 </dev/null >/dev/null 2>&1 & sleep 4; echo done"
    running = Run(cmd, lock, tmp_path)
    assert wait_until(lambda: is_locked(lock), 30)
    out, err = running.result()
    daemon = int(next(x for x in out.splitlines() if x.startswith("daemon="))[7:])
    try:
        assert out.strip().endswith("done"), err
        assert os.path.exists(f"/proc/{daemon}")  # still running
        assert not is_locked(lock)
    finally:
        os.kill(daemon, signal.SIGTERM)


def test_run_does_not_wait_for_the_lock_its_caller_holds(tmp_path: Path) -> None:
    """The caller (this pytest process) holds the lock: the script runs at once and says why."""
    lock = tmp_path / "tests.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        out, err = Run("echo ran", lock, tmp_path).result()
    assert out.strip().endswith("ran"), err
    assert f"is held by process {os.getpid()} (" in err and "not taken again" in err


def test_run_from_a_host_suite_is_not_deadlocked_by_the_suites_own_lock(tmp_path: Path) -> None:
    """The real lock, which this session holds (conftest): a host test that runs `scripts/debian13 run`."""
    assert is_locked(Path(REAL_LOCK))
    out, err = Run("echo ran", None, tmp_path).result()
    assert out.strip().endswith("ran"), err
    assert f"{REAL_LOCK} is held by process {os.getpid()} (" in err
