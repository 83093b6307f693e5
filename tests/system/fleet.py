"""Several audit hosts on one machine: network namespaces with veth pairs,
a collector auditd that only listens (local_events = no, tcp_listen_port),
and senders that forward with audisp-remote, the plugin auditd runs.

The kernel feeds one auditd per machine, and the tests never reconfigure the
machine's own auditd (/etc/audit is not theirs). So a sender here is
audisp-remote fed with real records of this machine's log (ausearch --raw),
each line stamped `node=NAME` as a sender's auditd does with name_format;
audisp-remote reads its config from a fixed path, so each sender runs in a
private mount namespace with its own audisp-remote.conf bound over it.
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .namespaces import private_mounts

PORT = 60600

COLLECTOR_CONF = """\
local_events = no
write_logs = yes
log_file = {log}
log_group = root
log_format = RAW
flush = INCREMENTAL_ASYNC
freq = 20
max_log_file = 1000
num_logs = 2
max_log_file_action = ROTATE
name_format = NONE
space_left = 75
space_left_action = IGNORE
admin_space_left = 50
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = IGNORE
tcp_listen_port = {port}
tcp_listen_queue = {queue}
tcp_max_per_addr = {per_addr}
{client_ports}tcp_client_max_idle = 0
use_libwrap = no
transport = TCP
distribute_network = no
plugin_dir = {plugins}
q_depth = 4000
"""

SENDER_CONF = """\
remote_server = {server}
port = {port}
transport = tcp
queue_file = {queue}
mode = {mode}
queue_depth = {depth}
format = {format}
network_retry_time = 1
max_tries_per_record = 60
max_time_per_record = 60
heartbeat_timeout = 0
network_failure_action = warn_once
disk_low_action = ignore
disk_full_action = warn_once
disk_error_action = warn_once
remote_ending_action = reconnect
generic_error_action = syslog
generic_warning_action = syslog
queue_error_action = stop
overflow_action = syslog
startup_failure_action = warn_once_continue
"""


def audisp_remote(conf: Path, netns: str | None = None) -> list[str]:
    """audisp-remote with its own config: it only reads /etc/audit/audisp-remote.conf."""
    return private_mounts(f"mount --bind {conf} /etc/audit/audisp-remote.conf && exec /sbin/audisp-remote", netns)


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Fleet:
    """A collector namespace and one namespace per sender, linked by veth pairs."""

    def __init__(
        self,
        senders: list[str],
        nofile: int | None = None,
        listen_queue: int = 5,
        max_per_addr: int = 10,
        log_mb: int | None = None,
        nofile_hard: int | None = None,
        client_ports: str | None = "1-65535",
    ) -> None:
        """nofile: the collector auditd's file limit (prlimit), as a systemd LimitNOFILE would set it (nofile_hard:
        a higher hard limit, as systemd's default 1024:524288);
        log_mb: its log folder is a tmpfs of that size, mounted in its private mount namespace;
        client_ports: its tcp_client_ports (None: no such line, auditd's default)."""
        self.tag = secrets.token_hex(3)
        self.dir = Path(tempfile.mkdtemp(prefix="pta-fleet-"))
        self.collector = f"ptac{self.tag}"
        self.senders = {name: f"pta{i}{self.tag}" for i, name in enumerate(senders, 1)}
        self.addresses: dict[str, tuple[str, str]] = {}  # sender → (its address, the collector's on its link)
        self.links: dict[str, str] = {}
        self.procs: list[subprocess.Popen] = []
        run("ip", "netns", "add", self.collector)
        run("ip", "-n", self.collector, "link", "set", "lo", "up")
        for i, (name, ns) in enumerate(self.senders.items(), 1):
            run("ip", "netns", "add", ns)
            here, there = f"pv{i}s{self.tag}", f"pv{i}c{self.tag}"
            run("ip", "link", "add", here, "type", "veth", "peer", "name", there)
            run("ip", "link", "set", here, "netns", ns)
            run("ip", "link", "set", there, "netns", self.collector)
            mine, theirs = f"10.231.{i}.2", f"10.231.{i}.1"
            run("ip", "-n", ns, "addr", "add", f"{mine}/24", "dev", here)
            run("ip", "-n", self.collector, "addr", "add", f"{theirs}/24", "dev", there)
            for namespace, link in ((ns, here), (self.collector, there), (ns, "lo")):
                run("ip", "-n", namespace, "link", "set", link, "up")
            self.addresses[name] = (mine, theirs)
            self.links[name] = here
        self.log = self.dir / "collector" / "log" / "audit.log"
        self.client_ports = client_ports
        self._start_collector(nofile, listen_queue, max_per_addr, log_mb, nofile_hard)

    def _start_collector(
        self, nofile: int | None, listen_queue: int, max_per_addr: int, log_mb: int | None, hard: int | None
    ) -> None:
        conf = self.dir / "collector"
        (conf / "plugins.d").mkdir(parents=True)
        self.log.parent.mkdir()
        (conf / "auditd.conf").write_text(
            COLLECTOR_CONF.format(
                log=self.log,
                port=PORT,
                plugins=conf / "plugins.d",
                queue=listen_queue,
                per_addr=max_per_addr,
                client_ports=f"tcp_client_ports = {self.client_ports}\n" if self.client_ports else "",
            )
        )
        (conf / "auditd.conf").chmod(0o600)
        limit = f"prlimit --nofile={nofile}:{hard or nofile} " if nofile else ""
        # A private /run: auditd writes /run/auditd.pid, which is the machine's auditd's.
        log_fs = f"mount -t tmpfs -o size={log_mb}m none {self.log.parent} && " if log_mb else ""
        self.auditd = subprocess.Popen(
            private_mounts(f"mount -t tmpfs none /run && {log_fs}exec {limit}auditd -n -c {conf}", self.collector),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(self.auditd)
        if log_mb:  # the tmpfs is only in auditd's mount namespace: read the log through its root
            self.log = Path(f"/proc/{self.auditd.pid}/root{self.log}")
        deadline = time.time() + 10
        while "DAEMON_START" not in (self.log.read_text() if self.log.exists() else ""):
            assert time.time() < deadline, "the collector auditd did not start"
            time.sleep(0.1)

    def sender(self, name: str, fmt: str = "managed", mode: str = "immediate", depth: int = 20000) -> subprocess.Popen:
        """audisp-remote in the sender's namespace (its config: self.dir/NAME/audisp-remote.conf, its queue
        file with mode = forward: self.dir/NAME/queue); write records to its stdin."""
        folder = self.dir / name
        folder.mkdir()
        conf = folder / "audisp-remote.conf"
        conf.write_text(
            SENDER_CONF.format(
                server=self.addresses[name][1], port=PORT, queue=folder / "queue", format=fmt, mode=mode, depth=depth
            )
        )
        proc = subprocess.Popen(
            audisp_remote(conf, self.senders[name]),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def connect(self, count: int, wait: float = 5.0, one_address: bool = False) -> subprocess.Popen:
        """`count` raw TCP clients of the collector, all at once from its own loopback, each from its own
        address (127.0.1.i, so tcp_max_per_addr does not refuse them; one_address: all from 127.0.1.1,
        as senders behind one NAT address). The process prints how many
        handshakes completed within `wait` seconds, then holds them until its stdin closes."""
        script = (
            "import select, socket, sys, time\n"
            "held = []\n"
            f"for i in range({count}):\n"
            "    s = socket.socket()\n"
            "    s.setblocking(False)\n"
            f"    s.bind(('127.0.1.1' if {one_address} else f'127.0.{{1 + i // 250}}.{{1 + i % 250}}', 0))\n"
            f"    s.connect_ex(('127.0.0.1', {PORT}))\n"
            "    held.append(s)\n"
            f"pending, done, deadline = set(held), 0, time.time() + {wait}\n"
            "while pending and time.time() < deadline:\n"
            "    _, ready, _ = select.select([], list(pending), [], max(0, deadline - time.time()))\n"
            "    for s in ready:\n"
            "        pending.discard(s)\n"
            "        done += s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0\n"
            "print(done, flush=True)\n"
            "sys.stdin.read()\n"
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.collector, "python3", "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def refused(self) -> int:
        """Connections the collector's auditd turned away (DAEMON_ACCEPT ... res=no, e.g. op=dup)."""
        return sum(1 for line in self.log.read_text().splitlines() if "type=DAEMON_ACCEPT" in line and "res=no" in line)

    def listen_overflows(self) -> int:
        """The collector namespace's TcpExt ListenOverflows: handshakes dropped on a full listen queue."""
        rows = [line.split() for line in Path(f"/proc/{self.auditd.pid}/net/netstat").read_text().splitlines()]
        names, values = next((a, b) for a, b in itertools.pairwise(rows) if a[0] == b[0] == "TcpExt:")
        return int(values[names.index("ListenOverflows")])

    def accepted(self, sender: str | None = None) -> int:
        """Connections the collector's auditd took (its DAEMON_ACCEPT ... res=success records), all or one sender's."""
        addr = f"addr=::ffff:{self.addresses[sender][0]} " if sender else ""
        return sum(
            1
            for line in self.log.read_text().splitlines()
            if "type=DAEMON_ACCEPT" in line and "res=success" in line and addr in line
        )

    def cut(self, name: str, up: bool) -> None:
        run("ip", "-n", self.senders[name], "link", "set", self.links[name], "up" if up else "down")

    def received(self, node: str) -> int:
        prefix = f"node={node} ".encode()
        return sum(1 for line in self.log.read_bytes().split(b"\n") if line.startswith(prefix))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        subprocess.run(["pkill", "-f", f"auditd -n -c {self.dir}"], check=False)
        for ns in [self.collector, *self.senders.values()]:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
