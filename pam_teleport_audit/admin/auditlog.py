"""Reading audit logs (with auparse, python3-audit) and audit config files.

Never imported inside PAM. auparse is the parser made for these logs:
it understands both RAW and ENRICHED formats, and msg='…' user records.
"""

from __future__ import annotations

import os
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


# Keywords that take a word after the value (`space_left_action = exec /path`). auditd: the four
# below (max_log_file_action refuses one); audisp-remote: every *_action (run: 3.0.9 to 4.1.2).
AUDITD_OPTION_KEYS = frozenset(
    {"space_left_action", "admin_space_left_action", "disk_full_action", "disk_error_action"}
)


def conf_refusals(path: str, daemon: str = "auditd") -> list[str]:
    """The lines of auditd.conf (daemon "auditd") or audisp-remote.conf ("audisp-remote") on which
    that daemon stops: `line N: why`. Either splits a line on spaces only, into `key = value` and,
    for a few keywords, one more word: a comment after the value, `key=value` or a tab makes it exit
    6 at its next start (run with 3.0.9 to 4.1.2). read_conf, which strips and splits at `=`, reads
    such lines as values: this says where the daemon will not."""
    refusals = []
    with open(path, newline="", errors="surrogateescape") as f:
        for number, line in enumerate(f, 1):
            words = [word for word in line.removesuffix("\n").split(" ") if word]
            if not words or words[0].startswith("#"):
                continue
            key = words[0].lower()
            takes_option = key in AUDITD_OPTION_KEYS if daemon == "auditd" else key.endswith("_action")
            if any("\t" in word or "\r" in word for word in words):
                why = "a tab or carriage return: only spaces separate key, = and value"
            elif len(words) < 3 or words[1] != "=":
                why = "not `key = value` with spaces around ="
            elif len(words) > 3 and not takes_option:
                comment = words[3].startswith("#")
                why = "a comment after the value: comments go on lines of their own" if comment else "two values"
            else:
                continue
            refusals.append(f"line {number}: {why}")
    return refusals


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
