"""Reading audit logs (with auparse, python3-audit) and audit config files.

Never imported inside PAM. auparse is the parser made for these logs:
it understands both RAW and ENRICHED formats, and msg='…' user records.
"""

from __future__ import annotations

import grp
import os
import socket
import stat
import string
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..pam_module import looks_like_hex

# /proc/PID/loginuid and sessionid, and auid=/ses= in the log, when unset.
UNSET_ID = 4294967295


def decode_value(field: str) -> bytes:
    """A value of one of our records as its bytes: the inverse of pam_module's bare and libaudit encodings."""
    if len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1].encode()
    if looks_like_hex(field.encode()):
        return bytes.fromhex(field)
    return field.encode()


def split_roles(value: bytes) -> list[bytes]:
    """teleportRoles' decoded value as its roles: joined with commas, or, when a role holds a comma,
    each after a space (pam_module._joined)."""
    if value in (b"", b"?"):
        return []
    return value[1:].split(b" ") if value.startswith(b" ") else value.split(b",")


@dataclass(frozen=True)
class AuditRecord:
    type: str
    serial: int
    time: float
    fields: dict[str, str]  # raw values, as stored (quotes and hex kept)
    interpreted: dict[str, str] = field(repr=False, default_factory=dict)
    text: str = field(repr=False, default="")  # the line as logged, when the reader asked for it

    def __getitem__(self, name: str) -> str:
        return self.fields[name]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.fields.get(name, default)

    def int(self, name: str) -> int:
        """A numeric field, -1 when absent or not a number."""
        try:
            return int(self.fields.get(name, ""))
        except ValueError:
            return -1


def read_conf(path: str) -> dict[str, str]:
    """The `key = value` lines of an audit config file (auditd.conf, audisp-remote.conf, plugins).

    Keys in lower case: auditd and its plugins look them up with strcasecmp (`LOG_FILE = ...` is
    auditd's log_file)."""
    values = {}
    with open(path, errors="surrogateescape") as f:  # a comment in Latin-1 is still a comment
        for line in f:
            key, sep, value = line.partition("=")
            if sep and not key.strip().startswith("#"):
                values[key.strip().lower()] = value.strip()
    return values


def au_remote_active(audit_dir: str) -> bool:
    """Whether auditd starts audisp-remote: plugins.d/au-remote.conf says active = yes."""
    try:
        return read_conf(os.path.join(audit_dir, "plugins.d", "au-remote.conf")).get("active", "").lower() == "yes"
    except OSError:
        return False


# What auditd and audisp-remote take as each keyword's value, read in their parsers (audit-userspace
# src/auditd-config.c and audisp/plugins/remote/remote-config.c, 3.0.9 to 4.1.2) and run with the real
# daemons of Debian 12, 13 and forky and Ubuntu 24.04 and 26.04 (tests/system/test_doctor.py). A value
# one refuses stops it at its next start. Kinds: "words" (one of them, any case), "uint" (digits only,
# MIN to MAX), "size" (digits, or digits and % below 100), "exec" (a word; `exec /path` needs a path
# that check_exe_name accepts), "any" (taken as it is), and kinds checked against this host:
# "log_file", "group", "email", "time", "abspath". `listener`: auditd ignores the value when built
# without its TCP listener (Ubuntu's).
INT_MAX = 2**31 - 1
ULONG_MAX = 2**64 - 1
FAILURE_ACTIONS = "ignore syslog rotate email exec suspend single halt"
AUDITD_VALUES: dict[str, tuple[str, object]] = {
    "local_events": ("words", "yes no"),
    "write_logs": ("words", "yes no"),
    "log_file": ("log_file", None),
    "log_format": ("words", "raw nolog enriched"),
    "log_group": ("group", None),
    "flush": ("words", "none incremental incremental_async data sync"),
    "freq": ("uint", (0, INT_MAX)),
    "num_logs": ("uint", (0, 999)),
    "dispatcher": ("any", None),  # deprecated, ignored
    "name_format": ("words", "none hostname fqd numeric user"),
    "name": ("any", None),
    "disp_qos": ("any", None),  # deprecated, ignored
    "max_log_file": ("uint", (0, ULONG_MAX)),
    # 4.1 lists `exec`, but takes no path after it (max_options 0): refused either way, on every release.
    "max_log_file_action": ("words", "ignore syslog suspend rotate keep_logs"),
    "space_left": ("size", None),
    "space_left_action": ("exec", FAILURE_ACTIONS),
    "action_mail_acct": ("email", None),
    "verify_email": ("words", "yes no"),
    "admin_space_left": ("size", None),
    "admin_space_left_action": ("exec", FAILURE_ACTIONS),
    "disk_full_action": ("exec", FAILURE_ACTIONS.replace(" email", "")),
    "disk_error_action": ("exec", FAILURE_ACTIONS.replace(" rotate email", "")),
    "priority_boost": ("uint", (0, INT_MAX)),
    "tcp_listen_port": ("listener", (1, 65535)),
    "tcp_listen_queue": ("listener", (1, 65535)),
    "tcp_max_per_addr": ("listener", (1, 1024)),
    "use_libwrap": ("words", "yes no"),
    "tcp_client_ports": ("listener", "ports"),
    "tcp_client_max_idle": ("listener", (0, INT_MAX)),
    "transport": ("words", "tcp krb5"),  # krb5: every release here is built with GSSAPI
    "enable_krb5": ("words", "yes no"),
    "krb5_principal": ("any", None),
    "krb5_key_file": ("any", None),
    "distribute_network": ("words", "yes no"),
    "q_depth": ("uint", (0, 99999)),
    "overflow_action": ("words", "ignore syslog suspend single halt"),
    "max_restarts": ("uint", (0, INT_MAX)),
    "plugin_dir": ("any", None),
    "end_of_event_timeout": ("uint", (0, ULONG_MAX)),
}
# Changes by version, applied from that version on (upstream tags of the commits): (since, daemon,
# keyword, spec). audisp-remote comes in the same package as auditd, so one version serves both.
TLS_KEYWORDS = ("psk_file", "psk_identity", "cipher_suites", "key_exchange", "require_pqc", "auth", "crypto_profile")
CONF_CHANGES: list[tuple[tuple[int, ...], str, str, tuple[str, object]]] = [
    ((4, 0, 4), "auditd", "space_left_action", ("exec", FAILURE_ACTIONS.replace(" halt", ""))),  # "HALT ... deprecated"
    ((4, 0, 5), "auditd", "report_interval", ("time", None)),  # a new keyword: 3.x and 4.0.2 stop on it
    ((4, 0, 5), "auditd", "action_mail_acct", ("email", "+")),  # + allowed in an address
    # 4.2: TLS for the network transport, in both daemons (read, not run: no release here ships 4.2).
    *(((4, 2), daemon, "transport", ("words", "tcp krb5 tls")) for daemon in ("auditd", "audisp-remote")),
    *(((4, 2), d, f"tls_{name}", ("any", None)) for d in ("auditd", "audisp-remote") for name in TLS_KEYWORDS),
    ((4, 2), "auditd", "tls_allowed_clients", ("any", None)),
]
# The newest parsers read (v4.2.1). A newer auditd, or one whose version is unknown, may know
# keywords and words these tables do not list: those are not called refused there (no false alarm).
NEWEST_READ = (4, 2, 1)
REMOTE_ACTIONS = "ignore syslog exec warn_once_continue warn_once suspend single halt stop"
REMOTE_ACTION_NAMES = ["network_failure", "disk_low", "disk_full", "disk_error", "generic_error"]
REMOTE_ACTION_NAMES += ["generic_warning", "queue_error", "startup_failure"]
REMOTE_VALUES: dict[str, tuple[str, object]] = {
    "remote_server": ("any", None),
    "port": ("uint", (0, 65535)),
    "local_port": ("uint_or_any", (0, 65535)),
    "transport": ("words", "tcp krb5"),
    "mode": ("words", "immediate forward"),
    "queue_file": ("abspath", None),
    "queue_depth": ("uint", (1, INT_MAX)),
    "format": ("words", "ascii managed"),
    "network_retry_time": ("uint", (1, INT_MAX)),
    "max_tries_per_record": ("uint", (1, INT_MAX)),
    "max_time_per_record": ("uint", (1, INT_MAX)),
    "heartbeat_timeout": ("uint", (0, INT_MAX)),
    "enable_krb5": ("words", "yes no"),
    "krb5_principal": ("any", None),
    "krb5_client_name": ("any", None),
    "krb5_key_file": ("any", None),
    "remote_ending_action": ("exec", REMOTE_ACTIONS + " reconnect"),
    "overflow_action": ("words", "ignore syslog suspend single halt"),
    **{f"{name}_action": ("exec", REMOTE_ACTIONS) for name in REMOTE_ACTION_NAMES},
}
# Keywords that take a word after the value (`space_left_action = exec /path`): auditd's with kind
# "exec"; audisp-remote: every *_action (run: 3.0.9 to 4.1.2).
AUDITD_OPTION_KEYS = frozenset(key for key, (kind, _) in AUDITD_VALUES.items() if kind == "exec")
# The longest line each reads whole (fgets into 160 and 128 bytes): auditd skips a longer one,
# audisp-remote reads it in pieces of 127 bytes, each a line of its own.
LINE_MAX = {"auditd": 158, "audisp-remote": 127}


@dataclass(frozen=True)
class AuditBuild:
    """What the installed auditd takes: its version (None: unknown, the newest rules apply) and
    whether it has its TCP listener (Ubuntu builds it without, and then ignores tcp_* values)."""

    version: tuple[int, ...] | None = None
    listener: bool = True


def audit_build(auditd: str = "/usr/sbin/auditd") -> AuditBuild:
    """The installed auditd's version (`auditctl -v`, same package) and listener."""
    version = None
    try:
        out = subprocess.run(
            ["auditctl", "-v"], capture_output=True, text=True, check=False, env={"PATH": "/usr/sbin:/sbin:/usr/bin"}
        ).stdout
        version = tuple(int(x) for x in out.split()[-1].split(".")) if out.split() else None
    except (OSError, ValueError):
        pass
    try:
        with open(auditd, "rb") as f:  # the message the parsers log only when built without it
            listener = b"Listener support is not enabled" not in f.read()
    except OSError:
        listener = True
    return AuditBuild(version, listener)


@dataclass(frozen=True)
class ConfProblem:
    line: int  # 0: the file as a whole
    why: str
    refused: bool = True  # the daemon does not start; False: it starts and does not use the line

    def __str__(self) -> str:
        return f"line {self.line}: {self.why}" if self.line else self.why


def _uint(value: str, low: int, high: int) -> str | None:
    if not value.isascii() or not value.isdigit():
        return "digits only"
    return None if low <= int(value) <= high else f"{low} to {high}"


def _exe(path: str | None, daemon: str) -> str | None:
    """Why the daemon's check_exe_name refuses `exec PATH`, or None (the caller names the path)."""
    if not path:
        return "`exec` needs a path after it"
    if not path.startswith("/"):
        return "not an absolute path"
    try:
        st = os.stat(path)
    except OSError as exc:
        return str(exc.strerror)
    mode = st.st_mode & 0o777
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0:
        return "not a regular file owned by root"
    if daemon == "auditd" and mode not in (0o750, 0o755, 0o555, 0o550):
        return f"mode {mode:o}: auditd takes 0750, 0755, 0555 or 0550"
    if daemon != "auditd" and mode & 0o772 != 0o750:
        return f"mode {mode:o}: audisp-remote takes 0750 (others may read and run it)"
    return None


def _email(value: str, plus: bool) -> str | None:
    """validate_email's permanent errors (a name that does not resolve only delays the mail)."""
    allowed = set(string.ascii_letters + string.digits + "@.-_" + ("+" if plus else ""))
    if len(value) < 2 or not set(value) <= allowed:
        return "an address of 2 or more of letters, digits, @ . - _" + (" +" if plus else "")
    at = value.find("@")
    if at >= 0 and value.rfind(".") < at:
        return "an address with a . after the @"
    return None


def _time(value: str) -> str | None:
    """common.c time_string_to_seconds: a number and one of m h d M, 40 days at most."""
    number = value.rstrip("mhdM") if value[-1:] in "mhdM" else value
    if len(value) - len(number) > 1 or not number.lstrip("-").isdigit():
        return "a number of seconds, or of m, h, d or M"
    seconds = int(number) * {"m": 60, "h": 3600, "d": 86400, "M": 2592000}.get(value[-1], 1)
    return None if 0 <= seconds <= 40 * 86400 else "0 to 40 days"


def _value_error(kind: str, arg: object, value: str, option: str | None, daemon: str, build: AuditBuild) -> str | None:
    """What the keyword's parser takes, when it refuses this value (None: it takes it)."""
    if kind == "listener":
        if not build.listener:
            return None
        if arg == "ports":  # MIN or MIN-MAX, each 0 to 65535, MIN <= MAX
            low, _, high = value.partition("-")
            bad = _uint(low, 0, 65535) or (_uint(high, 0, 65535) if high else None)
            return bad or (None if not high or int(low) <= int(high) else "MIN-MAX, MIN <= MAX")
        kind = "uint"
    if kind in ("uint", "uint_or_any"):
        low, high = arg  # type: ignore[misc]
        return None if kind == "uint_or_any" and value.lower() == "any" else _uint(value, low, high)
    if kind == "words" or kind == "exec":
        words = str(arg).split()
        if value.lower() not in words:
            return " ".join(words)
        return _exe(option, daemon) if kind == "exec" and value.lower() == "exec" else None
    if kind == "size":
        number = value.removesuffix("%")
        if not number.isascii() or not number.isdigit():
            return "a number of MiB, or a percentage such as 25%"
        if int(number) > ULONG_MAX:
            return "a number of MiB below 2**64"
        return "a percentage below 100" if value.endswith("%") and int(number) > 99 else None
    if kind == "log_file":
        folder = os.path.dirname(value) or "."
        if len(folder) < 4:
            return "a file in a folder of 4 or more characters (auditd's check)"
        if not os.path.isdir(folder):
            return f"a file in a folder that exists ({folder} does not)"
        if os.path.islink(value):  # the parser follows it; at start, auditd's O_NOFOLLOW open fails: exit 1
            return "a file, not a symbolic link (auditd opens its log with O_NOFOLLOW)"
        if os.path.lexists(value):
            st = os.stat(value) if os.path.exists(value) else None
            if st is None or not stat.S_ISREG(st.st_mode) or st.st_uid != 0:
                return "a regular file owned by root, or none yet"
        return None
    if kind == "group":
        if value[:1].isdigit():
            return None
        try:
            grp.getgrnam(value)
        except KeyError:
            return "a group that exists, or a number"
        return None
    if kind == "email":
        return _email(value, arg == "+")
    if kind == "time":
        return _time(value)
    if kind == "abspath":
        return None if value.startswith("/") else "an absolute path"
    return None


def conf_problems(
    path: str, daemon: str = "auditd", build: AuditBuild | None = None, hostname: str | None = None
) -> list[ConfProblem]:
    """What in auditd.conf (daemon "auditd") or audisp-remote.conf ("audisp-remote") stops that daemon at
    its next start (refused) or makes it drop a line (not refused). Either splits a line on spaces only,
    into `key = value` and, for a few keywords, one more word: a comment after the value, `key=value` or
    a tab makes it exit 6 (run with 3.0.9 to 4.1.2), and so does a value its keyword's parser refuses
    (AUDITD_VALUES, REMOTE_VALUES), and, once all is read, a few pairs of values (below). read_conf,
    which strips and splits at `=`, reads such lines as values: this says where the daemon will not.
    hostname: the name auditd resolves for name_format fqd or numeric (None: this host's)."""
    build = build or AuditBuild()
    table = dict(AUDITD_VALUES if daemon == "auditd" else REMOTE_VALUES)
    table.update(
        {
            key: spec
            for since, which, key, spec in CONF_CHANGES
            if which == daemon and (build.version is None or build.version >= since)
        }
    )
    problems = []
    seen: dict[str, tuple[int, str]] = {}  # keyword: (line, value) of its last line
    with open(path, newline="", errors="surrogateescape") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    longest = LINE_MAX[daemon]
    for number, line in enumerate(lines, 1):
        pieces, why_cut = [line], ""
        if len(line) > longest:
            if daemon == "auditd":
                problems.append(ConfProblem(number, f"over {longest} characters: auditd skips it", False))
                continue
            # audisp-remote reads it as pieces of 127 bytes: each is a line of its own.
            pieces = [line[i : i + longest] for i in range(0, len(line), longest)]
            why_cut = f" (the line is over {longest} characters: {daemon} reads it in pieces)"
        problem = next(filter(None, (_line_problem(p, daemon, table, build, seen, number) for p in pieces)), None)
        if problem:
            problems.append(ConfProblem(number, problem + why_cut))
    if any(p.refused for p in problems) or not lines:
        return problems  # the daemon stops at the first; with no line at all it checks nothing more
    problems += _file_problems(daemon, seen, hostname)
    return problems


def _line_problem(
    line: str,
    daemon: str,
    table: dict[str, tuple[str, object]],
    build: AuditBuild,
    seen: dict[str, tuple[int, str]],
    number: int,
) -> str | None:
    words = [word for word in line.split(" ") if word]
    if not words or words[0].startswith("#"):
        return None
    key = words[0].lower()
    spec = table.get(key)
    takes_option = spec is not None and spec[0] == "exec" if daemon == "auditd" else key.endswith("_action")
    if any("\t" in word or "\r" in word for word in words):
        return "a tab or carriage return: only spaces separate key, = and value"
    if len(words) < 3 or words[1] != "=":
        return "not `key = value` with spaces around ="
    if len(words) > 3 and not takes_option:
        return (
            "a comment after the value: comments go on lines of their own" if words[3].startswith("#") else "two values"
        )
    unread = build.version is None or build.version > NEWEST_READ  # it may know more than the tables
    if spec is None:
        return None if unread else f"{words[0]}: {daemon} knows no such keyword"
    if spec[0] == "email" and seen.get("verify_email", (0, "yes"))[1] == "no":
        spec = ("any", None)  # verify_email = no on an earlier line: the address is not checked
    if unread and spec[0] in ("words", "exec") and words[2].lower() not in str(spec[1]).split():
        return None
    option = words[3] if len(words) > 3 else None
    error = _value_error(*spec, words[2], option, daemon, build)
    if error and spec[0] == "exec" and words[2].lower() == "exec":
        # what is wrong with the path (_exe), not a value the keyword takes
        return f"{key} = exec{' ' + option if option else ''}: {error}"
    if error:
        return f"{key} = {words[2]}: {daemon} takes {error}"
    seen[key] = (number, words[2].lower() if spec[0] != "any" else words[2])
    return None


def _gid(group: str) -> int:
    """log_group's gid, as auditd's parser finds it (a line that does not resolve was refused)."""
    if group[:1].isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return 0


def _file_problems(daemon: str, seen: dict[str, tuple[int, str]], hostname: str | None) -> list[ConfProblem]:
    """The checks of values together, once the file is read (sanity_check), and at start (resolve_node,
    init_queue): each stops the daemon."""

    def value(key: str, default: str) -> str:
        return seen.get(key, (0, default))[1]

    def line(*keys: str) -> int:
        return max((seen[k][0] for k in keys if k in seen), default=0)

    problems = []
    if daemon == "audisp-remote":
        if value("mode", "immediate") == "forward" and value("format", "managed") == "ascii":
            problems.append(ConfProblem(line("mode", "format"), "mode = forward needs format = managed"))
        if value("startup_failure_action", "warn_once_continue") in ("suspend", "single", "halt", "stop"):
            problems.append(
                ConfProblem(
                    line("startup_failure_action"),
                    "startup_failure_action takes ignore, syslog, exec, warn_once or warn_once_continue",
                )
            )
        queue = os.path.dirname(value("queue_file", "/var/spool/audit/remote.log"))
        if value("mode", "immediate") == "forward" and not os.path.isdir(queue):
            problems.append(
                ConfProblem(
                    line("mode", "queue_file"),
                    f"mode = forward keeps its queue in {queue}, which does not exist",
                )
            )
        return problems
    sizes = value("space_left", "0"), value("admin_space_left", "0")
    if not any(s.endswith("%") for s in sizes) and int(sizes[0]) <= int(sizes[1]):
        where = line("space_left", "admin_space_left")
        problems.append(
            ConfProblem(
                where,
                f"space_left ({sizes[0]}) must be larger than admin_space_left "
                f"({sizes[1]}){'' if where else ': set both'}",
            )
        )
    if value("flush", "none").startswith("incremental") and value("freq", "0") == "0":
        problems.append(ConfProblem(line("flush", "freq"), "incremental flush needs freq above 0"))
    if (
        _gid(value("log_group", "0")) != 0
        and os.path.dirname(value("log_file", "/var/log/audit/audit.log")) == "/var/log"
    ):
        problems.append(
            ConfProblem(
                line("log_group", "log_file"),
                "log_group with log_file directly in /var/log: auditd would chgrp /var/log, and refuses",
            )
        )
    name_format = value("name_format", "none")
    if name_format == "user" and "name" not in seen:
        problems.append(
            ConfProblem(
                line("name_format"),
                'name_format = user without a name = line: auditd exits at start ("User defined name missing")',
            )
        )
    if name_format in ("fqd", "numeric"):
        host = hostname or socket.gethostname()
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)
        except OSError:
            problems.append(
                ConfProblem(
                    line("name_format"),
                    f"name_format = {name_format}, and this host's name "
                    f'{host} does not resolve: auditd exits at start ("Cannot resolve '
                    'hostname"); use name_format = hostname, or list the name in /etc/hosts',
                )
            )
    return problems


def no_log_reason(conf: dict[str, str]) -> str | None:
    """Why auditd with this auditd.conf keeps no log of its own (None: it writes log_file). auditd
    reads values in any case; the deprecated `log_format = NOLOG` still turns write_logs off (and
    a `write_logs = yes` after it gives a log without `type=`, which nothing here can read)."""
    if conf.get("log_format", "").strip().lower() == "nolog":
        return "log_format = NOLOG (deprecated: auditd reads it as write_logs = no)"
    if conf.get("write_logs", "yes").strip().lower() == "no":
        return "write_logs = no"
    return None


def interpret(parser: Any) -> str:
    """auparse's reading of the current field; the raw value when it is not UTF-8.

    (The binding raises UnicodeDecodeError when an interpretation holds other bytes,
    e.g. keystrokes of a non-UTF-8 terminal.)
    """
    try:
        return parser.interpret_field()
    except UnicodeDecodeError:
        return parser.get_field_str()


def read_record(parser: Any, interpreted: frozenset[str] | None = None, with_text: bool = False) -> AuditRecord:
    """The record the parser stands on. Fields are interpreted (as ausearch -i shows them)
    only when named in `interpreted`, or all of them when it is None: that is the slow part.
    with_text keeps the line itself, for values auparse cannot split (Teleport's raw teleportUser)."""
    stamp = parser.get_timestamp()
    raw: dict[str, str] = {}
    nice: dict[str, str] = {}
    parser.first_field()
    while True:
        name = parser.get_field_name()
        # The first occurrence wins: a crafted value can never override a field.
        if name not in raw:
            raw[name] = parser.get_field_str()
            if interpreted is None or name in interpreted:
                nice[name] = interpret(parser)
        if not parser.next_field():
            break
    text = ""
    if with_text:
        try:
            text = parser.get_record_text()
        except UnicodeDecodeError:  # not UTF-8: no name we look for can match it
            text = ""
    return AuditRecord(parser.get_type_name(), stamp.serial, stamp.sec + stamp.milli / 1000, raw, nice, text)


def parse_records(text: str) -> list[AuditRecord]:
    """Every record in a buffer of audit log lines."""
    import auparse

    if not text.strip():
        return []
    parser = auparse.AuParser(auparse.AUSOURCE_BUFFER, text)
    out = []
    while parser.parse_next_event():
        while True:
            out.append(read_record(parser))
            if not parser.next_record():
                break
    return out


def ausearch_raw(*args: str) -> str:
    """ausearch --raw over the system logs (never stdin, even from a pipe)."""
    proc = subprocess.run(
        ["ausearch", "--input-logs", "--raw", *args],
        capture_output=True,
        text=True,
        env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=False,
    )
    if proc.returncode not in (0, 1):  # 1: nothing matched
        raise RuntimeError(f"ausearch {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


# The kernel stamps a record with its coarse clock (auditsc.c: ktime_get_coarse_real_ts64), which
# lags time.time() by up to one tick (10 ms at HZ=100), and the log cuts it to the millisecond.
CLOCK_SLACK = 0.011


def since_args(start: float) -> list[str]:
    """ausearch's -ts for an epoch time: it reads the date with strptime("%x"), in the C locale MM/DD/YY."""
    return ["-ts", *time.strftime("%m/%d/%y %H:%M:%S", time.localtime(int(start))).split()]


def records_since(start: float, *args: str) -> Iterator[AuditRecord]:
    """Records at or after the epoch time start (ausearch selects by second, this by millisecond)."""
    for record in parse_records(ausearch_raw(*since_args(start), *args)):
        if record.time >= start - CLOCK_SLACK:
            yield record
