"""Real-stack fixtures: scratch PAM services, scratch users, the C stand-in
for `teleport exec`, a syslog catcher, and audit log queries.

Everything made here has a unique name and is removed afterwards; the host's
own /etc/pam.d files are never touched.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pam_teleport_audit.admin import doctor
from pam_teleport_audit.admin.auditlog import AuditRecord, records_since
from pam_teleport_audit.admin.stanza import entry_script
from pam_teleport_audit.pam_module import AuditSocket

from .namespaces import private_mounts as private_mounts  # tests import it from here

ROOT = Path(__file__).resolve().parents[2]
DRIVER_SOURCE = ROOT / "tests" / "c" / "teleport_driver.c"
EXAMPLE_SSHD = ROOT / "pam.d" / "sshd.example"
INSTALLED_ENTRY = "/usr/lib/python3/dist-packages/pam_teleport_audit/pam_entry.py"
PAM_DIR = Path("/etc/pam.d")
UNSET_SES = "4294967295"

pytestmark = pytest.mark.system


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


@pytest.fixture(scope="session", autouse=True)
def real_audit() -> Iterator[None]:
    """Fail, never skip, when the machine cannot run the real stack.

    Holds a lock for the whole run: some tests switch kernel audit off for a
    moment, which would make a concurrent run on the same machine lose records.
    """
    assert os.geteuid() == 0, "system tests run as root"
    lock = open("/run/pam-teleport-audit-tests.lock", "w")  # noqa: SIM115 - held for the session
    fcntl.flock(lock, fcntl.LOCK_EX)
    # doctor's own checks: the kernel's registration alone may name a dead auditd.
    checks = {c.name: c for c in doctor.audit_checks()}
    for name in ("kernel audit", "auditd"):
        assert checks[name].status == "pass", checks[name].line() + " (scripts/host-setup does this)"
    # auparse and the package's imports must be the Python pam_python embeds (3.11 on Debian 12, 3.13 on 13).
    pam_python = doctor.find_pam_python()
    embedded = doctor.embedded_python(pam_python) if pam_python else None
    here = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    assert embedded == here, f"tests run on {here}, pam_python embeds {embedded}: PTA_PYTHON={embedded} tox"
    yield
    lock.close()


@pytest.fixture(scope="session")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C stand-in for `teleport exec`, compiled under the name teleport."""
    folder = tmp_path_factory.mktemp("bin")
    folder.chmod(0o755)
    binary = folder / "teleport"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(DRIVER_SOURCE), "-lpam", "-lutil"], check=True
    )
    return binary


def debian_stack(*options: str, fail_closed: bool = False) -> str:
    """The shipped example: stock Debian 12 sshd plus our stanza, run from this checkout."""
    text = EXAMPLE_SSHD.read_text().replace(INSTALLED_ENTRY, entry_script())
    if options or fail_closed:
        words = (["fail_closed"] if fail_closed else []) + list(options)
        text = text.replace(f"pam_python.so {entry_script()}", f"pam_python.so {entry_script()} {' '.join(words)}")
    if fail_closed:
        text = text.replace("optional   pam_python.so", "required   pam_python.so")
    return text


def _scratch_pam_entries(create: Callable[[Path, str], object]) -> Iterator[Callable[[str], str]]:
    """A factory of /etc/pam.d entries with unique names, made by create(path, arg); removed afterwards."""
    made: list[Path] = []

    def make(arg: str) -> str:
        path = PAM_DIR / unique("pta-test-")
        create(path, arg)
        made.append(path)
        return path.name

    yield make
    for path in made:
        path.unlink(missing_ok=True)


@pytest.fixture
def pam_service() -> Iterator[Callable[[str], str]]:
    """Factory: write a scratch /etc/pam.d/<name> holding the given stack; return its name."""
    yield from _scratch_pam_entries(Path.write_text)


@pytest.fixture
def pam_link() -> Iterator[Callable[[str], str]]:
    """Factory: a scratch symbolic link /etc/pam.d/<name> -> target (a name in /etc/pam.d); return its name."""
    yield from _scratch_pam_entries(Path.symlink_to)


@pytest.fixture
def linux_user() -> Iterator[Callable[[], str]]:
    """Factory: a scratch Linux user with a home; removed afterwards."""
    made: list[str] = []

    def make() -> str:
        name = unique("pta")
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        subprocess.run(["userdel", "-r", name], check=False, capture_output=True)


@dataclass
class Session:
    returncode: int
    pid: int
    steps: dict[str, int]
    output: str
    started: float


def driver_argv(
    driver: Path,
    service: str,
    login: str,
    *,
    user: str | None = None,
    roles: str | None = None,
    lines: tuple[str, ...] | list[str] = (),
    shell: bool = True,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command line of one Teleport-like session."""
    argv = [str(driver), "-S", "-s", service]
    if user is not None:
        argv += ["-u", user]
    if roles is not None:
        argv += ["-r", roles]
    for line in lines:
        argv += ["-i", line]
    if not shell:
        argv.append("-n")
    return [*argv, *extra, login]


def run_driver(
    driver: Path, service: str, login: str, *, preexec_fn: Callable[[], None] | None = None, **kw: Any
) -> Session:
    """One Teleport-like session through the real PAM stack (preexec_fn: run in the child before exec)."""
    started = time.time()
    proc = subprocess.run(
        driver_argv(driver, service, login, **kw),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=preexec_fn,
    )
    steps = {}
    pid = 0
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "pid":
            pid = int(value)
        elif key.partition(".")[0] in ("acct_mgmt", "authenticate", "open_session", "close_session"):  # .1/.2: -2
            steps[key] = int(value.split()[0])
    return Session(proc.returncode, pid, steps, proc.stdout + proc.stderr, started)


# Record types of a PAM login; ausearch also returns the SYSCALL and
# PROCTITLE records of the same events, which the tests do not look at.
LOGIN_TYPES = frozenset(
    {"USER_ACCT", "USER_START", "USER_END", "LOGIN", "CRED_ACQ", "CRED_DISP", "TTY", "CONFIG_CHANGE", "USER_LOGIN"}
)


def wait_for_records(
    started: float, predicate: Callable[[list[AuditRecord]], bool], *args: str, timeout: float = 10.0
) -> list[AuditRecord]:
    """Login records since started, polled until predicate holds (auditd writes asynchronously)."""
    deadline = time.time() + timeout
    while True:
        records = [r for r in records_since(started, *args) if r.type in LOGIN_TYPES]
        if predicate(records) or time.time() > deadline:
            return records
        time.sleep(0.2)


OUR_OPS = ["teleport:accounting", "teleport:session_open", "teleport:session_close"]


def assert_recorded_session(driver: Path, service: str, login: str, prefix: str) -> list[AuditRecord]:
    """A Teleport-like session (no shell) through the service yields our three records; returns its records."""
    tp_user = unique(prefix)
    session = run_driver(driver, service, login, user=tp_user, shell=False)
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=7)
    assert [r["op"] for r in records if r.get("teleportUser") == tp_user] == OUR_OPS
    return records


def pid_records(started: float, pid: int, *, expect: int, timeout: float = 10.0) -> list[AuditRecord]:
    """Login records a process wrote, waiting until at least `expect` of them are in the log."""
    return wait_for_records(started, lambda rs: len(rs) >= expect, "-p", str(pid), timeout=timeout)


class SyslogCatcher:
    """A datagram socket standing in for /dev/log (module option log_socket=)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)

    def lines(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536).decode("utf-8", "replace"))
            except TimeoutError:
                return out


@pytest.fixture
def syslog_catcher(tmp_path: Path) -> Iterator[SyslogCatcher]:
    catcher = SyslogCatcher(tmp_path / "log.sock")
    yield catcher
    catcher.sock.close()


@contextmanager
def audit_switched_off() -> Iterator[None]:
    """Kernel audit switched off, then restored as it was."""
    with AuditSocket() as audit:
        before = audit.status()["enabled"]
    assert before == 1, f"audit enabled={before}: cannot toggle (2 means locked)"
    subprocess.run(["auditctl", "-e", "0"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["auditctl", "-e", str(before)], check=True, capture_output=True)


@pytest.fixture
def audit_disabled() -> Iterator[None]:
    with audit_switched_off():
        yield


@pytest.fixture
def openssh() -> Iterator[Callable[..., Any]]:
    """Factory: a real sshd on loopback running the given scratch PAM service."""
    from .openssh import OpenSSHServer

    servers: list[OpenSSHServer] = []

    def start(service: str, **kw: Any) -> OpenSSHServer:
        servers.append(OpenSSHServer(service, **kw))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
