"""The PAM side: pam_sm_* entry → identity → record text → netlink.

pam_entry.py takes its pam_sm_* functions from entry_points(), once per PAM
handle: each handle gets its own TeleportAuditModule, so the identity captured
at pam_acct_mgmt is the one the later phases record, whatever the PAM
environment says by then.

Each record is written once its outcome is known (docs/records.md):

    acct_mgmt      capture the identity; write nothing (PAM_IGNORE)
    open_session   USER_ACCT  teleport:accounting     res=success
    close_session  USER_START teleport:session_open   res=success
                   USER_END   teleport:session_close  res=success
    pam_end        USER_LOGIN teleport:login          res=failed  (refused before our open_session)
                   USER_START teleport:session_open   res=failed  (refused after it: no close)

Teleport opens a session only after acct_mgmt (and pam_authenticate)
succeeded, and closes only sessions that opened; after any failure it calls
pam_end, where pam_python calls pam_sm_end.
"""

import _socket  # not `socket`: see netlink.py
import os

from .constants import (
    AUDIT_USER_ACCT,
    AUDIT_USER_END,
    AUDIT_USER_LOGIN,
    AUDIT_USER_START,
    CHILD_EXEC,
    CHILD_NETWORKING,
    DELETED_SUFFIX,
    ENV_TELEPORT_USERNAME,
    LOG_ERR,
    LOG_INFO,
    LOG_WARNING,
    OP_ACCOUNTING,
    OP_LOGIN,
    OP_SESSION_CLOSE,
    OP_SESSION_OPEN,
    PAM_IGNORE,
    PAM_SESSION_ERR,
    PAM_SUCCESS,
    PAM_SYSTEM_ERR,
    SSH_TTY_ITEM,
)
from .identity import TeleportIdentity, trusted_identity
from .netlink import AuditError, AuditSocket, AuditStatus
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


class Kind(Struct):
    """One kind of record of ours."""

    __slots__ = ("op", "msg_type")
    op: str
    msg_type: int


ACCOUNTING = Kind(OP_ACCOUNTING, AUDIT_USER_ACCT)
SESSION_OPEN = Kind(OP_SESSION_OPEN, AUDIT_USER_START)
SESSION_CLOSE = Kind(OP_SESSION_CLOSE, AUDIT_USER_END)
LOGIN = Kind(OP_LOGIN, AUDIT_USER_LOGIN)


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


def disabled_error() -> AuditError:
    # The kernel acks records while disabled, and drops them.
    return AuditError(None, "audit is disabled in the kernel (auditctl -e 0)")


def no_daemon_error() -> AuditError:
    # The kernel takes the record and, with no daemon to give it to, prints it to its own log.
    return AuditError(None, "no audit daemon is running: records go to the kernel log only")


def kernel_status(audit: AuditSocket) -> AuditStatus | None:
    """AUDIT_GET's answer, or None when the kernel will not say.

    It needs CAP_AUDIT_CONTROL and the initial pid namespace, a record only
    CAP_AUDIT_WRITE: in a container or a unit without CAP_AUDIT_CONTROL the
    question fails (EPERM) while the record would be kept.
    """
    try:
        return audit.status()
    except AuditError:
        return None


def check_usable(timeout: float) -> None:
    """AuditError when audit is known to be unusable: no socket, disabled, no live auditd.

    What fail_closed refuses a login on before anything is written.
    """
    with AuditSocket(timeout) as audit:
        status = kernel_status(audit)
    if status is not None and not status.enabled:
        raise disabled_error()
    if status is not None and not status.daemon_alive():
        raise no_daemon_error()


def write_records(records: "list[tuple[int, str]]", timeout: float) -> None:
    """Send user records on one socket; AuditError when one will not reach the audit log.

    Every record is sent whenever the kernel would take it: an unanswered
    AUDIT_GET does not stop the send, and a full backlog is no reason to skip
    one (the kernel queues a user record whatever the backlog, then holds the
    sender for up to backlog_wait_time: docs/security.md).
    """
    with AuditSocket(timeout) as audit:
        status = kernel_status(audit)
        if status is not None and not status.enabled:
            raise disabled_error()
        for msg_type, text in records:
            audit.send_user(msg_type, text)
    if status is not None and not status.daemon_alive():
        raise no_daemon_error()


def write_record(msg_type: int, text: str, timeout: float) -> None:
    """One record on its own socket (benchmarks/record_cost.py times exactly this)."""
    write_records([(msg_type, text)], timeout)


def program_path() -> str:
    try:
        return os.readlink("/proc/self/exe")
    except OSError:
        return "?"


def child_kind(cmdline: str = "/proc/self/cmdline") -> str:
    """teleportChild=: networking for `teleport networking` (port, agent, X11 forwarding)."""
    try:
        with open(cmdline, "rb") as file:
            argv = file.read().split(b"\0")
    except OSError:
        return CHILD_EXEC
    return CHILD_NETWORKING if argv[1:2] == [CHILD_NETWORKING.encode()] else CHILD_EXEC


def describe(exc: Exception) -> str:
    if isinstance(exc, AuditError):
        return f"audit record not written: {exc}"
    return f"internal error: {type(exc).__name__}: {exc}"


class TeleportAuditModule:
    """One PAM handle's worth of state: the identity trusted at acct_mgmt, and how far the login got."""

    def __init__(self) -> None:
        self.identity: TeleportIdentity | None = None
        # Read once: a process's executable cannot change while its interpreter lives.
        self.exe = program_path()
        self.child: str | None = None  # read at the first trusted acct_mgmt
        self.options = Options()  # the last line's: pam_sm_end gets no arguments
        self.opened = False  # our open_session ran for the identity
        self.closed = False  # our close_session ran: nothing is left to say at pam_end
        # Each distinct problem is logged once per PAM handle: one line per
        # login, not one per phase.
        self._reported: set[str] = set()

    # With fail_closed a failure refuses the account or the session opening; closing a
    # session and pam_end never refuse (the user is already in, or already out).
    def acct_mgmt(self, pamh: "PamHandle", flags: int, args: list[str]) -> int:
        return self._run(pamh, args, "account", self._account, PAM_SYSTEM_ERR)

    def open_session(self, pamh: "PamHandle", flags: int, args: list[str]) -> int:
        return self._run(pamh, args, "session", self._open, PAM_SESSION_ERR)

    def close_session(self, pamh: "PamHandle", flags: int, args: list[str]) -> int:
        return self._run(pamh, args, "session", self._close, None)

    def end(self, pamh: "PamHandle") -> int:
        """pam_sm_end: pam_python calls it from pam_end, without the status pam_end got."""
        return self._run(pamh, None, "end", self._end, None)

    def _run(
        self,
        pamh: "PamHandle",
        args: list[str] | None,
        phase: str,
        action: "Callable[[PamHandle, Options], int]",
        refusal: int | None,
    ) -> int:
        """Run one phase; never raises. The return code is settled before anything is logged."""
        code = PAM_IGNORE
        try:
            if args is not None:
                self.options = parse_options(args[1:])
            options = self.options
            if options.problems:
                self._log(pamh, options, phase, LOG_WARNING, "; ".join(options.problems))
            try:
                return action(pamh, options)
            except Exception as exc:  # a module bug or a failed write must not lock anyone out
                why = describe(exc)
            if not options.fail_closed:
                refusal = None
            code = PAM_IGNORE if refusal is None else refusal
            if refusal is not None:
                verdict = "login refused (fail_closed)"
            else:  # at pam_end the login is already over, one way or the other
                verdict = "the login's outcome is not recorded" if phase == "end" else "login goes on"
            self._log(pamh, options, phase, LOG_WARNING if refusal is None else LOG_ERR, f"{why}; {verdict}", why)
        except Exception:  # even the handle or the options are unusable: stay out of the way
            pass
        return code

    def _account(self, pamh: "PamHandle", options: Options) -> int:
        user = pam_item(pamh, "user")
        getenv = lambda name: pam_env(pamh, name)  # noqa: E731
        self.identity, reason = trusted_identity(getenv, user, self.exe, os.geteuid(), options.teleport_exe)
        self.opened = self.closed = False
        if self.identity is None:
            self._debug(pamh, options, "account", f"nothing recorded: {reason}")
            return PAM_IGNORE
        if self.child is None:
            self.child = child_kind()
        self._set_items(pamh, options)
        if options.fail_closed:
            check_usable(options.timeout_ms / 1000)
        self._debug(pamh, options, "account", f"Teleport user {self.identity.user!r}: recorded from open_session on")
        return PAM_IGNORE

    def _open(self, pamh: "PamHandle", options: Options) -> int:
        if not self._still_trusted(pamh, options, "session"):
            return PAM_IGNORE
        # Teleport opens a session only once acct_mgmt succeeded: the account outcome is known.
        self.opened = True
        self._write(pamh, options, "session", [(ACCOUNTING, True)])
        return PAM_SUCCESS

    def _close(self, pamh: "PamHandle", options: Options) -> int:
        if not self.opened or self.closed or not self._still_trusted(pamh, options, "session"):
            return PAM_IGNORE
        # Teleport closes only sessions that opened: the session's outcome is known.
        self.closed = True
        self._write(pamh, options, "session", [(SESSION_OPEN, True), (SESSION_CLOSE, True)])
        return PAM_SUCCESS

    def _end(self, pamh: "PamHandle", options: Options) -> int:
        if self.identity is None or self.closed:
            return PAM_SUCCESS
        self.closed = True
        # Refused: before our session line ran (account stack, authentication, or
        # session modules before ours), or by a session module after it.
        self._write(pamh, options, "end", [(SESSION_OPEN if self.opened else LOGIN, False)])
        return PAM_SUCCESS

    def _still_trusted(self, pamh: "PamHandle", options: Options, phase: str) -> bool:
        identity = self.identity
        if identity is None:
            return False
        if pam_item(pamh, "user") != identity.login:
            self.identity = None  # whatever happens next is not the login we vouched for
            self._log(pamh, options, phase, LOG_WARNING, "PAM user changed since acct_mgmt; nothing recorded")
            return False
        if pam_env(pamh, ENV_TELEPORT_USERNAME) != identity.user:
            self._debug(pamh, options, phase, "TELEPORT_USERNAME changed since acct_mgmt; recording the first value")
        return True

    def _write(self, pamh: "PamHandle", options: Options, phase: str, kinds: "list[tuple[Kind, bool]]") -> None:
        identity = self.identity
        assert identity is not None
        rhost = pam_item(pamh, "rhost") or None
        tty = pam_item(pamh, "tty")
        records = [
            (
                kind.msg_type,
                record_text(
                    Fields(
                        kind.op,
                        identity.login,
                        self.exe,
                        rhost,
                        ip_literal(rhost),
                        tty,
                        identity.user,
                        identity.roles,
                        self.child or CHILD_EXEC,
                        success,
                    )
                ),
            )
            for kind, success in kinds
        ]
        write_records(records, options.timeout_ms / 1000)
        ops = ", ".join(f"{kind.op} res={'success' if ok else 'failed'}" for kind, ok in kinds)
        self._debug(pamh, options, phase, f"recorded {ops} for Teleport user {identity.user!r}")

    @staticmethod
    def _set_items(pamh: "PamHandle", options: Options) -> None:
        """Set the items sshd sets, so libpam's own records read like OpenSSH's."""
        if not pam_item(pamh, "tty"):
            pamh.tty = SSH_TTY_ITEM
        if options.rhost_env and not pam_item(pamh, "rhost"):
            address = ip_literal(pam_env(pamh, options.rhost_env))
            if address:
                pamh.rhost = address

    def _debug(self, pamh: "PamHandle", options: Options, phase: str, text: str) -> None:
        if options.debug:
            self._log(pamh, options, phase, LOG_INFO, text)

    def _log(
        self, pamh: "PamHandle", options: Options, phase: str, priority: int, text: str, key: str | None = None
    ) -> None:
        """One line to syslog, once per handle per key (default: the text); never raises."""
        try:
            key = key or text
            if key in self._reported:
                return
            self._reported.add(key)
            try:
                service = pamh.service
            except Exception:
                service = "?"
            from . import syslog  # only now: most logins log nothing

            ident = os.path.basename(self.exe.removesuffix(DELETED_SUFFIX)) or "pam"
            syslog.log(priority, ident, f"pam_teleport_audit({service}:{phase}): {text}", options.log_socket)
        except Exception:
            pass


def entry_points() -> "dict[str, Callable[..., int]]":
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
        "pam_sm_end": module.end,
        "pam_sm_setcred": ignore,  # nothing to do with credentials
        "pam_sm_authenticate": ignore,  # Teleport authenticates; we only record
    }


def ignore(pamh: "PamHandle", flags: int, args: list[str]) -> int:
    return PAM_IGNORE
