"""The PAM side: pam_sm_* entry → identity → record text → netlink.

pam_entry.py takes its pam_sm_* functions from entry_points(), once per PAM
handle: each handle gets its own TeleportAuditModule, so the identity captured
at pam_acct_mgmt is the one the session phases record, whatever the PAM
environment says by then.
"""

import _socket  # not `socket`: see netlink.py
import os

from .constants import (
    AUDIT_USER_ACCT,
    AUDIT_USER_END,
    AUDIT_USER_START,
    DELETED_SUFFIX,
    ENV_TELEPORT_USERNAME,
    LOG_ERR,
    LOG_INFO,
    LOG_WARNING,
    OP_ACCOUNTING,
    OP_SESSION_CLOSE,
    OP_SESSION_OPEN,
    PAM_IGNORE,
    SSH_TTY_ITEM,
)
from .identity import TeleportIdentity, trusted_identity
from .netlink import AuditError, AuditSocket
from .options import Options, parse_options
from .record import Fields, record_text
from .struct_type import Struct

TYPE_CHECKING = False  # typing costs an import at every PAM handle
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class PamEnv(Protocol):
        def get(self, key: str, default: None = None) -> str | None: ...

    class PamHandle(Protocol):
        """The part of pam_python's handle this module uses."""

        user: str | None
        tty: str | None
        rhost: str | None
        service: str | None
        env: PamEnv
        PAM_SUCCESS: int
        PAM_IGNORE: int
        PAM_SYSTEM_ERR: int
        PAM_SESSION_ERR: int


class Phase(Struct):
    __slots__ = ("name", "op", "msg_type", "refusal")
    name: str  # for log lines: "account", "session"
    op: str
    msg_type: int
    refusal: str | None  # PAM code returned when fail_closed and nothing was written


ACCOUNT = Phase("account", OP_ACCOUNTING, AUDIT_USER_ACCT, "PAM_SYSTEM_ERR")
SESSION_OPEN = Phase("session", OP_SESSION_OPEN, AUDIT_USER_START, "PAM_SESSION_ERR")
# Closing a session never blocks: the user is already in.
SESSION_CLOSE = Phase("session", OP_SESSION_CLOSE, AUDIT_USER_END, None)


def _exact(read: "Callable[[], str | None]") -> str | None:
    """A PAM string, whatever its bytes.

    pam_python decodes PAM strings as strict UTF-8 and raises on anything
    else; the raw bytes ride on the exception, and surrogate escapes keep
    them exact (record.to_bytes() turns them back into the same bytes).
    """
    try:
        return read()
    except UnicodeDecodeError as exc:
        return bytes(exc.object).decode("utf-8", "surrogateescape")


def pam_item(pamh: "PamHandle", name: str) -> str | None:
    """PAM_USER, PAM_TTY, PAM_RHOST … as pam_python names them (user, tty, rhost)."""
    return _exact(lambda: getattr(pamh, name))


def pam_env(pamh: "PamHandle", name: str) -> str | None:
    """A PAM environment variable (pam_getenv), None when unset."""
    return _exact(lambda: pamh.env.get(name))


def ip_literal(value: str | None) -> str | None:
    """value when it is an IPv4 or IPv6 address, else None (no DNS: never block)."""
    if not value:
        return None
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, value)
            return value
        except (OSError, ValueError):
            continue
    return None


def write_record(msg_type: int, text: str, timeout: float) -> None:
    """Send one user record; AuditError when it will not reach the audit log."""
    with AuditSocket(timeout) as audit:
        status = audit.status()
        if not status.enabled:
            # The kernel acks records while disabled, and drops them.
            raise AuditError(None, "audit is disabled in the kernel (auditctl -e 0)")
        if status.backlog_limit and status.backlog >= status.backlog_limit:
            # Our record would take it past the limit, and the kernel would then
            # hold us for up to backlog_wait_time, uninterruptibly. (Past the
            # limit it held us after AUDIT_GET already: docs/security.md.)
            raise AuditError(None, f"kernel audit backlog is full (backlog_limit {status.backlog_limit})")
        audit.send_user(msg_type, text)
        if not status.daemon_alive():
            raise AuditError(None, "no audit daemon is running: the record went to the kernel log only")


def program_path() -> str:
    try:
        return os.readlink("/proc/self/exe")
    except OSError:
        return "?"


class TeleportAuditModule:
    """One PAM handle's worth of state: the identity trusted at acct_mgmt."""

    def __init__(self) -> None:
        self.identity: TeleportIdentity | None = None
        # Read once: a process's executable cannot change while its interpreter lives.
        self.exe = program_path()
        # Each distinct problem is logged once per PAM handle: one line per
        # login, not one per phase.
        self._reported: set[str] = set()

    def acct_mgmt(self, pamh: "PamHandle", flags: int, args: list[str]) -> int:
        return self._run(pamh, args, ACCOUNT)

    def open_session(self, pamh: "PamHandle", flags: int, args: list[str]) -> int:
        return self._run(pamh, args, SESSION_OPEN)

    def close_session(self, pamh: "PamHandle", flags: int, args: list[str]) -> int:
        return self._run(pamh, args, SESSION_CLOSE)

    def _run(self, pamh: "PamHandle", args: list[str], phase: Phase) -> int:
        options = Options()
        try:
            try:
                options = parse_options(args[1:])
                return self._record(pamh, options, phase)
            except AuditError as exc:
                return self._failed(pamh, options, phase, f"audit record not written: {exc}")
            except Exception as exc:  # a module bug must not lock anyone out
                return self._failed(pamh, options, phase, f"internal error: {type(exc).__name__}: {exc}")
        except Exception:  # even the handle is unusable: stay out of the way
            return PAM_IGNORE

    def _record(self, pamh: "PamHandle", options: Options, phase: Phase) -> int:
        exe = self.exe
        if options.problems:
            self._log(pamh, options, phase, LOG_WARNING, "; ".join(options.problems))
        user = pam_item(pamh, "user")
        if phase is ACCOUNT:
            getenv = lambda name: pam_env(pamh, name)  # noqa: E731
            self.identity, reason = trusted_identity(getenv, user, exe, os.geteuid(), options.teleport_exe)
            if self.identity is None:
                self._debug(pamh, options, phase, f"nothing recorded: {reason}")
                return pamh.PAM_IGNORE
            self._set_items(pamh, options)
        identity = self.identity
        if identity is None:
            return pamh.PAM_IGNORE
        if user != identity.login:
            self._log(pamh, options, phase, LOG_WARNING, "PAM user changed since acct_mgmt; nothing recorded")
            return pamh.PAM_IGNORE
        if pam_env(pamh, ENV_TELEPORT_USERNAME) != identity.user:
            self._debug(pamh, options, phase, "TELEPORT_USERNAME changed since acct_mgmt; recording the first value")
        rhost = pam_item(pamh, "rhost") or None
        tty = pam_item(pamh, "tty")
        text = record_text(
            Fields(phase.op, identity.login, exe, rhost, ip_literal(rhost), tty, identity.user, identity.roles)
        )
        write_record(phase.msg_type, text, options.timeout_ms / 1000)
        self._debug(pamh, options, phase, f"recorded {phase.op} for Teleport user {identity.user!r}")
        return pamh.PAM_SUCCESS

    @staticmethod
    def _set_items(pamh: "PamHandle", options: Options) -> None:
        """Set the items sshd sets, so libpam's own records read like OpenSSH's."""
        if not pam_item(pamh, "tty"):
            pamh.tty = SSH_TTY_ITEM
        if options.rhost_env and not pam_item(pamh, "rhost"):
            address = ip_literal(pam_env(pamh, options.rhost_env))
            if address:
                pamh.rhost = address

    def _failed(self, pamh: "PamHandle", options: Options, phase: Phase, why: str) -> int:
        if options.fail_closed and phase.refusal:
            self._log(pamh, options, phase, LOG_ERR, f"{why}; login refused (fail_closed)")
            return int(getattr(pamh, phase.refusal))
        self._log(pamh, options, phase, LOG_WARNING, f"{why}; login goes on")
        return pamh.PAM_IGNORE

    def _debug(self, pamh: "PamHandle", options: Options, phase: Phase, text: str) -> None:
        if options.debug:
            self._log(pamh, options, phase, LOG_INFO, text)

    def _log(self, pamh: "PamHandle", options: Options, phase: Phase, priority: int, text: str) -> None:
        if text in self._reported:
            return
        self._reported.add(text)
        try:
            service = pamh.service
        except Exception:
            service = "?"
        from . import syslog  # only now: most logins log nothing

        ident = os.path.basename(self.exe.removesuffix(DELETED_SUFFIX)) or "pam"
        syslog.log(priority, ident, f"pam_teleport_audit({service}:{phase.name}): {text}", options.log_socket)


def entry_points() -> "dict[str, Callable[[PamHandle, int, list[str]], int]]":
    """The pam_sm_* functions of one PAM handle, bound to a new TeleportAuditModule.

    pam_python execs pam_entry.py afresh for each handle, and the script calls
    this: two handles alive in one process (and so one interpreter) never share
    an identity.
    """
    module = TeleportAuditModule()
    return {
        "pam_sm_acct_mgmt": module.acct_mgmt,
        "pam_sm_open_session": module.open_session,
        "pam_sm_close_session": module.close_session,
        "pam_sm_setcred": ignore,  # nothing to do with credentials
        "pam_sm_authenticate": ignore,  # Teleport authenticates; we only record
    }


def ignore(pamh: "PamHandle", flags: int, args: list[str]) -> int:
    return PAM_IGNORE
