"""One-line messages to the system log (facility authpriv).

Written straight to the log socket as syslog(3) would, because Python's
syslog module calls openlog() and would rename the host application's own
log lines (sshd's, teleport's) for the rest of the process.
"""

import _socket  # not `socket`: see netlink.py
import os
import time

from .constants import LOG_AUTHPRIV


def format_line(priority: int, ident: str, text: str, now: float | None = None) -> bytes:
    stamp = time.strftime("%b %e %H:%M:%S", time.localtime(now))
    # One line, whatever the text holds: control characters become spaces.
    clean = "".join(c if c.isprintable() else " " for c in text)
    return f"<{LOG_AUTHPRIV | priority}>{stamp} {ident}[{os.getpid()}]: {clean}".encode("utf-8", "replace")


def log(priority: int, ident: str, text: str, path: str) -> bool:
    """Send one line; False when no log daemon listens (never raises).

    As glibc's syslog(3): a datagram socket first; when that fails (EPROTOTYPE
    from a stream socket such as syslog-ng's unix-stream, or anything else), a
    stream socket, with the line NUL-terminated to mark where it ends.
    """
    line = format_line(priority, ident, text)
    for kind, payload in ((_socket.SOCK_DGRAM, line), (_socket.SOCK_STREAM, line + b"\0")):
        try:
            sock = _socket.socket(_socket.AF_UNIX, kind | _socket.SOCK_CLOEXEC)
        except OSError:
            continue
        try:
            sock.settimeout(0.5)
            sock.connect(path)
            sock.sendall(payload)
            return True
        except OSError:
            continue
        finally:
            sock.close()
    return False
