"""pam-teleport-audit selftest: one real PAM transaction through the host's own stack, read back from the log.

pamtester (a C PAM client) runs acct_mgmt, open_session and close_session
through /etc/pam.d/SERVICE, executed under the name `teleport` from a private
root-only folder under /run, with TELEPORT_USERNAME set to a probe name that
says it is a self-test. The module then believes it as it believes Teleport,
and the records it writes are read back with ausearch. The same run under
pamtester's own name must give no record of ours.

The default login is root: it exists on every host, has a home (nothing like
pam_mkhomedir creates one), pam_nologin lets it in, and pamtester already runs
as root, so the session changes no privileges. The session is the pamtester
process's own: pam_loginuid sets that process's loginuid (a new ses) and
pam_tty_audit its TTY auditing, and both end with it. Stacks with pam_systemd
register a logind session for the probe, closed at close_session; stacks with
pam_lastlog record a login. The stanza, auditd and the kernel audit settings
are never changed.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from ..pam_module import (
    DEFAULT_TELEPORT_NAME,
    OP_ACCOUNTING,
    OP_SESSION_CLOSE,
    OP_SESSION_OPEN,
    SSH_TTY_ITEM,
    parse_options,
)
from .auditlog import AuditRecord, records_since
from .doctor import FAIL, PASS, WARN, Check, audit_checks, stanza_problem
from .pamedit import ENTRY_SUFFIX, status
from .pamfile import Line, parse
from .pamstack import Resolver, folder_resolver

if TYPE_CHECKING:
    from ..pam_module import AuditStatus

PAM_DIR = "/etc/pam.d"
DEFAULT_LOGIN = "root"
PROBE_PREFIX = "pam-teleport-audit-selftest-"
PROBE_ROLES = "pam-teleport-audit-selftest"
RUN_DIR = "/run"
OUR_OPS = [OP_ACCOUNTING, OP_SESSION_OPEN, OP_SESSION_CLOSE]
OUR_TYPES = {OP_ACCOUNTING: "USER_ACCT", OP_SESSION_OPEN: "USER_START", OP_SESSION_CLOSE: "USER_END"}
RECORD_TYPES = "USER_ACCT,USER_START,USER_END,USER_LOGIN,LOGIN"
UNSET_SES = "4294967295"
WAIT_SECONDS = 5.0  # auditd writes asynchronously; a live one takes milliseconds
PAMTESTER_TIMEOUT = 30.0
PHASES = ("acct_mgmt", "open_session", "close_session")
ROOT_ONLY = "run pam-teleport-audit selftest as root"


def resolve_service(pam_file: str | None, service: str | None) -> tuple[str, str]:
    """(service name, PAM file): libpam reads /etc/pam.d/SERVICE, so a file elsewhere cannot be tested."""
    if service is not None:
        if not service or "/" in service or service in (".", ".."):
            raise ValueError(f"--service {service!r} is not a PAM service name")
        return service, os.path.join(PAM_DIR, service)
    path = os.path.normpath(os.path.abspath(pam_file or os.path.join(PAM_DIR, "sshd")))
    if os.path.dirname(path) != PAM_DIR:
        raise ValueError(f"--pam-file {pam_file}: libpam only reads services from {PAM_DIR}/NAME")
    return os.path.basename(path), path


def probe_user() -> str:
    """A Teleport user name that cannot be a real one's and says what it is."""
    return PROBE_PREFIX + secrets.token_hex(6)


def our_lines(data: bytes) -> list[Line]:
    """The stanza's module lines: pam_python with our entry script."""
    return [x for x in parse(data) if x.module_name == "pam_python" and x.args and x.args[0].endswith(ENTRY_SUFFIX)]


def trusted_exes(lines: list[Line]) -> list[str]:
    """The teleport_exe= entries of the module lines (empty: any root-owned binary named teleport is trusted)."""
    return sorted({exe for x in lines for exe in parse_options(x.args[1:])["teleport_exe"]})


def stand_in(exes: list[str], isfile: Callable[[str], bool] = os.path.isfile) -> str | None:
    """A listed Teleport path that exists: the probe runs bound over it, in a private mount namespace."""
    return next((exe for exe in exes if exe.startswith("/") and isfile(exe)), None)


# ---- before running anything: reasons the transaction cannot show a recording host


def stanza_preconditions(
    path: str,
    data: bytes,
    isfile: Callable[[str], bool] = os.path.isfile,
    tty_audit: bool = True,
    resolve: Resolver | None = None,
) -> Iterator[Check]:
    """The stanza installed and reachable (includes read as libpam reads them, or with resolve), its entry
    script present, pam_tty_audit in the session stack (tty_audit False: left out on purpose, a warning)."""
    state = status(data, resolve or folder_resolver(path), path)
    problem = stanza_problem(path, state)
    if problem is not None:
        yield problem
        return
    yield Check("stanza", PASS, f"{path}: complete, in order and reachable")
    ours = our_lines(data)
    missing = sorted({x.args[0] for x in ours if not isfile(x.args[0])})
    if missing:
        yield Check(
            "module file",
            FAIL,
            f"the stanza loads {', '.join(missing)}, which does not exist: nothing is recorded",
            "install the package, then run `pam-teleport-audit install` to write the installed path",
        )
    else:
        yield Check("module file", PASS, ours[0].args[0])
    if state.tty_audit == "none":
        yield Check(
            "pam_tty_audit",
            FAIL if tty_audit else WARN,
            "no pam_tty_audit in the session stack: keystrokes are not recorded",
            f"run `pam-teleport-audit install --tty-audit '*' --pam-file {path}` (or narrower patterns)",
        )
    else:
        yield Check("pam_tty_audit", PASS, f"in the session stack ({state.tty_audit})")
    exes = trusted_exes(ours)
    if exes and stand_in(exes, isfile) is None:
        yield Check(
            "teleport_exe",
            FAIL,
            f"the stanza trusts only {', '.join(exes)}; none is a file the self-test can stand in for",
            "install Teleport first (the self-test runs under the name of a listed binary)",
        )


def audit_preconditions(status_reader: Callable[[], AuditStatus] | None = None, proc: str = "/proc") -> list[Check]:
    """Kernel audit enabled and auditd alive (doctor's checks); backlog and lost records are doctor's business."""
    return [c for c in audit_checks(status_reader, proc) if c.name in ("kernel audit", "auditd")]


def preconditions(
    path: str,
    login: str,
    status_reader: Callable[[], AuditStatus] | None = None,
    pamtester: str | None = None,
    tty_audit: bool = True,
) -> list[Check]:
    """Everything that can be said before running: each failure names its reason and fix."""
    checks: list[Check] = []
    if os.geteuid() != 0:
        return [Check("root", FAIL, "the self-test opens a PAM session and reads the audit log", ROOT_ONLY)]
    pamtester = pamtester or shutil.which("pamtester") or ""
    if not pamtester:
        checks.append(Check("pamtester", FAIL, "pamtester is not installed", "apt-get install pamtester"))
    try:
        pwd.getpwnam(login)
    except KeyError:
        checks.append(Check("login", FAIL, f"no account {login!r} on this host", "pass --login with an existing one"))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        checks.append(
            Check("stanza", FAIL, f"cannot read {path}: {exc.strerror}", "pass --service or --pam-file of Teleport's")
        )
    else:
        checks += stanza_preconditions(path, data, tty_audit=tty_audit)
    checks += audit_preconditions(status_reader)
    try:
        import auparse  # noqa: F401 - the records are read back with it
    except ImportError:
        checks.append(
            Check(
                "auparse",
                FAIL,
                "python3-audit is not installed: cannot read records back",
                "apt-get install python3-audit",
            )
        )
    return checks


# ---- the transaction


@dataclass
class Run:
    pid: int
    returncode: int
    output: str


@contextmanager
def teleport_named(pamtester: str, run_dir: str = RUN_DIR) -> Iterator[str]:
    """A root-owned 0755 copy of pamtester named teleport, in a 0700 folder; removed afterwards."""
    folder = tempfile.mkdtemp(prefix="pam-teleport-audit-selftest.", dir=run_dir)  # mode 0700
    try:
        copy = os.path.join(folder, DEFAULT_TELEPORT_NAME)
        shutil.copyfile(pamtester, copy)
        os.chown(copy, 0, 0)
        os.chmod(copy, 0o755)
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def pamtester_argv(program: str, service: str, login: str, user: str, as_exe: str | None = None) -> list[str]:
    """pamtester with Teleport's PAM environment; as_exe: run it bound over that path in a private mount namespace."""
    argv = [
        program,
        "-v",
        "-E",
        f"TELEPORT_USERNAME={user}",
        "-E",
        f"TELEPORT_LOGIN={login}",
        "-E",
        f"TELEPORT_ROLES={PROBE_ROLES}",
        service,
        login,
        *PHASES,
    ]
    if as_exe is None:
        return argv
    # unshare and sh exec in place: the pid we started is the one that runs PAM.
    script = 'mount --bind "$0" "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, program, as_exe, as_exe, *argv[1:]]


def run_pamtester(argv: list[str]) -> Run:
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as exc:  # e.g. /run mounted noexec: no process, so no record can match pid 0
        return Run(0, 126, f"cannot run {argv[0]}: {exc}")
    try:
        output, _ = proc.communicate(timeout=PAMTESTER_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        output += f"\nkilled after {PAMTESTER_TIMEOUT:.0f} s"
    return Run(proc.pid, proc.returncode, output)


def of_pid(records: list[AuditRecord], pid: int) -> list[AuditRecord]:
    return [r for r in records if r.get("pid") == str(pid)]


def done(records: list[AuditRecord], pid: int) -> bool:
    """libpam's close_session record is the last of a transaction: everything before it is in the log."""
    return any(r.get("op") == "PAM:session_close" for r in of_pid(records, pid))


def wait_for(started: float, runs: list[Run], timeout: float = WAIT_SECONDS) -> list[AuditRecord]:
    """The records since started, once each run's are all in the log: its close_session record, or
    (a refused run has none) its records unchanged over one poll."""
    deadline = time.monotonic() + timeout
    before: dict[int, int] = {}
    while True:
        records = list(records_since(started, "-m", RECORD_TYPES))
        counts = {run.pid: len(of_pid(records, run.pid)) for run in runs}
        settled = all(
            done(records, run.pid)
            or (run.returncode != 0 and counts[run.pid] and before.get(run.pid) == counts[run.pid])
            for run in runs
        )
        if settled or time.monotonic() > deadline:
            return records
        before = counts
        time.sleep(0.1)


# ---- what the records must say (pure: unit-tested on given records)


def _last_line(output: str) -> str:
    lines = [x for x in output.strip().splitlines() if x.strip()]
    return lines[-1] if lines else "no output"


def transaction_checks(run: Run, records: list[AuditRecord], user: str, service: str) -> list[Check]:
    """Our three records with the probe identity and the session's ses; libpam's with terminal=ssh."""
    mine = of_pid(records, run.pid)
    checks = []
    if run.returncode == 0:
        checks.append(Check("pam transaction", PASS, f"{', '.join(PHASES)} through {service} succeeded"))
    else:
        checks.append(
            Check(
                "pam transaction",
                FAIL,
                f"pamtester exited {run.returncode}: {_last_line(run.output)}",
                f"a module of /etc/pam.d/{service} refused the login: check its stack with pamtester and syslog",
            )
        )
    ours = [r for r in mine if r.get("teleportUser") == user]
    seen = [f"{r.type} {r.get('op')} res={r.get('res')}" for r in ours]
    libpam = {r.get("op"): r for r in mine if (r.get("op") or "").startswith("PAM:")}
    accounting = libpam.get("PAM:accounting")
    if [r.get("op") for r in ours] == OUR_OPS and all(
        r.type == OUR_TYPES[r.get("op") or ""] and r.get("res") == "success" for r in ours
    ):
        checks.append(Check("our records", PASS, f"{', '.join(OUR_OPS)} with teleportUser={user}"))
    else:
        why = "; ".join(seen) or "none"
        if not ours and accounting is not None and accounting.get("terminal") != SSH_TTY_ITEM:
            why += " (our account line did not run: a line before it ends the account stack, or pam_python failed)"
        checks.append(
            Check(
                "our records",
                FAIL,
                f"expected {', '.join(OUR_OPS)} res=success with teleportUser={user}, got: {why}",
                "run `pam-teleport-audit doctor`, and read syslog (authpriv) for pam_teleport_audit lines",
            )
        )
    login = next((r for r in mine if r.type == "LOGIN"), None)
    sessions = ours  # each is written once the session exists (USER_ACCT at open_session)
    if login is None or login.get("ses") in (None, UNSET_SES):
        checks.append(
            Check(
                "session id",
                FAIL,
                "no LOGIN record with a session id: pam_loginuid did not run",
                "keep `session required pam_loginuid.so` before the stanza's session block",
            )
        )
    elif not sessions or any(r.get("ses") != login.get("ses") for r in sessions):
        got = ", ".join(f"{r.get('op')} ses={r.get('ses')}" for r in sessions) or "no session records of ours"
        checks.append(
            Check(
                "session id",
                FAIL,
                f"the LOGIN record says ses={login.get('ses')}, ours: {got}",
                "the session block must follow pam_loginuid: run `pam-teleport-audit install`",
            )
        )
    else:
        checks.append(Check("session id", PASS, f"ses={login.get('ses')} on LOGIN and on our three records"))
    wrong = [
        f"{op} {'missing' if libpam.get(op) is None else 'terminal=' + str(libpam[op].get('terminal'))}"
        for op in ("PAM:accounting", "PAM:session_open")
        if libpam.get(op) is None or libpam[op].get("terminal") != SSH_TTY_ITEM
    ]
    if wrong:
        checks.append(
            Check(
                "libpam records",
                FAIL,
                f"libpam's own records: {'; '.join(wrong)}, expected terminal={SSH_TTY_ITEM}",
                "our account line must run in the account stack: run `pam-teleport-audit status`",
            )
        )
    else:
        checks.append(Check("libpam records", PASS, f"PAM:accounting and PAM:session_open say terminal={SSH_TTY_ITEM}"))
    return checks


def bystander_check(run: Run, records: list[AuditRecord], user: str) -> Check:
    """The same transaction from a program not named teleport: libpam records it, we do not."""
    mine = of_pid(records, run.pid)
    ours = [r for r in mine if r.get("teleportUser") is not None]
    if ours:
        return Check(
            "non-Teleport program",
            FAIL,
            f"pamtester under its own name got {len(ours)} record(s) of ours ({ours[0].get('op')})",
            "remove teleport_exe= entries that name programs other than Teleport",
        )
    if not done(records, run.pid):
        return Check(
            "non-Teleport program",
            FAIL,
            f"no libpam records of pamtester pid {run.pid} (exit {run.returncode}: {_last_line(run.output)})",
            "check that auditd writes the log ausearch reads",
        )
    return Check("non-Teleport program", PASS, f"pamtester with TELEPORT_USERNAME={user}: no record of ours")


# ---- all of it


@dataclass
class Report:
    service: str
    pam_file: str
    login: str
    teleport_user: str
    before: list[Check] = field(default_factory=list)  # preconditions
    after: list[Check] = field(default_factory=list)  # what the transaction's records say
    seconds: float = 0.0
    ran: bool = False

    @property
    def checks(self) -> list[Check]:
        return self.before + self.after

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "service": self.service,
            "pam_file": self.pam_file,
            "login": self.login,
            "teleport_user": self.teleport_user,
            "ran": self.ran,
            "seconds": round(self.seconds, 3),
            "checks": [asdict(c) for c in self.checks],
        }


def run(
    service: str,
    path: str,
    login: str = DEFAULT_LOGIN,
    status_reader: Callable[[], AuditStatus] | None = None,
    tty_audit: bool = True,
) -> Report:
    """Preconditions; when they hold, the transaction under `teleport` and under pamtester's own name."""
    started = time.monotonic()
    report = Report(service, path, login, probe_user())
    report.before = preconditions(path, login, status_reader, tty_audit=tty_audit)
    if report.ok:
        pamtester = shutil.which("pamtester") or "pamtester"
        with open(path, "rb") as f:
            as_exe = stand_in(trusted_exes(our_lines(f.read())))
        since = time.time()
        with teleport_named(pamtester) as teleport:
            probe = run_pamtester(pamtester_argv(teleport, service, login, report.teleport_user, as_exe))
        bystander = run_pamtester(pamtester_argv(pamtester, service, login, report.teleport_user))
        records = wait_for(since, [probe, bystander])
        report.after = transaction_checks(probe, records, report.teleport_user, service)
        report.after.append(bystander_check(bystander, records, report.teleport_user))
        report.ran = True
    report.seconds = time.monotonic() - started
    return report


def render(report: Report) -> str:
    head = f"selftest of {report.pam_file} as login {report.login}, Teleport user {report.teleport_user}"
    lines = [head, *(c.line() for c in report.checks)]
    if not report.ran:
        lines.append("the PAM transaction was not run: fix the failures above first")
    verdict = "this host records Teleport logins" if report.ok else "FAILED"
    lines.append(f"{verdict} ({report.seconds:.2f} s)")
    return "\n".join(lines) + "\n"


def doctor_checks(pam_file: str, login: str = DEFAULT_LOGIN) -> list[Check]:
    """For `doctor --selftest`, after doctor's own checks: the transaction's checks, or why it did not run."""
    try:
        service, path = resolve_service(pam_file, None)
    except ValueError as exc:
        return [Check("selftest", FAIL, str(exc), "pass --pam-file /etc/pam.d/NAME")]
    report = run(service, path, login, tty_audit=False)  # doctor's stanza check warns about it already
    if not report.ran:
        failed = [c for c in report.before if c.status == FAIL]
        reasons = "; ".join(f"{c.name}: {c.message}" for c in failed)
        return [Check("selftest", FAIL, f"not run: {reasons}", failed[0].fix)]
    checks = [replace(c, name=f"selftest {c.name}") for c in report.after]
    status = PASS if report.ok else FAIL
    verdict = "recorded" if report.ok else "failed"
    summary = f"a login of {login} as {report.teleport_user} through {path} {verdict} in {report.seconds:.2f} s"
    return [*checks, Check("selftest", status, summary, "see the selftest lines above")]
