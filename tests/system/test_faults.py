"""Faults on the real stack: with fail-open every Teleport login goes on and
one log line says why; with fail_closed each is refused, at acct_mgmt when
audit is known to be unusable before anything is written, else at
open_session when its record fails."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pam_teleport_audit.admin.stanza import entry_script
from pam_teleport_audit.pam_module import AUDIT_USER_START, AuditSocket, daemon_alive, record_text, write_records

from .conftest import (
    EXAMPLE_SSHD,
    INSTALLED_ENTRY,
    OUR_OPS,
    ROOT,
    audit_switched_off,
    driver_argv,
    pid_records,
    run_driver,
    unique,
    wait_for_records,
)

if TYPE_CHECKING:
    from pam_teleport_audit.pam_module import AuditStatus

AUDIT_USER = 1005  # a plain user message, for flooding the backlog
PAM_SERVICE_ERR = 3  # what pam_python returns when the script raises


def status() -> AuditStatus:
    with AuditSocket() as audit:
        return audit.status()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# On a machine systemd runs (a VM), auditd is its service: a daemon started by
# hand would leave the unit inactive with an unmanaged auditd running, and
# after a SIGKILL systemd would restart it (Restart=on-failure) under the test.
# In a container or a CI machine nothing runs it, and the tests start it by hand.
NO_RESTART = Path("/run/systemd/system/auditd.service.d/zz-pam-teleport-audit-test.conf")


def systemd_runs_auditd() -> bool:
    if not os.path.isdir("/run/systemd/system"):
        return False
    return subprocess.run(["systemctl", "is-active", "--quiet", "auditd"], check=False).returncode == 0


def systemctl(*args: str) -> None:
    subprocess.run(["systemctl", *args], check=True, capture_output=True)


def start_auditd(managed: bool) -> None:
    if managed:
        systemctl("reset-failed", "auditd")
        systemctl("start", "auditd")  # auditd.service refuses a manual stop, not a start
    else:
        subprocess.run(["auditd"], check=True)


@contextmanager
def auditd_stopped() -> Iterator[None]:
    managed = systemd_runs_auditd()
    pid = status()["pid"]
    os.kill(pid, signal.SIGTERM)  # auditd exits cleanly: its unit goes inactive, not restarted
    wait_until(lambda: status()["pid"] == 0, "auditd to stop")
    try:
        yield
    finally:
        start_auditd(managed)
        wait_until(lambda: status()["pid"] != 0, "auditd to start")


@contextmanager
def auditd_killed() -> Iterator[None]:
    """auditd killed with SIGKILL: the kernel keeps its pid until a delivery fails."""
    managed = systemd_runs_auditd()
    if managed:
        NO_RESTART.parent.mkdir(parents=True, exist_ok=True)
        NO_RESTART.write_text("[Service]\nRestart=no\n")
        systemctl("daemon-reload")
    try:
        before = status()
        os.kill(before["pid"], signal.SIGKILL)
        try:
            wait_until(lambda: not daemon_alive(before), "auditd to die")
            # Nothing has sent a record since: the dead daemon is still registered.
            assert status()["pid"] == before["pid"], "a record was sent before the login; the fault is gone"
            yield
        finally:
            start_auditd(managed)
            wait_until(lambda: daemon_alive(status()), "auditd to start")
    finally:
        if managed:
            NO_RESTART.unlink(missing_ok=True)
            systemctl("daemon-reload")


# The kernel's wait while the backlog is over its limit is counted in jiffies, whose
# length is the kernel's CONFIG_HZ: 1/250 s on Debian's kernels, 1/1000 s on Ubuntu's
# and RHEL's, 1/100 s on some. A bound that holds for any of them:
SHORTEST_JIFFY, LONGEST_JIFFY = 1 / 1000, 1 / 100


@contextmanager
def backlog_over_limit(hold_jiffies: int, limit: int = 8, over: int = 8) -> Iterator[AuditStatus]:
    """The kernel backlog over its limit, auditd paused; everything restored after.

    Filled with plain user records while backlog_wait_time is 0 (a sender is
    held only after its own message, and only while the queue is over the
    limit), then backlog_wait_time is set to hold_jiffies. With auditd paused,
    kauditd gives up on the stuck queue after about 0.35 s here and drops what
    does not fit its retry queue: the body must be quick, and auditd resumes
    as soon as it ends.
    """
    before = status()
    subprocess.run(["auditctl", "-b", str(limit), "--backlog_wait_time", "0"], check=True, capture_output=True)
    os.kill(before["pid"], signal.SIGSTOP)
    try:
        with AuditSocket() as audit:
            while audit.status()["backlog"] < limit + over:
                for _ in range(50):
                    audit.send_user(AUDIT_USER, "op=pam-teleport-audit-test-flood res=success")
        subprocess.run(["auditctl", "--backlog_wait_time", str(hold_jiffies)], check=True, capture_output=True)
        yield status()
    finally:
        os.kill(before["pid"], signal.SIGCONT)
        subprocess.run(
            ["auditctl", "-b", str(before["backlog_limit"]), "--backlog_wait_time", str(before["backlog_wait_time"])],
            check=True,
            capture_output=True,
        )
        wait_until(lambda: status()["backlog"] == 0, "the backlog to drain")


def package_copy(tmp: Path, broken: str, replace: tuple[str, str] | None) -> str:
    """A copy of the package with one file broken; returns its entry script."""
    target = tmp / "pkg" / "pam_teleport_audit"
    shutil.copytree(ROOT / "pam_teleport_audit", target, ignore=shutil.ignore_patterns("__pycache__"))
    path = target / broken
    if replace is None:
        path.write_bytes(b"\\x00\\xff this is not python (\\n")
    else:
        text = path.read_text()
        assert replace[0] in text
        path.write_text(text.replace(replace[0], replace[1]))
    return str(target / "pam_entry.py")


FORCED = ("    head = (", '    raise RuntimeError("forced by the test")\n    head = (')  # in record_text()

# fault: (context, command prefix, which module copy, what the log line says, the phase fail_closed refuses)
FAULTS: dict[str, tuple[Callable[[], AbstractContextManager[None]], list[str], tuple | None, str, str]] = {
    "audit disabled": (audit_switched_off, [], None, "audit is disabled", "acct_mgmt"),
    "auditd stopped": (auditd_stopped, [], None, "no audit daemon is running", "acct_mgmt"),
    "auditd killed, still registered": (auditd_killed, [], None, "no audit daemon is running", "acct_mgmt"),
    # AUDIT_GET answers (CAP_AUDIT_CONTROL is kept): only the record itself is refused.
    "EPERM (no CAP_AUDIT_WRITE)": (
        nullcontext,
        ["capsh", "--drop=cap_audit_write", "--", "-c", 'exec "$0" "$@"'],
        None,
        "Operation not permitted",
        "open_session",
    ),
    # AUDIT_GET is refused too, which says nothing for sure: the record is tried, and refused.
    "netlink refused (user namespace)": (
        nullcontext,
        ["unshare", "--user", "--map-root-user"],
        None,
        "Connection refused",
        "open_session",
    ),
    "module file corrupt": (nullcontext, [], ("pam_module.py", None), "cannot load", "acct_mgmt"),
    "exception inside the module": (
        nullcontext,
        [],
        ("pam_module.py", FORCED),
        "internal error: RuntimeError",
        "open_session",
    ),
}
# PAM codes fail_closed returns, and the driver's exit status for them (10+ / 40+ code).
REFUSED = {"acct_mgmt": ("acct_mgmt=4 ", 14), "open_session": ("open_session=14 ", 54)}


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault(fault, fail_closed, tmp_path, driver, pam_service, linux_user, syslog_catcher) -> None:
    context, prefix, broken, says, refused_at = FAULTS[fault]
    entry = package_copy(tmp_path, *broken) if broken else entry_script()
    options = f"log_socket={syslog_catcher.path}" + (" fail_closed" if fail_closed else "")
    stack = EXAMPLE_SSHD.read_text().replace(INSTALLED_ENTRY, f"{entry} {options}")
    if fail_closed:
        stack = stack.replace("optional   pam_python.so", "required   pam_python.so")
    service = pam_service(stack)
    login = linux_user()
    argv = prefix + driver_argv(driver, service, login, user=unique("fault-"), shell=False)
    with context():
        started = time.time()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        took = time.time() - started
    lines = syslog_catcher.lines()
    assert len(lines) == 1, (proc.stdout, lines)
    assert says in lines[0], lines[0]
    # Not a speed target: whether the fault made the login wait past the module's 1 s timeout.
    assert took < 5, f"the login waited {took:.1f} s"
    if fail_closed:
        step, status = REFUSED[refused_at]
        assert proc.returncode == status, proc.stdout
        assert step in proc.stdout and "close_session" not in proc.stdout
        assert "login refused (fail_closed)" in lines[0]
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "close_session=0 " in proc.stdout
        assert "login goes on" in lines[0]


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_a_broken_loader_refuses_only_with_fail_closed(fail_closed, tmp_path, driver, pam_service, linux_user) -> None:
    """pam_loader.py itself broken: neither the module nor its fallback can load. The script lets that
    exception out: pam_python logs it and returns PAM_SERVICE_ERR, ignored by the fail-open stanza's
    optional line, a refusal on fail_closed's required one."""
    entry = package_copy(tmp_path, "pam_loader.py", None)
    stack = EXAMPLE_SSHD.read_text().replace(INSTALLED_ENTRY, entry + (" fail_closed" if fail_closed else ""))
    if fail_closed:
        stack = stack.replace("optional   pam_python.so", "required   pam_python.so")
    argv = driver_argv(driver, pam_service(stack), linux_user(), user=unique("loader-"), shell=False)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if fail_closed:
        assert proc.returncode == 10 + PAM_SERVICE_ERR and f"acct_mgmt={PAM_SERVICE_ERR} " in proc.stdout, proc.stdout
    else:
        assert proc.returncode == 0 and "close_session=0 " in proc.stdout, proc.stdout + proc.stderr


def test_fail_closed_close_session_always_closes(driver, pam_service, syslog_catcher) -> None:
    """Audit switched off during the session (by the root user in it): the session still closes."""
    stack = EXAMPLE_SSHD.read_text().replace(
        INSTALLED_ENTRY, f"{entry_script()} fail_closed log_socket={syslog_catcher.path}"
    )
    service = pam_service(stack.replace("optional   pam_python.so", "required   pam_python.so"))
    with AuditSocket() as audit:
        assert audit.status()["enabled"] == 1
    try:
        proc = subprocess.run(
            driver_argv(driver, service, "root", user=unique("root-"), lines=["/usr/sbin/auditctl -e 0"]),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        subprocess.run(["auditctl", "-e", "1"], check=True, capture_output=True)
    assert proc.returncode == 0, proc.stdout
    assert "acct_mgmt=0 " in proc.stdout and "open_session=0 " in proc.stdout and "close_session=0 " in proc.stdout
    lines = syslog_catcher.lines()
    assert len(lines) == 1 and "audit is disabled" in lines[0] and "login goes on" in lines[0], lines


def test_over_the_backlog_limit_the_kernel_takes_our_record_and_holds_us() -> None:
    """The kernel queues a user record whatever the backlog, then holds the sender for up to
    backlog_wait_time: skipping the record would save nothing (libpam's record of the same phase
    is held the same way) and lose it."""
    tp_user = unique("backlog-")
    text = record_text(
        {
            "op": "teleport:session_open",
            "acct": "root",
            "exe": "/usr/local/bin/teleport",
            "hostname": None,
            "addr": None,
            "terminal": "ssh",
            "teleport_user": tp_user,
            "roles": (),
            "child": "exec",
            "success": True,
        }
    )
    started = time.time()
    with backlog_over_limit(hold_jiffies=10) as full:
        assert full["backlog"] > full["backlog_limit"]
        clock = time.monotonic()
        write_records([(AUDIT_USER_START, text)], 1.0)  # AUDIT_GET, then the record: each held
        held = time.monotonic() - clock
        assert status()["backlog"] > full["backlog_limit"], "the backlog drained: not a test of it"
    # Held twice (AUDIT_GET, then the record) for 10 jiffies; unheld, the two take microseconds.
    assert 2 * 10 * SHORTEST_JIFFY * 0.8 < held < 2 * 10 * LONGEST_JIFFY + 0.5, held
    records = wait_for_records(
        started, lambda rs: any(r.get("teleportUser") == tp_user for r in rs), "-m", "USER_START"
    )
    assert [r["op"] for r in records if r.get("teleportUser") == tp_user] == ["teleport:session_open"]


def test_a_teleport_login_over_the_backlog_limit_is_recorded(driver, pam_service, linux_user) -> None:
    """The whole login while the backlog is over its limit: every message of it is held (libpam's,
    pam_tty_audit's, ours), and our three records reach the log once auditd drains the queue."""
    login = linux_user()
    service = pam_service(EXAMPLE_SSHD.read_text().replace(INSTALLED_ENTRY, entry_script()))
    tp_user = unique("backlog-")
    with backlog_over_limit(hold_jiffies=1) as full:
        started = time.time()
        proc = subprocess.run(
            driver_argv(driver, service, login, user=tp_user, shell=False),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        took = time.time() - started
        assert status()["backlog"] > full["backlog_limit"], "the backlog drained during the login: not a test of it"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took < 5, took  # each message held a jiffy, not the login for good (not a speed target)
    records = wait_for_records(
        started, lambda rs: len([r for r in rs if r.get("teleportUser") == tp_user]) >= 3, "-x", str(driver)
    )
    assert [r["op"] for r in records if r.get("teleportUser") == tp_user] == OUR_OPS


def test_a_teleport_started_from_a_login_shell_is_warned_of(driver, pam_service, linux_user, syslog_catcher) -> None:
    """Teleport's loginuid already set to the login's uid (started from that user's shell, not systemd):
    pam_loginuid leaves it and opens no session, so the records carry the starter's ses. They are
    written all the same, and one warning per login says why the session id is not the session's own."""
    login = linux_user()
    uid = pwd.getpwnam(login).pw_uid
    service = pam_service(
        EXAMPLE_SSHD.read_text().replace(INSTALLED_ENTRY, f"{entry_script()} log_socket={syslog_catcher.path}")
    )
    tp_user = unique("shell-")

    def from_a_login_shell() -> None:
        with open("/proc/self/loginuid", "w") as f:
            f.write(str(uid))

    session = run_driver(driver, service, login, user=tp_user, shell=False, preexec_fn=from_a_login_shell)
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=7)
    ours = [r for r in records if r.get("teleportUser") == tp_user]
    assert [r["op"] for r in ours] == OUR_OPS
    # One LOGIN: the "shell's" own (in the child before exec); pam_loginuid opened no session, so our
    # records carry that one's ses.
    (shell,) = [r for r in records if r.type == "LOGIN"]
    assert shell["old-auid"] == "4294967295" and shell["auid"] == str(uid)
    assert {(r["auid"], r["ses"]) for r in ours} == {(str(uid), shell["ses"])}
    lines = syslog_catcher.lines()
    assert len(lines) == 1 and lines[0].startswith("<84>"), lines
    assert f"Teleport runs with loginuid {uid}, which pam_loginuid left: this session has no session id" in lines[0]
