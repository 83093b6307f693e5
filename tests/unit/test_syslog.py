"""Module log lines reach a datagram /dev/log (journald, rsyslog) and a stream one (syslog-ng)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from pam_teleport_audit.pam_module import LOG_WARNING, syslog


def test_datagram_socket_gets_the_line(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        assert syslog(LOG_WARNING, "teleport", "hello\nworld", str(path))
        line = server.recv(4096)
    assert line.startswith(b"<84>") and line.endswith(b"teleport[%d]: hello world" % os.getpid())


def test_stream_socket_gets_the_line_nul_terminated(tmp_path: Path) -> None:
    """glibc's syslog(3): EPROTOTYPE on the datagram connect, then a stream socket."""
    path = tmp_path / "log"
    got: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        server.settimeout(5)

        def accept() -> None:
            conn, _ = server.accept()
            with conn:
                while chunk := conn.recv(4096):
                    got.append(chunk)

        reader = threading.Thread(target=accept)
        reader.start()
        assert syslog(LOG_WARNING, "teleport", "over a stream", str(path))
        reader.join(5)
    data = b"".join(got)
    assert data.startswith(b"<84>") and data.endswith(b": over a stream\0") and data.count(b"\0") == 1


def test_no_listener_is_false_not_an_exception(tmp_path: Path) -> None:
    assert syslog(LOG_WARNING, "teleport", "nobody", str(tmp_path / "missing")) is False
