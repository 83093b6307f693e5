"""A real OpenSSH login through a scratch PAM service, for system tests.

sshd's PAM service name is its program name, so a copy of /usr/sbin/sshd
named after a scratch /etc/pam.d service runs that stack. Each ScratchSshd has
its own config, host key, client key, authorized_keys and free loopback port;
the host's sshd and /etc/pam.d/sshd are never touched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Login:
    returncode: int
    output: str
    started: float


class ScratchSshd:
    """sshd -D -e under the name `service`, key authentication only, on 127.0.0.1:port."""

    def __init__(self, service: str) -> None:
        self.service = service
        # sshd reads authorized_keys as the user: the folder must be world-searchable.
        self.folder = Path(tempfile.mkdtemp(prefix="pta-sshd-"))
        self.folder.chmod(0o755)
        self.binary = self.folder / service
        self.port = free_port()
        self.key = self.folder / "client_key"
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self) -> Path:
        config = self.folder / "sshd_config"
        config.write_text(
            f"""ListenAddress 127.0.0.1
Port {self.port}
HostKey {self.folder / "host_key"}
PidFile {self.folder / "sshd.pid"}
UsePAM yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {self.folder / "authorized_keys"}
StrictModes no
PrintMotd no
LogLevel VERBOSE
"""
        )
        return config

    def start(self) -> ScratchSshd:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation folder
        shutil.copy2(SSHD, self.binary)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.folder / name)], check=True)
        authorized = self.folder / "authorized_keys"
        authorized.write_text((self.folder / "client_key.pub").read_text())
        authorized.chmod(0o644)
        self.log = open(self.folder / "sshd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(self.binary), "-D", "-e", "-f", str(self._config())], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            assert self.proc.poll() is None, f"sshd exited: {self.logs()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"sshd did not listen on {self.port}: {self.logs()}")

    def logs(self) -> str:
        return (self.folder / "sshd.log").read_text(errors="replace")

    def login(self, user: str, commands: list[str], timeout: float = 30) -> Login:
        """ssh -tt as user, typing the commands, then exit."""
        started = time.time()
        argv = ["ssh", "-tt", "-i", str(self.key), "-p", str(self.port)]
        for option in ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes", "LogLevel=ERROR"):
            argv += ["-o", option]
        argv.append(f"{user}@127.0.0.1")
        typed = "".join(f"{c}\n" for c in [*commands, "exit"])
        proc = subprocess.run(argv, input=typed.encode(), capture_output=True, timeout=timeout, check=False)
        return Login(proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace"), started)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "log"):
            self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> ScratchSshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
