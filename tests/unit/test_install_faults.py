"""Faults: a kill at every step of the write, concurrent runs, the lock."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pam_teleport_audit.admin.atomicwrite import STEPS, TEMP_PREFIX

from .conftest import CLI
from .pam_strategies import ENTRY

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "tests" / "fixtures" / "pam" / "debian-12"
DEBIAN = (FOLDER / "sshd").read_bytes()
EXAMPLE = (ROOT / "pam.d" / "sshd.example").read_bytes()


@pytest.fixture(autouse=True)
def _includes(tmp_path: Path) -> None:
    """The common-* files Debian's sshd includes, beside it (install proves our lines reachable)."""
    for common in FOLDER.glob("common-*"):
        shutil.copy(common, tmp_path / common.name)


KILLER = """
import os, signal, sys
from pam_teleport_audit.admin.atomicwrite import replace_file
def hook(step):
    if step == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)
replace_file(sys.argv[1], open(sys.argv[3], "rb").read(), hook=hook)
"""


@pytest.mark.parametrize("step", STEPS)
def test_kill_at_each_step_leaves_old_or_new(tmp_path: Path, step: str) -> None:
    target = tmp_path / "sshd"
    target.write_bytes(DEBIAN)
    new = tmp_path / "new"
    new.write_bytes(EXAMPLE)
    proc = subprocess.run([sys.executable, "-c", KILLER, str(target), step, str(new)], cwd=ROOT, check=False)
    assert proc.returncode == -signal.SIGKILL
    after = target.read_bytes()
    assert after == (DEBIAN if STEPS.index(step) < STEPS.index("renamed") else EXAMPLE)
    # A later run cleans the temporary file up and installs.
    cli = [*CLI, "install", "--pam-file", str(target), "--entry", ENTRY]
    assert subprocess.run(cli, cwd=ROOT, capture_output=True, check=False).returncode == 0
    assert target.read_bytes() == EXAMPLE
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_concurrent_installs_give_one_correct_block(tmp_path: Path) -> None:
    target = tmp_path / "sshd"
    target.write_bytes(DEBIAN)
    base = [*CLI, "install", "--pam-file", str(target), "--entry", ENTRY]
    variants = [[], ["--tty-audit", "root"], ["--fail-closed"], ["--backup-dir", str(tmp_path / "backups")]] * 4
    procs = [subprocess.Popen(base + v, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for v in variants]
    assert [p.wait(timeout=60) for p in procs] == [0] * len(procs)
    text = target.read_text()
    assert text.count("# BEGIN pam_teleport_audit account") == 1
    assert text.count("# BEGIN pam_teleport_audit session") == 1
    status = [*CLI, "status", "--pam-file", str(target)]
    assert subprocess.run(status, cwd=ROOT, capture_output=True, check=False).returncode == 0
    uninstall = [*CLI, "uninstall", "--pam-file", str(target)]
    subprocess.run(uninstall, cwd=ROOT, check=True, capture_output=True)
    assert target.read_bytes() == DEBIAN


def holds_open(pid: int, folder: Path) -> bool:
    try:
        return any(os.readlink(fd) == str(folder) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # an fd closed between listing and reading
        return False


def test_a_run_waits_for_the_lock(tmp_path: Path) -> None:
    target = tmp_path / "sshd"
    target.write_bytes(DEBIAN)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        cmd = [*CLI, "install", "--pam-file", str(target), "--entry", ENTRY]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # It opens the folder to lock it (atomicwrite.folder_lock), then tries every 50 ms: once the
        # folder is among its open files it has reached the lock. A while later it is still there.
        deadline = time.monotonic() + 30
        while not holds_open(proc.pid, tmp_path):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never reached the lock"
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None and holds_open(proc.pid, tmp_path)  # still waiting
        assert target.read_bytes() == DEBIAN
    finally:
        os.close(fd)
    assert proc.wait(timeout=30) == 0
    assert target.read_bytes() == EXAMPLE
