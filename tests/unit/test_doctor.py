"""doctor's checks on given inputs: kernel status, /proc, Teleport config."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pam_teleport_audit.admin import auditlog, doctor, teleportconf
from pam_teleport_audit.pam_module import AuditError

if TYPE_CHECKING:
    from pam_teleport_audit.pam_module import AuditStatus


def status(**kw: int) -> AuditStatus:
    base = dict(enabled=1, failure=1, pid=1, rate_limit=0, backlog_limit=8192, lost=0, backlog=0)
    base.update(kw)
    return {**base, "backlog_wait_time": None}  # type: ignore[return-value, typeddict-item]


def statuses(checks: list[doctor.Check]) -> dict[str, str]:
    return {c.name: c.status for c in checks}


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (status(), {"kernel audit": "pass", "auditd": "pass", "backlog": "pass", "lost records": "pass"}),
        (status(enabled=0), {"kernel audit": "fail"}),
        (status(enabled=2), {"kernel audit": "pass"}),
        (status(pid=0), {"auditd": "fail"}),
        (status(pid=7), {"auditd": "fail"}),  # a zombie, still registered
        (status(pid=9), {"auditd": "fail"}),  # gone, still registered
        (status(backlog_limit=64), {"backlog": "warn"}),
        (status(lost=3), {"lost records": "warn", "rate limit": "pass"}),
        (status(rate_limit=100), {"rate limit": "warn", "lost records": "pass"}),
        (status(rate_limit=100, lost=3), {"rate limit": "fail", "lost records": "warn"}),
    ],
)
def test_audit_checks(state: AuditStatus, expected: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "exe").symlink_to("/usr/sbin/auditd")
    (tmp_path / "7").mkdir()  # a zombie: no exe
    got = statuses(list(doctor.audit_checks(lambda: state, str(tmp_path))))
    assert {k: got[k] for k in expected} == expected


@pytest.mark.parametrize(("pid", "says"), [(0, "no audit daemon is registered"), (9, "pid 9 is registered but gone")])
def test_auditd_failure_says_which(pid: int, says: str, tmp_path: Path) -> None:
    checks = {c.name: c for c in doctor.audit_checks(lambda: status(pid=pid), str(tmp_path))}
    assert says in checks["auditd"].message


def test_rate_limit_hit_is_named() -> None:
    checks = {c.name: c for c in doctor.audit_checks(lambda: status(rate_limit=50, lost=12))}
    assert "rate_limit is 50 records/s and the kernel lost 12 records" in checks["rate limit"].message
    assert "auditctl -r 0" in checks["rate limit"].fix


NONE = "No rules\n"
SYSCALLS = "-a always,exit -F arch=b64 -S execve -F key=exec\n-w /etc/pam.d -p wa -k pam\n"


@pytest.mark.parametrize(
    ("rules", "status", "named"),
    [
        (NONE, "pass", ""),
        (SYSCALLS, "pass", ""),
        ("-a never,user\n", "fail", "`-a never,user` drops our USER_ACCT/USER_START/USER_END/USER_LOGIN records"),
        ("-a never,user -F msgtype=USER_START\n", "fail", "`-a never,user -F msgtype=USER_START` drops our USER_START"),
        ("-a never,user -F msgtype=1112\n", "fail", "drops our USER_LOGIN records"),
        ("-a never,user -F msgtype=USER_AVC\n", "pass", ""),
        ("-a always,user -F msgtype=USER_START\n", "pass", ""),  # always,user keeps
        ("-a always,exclude -F msgtype=USER_ACCT\n", "fail", "drops our USER_ACCT records"),
        ("-a exclude,always -F msgtype=USER_END\n", "fail", "drops our USER_END records"),
        ("-a never,exclude -F msgtype=USER_END\n", "pass", ""),  # never,exclude keeps
        ("-a always,exclude\n", "fail", "drops our USER_ACCT/USER_START/USER_END/USER_LOGIN records"),
        ("-a always,exclude -F msgtype!=USER_END\n", "fail", "drops our USER_ACCT/USER_START/USER_LOGIN records"),
        ("-a always,exclude -F msgtype>=USER_AUTH -F msgtype<=1104\n", "fail", "drops our USER_ACCT records"),
        ("-a always,exclude -F msgtype>=1200\n", "pass", ""),
        # The first match in a list decides: a keeping rule before the dropping one.
        ("-a always,user -F msgtype=USER_START\n-a never,user\n", "fail", "drops our USER_ACCT/USER_END/USER_LOGIN"),
        ("-a never,user -F msgtype=USER_ACCT\n-a never,user\n", "fail", "`-a never,user` drops our USER_START"),
        # Conditions on the sender: it depends.
        ("-a never,user -F uid=0\n", "warn", "may drop our USER_ACCT/USER_START/USER_END/USER_LOGIN records"),
        ("-a never,user -F auid=1002 -F msgtype>=USER_AUTH -F msgtype<=1199\n", "warn", "may drop our USER_ACCT"),
        ("-a never,user -F exe=/usr/sbin/sshd -F msgtype=CRED_ACQ\n", "pass", ""),
    ],
)
def test_rule_checks(rules: str, status: str, named: str) -> None:
    checks = list(doctor.rule_checks(rules))
    assert {c.status for c in checks} == {status}, checks
    assert named in " ".join(c.message for c in checks)


def test_rules_that_surely_drop_and_that_may_drop_are_both_named() -> None:
    checks = list(doctor.rule_checks("-a never,user -F uid=0\n-a always,exclude -F msgtype=USER_END\n"))
    assert [c.status for c in checks] == ["fail", "warn"]
    assert "USER_END" in checks[0].message and "-F uid=0" in checks[1].message


def test_unreachable_kernel_audit() -> None:
    def fail() -> AuditStatus:
        raise AuditError(93, "cannot open NETLINK_AUDIT: Protocol not supported")

    (check,) = doctor.audit_checks(fail)
    assert check.status == "fail" and "Protocol not supported" in check.message


# /proc/PID/status capability lines: all of a root process's, and the same without CAP_AUDIT_WRITE (bit 29).
ALL_CAPS = "000001ffffffffff"
NO_AUDIT_WRITE = f"{int(ALL_CAPS, 16) & ~(1 << 29):016x}"


@pytest.mark.parametrize(
    ("errno", "cap_eff", "verdict", "says"),
    [
        (111, ALL_CAPS, "fail", "refuses every audit message from this user namespace"),
        (1, ALL_CAPS, "warn", "they can be written from here"),
        (1, NO_AUDIT_WRITE, "fail", "lacks CAP_AUDIT_WRITE"),
        (93, ALL_CAPS, "fail", "Protocol not supported"),
    ],
    ids=["user-namespace", "container", "no-audit-write", "no-netlink-audit"],
)
def test_unanswered_audit_status(
    tmp_path: Path, monkeypatch, errno: int, cap_eff: str, verdict: str, says: str
) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "status").write_text(f"Name:\tpython3\nCapEff:\t{cap_eff}\nCapBnd:\t{ALL_CAPS}\n")
    monkeypatch.setattr(doctor.os, "geteuid", lambda: 0)

    def refused() -> AuditStatus:
        raise AuditError(errno, f"kernel refused AUDIT_GET: {os.strerror(errno)}")

    (check,) = doctor.audit_checks(refused, str(tmp_path))
    assert (check.name, check.status) == ("kernel audit", verdict) and says in check.message, check


def fake_proc(
    root: Path,
    pid: int,
    exe: str,
    loginuid: int,
    cap_bnd: str = ALL_CAPS,
    uid_map: str = "0 0 4294967295",
    argv: tuple[str, ...] = ("teleport", "start"),
    environ: tuple[str, ...] = (),
) -> Path:
    folder = root / str(pid)
    folder.mkdir()
    (folder / "exe").symlink_to(exe)
    (folder / "loginuid").write_text(f"{loginuid}\n")
    (folder / "status").write_text(f"Name:\tteleport\nCapEff:\t{cap_bnd}\nCapBnd:\t{cap_bnd}\n")
    (folder / "uid_map").write_text(f"         {uid_map.replace(' ', '          ')}\n")
    (folder / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in argv))
    (folder / "environ").write_bytes(b"".join(item.encode() + b"\0" for item in environ))
    (folder / "cwd").symlink_to(root)
    return folder


def test_teleport_processes(tmp_path: Path) -> None:
    """Only `teleport start` is judged: a live session's `teleport exec` has the loginuid pam_loginuid
    gave it, and `teleport networking` runs as the login user, both by design."""
    assert statuses(list(doctor.process_checks(teleportconf.daemons(str(tmp_path)), str(tmp_path)))) == {
        "teleport processes": "warn"
    }
    fake_proc(tmp_path, 10, "/usr/local/bin/teleport", 4294967295)
    fake_proc(tmp_path, 11, "/usr/local/bin/teleport", 1000)
    fake_proc(tmp_path, 12, "/usr/sbin/sshd", 1000)
    fake_proc(tmp_path, 13, "/usr/local/bin/teleport", 1000, argv=("/usr/local/bin/teleport", "exec"))
    fake_proc(tmp_path, 14, "/usr/local/bin/teleport", 1000, argv=("/usr/local/bin/teleport", "networking"))
    running = teleportconf.daemons(str(tmp_path))
    assert [daemon.pid for daemon in running] == [10, 11]
    checks = list(doctor.process_checks(running, str(tmp_path)))
    by_pid = {c.name: c for c in checks}
    assert set(by_pid) == {"teleport pid 10", "teleport pid 11"}
    assert by_pid["teleport pid 11"].status == "fail" and "loginuid is 1000" in by_pid["teleport pid 11"].message
    # /proc entries are owned by the process's uid; here the test's own files are root's.
    assert by_pid["teleport pid 10"].status == "pass"


@pytest.mark.parametrize(
    ("cap_bnd", "uid_map", "says"),
    [
        (NO_AUDIT_WRITE, "0 0 4294967295", "CAP_AUDIT_WRITE is not in its capability bounding set"),
        (ALL_CAPS, "0 1000 1", "runs in a user namespace"),
    ],
    ids=["no-audit-write", "user-namespace"],
)
def test_a_teleport_process_the_kernel_takes_no_record_from(tmp_path: Path, cap_bnd: str, uid_map: str, says: str):
    fake_proc(tmp_path, 10, "/usr/local/bin/teleport", 4294967295, cap_bnd, uid_map)
    (check,) = doctor.process_checks(teleportconf.daemons(str(tmp_path)), str(tmp_path))
    assert check.status == "fail" and says in check.message, check


def installed(root: Path, relative: str, mode: int = 0o755) -> Path:
    """A file standing for a Teleport binary (the test's own: root's when the tests run as root)."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("runs", "listed", "verdict", "says"),
    [
        # the default rule: a binary named teleport that only root can write, after an upgrade too
        ("usr/local/bin/teleport", None, "pass", "and the module trusts it"),
        ("usr/local/bin/teleport (deleted)", None, "pass", "and the module trusts it"),  # dpkg, cp -f
        ("opt/teleport/default/versions/18.1.0/bin/teleport", None, "pass", "and the module trusts it"),
        # teleport-update switched the link to 18.2.0; the process from before the reload runs 18.1.0
        ("opt/teleport/default/versions/18.2.0/bin/teleport", "usr/local/bin/teleport", "pass", "module trusts it"),
        ("opt/teleport/default/versions/18.1.0/bin/teleport", "usr/local/bin/teleport", "fail", "not one"),
        ("opt/teleport/default/versions/18.1.0/bin/teleport (deleted)", "usr/local/bin/teleport", "fail", "not one"),
        # a listed memfd: its sessions may run from there instead
        ("opt/teleport/default/versions/18.1.0/bin/teleport", "memfd:teleport-sessionhelper", "warn", "listed memfd"),
        # an in-place upgrade (dpkg, cp -f) of the listed file itself
        ("srv/bin/teleport (deleted)", "srv/bin/teleport", "pass", "module trusts it"),
    ],
)
def test_whether_the_module_trusts_each_running_teleport(
    tmp_path: Path, runs: str, listed: str | None, verdict: str, says: str
) -> None:
    """doctor judges each `teleport start`'s binary by the stanza's trust rule, as a login now would:
    after teleport-update switched the link teleport_exe= names, the old process is no longer trusted."""
    root = tmp_path / "root"
    for version in ("18.1.0", "18.2.0"):
        installed(root, f"opt/teleport/default/versions/{version}/bin/teleport")
    installed(root, "srv/bin/teleport")
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/teleport").symlink_to(root / "opt/teleport/default/versions/18.2.0/bin/teleport")
    # /proc/PID/exe reads "PATH (deleted)" once the file was replaced: a file of that name stands for the inode
    binary = installed(root, runs) if runs.endswith(" (deleted)") else root / runs
    proc = tmp_path / "proc"
    proc.mkdir()
    fake_proc(proc, 10, str(binary), 4294967295)
    entry = None if listed is None else listed if listed.startswith("memfd:") else str(root / listed)
    trust = doctor.parse_options([f"teleport_exe={entry}"] if entry else [])["teleport_exe"]
    (check,) = doctor.process_checks(teleportconf.daemons(str(proc)), str(proc), trust=trust)
    assert (check.name, check.status) == ("teleport pid 10", verdict) and says in check.message, check


@pytest.mark.parametrize("mode", [0o775, 0o757])
def test_a_running_teleport_binary_others_can_write_fails(tmp_path: Path, mode: int) -> None:
    binary = installed(tmp_path, "bin/teleport", mode)
    fake_proc(tmp_path, 10, str(binary), 4294967295)
    (check,) = doctor.process_checks(teleportconf.daemons(str(tmp_path)), str(tmp_path), trust=())
    assert check.status == "fail" and f"mode {mode:04o}" in check.message and "chmod go-w" in check.fix, check


PAM_ON = "ssh_service:\n  pam:\n    enabled: true\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PAM_ON, ["pass"]),
        ("ssh_service:\n  pam:\n    enabled: yes\n    service_name: teleport\n", ["pass"]),
        # Teleport's ParseBool (api/utils), case-insensitive: all of these enable PAM ...
        *(
            (f"ssh_service:\n  pam:\n    enabled: {word}\n", ["pass"])
            for word in ("on", "Yes", "TRUE", "y", "yeah", "1")
        ),
        ('ssh_service:\n  pam:\n    enabled: "on"\n', ["pass"]),
        # ... and anything else leaves it off.
        *(
            (f"ssh_service:\n  pam:\n    enabled: {word}\n", ["fail"])
            for word in ("no", "off", "0", "2", "enabled", '""')
        ),
        ("ssh_service:\n  pam:\n    enabled: [true]\n", ["fail"]),
        ("ssh_service:\n  enabled: true\n", ["fail"]),
        ("ssh_service: [unclosed\n", ["fail"]),
        ("", ["fail"]),
        # environment: entries are applied after Teleport's own TELEPORT_* values.
        (PAM_ON + "    environment:\n      TELEPORT_USERNAME: '{{external.email}}'\n", ["fail"]),
        (PAM_ON + "    environment:\n      TELEPORT_LOGIN: root\n      TELEPORT_ROLES: x\n", ["fail", "fail"]),
        (PAM_ON + "    environment:\n      DEPARTMENT: '{{external.dept}}'\n", ["pass"]),
        # pam_putenv takes the name up to the first '=' of the C string KEY=VALUE, which ends at a NUL:
        # these keys set (or, without '=', remove) the variable, in the logins where Go's map order puts
        # them after Teleport's own key.
        (PAM_ON + "    environment:\n      TELEPORT_USERNAME=alice: x\n", ["fail"]),
        (PAM_ON + '    environment:\n      "TELEPORT_USERNAME=alice\\0": x\n', ["fail"]),
        (PAM_ON + '    environment:\n      "TELEPORT_USERNAME\\0x": x\n', ["fail"]),
        (PAM_ON + '    environment:\n      "TELEPORT_LOGIN=": x\n      TELEPORT_ROLES=a b: c\n', ["fail", "fail"]),
        (PAM_ON + "    environment:\n      TELEPORT_USERNAME: a\n      TELEPORT_USERNAME=b: c\n", ["fail", "fail"]),
        # Other names, as PAM's environment is case-sensitive and a space belongs to the name.
        *(
            (PAM_ON + f"    environment:\n      {key}: x\n", ["pass"])
            for key in ("teleport_username", "'TELEPORT_USERNAME '", "TELEPORT_USERNAMES", "X=TELEPORT_USERNAME")
        ),
        (PAM_ON + "    environment:\n      - TELEPORT_USERNAME\n", ["pass"]),  # not a map: it names no variable
        # YAML null: Teleport's string stays empty, so PAM is off, and the service is sshd
        ("ssh_service:\n  pam:\n    enabled: ~\n", ["fail"]),
    ],
)
def test_teleport_config(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "teleport.yaml"
    path.write_text(text)
    checks = list(doctor.teleport_config_checks(teleportconf.Source(str(path))))
    assert [check.status for check in checks] == expected, checks
    for check in checks:
        if "environment" in check.message:
            assert check.message.endswith("as Teleport knows them")
            assert check.fix.startswith(("remove TELEPORT_", "remove 'TELEPORT_"))


@pytest.mark.parametrize(
    ("key", "name", "removes"),
    [
        ("TELEPORT_USERNAME", "TELEPORT_USERNAME", False),  # Teleport's KEY=VALUE: sets it
        ("TELEPORT_USERNAME=alice", "TELEPORT_USERNAME", False),
        ("TELEPORT_USERNAME=alice\0ignored", "TELEPORT_USERNAME", False),
        ("TELEPORT_USERNAME\0=x", "TELEPORT_USERNAME", True),  # the C string is TELEPORT_USERNAME: removes it
        ("\0TELEPORT_USERNAME", "", True),
        ("=TELEPORT_USERNAME", "", False),
        ("TELEPORT_USERNAME ", "TELEPORT_USERNAME ", False),
    ],
)
def test_putenv_name(key: str, name: str, removes: bool) -> None:
    assert teleportconf.putenv_name(key) == name
    assert teleportconf.putenv_removes(key) is removes


def test_missing_teleport_config(tmp_path: Path) -> None:
    (check,) = doctor.teleport_config_checks(teleportconf.Source(str(tmp_path / "none.yaml")))
    assert check.status == "warn"


@pytest.mark.parametrize(
    ("argv", "config"),
    [
        (["teleport", "start"], "/etc/teleport.yaml"),
        (["/usr/local/bin/teleport", "start", "--config", "/etc/teleport/t.yaml"], "/etc/teleport/t.yaml"),
        (["teleport", "start", "--config=/srv/t.yaml", "--pid-file=/run/teleport.pid"], "/srv/t.yaml"),
        (["teleport", "start", "-c", "t.yaml"], "t.yaml"),
        (["teleport", "start", "-c/srv/t.yaml"], "/srv/t.yaml"),
        (["teleport", "--debug", "start", "-d", "--config", "/a.yaml"], "/a.yaml"),
        (["teleport", "start", "--", "--config", "/not-a-flag.yaml"], "/etc/teleport.yaml"),
        # kingpin bundles booleans before a flag that takes a value
        (["teleport", "start", "-dc", "/b.yaml"], "/b.yaml"),
        (["teleport", "start", "-dc/b.yaml"], "/b.yaml"),
        (["teleport", "start", "-r", "node", "-c", "/c.yaml"], "/c.yaml"),
        (["teleport", "start", "-dr", "node"], "/etc/teleport.yaml"),
        (["teleport", "exec"], None),  # the session child
        (["teleport", "networking"], None),
        (["teleport"], None),
        (["teleport", "configure", "--output", "/etc/teleport.yaml"], None),
    ],
)
def test_the_config_of_a_teleport_command_line(argv: list[str], config: str | None) -> None:
    assert teleportconf.start_config(argv) == config


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["teleport", "start"], {}, None),
        (["teleport", "start", "--config-string", "QQ=="], {}, ("QQ==", "--config-string")),
        (["teleport", "start", "--config-string=QQ=="], {"TELEPORT_CONFIG": "Qg=="}, ("QQ==", "--config-string")),
        (["teleport", "start"], {"TELEPORT_CONFIG": "Qg=="}, ("Qg==", "TELEPORT_CONFIG")),
        (["teleport", "start"], {"TELEPORT_CONFIG": ""}, None),  # empty: kingpin leaves the flag unset
        (["teleport", "start", "--", "--config-string", "QQ=="], {}, None),
    ],
)
def test_a_config_string(argv: list[str], environ: dict[str, str], expected: tuple[str, str] | None) -> None:
    assert teleportconf.config_string(argv, environ) == expected


def test_the_running_daemons_config_is_the_one_checked(tmp_path: Path) -> None:
    """Found from /proc: `teleport start`'s own --config (relative to its working folder), never a
    session child's command line; a config given that differs from the running one is warned of."""
    proc, work = tmp_path / "proc", tmp_path / "work"
    proc.mkdir()
    work.mkdir()
    assert teleportconf.daemons(str(proc)) == []
    assert teleportconf.chosen(None, []) == teleportconf.Source(teleportconf.DEFAULT_CONFIG)
    for pid, argv in ((30, ("teleport", "exec")), (20, ("teleport", "start", "-c", "conf/t.yaml", "-d"))):
        folder = fake_proc(proc, pid, "/opt/teleport/default/bin/teleport", 4294967295, argv=argv)
        (folder / "cwd").unlink()
        (folder / "cwd").symlink_to(work)
    running = str(work / "conf" / "t.yaml")
    found = teleportconf.daemons(str(proc))
    assert [(daemon.pid, daemon.source) for daemon in found] == [(20, teleportconf.Source(running, pid=20))]
    config = teleportconf.chosen(None, found)
    assert config.path == running and config.inline is None
    assert teleportconf.chosen("/etc/other.yaml", found) == teleportconf.Source("/etc/other.yaml")
    assert list(doctor.config_choice_checks(config, found)) == []
    (warning,) = doctor.config_choice_checks(teleportconf.Source("/etc/teleport.yaml"), found)
    assert (warning.name, warning.status) == ("teleport config", "warn")
    assert warning.message.startswith(f"teleport pid 20 runs with {running}, not /etc/teleport.yaml")
    assert warning.fix == f"run doctor with --teleport-config {running}"


def test_a_config_string_replaces_the_file(tmp_path: Path) -> None:
    """`--config-string` (or TELEPORT_CONFIG in its environment) is what Teleport reads, whatever file
    is on disk: doctor checks that, and says so when another config is given."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (tmp_path / "teleport.yaml").write_text(PAM_ON)  # on disk: PAM on; not what runs
    inline = base64.b64encode(b"ssh_service:\n  pam:\n    enabled: off\n").decode()
    fake_proc(proc, 40, "/usr/local/bin/teleport", 4294967295, environ=("HOME=/root", f"TELEPORT_CONFIG={inline}"))
    (daemon,) = teleportconf.daemons(str(proc))
    config = teleportconf.chosen(None, [daemon])
    assert (config.inline, config.via, str(config)) == (inline, "TELEPORT_CONFIG", "teleport pid 40's TELEPORT_CONFIG")
    (check,) = doctor.teleport_config_checks(config)
    assert (check.status, check.message) == (
        "fail",
        "ssh_service.pam.enabled is not true in teleport pid 40's TELEPORT_CONFIG",
    )
    given = teleportconf.Source(str(tmp_path / "teleport.yaml"))
    (warning,) = doctor.config_choice_checks(given, [daemon])
    assert warning.message.startswith(f"teleport pid 40 runs with its TELEPORT_CONFIG, not {given.path}")
    (check,) = doctor.teleport_config_checks(teleportconf.Source("/x", "not base64!", "--config-string", 40))
    assert check.status == "fail" and check.message.startswith("cannot read teleport pid 40's --config-string: ")


def test_check_line_has_the_fix_only_when_not_passing() -> None:
    assert doctor.Check("x", "pass", "fine", "do y").line() == "PASS  x: fine."
    assert doctor.Check("x", "fail", "broken", "do y").line() == "FAIL  x: broken. Fix: do y"


class FakeDisk:
    """os.statvfs of a 1000 MB filesystem with `free` MB left."""

    def __init__(self, free: float) -> None:
        self.f_frsize = 1 << 20
        self.f_blocks = 1000
        self.f_bavail = free


@pytest.mark.parametrize(
    ("conf", "free", "verdict", "says"),
    [
        ("", 500, "pass", "500 MB free"),
        ("", 70, "warn", "at or below space_left (75)"),
        ("", 50, "fail", "admin_space_left_action SUSPEND stops the records"),  # auditd's defaults
        ("admin_space_left = 20%\nadmin_space_left_action = HALT\n", 150, "fail", "HALT"),  # % of the filesystem
        ("admin_space_left_action = SYSLOG\n", 10, "warn", "action SYSLOG"),  # logs on: nothing lost
    ],
    ids=["room", "space-left", "suspended", "percent-halt", "syslog-only"],
)
def test_log_disk(tmp_path: Path, conf: str, free: float, verdict: str, says: str) -> None:
    (tmp_path / "auditd.conf").write_text(f"log_file = /var/log/audit/audit.log\n{conf}")
    (check,) = doctor.log_disk_checks(str(tmp_path), lambda folder: FakeDisk(free))  # type: ignore[arg-type,return-value]
    assert (check.name, check.status) == ("audit log disk", verdict) and says in check.message, check


@pytest.mark.parametrize(("value", "service"), [("~", "sshd"), ("null", "sshd"), ("", "sshd"), ("tp", "tp")])
def test_a_null_service_name_is_teleports_default(tmp_path: Path, value: str, service: str) -> None:
    path = tmp_path / "teleport.yaml"
    path.write_text(f"ssh_service:\n  pam:\n    enabled: yes\n    service_name: {value}\n")
    assert teleportconf.service_file(teleportconf.Source(str(path))) == f"/etc/pam.d/{service}"


def test_a_wrapped_config_string_is_read_as_teleport_reads_it(tmp_path: Path) -> None:
    """`TELEPORT_CONFIG="$(base64 teleport.yaml)"`: GNU base64 wraps at 76 columns; Go skips line breaks."""
    text = PAM_ON + "    service_name: " + "x" * 100 + "\n"
    wrapped = base64.encodebytes(text.encode()).decode()  # lines of 76
    assert "\n" in wrapped.strip()
    source = teleportconf.Source("/x", wrapped, "TELEPORT_CONFIG", 7)
    assert teleportconf.pam_settings(teleportconf.read(source)).service == "x" * 100


def test_two_daemons_with_the_same_config_are_not_warned_of(tmp_path: Path) -> None:
    """The same text by flag in one and by environment in the other, or the same file: one config."""
    inline = base64.b64encode(PAM_ON.encode()).decode()
    proc = tmp_path / "proc"
    proc.mkdir()
    fake_proc(proc, 50, "/usr/local/bin/teleport", 4294967295, argv=("teleport", "start", f"--config-string={inline}"))
    fake_proc(
        proc, 51, "/usr/local/bin/teleport", 4294967295, environ=(f"TELEPORT_CONFIG={inline}", "TELEPORT_CONFIG=x")
    )
    running = teleportconf.daemons(str(proc))
    assert [d.source.via for d in running] == ["--config-string", "TELEPORT_CONFIG"]
    assert running[1].source.inline == inline  # the first of a duplicated variable, as getenv finds it
    assert list(doctor.config_choice_checks(teleportconf.chosen(None, running), running)) == []


@pytest.mark.parametrize(
    ("conf", "plugins", "verdict", "says"),
    [
        ("write_logs = yes\n", [], "pass", "auditd writes /srv/audit/audit.log"),
        ("Write_Logs = NO\n", [], "fail", "auditd keeps no record"),  # keys and values in any case, as auditd
        ("write_logs = no\n", ["au-remote", "syslog"], "warn", "hands records only to au-remote, syslog"),
        ("write_logs = no\n", ["af_unix-off"], "fail", "no plugin is active"),
        # auditd 3.0.9 still reads the deprecated NOLOG as write_logs = no (seen: no log file made)
        ("log_format = NOLOG\n", [], "fail", "log_format = NOLOG (deprecated"),
        ("log_format = nolog\nwrite_logs = yes\n", ["au-remote"], "warn", "log_format = NOLOG (deprecated"),
        # An aggregator's setting: auditd never registers with the kernel, whatever it writes or hands on.
        ("local_events = NO\n", ["au-remote"], "fail", "local_events = no: auditd takes no record of this host"),
        ("local_events = no\nwrite_logs = no\n", [], "fail", "local_events = no: auditd takes no record"),
        ("local_events = yes\n", [], "pass", "auditd writes /srv/audit/audit.log"),
    ],
    ids=[
        "writes",
        "nothing-kept",
        "plugins-only",
        "plugin-off",
        "nolog",
        "nolog-plugin",
        "aggregate-only",
        "aggregate-only-no-log",
        "local-events",
    ],
)
def test_a_host_whose_auditd_writes_no_log_is_named(
    tmp_path: Path, conf: str, plugins: list[str], verdict: str, says: str
) -> None:
    """write_logs = no: records go only to plugins, and search here reads a log that stopped;
    local_events = no: the kernel gives auditd nothing of this host."""
    (tmp_path / "plugins.d").mkdir()
    for name in plugins:
        active = "no" if name.endswith("-off") else "yes"
        (tmp_path / "plugins.d" / f"{name}.conf").write_text(f"active = {active}\ndirection = out\n")
    (tmp_path / "auditd.conf").write_text(f"LOG_FILE = /srv/audit/audit.log\n{conf}")
    (check,) = doctor.log_write_checks(str(tmp_path))
    assert (check.name, check.status) == ("audit log", verdict) and says in check.message, check


def test_the_log_disk_check_reads_an_upper_case_log_file(tmp_path: Path) -> None:
    """auditd looks its keywords up with strcasecmp: `LOG_FILE = ...` is its log_file."""
    (tmp_path / "auditd.conf").write_text("LOG_FILE = /srv/audit/audit.log\n")
    seen = []
    (check,) = doctor.log_disk_checks(str(tmp_path), lambda folder: seen.append(folder) or FakeDisk(500))  # type: ignore[arg-type,return-value,func-returns-value]
    assert seen == ["/srv/audit"] and "/srv/audit" in check.message


@pytest.mark.parametrize(
    ("conf", "verdict"),
    [
        ("", "fail"),
        ("name_format = NONE\n", "fail"),
        ("NAME_FORMAT = hostname\n", "pass"),
        ("name_format = user\n", "fail"),  # auditd: "User defined name missing", it does not start
        ("name_format = user\nname = web-17\n", "pass"),
    ],
)
def test_a_sender_without_node_names_is_named(tmp_path: Path, conf: str, verdict: str) -> None:
    """au-remote on with name_format none: the collector gets records without node=, and search there
    cannot keep two hosts' sessions with the same ses apart."""
    (tmp_path / "plugins.d").mkdir()
    (tmp_path / "plugins.d" / "au-remote.conf").write_text("active = yes\n")
    (tmp_path / "audisp-remote.conf").write_text("remote_server =\n")
    (tmp_path / "auditd.conf").write_text(conf)
    checks = {c.name: c for c in doctor.remote_checks(str(tmp_path), proc=str(tmp_path), timeout=0.1)}
    assert checks["node name"].status == verdict, checks["node name"]
    assert "sender log format" not in checks


@pytest.mark.parametrize("log_format", ["NOLOG", "nolog"])
def test_a_sender_with_log_format_nolog_fails(tmp_path: Path, log_format: str) -> None:
    """log_format = NOLOG on a sender: a collector got its records as `audit(T:N): ...` lines, with neither
    node= nor type= (auditd 3.0.9, following docs/fleet.md), which search there cannot read."""
    (tmp_path / "plugins.d").mkdir()
    (tmp_path / "plugins.d" / "au-remote.conf").write_text("active = yes\n")
    (tmp_path / "audisp-remote.conf").write_text("remote_server =\n")
    (tmp_path / "auditd.conf").write_text(f"name_format = user\nname = host-n\nlog_format = {log_format}\n")
    checks = {c.name: c for c in doctor.remote_checks(str(tmp_path), proc=str(tmp_path), timeout=0.1)}
    assert checks["sender log format"].status == "fail", checks


# (daemon, lines appended to a valid config, whether the daemon then exits at start), each run with the real
# auditd and audisp-remote of Debian 12 (3.0.9), 13 (4.0.2) and forky (4.1.2) and Ubuntu 24.04 (3.1.2) and
# 26.04 (4.1.2): tests/system/test_doctor.py runs them again on every release. What the daemon says is in the
# comments. Besides True and False: "skipped" (it starts without that line: doctor warns), "listener" (refused
# where auditd has its TCP listener, Debian's; Ubuntu's ignores tcp_* values), and (VERSION, before, from):
# refused before that auditd version is `before`, from it on `from`. {tmp} is the test's folder, which holds
# nobody.log, a file owned by nobody.
CONF_LINES: list[tuple[str, str, object]] = [
    ("auditd", "log_format = ENRICHED # comment", True),  # 'Keyword "log_format" has invalid option "#"'
    ("auditd", "log_format=ENRICHED", True),  # "Wrong number of arguments", "Not processing any more lines"
    ("auditd", "log_format = ENRICHED RAW", True),
    ("auditd", "log_format\t=\tENRICHED", True),  # only spaces separate words
    ("auditd", "\tlog_format = ENRICHED", True),  # 'Unknown keyword "\tlog_format"'
    ("auditd", "log_format = ENRICHED\t", True),  # 'Option ENRICHED\t not found'
    ("auditd", "log_format = ENRICHED\r", True),  # a file written on Windows
    ("auditd", "disp_qos = lossy # why", True),
    ("auditd", "max_log_file_action = ROTATE # why", True),  # takes no option, unlike space_left_action
    ("auditd", "\t", True),
    ("auditd", "log_format = ENRICHED   ", False),
    ("auditd", "   LOG_FORMAT = enriched", False),
    ("auditd", "space_left_action = exec /bin/true", False),
    ("auditd", "space_left_action = SYSLOG # why", False),
    ("auditd", "admin_space_left_action = exec /bin/true # why", False),
    ("auditd", "# log_format = ENRICHED # a comment may hold anything", False),
    ("auditd", "", False),
    # Values each keyword's parser refuses: "Option X not found", "Value X should only be numbers", ...
    ("auditd", "log_format = ENRICHED#x", True),
    ("auditd", "no_such_keyword = 1", True),  # 'Unknown keyword "no_such_keyword"'
    ("auditd", "num_logs = 1000", True),  # "num_logs must be 999 or less"
    ("auditd", "num_logs = 999", False),
    ("auditd", "max_log_file_action = rotat", True),
    ("auditd", "max_log_file_action = keep_logs", False),
    ("auditd", "max_log_file_action = exec", True),  # 4.1: "Executable path needed"; before: not an option
    ("auditd", "max_log_file_action = exec /bin/true", True),  # 4.1 too: 'has invalid option "/bin/true"'
    ("auditd", "flush = async", True),
    ("auditd", "flush = DATA", False),
    ("auditd", "write_logs = true", True),
    ("auditd", "write_logs = NO", False),
    ("auditd", "local_events = 1", True),
    ("auditd", "q_depth = 100000", True),  # "q_depth must be 99999 or less"
    ("auditd", "q_depth = 99999", False),
    ("auditd", "q_depth = 10", False),  # "q_depth should be larger than 512": a warning only
    ("auditd", "q_depth = -1", True),
    ("auditd", "priority_boost = 2147483648", True),  # "converted number ... is too large"
    ("auditd", "max_log_file = 99999999999999999999999", True),  # "Numerical result out of range"
    ("auditd", "max_log_file = 0", False),
    ("auditd", "end_of_event_timeout = 2s", True),
    ("auditd", "space_left = 100%", True),  # "Percentages should be less than 100"
    ("auditd", "space_left = 99%", False),
    ("auditd", "space_left = 75MB", True),
    ("auditd", "space_left = 7 5", True),  # 'invalid option "5"'
    ("auditd", "log_file = /nonexistent/audit.log", True),  # "Could not open dir /nonexistent"
    ("auditd", "log_file = /a/x", True),  # "The directory name: /a is too short"
    ("auditd", "log_file = /tmp", True),  # its folder, /, is too short
    ("auditd", "log_file = {tmp}/nobody.log", True),  # "is not owned by root"
    ("auditd", "log_file = /tmp/pta-no-such.log", False),  # auditd creates it
    ("auditd", "log_group = nosuchgroup", True),  # "Group ID is non-numeric and unknown"
    ("auditd", "log_group = 12345", False),
    ("auditd", "plugin_dir = /nonexistent", False),  # starts with no plugins ("No plugins found")
    ("auditd", "disk_full_action = exec /missing", True),  # "Unable to stat /missing"
    ("auditd", "disk_full_action = exec /etc/passwd", True),  # "permissions should be 0750, 0755, 0555 or 0550"
    ("auditd", "disk_full_action = exec bin/true", True),  # "Absolute path needed"
    ("auditd", "disk_full_action = exec", True),  # "Executable path needed"
    ("auditd", "disk_full_action = exec /bin/true", False),
    ("auditd", "space_left_action = exec /tmp", True),  # "is not a regular file"
    ("auditd", "disk_full_action = email", True),  # "Illegal option email for disk_full_action"
    ("auditd", "disk_error_action = rotate", True),
    ("auditd", "space_left_action = email", False),  # only says /usr/lib/sendmail is not executable
    ("auditd", "space_left_action = halt", ((4, 0, 4), False, True)),  # "The HALT option ... has been deprecated"
    ("auditd", "admin_space_left_action = halt", False),
    ("auditd", "overflow_action = rotate", True),
    ("auditd", "overflow_action = halt", False),
    ("auditd", "verify_email = maybe", True),
    ("auditd", "action_mail_acct = a", True),  # "is too short"
    ("auditd", "action_mail_acct = root@localhost", True),  # "should have . after @"
    ("auditd", "action_mail_acct = r!oot", True),  # "has illegal character"
    ("auditd", "action_mail_acct = foo+bar@example.com", ((4, 0, 5), True, False)),
    ("auditd", "action_mail_acct = root@example.invalid", False),  # a lookup failure is not a refusal
    ("auditd", "verify_email = no\naction_mail_acct = r!oot", False),
    ("auditd", "transport = udp", True),
    ("auditd", "transport = KRB5", False),
    ("auditd", "enable_krb5 = maybe", True),
    ("auditd", "distribute_network = perhaps", True),
    ("auditd", "use_libwrap = maybe", True),
    ("auditd", "max_restarts = x", True),
    ("auditd", "tcp_listen_port = 0", "listener"),  # "converted number (0) is too small"
    ("auditd", "tcp_listen_port = 70000", "listener"),
    ("auditd", "tcp_listen_port = 60", False),
    ("auditd", "tcp_max_per_addr = 2000", "listener"),
    ("auditd", "tcp_client_ports = 2-1", "listener"),  # "converted range (2-1) is reversed"
    ("auditd", "tcp_client_ports = 1024-65535", False),
    ("auditd", "tcp_listen_queue = 0", "listener"),
    ("auditd", "report_interval = 1h", ((4, 0, 5), True, False)),  # a keyword 3.x and 4.0.2 do not know
    ("auditd", "report_interval = 1y", True),  # 4.1: "Unknown time unit"
    ("auditd", "dispatcher = /sbin/nothing", False),  # deprecated, ignored
    ("auditd", "name = foo bar", True),
    # Values checked together once the file is read (sanity_check) or at start (resolve_node).
    ("auditd", "space_left = 50", True),  # "space_left(50) must be larger than admin_space_left(50)"
    ("auditd", "admin_space_left = 100", True),
    ("auditd", "space_left = 10%\nadmin_space_left = 20%", False),  # percentages are not compared
    ("auditd", "freq = 0", True),  # "incremental flushing chosen, but 0 selected for freq"
    ("auditd", "flush = none\nfreq = 0", False),
    ("auditd", "log_group = adm\nlog_file = /var/log/audit.log", True),  # "chgrp will alter a system directory"
    ("auditd", "log_group = 0\nlog_file = /var/log/audit.log", False),
    ("auditd", "name_format = user", True),  # "User defined name missing": exit 1 at start
    ("auditd", "name_format = user\nname = web-1", False),
    ("auditd", "log_file = /var/log/audit/" + "x" * 140, "skipped"),  # "Skipping line 44 ...: too long"
    ("auditd", "name = " + "x" * 151, False),  # 158 characters and a newline: what fgets reads into 160 bytes
    ("auditd", "name = " + "x" * 152, "skipped"),
    ("audisp-remote", "port = 60 # why", True),
    ("audisp-remote", "port\t= 60", True),
    ("audisp-remote", "port=60", True),
    ("audisp-remote", "port = 60", False),
    ("audisp-remote", "network_failure_action = stop # why", False),  # every *_action takes an option
    ("audisp-remote", "network_failure_action = exec /bin/true", False),
    ("audisp-remote", "port = 70000", True),
    ("audisp-remote", "port = sixty", True),
    ("audisp-remote", "transport = udp", True),
    ("audisp-remote", "transport = KRB5", False),
    ("audisp-remote", "format = json", True),
    ("audisp-remote", "format = ascii", False),
    ("audisp-remote", "mode = store", True),
    ("audisp-remote", "mode = forward\nformat = ascii", True),  # '"mode=forward" is valid only with "format=managed"'
    ("audisp-remote", "mode = forward\nqueue_file = /nonexistent/q", True),  # exit 1: no queue
    ("audisp-remote", "queue_file = /nonexistent/q", False),  # mode immediate keeps its queue in memory
    ("audisp-remote", "queue_file = relative/q", True),
    ("audisp-remote", "queue_depth = 0", True),
    ("audisp-remote", "local_port = any", False),
    ("audisp-remote", "local_port = 70000", True),
    ("audisp-remote", "port = any", True),  # `any` is local_port's only
    ("auditd", "log_group = root\nlog_file = /var/log/audit.log", False),  # gid 0: no chgrp
    ("audisp-remote", "network_retry_time = 0", True),
    ("audisp-remote", "heartbeat_timeout = -1", True),
    ("audisp-remote", "network_failure_action = exec /missing", True),
    ("audisp-remote", "network_failure_action = exec /etc/passwd", True),  # "permissions should be 0750"
    ("audisp-remote", "network_failure_action = reconnect", True),
    ("audisp-remote", "remote_ending_action = reconnect", False),
    ("audisp-remote", "startup_failure_action = stop", True),  # "startup_failure_action has invalid option"
    ("audisp-remote", "startup_failure_action = exec /bin/true", False),
    ("audisp-remote", "overflow_action = stop", True),
    ("audisp-remote", "enable_krb5 = maybe", True),
    ("audisp-remote", "no_such = 1", True),
    ("audisp-remote", "remote_server = nosuch.invalid", False),  # a name that does not resolve: it starts
    ("audisp-remote", "queue_file = /var/spool/audit/" + "x" * 110, True),  # read as two lines: 'x...' has no =
    ("audisp-remote", "krb5_principal = " + "x" * 110, False),  # 127 characters: one piece, then an empty line
    ("audisp-remote", "krb5_principal = " + "x" * 111, True),  # 128: a second piece, `x`
]
# The releases measured: (auditd version, built with its TCP listener).
BUILDS = [
    auditlog.AuditBuild((3, 0, 9)),
    auditlog.AuditBuild((3, 1, 2), listener=False),
    auditlog.AuditBuild((4, 0, 2)),
    auditlog.AuditBuild((4, 1, 2)),
    auditlog.AuditBuild((4, 1, 2), listener=False),
]
# A valid config of each (Debian 12's stock files, with a server and the test's folders).
CONF_BASES = {
    "auditd": "local_events = yes\nwrite_logs = yes\nlog_file = {tmp}/audit.log\nlog_group = adm\n"
    "log_format = ENRICHED\nflush = INCREMENTAL_ASYNC\nfreq = 50\nmax_log_file = 8\nnum_logs = 5\n"
    "priority_boost = 4\nname_format = NONE\nmax_log_file_action = ROTATE\nspace_left = 75\n"
    "space_left_action = SYSLOG\nverify_email = yes\naction_mail_acct = root\nadmin_space_left = 50\n"
    "admin_space_left_action = SUSPEND\ndisk_full_action = SUSPEND\ndisk_error_action = SUSPEND\n"
    "use_libwrap = yes\ntcp_listen_queue = 5\ntcp_max_per_addr = 1\ntcp_client_max_idle = 0\ntransport = TCP\n"
    "krb5_principal = auditd\ndistribute_network = no\nq_depth = 2000\noverflow_action = SYSLOG\n"
    "max_restarts = 10\nplugin_dir = {tmp}/plugins.d\nend_of_event_timeout = 2\n",
    "audisp-remote": "remote_server = 127.0.0.1\nport = 60\ntransport = tcp\nqueue_file = /var/spool/audit/remote.log\n"
    "mode = immediate\nqueue_depth = 10240\nformat = managed\nnetwork_retry_time = 1\nmax_tries_per_record = 3\n"
    "max_time_per_record = 5\nheartbeat_timeout = 0 \nnetwork_failure_action = stop\ndisk_low_action = ignore\n"
    "disk_full_action = warn_once\ndisk_error_action = warn_once\nremote_ending_action = reconnect\n"
    "generic_error_action = syslog\ngeneric_warning_action = syslog\nqueue_error_action = stop\n"
    "overflow_action = syslog\nstartup_failure_action = warn_once_continue\n",
}


def expected_refusal(refused: object, build: auditlog.AuditBuild) -> bool | str:
    """A CONF_LINES verdict on this build: True, False or "skipped"."""
    if refused == "listener":
        return build.listener
    if isinstance(refused, tuple):
        since, before, after = refused
        return after if build.version is None or build.version >= since else before
    return refused  # type: ignore[return-value]


def conf_folder(tmp_path: Path) -> Path:
    """The test's folder for CONF_LINES: plugins.d and nobody.log, a log file owned by nobody."""
    (tmp_path / "plugins.d").mkdir(exist_ok=True)
    log = tmp_path / "nobody.log"
    log.write_text("")
    os.chown(log, 65534, 65534)
    return tmp_path


def assert_doctor_verdict(problems: list[auditlog.ConfProblem], expect: bool | str, first: int) -> None:
    """Refused: a refusal, on an appended line (or the file as a whole); else none, and "skipped" a warning."""
    refused = [p for p in problems if p.refused]
    assert bool(refused) is (expect is True), problems
    assert all(p.line == 0 or p.line >= first for p in refused), (first, problems)
    assert bool(problems) is (expect is not False), problems


@pytest.mark.parametrize("build", BUILDS, ids=lambda b: f"{'.'.join(map(str, b.version))}{'' if b.listener else '-nl'}")
@pytest.mark.parametrize(("daemon", "line", "refused"), CONF_LINES)
def test_lines_the_audit_daemons_refuse_are_found(
    tmp_path: Path, daemon: str, line: str, refused: object, build: auditlog.AuditBuild
) -> None:
    """A comment after a value, `key=value`, a tab, a value the keyword's parser refuses, values that do not
    go together: auditd or audisp-remote exits at its next start; a line too long: auditd skips it."""
    folder = conf_folder(tmp_path)
    base = CONF_BASES[daemon].format(tmp=folder)
    conf = folder / "daemon.conf"
    conf.write_bytes(f"# a valid config\n\n{base}{line.replace('{tmp}', str(folder))}\n".encode())
    problems = auditlog.conf_problems(str(conf), daemon, build)
    assert_doctor_verdict(problems, expected_refusal(refused, build), base.count("\n") + 3)


@pytest.mark.parametrize(
    ("daemon", "line", "why"),
    [
        ("auditd", "disk_full_action = exec /missing", "disk_full_action = exec /missing: No such file or directory"),
        ("auditd", "disk_full_action = exec bin/true", "disk_full_action = exec bin/true: not an absolute path"),
        ("auditd", "disk_full_action = exec", "disk_full_action = exec: `exec` needs a path after it"),
        ("auditd", "space_left_action = exec /tmp", "space_left_action = exec /tmp: not a regular file owned by root"),
        ("auditd", "space_left_action = exec {tmp}/x", "space_left_action = exec {tmp}/x: mode 700: auditd takes"),
        ("audisp-remote", "disk_low_action = exec {tmp}/x", "disk_low_action = exec {tmp}/x: mode 700: audisp-remote"),
        ("auditd", "disk_full_action = hlat", "disk_full_action = hlat: auditd takes ignore syslog rotate exec"),
    ],
)
def test_a_refused_exec_path_is_named_not_called_a_value_the_keyword_takes(
    tmp_path: Path, daemon: str, line: str, why: str
) -> None:
    """doctor's message names the path and what is wrong with it (it said `space_left_action = exec: auditd
    takes /missing: No such file or directory`); a word the keyword does not take still lists its words."""
    folder = conf_folder(tmp_path)
    (folder / "x").write_text("")
    os.chmod(folder / "x", 0o700)  # root's (the unit suite runs as root, as the conf tests need)
    conf = folder / "daemon.conf"
    conf.write_text(f"{CONF_BASES[daemon].format(tmp=folder)}{line.format(tmp=folder)}\n")
    problems = [str(p) for p in auditlog.conf_problems(str(conf), daemon, auditlog.AuditBuild((4, 0, 2)))]
    assert len(problems) == 1, problems
    assert problems[0].split(": ", 1)[1].startswith(why.format(tmp=folder)), problems


@pytest.mark.parametrize(
    ("version", "daemon", "line", "refused"),
    [
        # 4.2 (read in its parsers): TLS keywords and transport = tls, in both daemons; before it, unknown.
        ((4, 2, 1), "auditd", "transport = tls", False),
        ((4, 2, 1), "auditd", "tls_psk_file = /etc/audit/psk", False),
        ((4, 2, 1), "auditd", "tls_allowed_clients = /etc/audit/clients", False),
        ((4, 2, 1), "audisp-remote", "tls_crypto_profile = system", False),
        ((4, 1, 2), "auditd", "transport = tls", True),
        ((4, 1, 2), "auditd", "tls_psk_file = /etc/audit/psk", True),
        ((4, 1, 2), "audisp-remote", "transport = tls", True),
        # Past the newest parsers read, or an unknown version: a keyword or word not in the tables may be
        # a new one, so it is not called refused; what the tables do know still is.
        ((4, 2, 1), "auditd", "quic_port = 60", True),
        ((4, 3), "auditd", "quic_port = 60", False),
        ((4, 3), "auditd", "log_format = json", False),
        (None, "audisp-remote", "transport = quic", False),
        ((4, 3), "auditd", "num_logs = 1000", True),
        (None, "auditd", "flush=data", True),
    ],
)
def test_keywords_by_auditd_version(
    tmp_path: Path, version: tuple[int, ...] | None, daemon: str, line: str, refused: bool
) -> None:
    """No false alarm on a newer auditd than the tables were read from, and 4.2's additions known."""
    folder = conf_folder(tmp_path)
    conf = folder / "daemon.conf"
    conf.write_text(CONF_BASES[daemon].format(tmp=folder) + f"{line}\n")
    problems = auditlog.conf_problems(str(conf), daemon, auditlog.AuditBuild(version))
    assert_doctor_verdict(problems, refused, CONF_BASES[daemon].count("\n") + 1)


@pytest.mark.parametrize(
    ("name_format", "host", "refused"),
    [
        ("fqd", "localhost", False),
        ("numeric", "localhost", False),
        ("fqd", "pta-no-such-host", True),  # resolve_node: "Cannot resolve hostname", auditd exits 1
        ("numeric", "pta-no-such-host", True),
        ("hostname", "pta-no-such-host", False),
    ],
)
def test_a_node_name_that_does_not_resolve_stops_auditd(
    tmp_path: Path, name_format: str, host: str, refused: bool
) -> None:
    """name_format fqd or numeric resolves the host's name at start: auditd does not start when it cannot
    (tests/system/test_doctor.py runs auditd with these names)."""
    folder = conf_folder(tmp_path)
    conf = folder / "auditd.conf"
    conf.write_text(CONF_BASES["auditd"].format(tmp=folder) + f"name_format = {name_format}\n")
    problems = auditlog.conf_problems(str(conf), "auditd", BUILDS[0], hostname=host)
    assert [p.refused for p in problems] == ([True] if refused else []), problems
    assert not refused or f"{host} does not resolve" in problems[0].why


@pytest.mark.parametrize(("remote", "verdicts"), [("no", ["fail"]), ("yes", ["fail", "fail"])])
def test_doctor_fails_an_audit_config_that_stops_its_daemon(tmp_path: Path, remote: str, verdicts: list[str]) -> None:
    """auditd.conf always; audisp-remote.conf only when au-remote is active (else nothing starts it)."""
    folder = conf_folder(tmp_path)
    (folder / "plugins.d" / "au-remote.conf").write_text(f"active = {remote}\n")
    auditd, remote_conf = (CONF_BASES[d].format(tmp=folder) for d in ("auditd", "audisp-remote"))
    (folder / "auditd.conf").write_text(f"log_format = ENRICHED # keep names\n{auditd}")
    (folder / "audisp-remote.conf").write_text(f"port=60\n{remote_conf}")
    checks = list(doctor.config_syntax_checks(str(folder), BUILDS[0]))
    assert [c.status for c in checks] == verdicts, checks
    assert "line 1: a comment after the value" in checks[0].message and "auditd exits" in checks[0].message
    # each file's fix names its own manual page (the audisp-remote one said auditd.conf(5))
    assert [c.fix.rsplit("see ", 1)[1] for c in checks] == ["auditd.conf(5))", "audisp-remote.conf(5))"][: len(checks)]
    (folder / "auditd.conf").write_text(f"num_logs = 1000\n{auditd}")
    (check, *_) = doctor.config_syntax_checks(str(folder), BUILDS[0])
    assert check.status == "fail" and "line 1: num_logs = 1000: auditd takes 0 to 999" in check.message, check
    (folder / "auditd.conf").write_text(auditd)
    (folder / "audisp-remote.conf").write_text(remote_conf)
    assert {c.status for c in doctor.config_syntax_checks(str(folder), BUILDS[0])} == {"pass"}


def test_an_auditd_conf_without_space_left_stops_auditd(tmp_path: Path) -> None:
    """space_left and admin_space_left both default to 0, and sanity_check wants space_left larger: auditd
    3.0.9 exits 6 on a file of one line, `log_format = ENRICHED`, which doctor passed."""
    (tmp_path / "auditd.conf").write_text("log_format = ENRICHED\n")
    (check,) = doctor.config_syntax_checks(str(tmp_path), BUILDS[0])
    assert check.status == "fail" and "space_left (0) must be larger than admin_space_left (0): set both" in (
        check.message
    ), check
    (tmp_path / "auditd.conf").write_text("")  # no line at all: auditd checks nothing, and starts
    assert [c.status for c in doctor.config_syntax_checks(str(tmp_path), BUILDS[0])] == ["pass"]


def test_a_line_auditd_skips_is_a_warning(tmp_path: Path) -> None:
    """auditd reads 159 bytes of a line and skips a longer one ("too long"): it starts, without that setting."""
    folder = conf_folder(tmp_path)
    long_path = f"{folder}/{'x' * 150}.log"
    (folder / "auditd.conf").write_text(CONF_BASES["auditd"].format(tmp=folder) + f"log_file = {long_path}\n")
    (check,) = doctor.config_syntax_checks(str(folder), BUILDS[0])
    assert check.status == "warn" and "over 158 characters: auditd skips it" in check.message, check


def test_an_audit_config_with_a_latin1_comment_is_read(tmp_path: Path) -> None:
    """An old comment in ISO-8859-1 made every check that reads auditd.conf raise UnicodeDecodeError."""
    folder = conf_folder(tmp_path)
    base = CONF_BASES["auditd"].format(tmp=folder).encode()
    (folder / "auditd.conf").write_bytes(b"# r\xe9seau de l'usine\n" + base)
    (check,) = doctor.log_write_checks(str(folder))
    assert check.status == "pass" and f"{folder}/audit.log" in check.message, check
    assert [c.status for c in doctor.config_syntax_checks(str(folder), BUILDS[0])] == ["pass"]


def test_a_process_named_in_any_bytes_does_not_stop_the_remote_check(tmp_path: Path) -> None:
    """The remote check looks for audisp-remote among every process's comm, which any user may set to
    bytes that are not UTF-8 (prctl PR_SET_NAME): that raised UnicodeDecodeError."""
    (tmp_path / "plugins.d").mkdir()
    (tmp_path / "plugins.d" / "au-remote.conf").write_text("active = yes\n")
    (tmp_path / "audisp-remote.conf").write_text("remote_server = 127.0.0.1\nport = 1\n")
    (tmp_path / "auditd.conf").write_text("name_format = hostname\n")
    for pid, name in ((100, b"bad\xff\xfename\n"), (200, b"audisp-remote\n")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_bytes(name)
    checks = list(doctor.remote_checks(str(tmp_path), proc=str(tmp_path), timeout=0.1))
    assert not any("no audisp-remote process runs" in c.message for c in checks), checks


def test_a_log_file_that_is_a_symbolic_link_stops_auditd(tmp_path: Path) -> None:
    """auditd's parser follows a log_file link to a root-owned file, then its O_NOFOLLOW open at start fails and
    it exits 1 (run daemonized in tests/system/test_doctor.py: with -f it never opens the log)."""
    folder = conf_folder(tmp_path)
    (folder / "real.log").write_text("")
    (folder / "link.log").symlink_to(folder / "real.log")
    (folder / "auditd.conf").write_text(CONF_BASES["auditd"].format(tmp=folder) + f"log_file = {folder}/link.log\n")
    (check,) = doctor.config_syntax_checks(str(folder), BUILDS[0])
    assert check.status == "fail" and "not a symbolic link" in check.message, check
