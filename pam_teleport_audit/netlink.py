"""NETLINK_AUDIT client: the one place that talks to the kernel's audit.

Message layouts are declared as data; AuditSocket only frames, sends and
reads acknowledgements. Every failure is an AuditError carrying the errno
and the system's message.
"""

import _socket  # the C module: `socket` costs ~9 ms of imports at every PAM handle
import _struct  # not `struct`, which only wraps it: one import less per PAM handle
import os

from .constants import (
    AUDIT_GET,
    EIO,
    EPROTO,
    ETIMEDOUT,
    NETLINK_AUDIT,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from .struct_type import Struct

TYPE_CHECKING = False  # typing costs an import at every PAM handle
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# struct nlmsghdr: len, type, flags, seq, pid
NLMSGHDR = _struct.Struct("=IHHII")
# struct nlmsgerr: error, then the request's nlmsghdr
NLMSGERR = _struct.Struct("=i" + NLMSGHDR.format[1:])
# struct audit_status (linux/audit.h), in order; older kernels send a prefix.
AUDIT_STATUS_FIELDS = (
    "mask",
    "enabled",
    "failure",
    "pid",
    "rate_limit",
    "backlog_limit",
    "lost",
    "backlog",
    "feature_bitmap",
    "backlog_wait_time",
    "backlog_wait_time_actual",
)


class AuditError(Exception):
    """A record could not be written; errno is None when audit is disabled."""

    def __init__(self, errno: int | None, message: str) -> None:
        super().__init__(errno, message)
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        return self.message if self.errno is None else f"[errno {self.errno}] {self.message}"

    @classmethod
    def from_errno(cls, code: int, context: str) -> "AuditError":
        return cls(code, f"{context}: {os.strerror(code)}")


class AuditStatus(Struct):
    __slots__ = ("enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost", "backlog", "backlog_wait_time")
    _defaults = {"backlog_wait_time": None}  # noqa: RUF012
    enabled: int
    failure: int
    pid: int
    rate_limit: int
    backlog_limit: int
    lost: int
    backlog: int
    backlog_wait_time: int | None

    @classmethod
    def unpack(cls, payload: bytes) -> "AuditStatus":
        count = min(len(payload) // 4, len(AUDIT_STATUS_FIELDS))
        if count < 8:
            raise AuditError(EPROTO, f"short AUDIT_GET reply ({len(payload)} bytes)")
        values = dict(zip(AUDIT_STATUS_FIELDS[:count], _struct.unpack_from(f"={count}I", payload), strict=True))
        return cls(
            values["enabled"],
            values["failure"],
            values["pid"],
            values["rate_limit"],
            values["backlog_limit"],
            values["lost"],
            values["backlog"],
            values.get("backlog_wait_time"),
        )

    def daemon_alive(self, proc: str = "/proc") -> bool:
        """Whether the registered audit daemon still runs.

        A killed auditd stays registered until the kernel next fails to deliver
        a record to it (then it resets pid to 0): the pid alone is not enough.
        /proc/PID/exe is gone once the process has exited, zombie included;
        reading the link costs about a sixth of reading /proc/PID/stat.
        """
        if not self.pid:
            return False
        try:
            os.readlink(f"{proc}/{self.pid}/exe")
        except PermissionError:
            return True  # it exists; only root may look (the module runs as root)
        except OSError:
            return False
        return True


def frame(msg_type: int, payload: bytes, seq: int, flags: int = NLM_F_REQUEST | NLM_F_ACK) -> bytes:
    """One netlink message, padded to 4 bytes as NLMSG_SPACE() does."""
    length = NLMSGHDR.size + len(payload)
    return NLMSGHDR.pack(length, msg_type, flags, seq, 0) + payload + b"\0" * (-length % 4)


def parse(buffer: bytes) -> list[tuple[int, int, bytes]]:
    """Split a datagram into (type, seq, payload) messages."""
    out = []
    offset = 0
    while offset + NLMSGHDR.size <= len(buffer):
        length, msg_type, _flags, seq, _pid = NLMSGHDR.unpack_from(buffer, offset)
        if length < NLMSGHDR.size or offset + length > len(buffer):
            raise AuditError(EPROTO, "malformed netlink reply")
        out.append((msg_type, seq, buffer[offset + NLMSGHDR.size : offset + length]))
        offset += (length + 3) & ~3
    return out


class AuditSocket:
    """A NETLINK_AUDIT socket with request/acknowledge semantics."""

    def __init__(self, timeout: float = 1.0, factory: "Callable[..., Any]" = _socket.socket) -> None:
        try:
            self._sock = factory(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_AUDIT)
        except OSError as exc:
            raise AuditError.from_errno(exc.errno or EIO, "cannot open NETLINK_AUDIT") from exc
        self._sock.settimeout(timeout)
        self._seq = 0

    def __enter__(self) -> "AuditSocket":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _request(self, msg_type: int, payload: bytes) -> bytes | None:
        """Send one request; return the reply payload of msg_type, if any, once acked."""
        self._seq += 1
        seq = self._seq
        # Named by kind, not number: a login's three records fail with one message.
        what = "AUDIT_GET" if msg_type == AUDIT_GET else "the audit record"
        try:
            self._sock.send(frame(msg_type, payload, seq))
        except OSError as exc:
            raise AuditError.from_errno(exc.errno or EIO, f"sending {what}") from exc
        reply = None
        while True:
            try:
                data = self._sock.recv(65536)
            except TimeoutError as exc:
                raise AuditError.from_errno(ETIMEDOUT, f"waiting for the kernel's ack of {what}") from exc
            except OSError as exc:
                raise AuditError.from_errno(exc.errno or EIO, f"reading the ack of {what}") from exc
            for got_type, got_seq, body in parse(data):
                if got_seq != seq:
                    continue
                if got_type == NLMSG_ERROR:
                    code = -NLMSGERR.unpack_from(body)[0]
                    if code:
                        raise AuditError.from_errno(code, f"kernel refused {what}")
                    if msg_type != AUDIT_GET or reply is not None:
                        return reply
                elif got_type == NLMSG_DONE:
                    return reply
                elif got_type == msg_type:
                    reply = body
                    if msg_type == AUDIT_GET:
                        return reply

    def status(self) -> AuditStatus:
        """What `auditctl -s` shows (AUDIT_GET)."""
        reply = self._request(AUDIT_GET, b"")
        if reply is None:
            raise AuditError(EPROTO, "no reply to AUDIT_GET")
        return AuditStatus.unpack(reply)

    def send_user(self, msg_type: int, text: str) -> None:
        """Write a user-space record; raise AuditError unless the kernel acked it.

        The kernel overwrites the last byte with NUL, so the text carries its own.
        """
        self._request(msg_type, text.encode("ascii") + b"\0")
