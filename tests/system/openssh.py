"""A real OpenSSH server on 127.0.0.1 for the tests, running a scratch PAM service.

sshd's PAM service name is its program name: a copy of /usr/sbin/sshd named
after the scratch service, with its own config, host key and port, runs the
stack in /etc/pam.d/<service>. Nothing of the host's sshd is touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


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
        self.binary = self.dir / service
        shutil.copy2("/usr/sbin/sshd", self.binary)
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
        if accept_env:
            config.append(f"AcceptEnv {accept_env}")
        (self.dir / "sshd_config").write_text("\n".join(config) + "\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        self.log = open(self.dir / "sshd.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(self.binary), "-D", "-e", "-f", str(self.dir / "sshd_config")],
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
        """ssh -tt into a login shell, type the lines, then exit."""
        self.authorize(user)
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
        return subprocess.run(
            argv,
            input=script,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
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
