"""A real OpenSSH server on 127.0.0.1 for the tests, running a scratch PAM service.

Before OpenSSH 9.8 (Debian 12: 9.2) sshd's PAM service name is its program
name: a copy of /usr/sbin/sshd named after the scratch service runs the stack
in /etc/pam.d/<service>. From 9.8 (Debian 13: 10.0) the session runs in
/usr/lib/openssh/sshd-session and the service is `PAMServiceName` (default
sshd). Either way the server has its own config, host key and port, and
nothing of the host's sshd is touched. Each successful login is checked to
have run that stack: libpam's session record names a module that
/etc/pam.d/sshd does not have among its grantors.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from pam_teleport_audit.admin import doctor
from pam_teleport_audit.admin.auditlog import records_since

SSHD = "/usr/sbin/sshd"
SSHD_SESSION = "/usr/lib/openssh/sshd-session"
DEFAULT_SERVICE = Path("/etc/pam.d/sshd")


def sshd_version(program: str = SSHD) -> tuple[int, int]:
    """(major, minor) of OpenSSH, from `sshd -V` (printed on stderr)."""
    proc = subprocess.run([program, "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", proc.stderr + proc.stdout)
    assert match, f"cannot tell the OpenSSH version: {proc.stderr!r}"
    return int(match.group(1)), int(match.group(2))


def session_modules(pam_file: Path) -> set[str]:
    """The module names (pam_x, as libpam's grantors= spells them) on a file's own session lines."""
    names = set()
    for line in pam_file.read_text().splitlines():
        words = line.split()
        if words and words[0].lstrip("-") == "session":
            names.update(re.findall(r"\b(pam_\w+)\.so\b", line))
    return names


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OpenSSHServer:
    """sshd -D on a free loopback port; key authentication only."""

    def __init__(self, service: str, *, accept_env: str | None = None) -> None:
        # Readable by the scratch users: sshd reads authorized keys as the user.
        self.dir = Path(tempfile.mkdtemp(prefix="pta-sshd-"))
        self.dir.chmod(0o755)
        self.service = service
        self.port = free_port()
        # program: what is started; binary: the exe= of the PAM records (the process running the session).
        self.service_option = sshd_version() >= (9, 8)
        if self.service_option:
            self.program = Path(SSHD)
            self.binary = Path(SSHD_SESSION)
        else:
            self.program = self.binary = self.dir / service
            shutil.copy2(SSHD, self.binary)
        self.keys = self.dir / "authorized_keys"
        self.keys.mkdir(mode=0o755)
        self.client_key = self.dir / "client_key"
        for path in (self.dir / "host_key", self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        config = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.dir / 'host_key'}",
            f"PidFile {self.dir / 'sshd.pid'}",
            "UsePAM yes",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            f"AuthorizedKeysFile {self.keys}/%u",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "LogLevel VERBOSE",
        ]
        if self.service_option:
            config.append(f"PAMServiceName {service}")
        if accept_env:
            config.append(f"AcceptEnv {accept_env}")
        (self.dir / "sshd_config").write_text("\n".join(config) + "\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        self.log = open(self.dir / "sshd.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(self.program), "-D", "-e", "-f", str(self.dir / "sshd_config")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"sshd exited: {self.server_log()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"sshd did not listen on {self.port}: {self.server_log()}")

    def authorize(self, user: str) -> None:
        key = (self.client_key.with_suffix(".pub")).read_text()
        (self.keys / user).write_text(key)
        (self.keys / user).chmod(0o644)

    def login(
        self, user: str, lines: list[str], *, env: dict[str, str] | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """ssh -tt into a login shell, type the lines, then exit; a login that succeeded ran our service."""
        self.authorize(user)
        started = time.time()
        argv = [
            "ssh",
            "-tt",
            "-i",
            str(self.client_key),
            "-p",
            str(self.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ]
        for name in env or {}:
            argv += ["-o", f"SendEnv={name}"]
        argv.append(f"{user}@127.0.0.1")
        # Typed one at a time, as a person would, so the pty sees separate lines.
        script = "".join(f"{line}\n" for line in [*lines, "exit"])
        proc = subprocess.run(
            argv,
            input=script,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
        if proc.returncode == 0:
            self.assert_stack_ran(user, started)
        return proc

    def assert_stack_ran(self, user: str, started: float, timeout: float = 10.0) -> None:
        """libpam's PAM:session_open of the user's login since started has, among its grantors, a module
        of /etc/pam.d/<service> that /etc/pam.d/sshd lacks: the scratch stack ran, not sshd's.

        Without a kernel audit and a live auditd (a fault test switched them off) there is no record to
        read: such a test proves its stack ran by a line of its own (test_parity: a marker file)."""
        checks = {c.name: c.status for c in doctor.audit_checks()}
        if checks.get("kernel audit") != "pass" or checks.get("auditd") != "pass":
            return
        own = session_modules(Path("/etc/pam.d") / self.service) - session_modules(DEFAULT_SERVICE)
        assert own, f"/etc/pam.d/{self.service} has no session module that /etc/pam.d/sshd lacks: cannot tell"
        uid = subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout.strip()
        deadline = time.time() + timeout
        while True:
            opened = [
                r
                for r in records_since(started, "-m", "USER_START", "-x", str(self.binary), "--loginuid", uid)
                if r.get("op") == "PAM:session_open"
            ]
            if opened or time.time() > deadline:
                break
            time.sleep(0.2)
        assert opened, f"no PAM:session_open of {user} by {self.binary}: {self.server_log()}"
        grantors = set(opened[-1].get("grantors", "").split(","))
        assert grantors & own, (
            f"grantors {sorted(grantors)} lack all of {sorted(own)}: service {self.service} did not run"
        )

    def server_log(self) -> str:
        self.log.flush()
        return (self.dir / "sshd.log").read_text()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
