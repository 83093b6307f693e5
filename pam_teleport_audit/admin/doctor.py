"""pam-teleport-audit doctor: is this host ready to tell who did what?

Each check returns one Check: pass, warn or fail, with the fix in one
sentence. Checks read the system and change nothing.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ..pam_module import DELETED_SUFFIX, AuditError, AuditSocket, daemon_alive, exe_is_teleport, parse_options
from . import bytecode, loadable, pamstack, teleportconf
from .auditlog import UNSET_ID, AuditBuild, au_remote_active, audit_build, conf_problems, no_log_reason, read_conf
from .loadable import MODULE_DIRS, SAFE_PATH, embedded_python, find_pam_python
from .pamedit import HAND_EDITED_FIX, is_ours, unmanaged_fix, unmanaged_summary

if TYPE_CHECKING:
    from ..pam_module import AuditStatus
    from .pamedit import Status

PASS, WARN, FAIL = "pass", "warn", "fail"
RECOMMENDED_BACKLOG = 8192
# <linux/capability.h>. The kernel takes a user record (ours, libpam's) from a process with
# CAP_AUDIT_WRITE; AUDIT_GET also needs CAP_AUDIT_CONTROL and the host's pid namespace; and
# it takes no audit message at all from outside the initial user namespace (audit_netlink_ok).
CAP_AUDIT_WRITE = 29
INITIAL_UID_MAP = ["0", "0", "4294967295"]  # /proc/PID/uid_map in the initial user namespace


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    message: str
    fix: str = ""

    def line(self) -> str:
        fix = f" Fix: {self.fix}" if self.fix and self.status != PASS else ""
        return f"{self.status.upper():<4}  {self.name}: {self.message}.{fix}"


def audit_checks(status_reader: Callable[[], AuditStatus] | None = None, proc: str = "/proc") -> Iterator[Check]:
    """Kernel audit, auditd, backlog and lost records, as `auditctl -s` reads them."""
    try:
        if status_reader is None:
            with AuditSocket() as audit:
                status = audit.status()
        else:
            status = status_reader()
    except AuditError as exc:
        yield unanswered_status(exc, proc)
        return
    if status["enabled"] == 0:
        yield Check(
            "kernel audit",
            FAIL,
            "audit is disabled: the kernel drops every record",
            "run `auditctl -e 1` and check -e in /etc/audit/rules.d",
        )
    else:
        locked = " and locked" if status["enabled"] == 2 else ""
        yield Check("kernel audit", PASS, f"enabled{locked}")
    if daemon_alive(status, proc):
        yield Check("auditd", PASS, f"running, pid {status['pid']}")
    else:
        # A killed auditd stays registered until a delivery to it fails.
        who = f"auditd pid {status['pid']} is registered but gone" if status["pid"] else "no audit daemon is registered"
        yield Check(
            "auditd",
            FAIL,
            f"{who}: records go to the kernel log or are lost",
            "start it: `systemctl start auditd` (or `auditd` where no init system runs)",
        )
    if status["backlog_limit"] < RECOMMENDED_BACKLOG:
        yield Check(
            "backlog",
            WARN,
            f"backlog_limit {status['backlog_limit']} is below {RECOMMENDED_BACKLOG}",
            f"add `-b {RECOMMENDED_BACKLOG}` to /etc/audit/rules.d/audit.rules and run augenrules --load",
        )
    else:
        yield Check("backlog", PASS, f"backlog_limit {status['backlog_limit']}")
    if status["rate_limit"] and status["lost"]:
        yield Check(
            "rate limit",
            FAIL,
            f"rate_limit is {status['rate_limit']} records/s and the kernel lost {status['lost']} records since boot: "
            "over the rate it drops records it has already acked, ours included",
            "run `auditctl -r 0` and remove `-r` from /etc/audit/rules.d",
        )
    elif status["rate_limit"]:
        yield Check(
            "rate limit",
            WARN,
            f"rate_limit is {status['rate_limit']} records/s: a burst of logins over it loses records",
            "run `auditctl -r 0` and remove `-r` from /etc/audit/rules.d",
        )
    else:
        yield Check("rate limit", PASS, "none")
    if status["lost"]:
        yield Check(
            "lost records",
            WARN,
            f"the kernel lost {status['lost']} records since boot (backlog over its limit, auditd behind"
            + (", or the rate limit" if status["rate_limit"] else "")
            + ")",
            "raise backlog_limit and check that auditd keeps up (auditctl -s)",
        )
    else:
        yield Check("lost records", PASS, "none lost since boot")


def unanswered_status(exc: AuditError, proc: str = "/proc") -> Check:
    """What a refused AUDIT_GET says about whether records can be written from here."""
    if exc.errno == errno.ECONNREFUSED:
        return Check(
            "kernel audit",
            FAIL,
            f"the kernel refuses every audit message from this user namespace ({exc}): "
            "no record can be written from here (a rootless container?)",
            "run Teleport and its PAM stack in the host's user namespace",
        )
    if exc.errno == errno.EPERM and os.geteuid() == 0:
        effective = capability_set(read_text(f"{proc}/self/status"), "CapEff")
        if effective is not None and effective >> CAP_AUDIT_WRITE & 1:
            # A container: records go through, but the kernel's state is the host's to see.
            return Check(
                "kernel audit",
                WARN,
                "the kernel will not say whether audit is enabled or auditd runs (AUDIT_GET: EPERM): "
                "that takes CAP_AUDIT_CONTROL and the host's pid namespace, and a container has neither. "
                "Records need only CAP_AUDIT_WRITE, which this process has: they can be written from here",
                "run `auditctl -s` (or this doctor) on the host",
            )
        return Check(
            "kernel audit",
            FAIL,
            f"cannot query kernel audit ({exc}), and this process lacks CAP_AUDIT_WRITE: "
            "the kernel refuses every record from it",
            "give the process CAP_AUDIT_WRITE (systemd: CapabilityBoundingSet; docker: --cap-add AUDIT_WRITE)",
        )
    return Check(
        "kernel audit",
        FAIL,
        f"cannot query kernel audit (AUDIT_GET): {exc}",
        "run as root on a kernel with CONFIG_AUDIT, in the initial namespaces",
    )


def read_text(path: str) -> str:
    try:
        with open(path, errors="surrogateescape") as f:  # any user may name a process in any bytes
            return f.read()
    except OSError:
        return ""


def capability_set(proc_status: str, name: str) -> int | None:
    """A capability set (CapEff, CapBnd …) from the text of /proc/PID/status."""
    for line in proc_status.splitlines():
        field, _, value = line.partition(":")
        if field == name:
            return int(value.strip(), 16)
    return None


def audit_write_problem(proc: str, pid: int) -> tuple[str, str] | None:
    """Why the kernel refuses records from this process and the children it runs as root, with the fix."""
    uid_map = read_text(f"{proc}/{pid}/uid_map").split()
    if uid_map and uid_map != INITIAL_UID_MAP:
        return (
            "it runs in a user namespace: the kernel refuses every audit record from it and its sessions",
            "run Teleport in the host's user namespace",
        )
    bounding = capability_set(read_text(f"{proc}/{pid}/status"), "CapBnd")
    if bounding is not None and not bounding >> CAP_AUDIT_WRITE & 1:
        # What its `teleport exec` children get as root: the bounding set caps them.
        return (
            "CAP_AUDIT_WRITE is not in its capability bounding set: the kernel refuses (EPERM) every record "
            "of its sessions, libpam's and ours",
            "give Teleport CAP_AUDIT_WRITE (systemd: CapabilityBoundingSet=; docker: --cap-add AUDIT_WRITE)",
        )
    return None


# Our record types (linux/audit.h), and the user-message names `auditctl -l` prints.
OUR_TYPES = {"USER_ACCT": 1101, "USER_START": 1105, "USER_END": 1106, "USER_LOGIN": 1112}
MSG_TYPES = {
    "USER": 1005,
    "USER_AUTH": 1100,
    "USER_ACCT": 1101,
    "USER_MGMT": 1102,
    "CRED_ACQ": 1103,
    "CRED_DISP": 1104,
    "USER_START": 1105,
    "USER_END": 1106,
    "USER_AVC": 1107,
    "USER_CHAUTHTOK": 1108,
    "USER_ERR": 1109,
    "CRED_REFR": 1110,
    "USYS_CONFIG": 1111,
    "USER_LOGIN": 1112,
    "USER_LOGOUT": 1113,
}
_CONDITION = re.compile(r"([A-Za-z_]\w*)(!=|>=|<=|&=|=|>|<|&)(.*)")
_OPS: dict[str, Callable[[int, int], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "&": lambda a, b: bool(a & b),
    "&=": lambda a, b: a & b == b,
}


@dataclass(frozen=True)
class Rule:
    """One `-a` rule of the user or exclude filter list, as `auditctl -l` prints it."""

    text: str
    filter: str  # user or exclude
    drops: bool  # never,user or always,exclude: a match is not logged
    conditions: tuple[tuple[str, str, str], ...]

    def matches(self, msgtype: int) -> bool | None:
        """Whether a record of this type matches: None when it depends on the sender (uid=, exe=, …)."""
        certain = True
        for name, op, value in self.conditions:
            if name != "msgtype":
                certain = False
                continue
            number = MSG_TYPES.get(value, int(value) if value.isdigit() else None)
            if number is None:
                certain = False
            elif not _OPS[op](msgtype, number):
                return False
        return True if certain else None


def parse_rules(text: str) -> list[Rule]:
    """The user and exclude filter rules in `auditctl -l` output, in order (the first match decides)."""
    rules = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "-a":
            continue
        parts = set(words[1].split(","))
        if "user" in parts:
            kind, drops = "user", "never" in parts
        elif "exclude" in parts:
            kind, drops = "exclude", "always" in parts
        else:
            continue  # syscall rules: they add records, never drop ours
        conditions = []
        for flag, field in zip(words[2::2], words[3::2], strict=False):
            match = _CONDITION.fullmatch(field) if flag == "-F" else None
            if match:
                conditions.append((match.group(1), match.group(2), match.group(3)))
        rules.append(Rule(line.strip(), kind, drops, tuple(conditions)))
    return rules


def rule_checks(rules_text: str | None = None) -> Iterator[Check]:
    """Filter rules that make the kernel ack our records and log nothing (`auditctl -l`)."""
    if rules_text is None:
        try:
            proc = subprocess.run(
                ["auditctl", "-l"], capture_output=True, text=True, check=False, env={"LC_ALL": "C", "PATH": SAFE_PATH}
            )
        except OSError as exc:
            yield Check("audit rules", WARN, f"cannot run auditctl -l: {exc}", "apt-get install auditd")
            return
        if proc.returncode:
            yield Check("audit rules", WARN, f"auditctl -l: {proc.stderr.strip()}", "run doctor as root")
            return
        rules_text = proc.stdout
    rules = parse_rules(rules_text)
    dropped: dict[str, list[str]] = {}
    maybe: dict[str, list[str]] = {}
    for name, number in OUR_TYPES.items():
        for kind in ("user", "exclude"):  # the kernel applies both; in each list the first match decides
            for rule in (r for r in rules if r.filter == kind):
                found = rule.matches(number)
                if found is False:
                    continue
                if rule.drops:
                    (dropped if found else maybe).setdefault(rule.text, []).append(name)
                if found:
                    break
    if dropped:
        yield Check(
            "audit rules",
            FAIL,
            "; ".join(f"`{rule}` drops our {'/'.join(names)} records" for rule, names in dropped.items())
            + ": the kernel acks them and logs nothing",
            "delete the rule (auditctl -d with the same words) and remove it from /etc/audit/rules.d",
        )
    if maybe:
        yield Check(
            "audit rules",
            WARN,
            "; ".join(f"`{rule}` may drop our {'/'.join(names)} records" for rule, names in maybe.items())
            + ", depending on the sending process",
            "make sure the rule cannot match root's Teleport process, or delete it",
        )
    if not dropped and not maybe:
        yield Check("audit rules", PASS, f"no filter rule drops {'/'.join(OUR_TYPES)} records")


def module_checks(entries: list[str], dirs: tuple[str, ...] = MODULE_DIRS) -> Iterator[Check]:
    """pam_python present, and every entry script the lines name importable by the Python it embeds."""
    pam_python = find_pam_python(dirs)
    if pam_python is None:
        yield Check("pam_python", FAIL, "pam_python.so is not installed", "apt-get install libpam-python")
        return
    out = loadable.ldd(pam_python) or ""
    wrong = loadable.python_problem(pam_python, out)
    if wrong is not None:
        python2 = (loadable.libpython(out) or (3, 0, True))[0] < 3
        fix = "install a pam_python built for Python 3 (libpam-python 1.1.0 or later)"
        yield Check("pam_python", FAIL, wrong, fix if python2 else "apt-get install --reinstall libpam-python")
        return
    yield Check("pam_python", PASS, pam_python)
    python = embedded_python(pam_python, out)
    if python is None or not os.path.exists(python):
        yield Check(
            "module import",
            FAIL,
            f"cannot tell which Python {pam_python} embeds",
            "reinstall libpam-python and its python3 dependency",
        )
        return
    for entry in entries:
        yield from entry_checks(python, entry)


def entry_checks(python: str, entry: str) -> Iterator[Check]:
    """One entry script: it exists, the embedded Python imports the module beside it, only root can change it."""
    parent = os.path.dirname(os.path.dirname(entry))
    code = f"import sys; sys.path.insert(0, {parent!r}); import pam_teleport_audit.pam_module"
    # -B: as pam_python (dont_write_bytecode); the check must not write the bytecode it checks.
    proc = subprocess.run([python, "-I", "-B", "-c", code], capture_output=True, text=True, check=False)
    if not os.path.isfile(entry):
        yield Check(
            "module import",
            FAIL,
            f"entry script {entry} does not exist",
            "install the package with Debian's python3 (see README) and use the path `stanza` prints",
        )
    elif proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        yield Check(
            "module import",
            FAIL,
            f"{python} cannot import the module from {parent}: {last}",
            f"install the package for {python}: `{python} -m pip install --break-system-packages .`",
        )
    else:
        yield Check("module import", PASS, f"{entry} imports under {python}")
        yield bytecode_check(python, os.path.dirname(entry))
    if os.path.isfile(entry):
        unsafe = loadable.writable_by_others(entry)
        if unsafe:
            why = f"{'; '.join(unsafe)}: pam_python runs {entry} and the modules beside it as root at every login"
            yield Check("module files", FAIL, why, loadable.ROOT_ONLY_FIX)
        else:
            yield Check("module files", PASS, f"{os.path.dirname(entry)} and every folder above it are root's only")


def bytecode_check(python: str, folder: str) -> Check:
    """Whether python, the one pam_python embeds, loads the per-login modules from cached bytecode."""
    proc = subprocess.run([python, "-I", "-B", bytecode.__file__, folder], capture_output=True, text=True, check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        why = f"{python} cannot check the bytecode in {folder}: {last}"
        return Check("bytecode", WARN, why, "reinstall the package")
    files = " and ".join(bytecode.PER_LOGIN_FILES)
    if not report["stale"]:
        return Check("bytecode", PASS, f"{files} load from cached bytecode under Python {report['python']}")
    why = "; ".join(f"{file}: {reason}" for file, reason in report["stale"].items())
    cost = ""
    if "pam_module.py" in report["stale"]:  # docs/benchmarks.md: (c) without bytecode
        cost = " (pam_module.py: a Teleport login then costs about 1.5 times as much)"
    return Check(
        "bytecode",
        WARN,
        f"{why}. pam_python never writes bytecode, so every Teleport login compiles"
        f" {' and '.join(report['stale'])} from source{cost}",
        f"{shlex.quote(python)} -m compileall -q {shlex.quote(folder)}",
    )


def config_choice_checks(config: teleportconf.Source, running: list[teleportconf.Daemon]) -> Iterator[Check]:
    """A running Teleport that reads another config than the one checked: what doctor says of it is not
    what that Teleport does."""
    for daemon in running:
        source = daemon.source
        if teleportconf.same_config(source, config):
            continue
        if source.inline is None:
            what, fix = source.path, f"run doctor with --teleport-config {shlex.quote(source.path)}"
        else:
            what = f"its {source.via}"
            fix = f"decode its {source.via} (base64 -d) into a file and run doctor with --teleport-config FILE"
        message = f"teleport pid {daemon.pid} runs with {what}, not {config}: the checks above are not of its config"
        yield Check("teleport config", WARN, message, fix)


def stanza_trust(path: str) -> tuple[str, ...] | None:
    """The teleport_exe= entries the module trusts by, as a login now parses them (a symlink resolved
    now): those of the last account line of ours in path (each acct_mgmt takes the identity afresh, so
    the last one to run decides); () for the default rule; None when path has no account line of ours."""
    try:
        lines = [x for x in _module_lines(path) if x.type == "account"]
    except OSError:
        return None
    return parse_options(lines[-1].args[1:])["teleport_exe"] if lines else None


def trust_problem(proc: str, pid: int, allowed: tuple[str, ...]) -> tuple[str, str, str] | None:
    """(status, message, fix) when the module would not believe the sessions of `teleport start` pid:
    its `teleport exec` children re-execute /proc/self/exe, so they run its binary, and the module's
    trust rule judges that binary. The link is read raw: " (deleted)" once an upgrade replaced the
    file, which the rule accepts; a teleport_exe= symlink that teleport-update switched to a new
    version no longer names the old one, which the process of before the reload may still run."""
    link = f"{proc}/{pid}/exe"
    try:
        exe = os.readlink(link)
    except OSError:
        return None  # gone since it was listed
    if exe_is_teleport(exe, allowed, lambda: os.stat(link)):
        return None
    nothing = "the module does not believe the sessions it runs: nothing of them is recorded"
    if not allowed:  # named teleport (teleportconf.daemons): the file itself is what fails
        try:
            info = os.stat(link)
            why = f"owner uid {info.st_uid}, mode {info.st_mode & 0o7777:04o}"
        except OSError as exc:
            why = f"cannot stat it: {exc.strerror}"
        path = exe.removesuffix(DELETED_SUFFIX)
        return (
            FAIL,
            f"its binary {exe} is not root's alone ({why}): {nothing}",
            f"chown root {shlex.quote(path)} && chmod go-w {shlex.quote(path)}, then restart Teleport",
        )
    message = f"its binary {exe} is not one teleport_exe= names ({', '.join(allowed)}): {nothing}"
    # Teleport 18.8+ may run its sessions from a memfd instead (its embedded session helper).
    status = WARN if any(entry.startswith("memfd:") for entry in allowed) else FAIL
    if status == WARN:
        message += ", unless it runs them from a listed memfd"
    fix = (
        "restart Teleport if it still runs a version an upgrade replaced (after teleport-update, the process "
        "from before its reload serves its old connections); else list this binary, or drop teleport_exe= "
        "(the default rule trusts every root-owned binary named teleport, any version)"
    )
    return status, message, fix


def process_checks(
    running: list[teleportconf.Daemon], proc: str = "/proc", trust: tuple[str, ...] | None = None
) -> Iterator[Check]:
    """Each running `teleport start`: whether its sessions can have a correct ses and write records,
    and, with trust (the stanza's teleport_exe= entries, () for the default rule), whether the module
    believes them. Its session children are not judged: pam_loginuid sets their loginuid, and
    `teleport networking` runs as the login user, by design."""
    if not running:
        yield Check(
            "teleport processes",
            WARN,
            "no running `teleport start`",
            "start Teleport (as root, from systemd) and run doctor again",
        )
        return
    for daemon in running:
        name = f"teleport pid {daemon.pid}"
        if daemon.uid != 0:
            yield Check(
                name,
                FAIL,
                f"{daemon.exe} runs as uid {daemon.uid}: it cannot run PAM or write audit records",
                "run Teleport as root",
            )
            continue
        problems = [audit_write_problem(proc, daemon.pid)]  # each one its own line: each needs its own fix
        if daemon.loginuid != UNSET_ID:
            problems.append(
                (
                    f"its loginuid is {daemon.loginuid}, so pam_loginuid cannot give sessions a correct ses",
                    "start Teleport from systemd (or another daemon manager), not from a login shell",
                )
            )
        for message, fix in filter(None, problems):
            yield Check(name, FAIL, message, fix)
        distrust = trust_problem(proc, daemon.pid, trust) if trust is not None else None
        if distrust is not None:
            yield Check(name, *distrust)
        if not any(problems) and distrust is None:
            trusted = ", and the module trusts it" if trust is not None else ""
            yield Check(
                name, PASS, f"{daemon.exe} runs as root with loginuid unset, and may write audit records{trusted}"
            )


def teleport_config_checks(source: teleportconf.Source) -> Iterator[Check]:
    """ssh_service.pam in Teleport's configuration, as Teleport reads it."""
    try:
        settings = teleportconf.pam_settings(teleportconf.read(source))
    except ImportError:
        yield Check("teleport config", WARN, "cannot read YAML", "apt-get install python3-yaml")
        return
    except FileNotFoundError:
        yield Check(
            "teleport config",
            WARN,
            f"{source} does not exist",
            "pass --teleport-config with the path Teleport is started with",
        )
        return
    except teleportconf.ConfigError as exc:
        yield Check("teleport config", FAIL, str(exc), "fix the configuration's YAML")
        return
    if not settings.enabled:
        yield Check(
            "teleport config",
            FAIL,
            f"ssh_service.pam.enabled is not true in {source}",
            "set ssh_service.pam.enabled: true and restart Teleport",
        )
    for name, key in settings.overridden:
        # Teleport sets its own value, then environment:'s: the record would say what that one says
        # (a user's trait, with {{external.*}}), a TELEPORT_LOGIN other than the login makes the module
        # believe nothing at all, and a removed TELEPORT_USERNAME leaves the login unrecorded.
        as_libpam = "" if key == name else f" (the key {key!r}, which pam_putenv reads as {name})"
        verb = "removes" if teleportconf.putenv_removes(key) else "sets"
        yield Check(
            "teleport config",
            FAIL,
            f"ssh_service.pam.environment in {source} {verb} {name}{as_libpam}, in place of the value "
            "Teleport passes: records would not name the Teleport user and login as Teleport knows them",
            f"remove {name if key == name else repr(key)} from ssh_service.pam.environment and restart Teleport",
        )
    if settings.enabled and not settings.overridden:
        yield Check(
            "teleport config",
            PASS,
            f"{source}: PAM enabled, service {settings.service} (/etc/pam.d/{settings.service})",
        )


def _module_lines(path: str) -> list:  # list[pamfile.Line]
    from .pamfile import parse

    with open(path, "rb") as f:
        lines = parse(f.read())
    return [x for x in lines if is_ours(x)]


def entries_in(path: str) -> list[str]:
    """The entry scripts our lines name, in the file and in the files it includes, as `status` reads them."""
    from .pamedit import status
    from .pamstack import folder_resolver

    try:
        with open(path, "rb") as f:
            return status(f.read(), folder_resolver(path), path).scripts
    except OSError:
        return []


def stanza_problem(path: str, state: Status) -> Check | None:
    """The failing "stanza" check of a file whose stanza is not installed (None when it is)."""
    if state.installed:
        return None
    if state.unmanaged and not state.account and not state.session:
        # A warning only when the pasted lines pass every check a marked stanza must pass.
        return Check(
            "stanza",
            WARN if not state.problems else FAIL,
            unmanaged_summary(path, state),
            unmanaged_fix(path, state.unmanaged_files),
        )
    if state.account and state.session and state.problems == state.skipped_by:
        return Check(
            "stanza",
            FAIL,
            f"{path}: present but unreachable: " + "; ".join(state.skipped_by),
            f"run `pam-teleport-audit install --pam-file {path}` (it puts the lines where no login skips them, "
            "or refuses and says which line is in the way); see docs/installer.md",
        )
    if state.hand_edited:
        fix = HAND_EDITED_FIX
    elif state.unmanaged:
        fix = unmanaged_fix(path, state.unmanaged_files)
    else:
        fix = f"run `pam-teleport-audit install --pam-file {path}`"
    problems = list(state.problems)
    replaced = pamstack.dpkg_replaced(path) if not state.account and not state.session else None
    if replaced is not None:
        problems.append(pamstack.dpkg_replaced_reason(path, replaced))
        fix = pamstack.dpkg_replaced_fix(path, replaced)
    return Check("stanza", FAIL, f"{path}: " + "; ".join(problems), fix)


def stanza_checks(path: str) -> Iterator[Check]:
    """The stanza complete, in order and reached by every login, with controls that match the failure policy."""
    from .pamedit import status
    from .pamstack import folder_resolver

    try:
        with open(path, "rb") as f:
            state = status(f.read(), folder_resolver(path), path)
        module_lines = _module_lines(path)
    except OSError as exc:
        vendor = pamstack.vendor_copy(path)
        if vendor is not None:
            yield Check(
                "stanza", FAIL, pamstack.missing_reason(path), f"{pamstack.copy_command(vendor, path)}, then install"
            )
        else:
            yield Check(
                "stanza", FAIL, f"cannot read {path}: {exc.strerror}", "pass --pam-file with Teleport's PAM file"
            )
        return
    problem = stanza_problem(path, state)
    if problem is not None:
        yield problem
        yield from refusal_checks(path, state)
        return
    tty = {
        "ours": "pam_tty_audit from the stanza",
        "existing": "the file's own pam_tty_audit",
        "none": "no pam_tty_audit (keystrokes are not recorded)",
    }[state.tty_audit]
    yield Check(
        "stanza",
        PASS if state.tty_audit != "none" else WARN,
        f"{path}: complete and reached by every login, pam_loginuid then pam_tty_audit then the module; {tty}",
        "install with --tty-audit PATTERNS to record keystrokes",
    )
    yield from refusal_checks(path, state)
    for line in module_lines:
        fail_closed = "fail_closed" in line.args[1:]
        control = (line.control or "").lower()
        if fail_closed and control != "required":
            yield Check(
                "failure policy",
                FAIL,
                f"line {line.number}: fail_closed with control {line.control}: a refusal is ignored",
                f"run `pam-teleport-audit install --fail-closed --pam-file {path}`",
            )
        elif not fail_closed and control == "required":
            yield Check(
                "failure policy",
                WARN,
                f"line {line.number}: control required without fail_closed: if the module cannot load, "
                "every login through this file fails",
                f"run `pam-teleport-audit install --pam-file {path}`",
            )
    if all(("fail_closed" in x.args[1:]) == ((x.control or "").lower() == "required") for x in module_lines):
        policy = "fail-closed" if module_lines and "fail_closed" in module_lines[0].args[1:] else "fail-open"
        yield Check("failure policy", PASS, f"{policy}, controls match")


def refusal_checks(path: str, state: Status) -> Iterator[Check]:
    """A session line that can refuse the session between pam_loginuid and ours (pamstack.refusers):
    the login is refused, yet our records of it say only `teleport:accounting res=success`."""
    if not state.refused_before:
        if state.installed:
            yield Check(
                "session refusals",
                PASS,
                "no session line between pam_loginuid and the module's can refuse a login before the module sees it",
            )
        return
    lines = "; ".join(state.refused_before)
    yield Check(
        "session refusals",
        WARN,
        f"{path}: {lines}: can refuse the session (requisite or die) after pam_loginuid and before the module's "
        "session line, which then never runs: for a login it refuses the module writes only "
        "`teleport:accounting res=success`, no res=failed, so an auditor reading its records alone sees a login "
        "that was let in (only libpam's `PAM:session_open res=failed` of the same process, and "
        "`pam-teleport-audit search`, show the refusal)",
        "make it `required` (it still refuses the login, but libpam then runs on to the module's line, which "
        "records `teleport:session_open res=failed`), or put it after the module's session block; docs/records.md",
    )


# auditd.conf's defaults (auditd 3.0 and 4.0): MB, or a percentage of the log's filesystem.
DISK_DEFAULTS = {"space_left": "75", "admin_space_left": "50", "admin_space_left_action": "SUSPEND"}
# What auditd does at admin_space_left (and by default when the disk is full) that loses records:
# it stops writing them (the kernel goes on acking them), or stops the machine.
LOSING_ACTIONS = frozenset({"SUSPEND", "HALT", "SINGLE"})


def _megabytes(value: str, total_mb: float) -> float | None:
    value = value.strip()
    number = value.removesuffix("%")
    if not number.replace(".", "", 1).isdigit():
        return None
    return float(number) * (total_mb / 100 if value.endswith("%") else 1)


def log_folder(conf: dict[str, str]) -> str:
    """The folder of auditd's log_file."""
    return os.path.dirname(conf.get("log_file", "/var/log/audit/audit.log"))


def space_mb(st: os.statvfs_result) -> tuple[float, float]:
    """(MB free to an unprivileged writer, MB in all) of a filesystem, as auditd counts them."""
    return st.f_bavail * st.f_frsize / 2**20, st.f_blocks * st.f_frsize / 2**20


def log_disk_checks(
    audit_dir: str = "/etc/audit", statvfs: Callable[[str], os.statvfs_result] = os.statvfs
) -> Iterator[Check]:
    """Room for the audit log: past admin_space_left auditd suspends by default, and from then on
    every record, ours included, is acked by the kernel and lost."""
    try:
        conf = read_conf(os.path.join(audit_dir, "auditd.conf"))
    except OSError:
        return  # no auditd.conf: the auditd check says what is wrong
    folder = log_folder(conf)
    try:
        free, total = space_mb(statvfs(folder))
    except OSError as exc:
        yield Check("audit log disk", WARN, f"cannot read the free space of {folder}: {exc}", "check log_file")
        return
    limits = {key: conf.get(key, default) for key, default in DISK_DEFAULTS.items()}
    space_left = _megabytes(limits["space_left"], total)
    admin_left = _megabytes(limits["admin_space_left"], total)
    action = limits["admin_space_left_action"].upper()
    if admin_left is not None and free <= admin_left:
        losing = action.split()[0] in LOSING_ACTIONS
        yield Check(
            "audit log disk",
            FAIL if losing else WARN,
            f"{free:.0f} MB free in {folder}, at or below admin_space_left ({limits['admin_space_left']}): "
            + (f"auditd's admin_space_left_action {action} stops the records" if losing else f"action {action}"),
            f"free space in {folder}, then `auditctl --signal USR2` (auditd resumes logging)",
        )
    elif space_left is not None and free <= space_left:
        yield Check(
            "audit log disk",
            WARN,
            f"{free:.0f} MB free in {folder}, at or below space_left ({limits['space_left']}); at admin_space_left "
            f"({limits['admin_space_left']}) auditd does {action}",
            f"free space in {folder}, or lower max_log_file times num_logs",
        )
    else:
        yield Check("audit log disk", PASS, f"{free:.0f} MB free in {folder}")


def active_plugins(audit_dir: str, conf: dict[str, str]) -> list[str]:
    """The names of auditd's plugins that are active (plugin_dir/*.conf with active = yes)."""
    folder = conf.get("plugin_dir") or os.path.join(audit_dir, "plugins.d")
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    found = []
    for name in names:
        if not name.endswith(".conf"):
            continue
        try:
            if read_conf(os.path.join(folder, name)).get("active", "no").lower() == "yes":
                found.append(name.removesuffix(".conf"))
        except OSError:
            continue
    return found


def log_write_checks(audit_dir: str = "/etc/audit") -> Iterator[Check]:
    """Does auditd keep a log here at all? With write_logs = no it hands records to its plugins
    only: search on this host then reads a log that has stopped (or none)."""
    try:
        conf = read_conf(os.path.join(audit_dir, "auditd.conf"))
    except OSError:
        return  # no auditd.conf: the auditd check says what is wrong
    log = conf.get("log_file") or "/var/log/audit/audit.log"
    if conf.get("local_events", "yes").lower() == "no":
        # auditd then only collects other hosts' records and never registers with the kernel
        # (auditd.c: no audit_set_pid); it reads the value only when it starts.
        yield Check(
            "audit log",
            FAIL,
            "auditd.conf has local_events = no: auditd takes no record of this host from the kernel, ours "
            "included (it collects only what other hosts send it), from its next start if not already",
            "set local_events = yes, then restart auditd (a reload does not change it)",
        )
        return
    reason = no_log_reason(conf)
    if reason is None:
        yield Check("audit log", PASS, f"auditd writes {log} (log_format {conf.get('log_format', 'RAW')})")
        return
    nolog = conf.get("log_format", "").strip().lower() == "nolog"
    keep = "set write_logs = yes in auditd.conf" + (" and log_format = ENRICHED" if nolog else "")
    plugins = active_plugins(audit_dir, conf)
    if not plugins:
        yield Check(
            "audit log",
            FAIL,
            f"{reason} and no plugin is active: auditd keeps no record, ours included",
            f"{keep} (or activate au-remote), then `auditctl --signal HUP`",
        )
        return
    yield Check(
        "audit log",
        WARN,
        f"{reason}: auditd keeps no log on this host and hands records only to {', '.join(plugins)}: "
        f"`pam-teleport-audit search` here finds nothing new (it reads {log}); search where they are stored",
        f"{keep} to keep a local copy, or search on the collector",
    )


def config_syntax_checks(audit_dir: str = "/etc/audit", build: AuditBuild | None = None) -> Iterator[Check]:
    """Lines and values that stop auditd (or audisp-remote, when au-remote is active) at its next start,
    or that it drops. A running auditd read its file before the edit: it works until a restart or a
    reboot, then keeps nothing. build: what the installed auditd takes (None: found here)."""
    files = [("auditd.conf", "auditd")] + (
        [("audisp-remote.conf", "audisp-remote")] if au_remote_active(audit_dir) else []
    )
    build = build or audit_build()
    for name, daemon in files:
        path = os.path.join(audit_dir, name)
        try:
            problems = conf_problems(path, daemon, build)
        except OSError:
            continue  # none: the auditd and remote logging checks say what is wrong
        refused = [str(p) for p in problems if p.refused]
        if refused:
            stops = "keeps no record" if daemon == "auditd" else "sends no record"
            yield Check(
                "audit config",
                FAIL,
                f"{path}: {'; '.join(refused)}: {daemon} exits at its next start (restart, reboot) and {stops}",
                "write each such line as `key = value`, spaces around =, comments on lines of their own, "
                f"with a value its keyword takes (said above; see {name}(5))",
            )
        elif problems:
            yield Check(
                "audit config",
                WARN,
                f"{path}: {'; '.join(map(str, problems))}: its setting is not used",
                "shorten the line (a shorter path, or a symlink to the folder)",
            )
        else:
            yield Check("audit config", PASS, f"every line of {path} is `key = value` with a value {daemon} takes")


def remote_checks(audit_dir: str = "/etc/audit", proc: str = "/proc", timeout: float = 2.0) -> Iterator[Check]:
    """On a sender: do records leave this host (audisp-remote active, running, its collector reachable)?"""
    if not au_remote_active(audit_dir):
        yield Check("remote logging", PASS, "not configured: records stay on this host (see docs/fleet.md)")
        return
    try:
        remote = read_conf(os.path.join(audit_dir, "audisp-remote.conf"))
    except OSError as exc:
        yield Check(
            "remote logging",
            FAIL,
            f"au-remote is active but audisp-remote.conf is unreadable: {exc}",
            "install audispd-plugins and set remote_server in audisp-remote.conf",
        )
        return
    try:
        auditd = read_conf(os.path.join(audit_dir, "auditd.conf"))
    except OSError:
        auditd = {}
    name_format = auditd.get("name_format", "none").lower()
    if name_format == "user" and not auditd.get("name"):
        # auditd's resolve_node: "User defined name missing", and auditd does not start (nor reload to it).
        yield Check(
            "node name",
            FAIL,
            "auditd.conf has name_format = user without a name = line: auditd does not start with it",
            "add name = THIS-HOST's name to /etc/audit/auditd.conf (or name_format = hostname)",
        )
    elif name_format == "none":
        yield Check(
            "node name",
            FAIL,
            "au-remote is active but auditd.conf has name_format = none: records reach the collector without "
            "node=, so search there cannot tell this host's sessions from another's (hosts reuse the same ses "
            "and pid)",
            "set name_format = hostname in /etc/audit/auditd.conf, then `auditctl --signal HUP`",
        )
    else:
        yield Check("node name", PASS, f"name_format = {name_format}: the collector gets node= with every record")
    if auditd.get("log_format", "").lower() == "nolog":
        # Seen at a collector (auditd 3.0.9): such a sender's lines arrive as `audit(T:N): ...`, no node=, no type=.
        yield Check(
            "sender log format",
            FAIL,
            "auditd.conf has log_format = NOLOG: auditd hands au-remote its records without type= and node=, "
            "so search on the collector cannot read them",
            "set log_format = ENRICHED (and write_logs = no if no local log is wanted), then `auditctl --signal HUP`",
        )
    server, port = remote.get("remote_server", ""), remote.get("port", "60")
    if not server:
        yield Check(
            "remote logging",
            FAIL,
            "au-remote is active but remote_server is empty",
            "set remote_server in /etc/audit/audisp-remote.conf",
        )
        return
    running = any(_comm(proc, pid) == "audisp-remote" for pid in os.listdir(proc) if pid.isdigit())
    if not running:
        yield Check(
            "remote logging",
            FAIL,
            "au-remote is active but no audisp-remote process runs",
            "restart auditd so that it starts its plugins",
        )
    import socket

    try:
        with socket.create_connection((server, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        yield Check(
            "remote collector",
            FAIL,
            f"{server}:{port} is not reachable: {exc}",
            "check the collector's auditd (tcp_listen_port, tcp_client_ports) and the network",
        )
        return
    if running:
        yield Check("remote logging", PASS, f"records leave this host for {server}:{port}")
    yield Check("remote collector", PASS, f"{server}:{port} accepts connections")


def _comm(proc: str, pid: str) -> str:
    return read_text(f"{proc}/{pid}/comm").strip()


def run_all(pam_file: str | None, teleport_config: str | None, expected_senders: int = 0) -> list[Check]:
    """Every check, in the order an administrator fixes things. teleport_config: None for the running
    `teleport start`'s (teleportconf.chosen). expected_senders: a collector's fleet."""
    from .stanza import entry_script

    running = teleportconf.daemons()
    config = teleportconf.chosen(teleport_config, running)
    service = teleportconf.pam_service(config)
    path = pam_file or teleportconf.service_file(config)
    checks = list(audit_checks())
    checks += rule_checks()
    checks += stanza_checks(path)
    checks += module_checks(entries_in(path) or [entry_script()])
    checks += teleport_config_checks(config)
    checks += config_choice_checks(config, running)
    if service is not None and pam_file is not None and path != f"/etc/pam.d/{service}":
        checks.append(
            Check(
                "teleport config",
                WARN,
                f"Teleport uses /etc/pam.d/{service}, not {path}",
                f"check /etc/pam.d/{service}, or set ssh_service.pam.service_name",
            )
        )
    checks += process_checks(running, trust=stanza_trust(path))
    checks += config_syntax_checks()
    checks += log_write_checks()
    checks += log_disk_checks()
    checks += remote_checks()
    from .fleetcheck import checks as fleet_checks  # here: fleetcheck imports this module

    checks += fleet_checks(
        expected=expected_senders
    )  # only where auditd listens (tcp_listen_port) or au-remote is active
    return checks


def summary(checks: list[Check]) -> dict[str, object]:
    return {"ok": all(c.status != FAIL for c in checks), "checks": [asdict(c) for c in checks]}
