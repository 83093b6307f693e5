"""The netlink client against a fake kernel socket."""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pam_teleport_audit.pam_module import (
    AUDIT_GET,
    AUDIT_USER_START,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    AuditError,
    AuditSocket,
    daemon_alive,
    frame,
    parse,
)

if TYPE_CHECKING:
    from pam_teleport_audit.pam_module import AuditStatus

# The kernel's layouts, written out independently of the module: struct nlmsghdr, struct nlmsgerr.
NLMSGHDR = struct.Struct("=IHHII")
NLMSGERR = struct.Struct("=iIHHII")

STATUS = struct.pack("=11I", 1, 1, 1, 777, 0, 8192, 3, 0, 0x7F, 60000, 0)


def ack(seq: int, code: int = 0) -> bytes:
    return frame(NLMSG_ERROR, NLMSGERR.pack(-code, 16, 0, 0, seq, 0), seq, flags=0)


class FakeKernel:
    """Records what is sent and answers with scripted datagrams (bytes or exceptions)."""

    def __init__(self, *replies) -> None:
        self.replies = list(replies)
        self.sent: list[bytes] = []
        self.args: tuple = ()
        self.timeout: float | None = None
        self.closed = False

    def __call__(self, *args):  # socket.socket(...) factory
        self.args = args
        return self

    def settimeout(self, t: float) -> None:
        self.timeout = t

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply(len(self.sent)) if callable(reply) else reply

    def close(self) -> None:
        self.closed = True


def test_user_record_is_framed_acked_and_nul_terminated() -> None:
    kernel = FakeKernel(lambda seq: ack(seq))
    with AuditSocket(0.5, factory=kernel) as audit:
        audit.send_user(AUDIT_USER_START, "op=x res=success")
    assert kernel.args == (socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 9)
    assert kernel.timeout == 0.5 and kernel.closed
    (sent,) = kernel.sent
    length, msg_type, flags, seq, pid = NLMSGHDR.unpack_from(sent)
    assert (msg_type, flags, seq, pid) == (AUDIT_USER_START, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    assert sent[16:length] == b"op=x res=success\0"
    assert len(sent) % 4 == 0


@pytest.mark.parametrize("code", [errno.EPERM, errno.ECONNREFUSED, errno.EINVAL])
def test_nack_raises_with_errno_and_message(code: int) -> None:
    kernel = FakeKernel(lambda seq: ack(seq, code))
    with pytest.raises(AuditError) as info, AuditSocket(factory=kernel) as audit:
        audit.send_user(AUDIT_USER_START, "x")
    assert info.value.errno == code
    assert str(info.value).endswith(__import__("os").strerror(code))


def test_stale_acks_of_other_requests_are_skipped() -> None:
    kernel = FakeKernel(lambda seq: ack(seq + 41, errno.EPERM) + ack(seq))
    with AuditSocket(factory=kernel) as audit:
        audit.send_user(AUDIT_USER_START, "x")


def test_timeout_is_an_audit_error() -> None:
    kernel = FakeKernel(TimeoutError())
    with pytest.raises(AuditError) as info, AuditSocket(factory=kernel) as audit:
        audit.send_user(AUDIT_USER_START, "x")
    assert info.value.errno == errno.ETIMEDOUT


def test_send_failure_is_an_audit_error() -> None:
    class Refusing(FakeKernel):
        def send(self, data: bytes) -> int:
            raise OSError(errno.ECONNREFUSED, "refused")

    with pytest.raises(AuditError) as info, AuditSocket(factory=Refusing()) as audit:
        audit.send_user(AUDIT_USER_START, "x")
    assert info.value.errno == errno.ECONNREFUSED


def test_no_netlink_audit_is_an_audit_error() -> None:
    def factory(*args):
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    with pytest.raises(AuditError) as info:
        AuditSocket(factory=factory)
    assert info.value.errno == errno.EPROTONOSUPPORT


@pytest.mark.parametrize("ack_first", [True, False], ids=["ack-then-reply", "reply-then-ack"])
def test_status_in_either_order(ack_first: bool) -> None:
    # The kernel sends the AUDIT_GET reply from a worker thread: it may come after the ack.
    def both(seq: int) -> bytes:
        reply = frame(AUDIT_GET, STATUS, seq, flags=0)
        return ack(seq) + reply if ack_first else reply + ack(seq)

    with AuditSocket(factory=FakeKernel(both)) as audit:
        status = audit.status()
    assert (status["enabled"], status["pid"], status["backlog_limit"], status["lost"], status["backlog_wait_time"]) == (
        1,
        777,
        8192,
        3,
        60000,
    )


def test_status_from_an_old_kernel_and_a_short_one() -> None:
    old = FakeKernel(lambda seq: frame(AUDIT_GET, STATUS[:32], seq, flags=0))
    with AuditSocket(factory=old) as audit:
        assert audit.status()["backlog_wait_time"] is None
    short = FakeKernel(lambda seq: frame(AUDIT_GET, STATUS[:12], seq, flags=0))
    with pytest.raises(AuditError), AuditSocket(factory=short) as audit:
        audit.status()


def test_parse_rejects_a_truncated_message() -> None:
    data = frame(AUDIT_GET, STATUS, 1)
    with pytest.raises(AuditError):
        parse(data[:-8] + b"")
    assert [(t, s) for t, s, _ in parse(data + data)] == [(AUDIT_GET, 1), (AUDIT_GET, 1)]


def registered(pid: int) -> AuditStatus:
    return {
        "enabled": 1,
        "failure": 1,
        "pid": pid,
        "rate_limit": 0,
        "backlog_limit": 64,
        "lost": 0,
        "backlog": 0,
        "backlog_wait_time": None,
    }


@pytest.mark.parametrize(
    ("pid", "exe", "alive"),
    [
        (0, None, False),  # no daemon registered
        (41, "/usr/sbin/auditd", True),
        (42, "/usr/sbin/auditd (deleted)", True),  # upgraded while running
        (43, None, False),  # killed: a zombie has no exe, nor has a pid that is gone
    ],
)
def test_daemon_alive_only_while_it_runs(tmp_path: Path, pid: int, exe: str | None, alive: bool) -> None:
    (tmp_path / str(pid)).mkdir()
    if exe is not None:
        (tmp_path / str(pid) / "exe").symlink_to(exe)
    assert daemon_alive(registered(pid), str(tmp_path)) is alive


def test_a_real_zombie_is_not_alive_and_a_running_process_is() -> None:
    child = subprocess.Popen(["sleep", "0"])
    deadline = time.time() + 5
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(") ")[2][:1] != "Z":
        assert time.time() < deadline, "the child did not exit"
        time.sleep(0.01)
    try:
        assert daemon_alive(registered(child.pid)) is False
    finally:
        child.wait()
    assert daemon_alive(registered(os.getpid())) is True
