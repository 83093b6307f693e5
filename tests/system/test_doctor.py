"""pam-teleport-audit doctor on the real machine, in good and broken states."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pam_teleport_audit.admin.auditlog import audit_build, conf_problems, decode_value
from pam_teleport_audit.admin.doctor import config_syntax_checks, log_write_checks
from pam_teleport_audit.admin.stanza import entry_script
from pam_teleport_audit.pam_module import AuditSocket
from tests.unit.test_doctor import CONF_LINES, conf_folder, expected_refusal

from .conftest import (
    PAM_DIR,
    ROOT,
    audit_switched_off,
    debian_stack,
    driver_argv,
    pid_records,
    run_driver,
    unique,
    wait_for_records,
)
from .fleet import audisp_remote
from .namespaces import private_mounts
from .test_faults import auditd_stopped

STOCK = (ROOT / "tests" / "fixtures" / "pam" / "debian-12" / "sshd").read_text()


def doctor(pam_file: Path, config: Path | None, prefix: tuple[str, ...] = ()) -> tuple[int, dict[str, list[dict]]]:
    """doctor --json on pam_file; config None: no --teleport-config (doctor finds Teleport's)."""
    proc = subprocess.run(
        [
            *prefix,
            sys.executable,
            "-m",
            "pam_teleport_audit",
            "doctor",
            "--json",
            "--pam-file",
            str(pam_file),
            *(["--teleport-config", str(config)] if config else []),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(proc.stdout)
    by_name: dict[str, list[dict]] = {}
    for check in report["checks"]:
        by_name.setdefault(check["name"], []).append(check)
    assert report["ok"] == (proc.returncode == 0)
    return proc.returncode, by_name


def status(by_name: dict[str, list[dict]], name: str) -> str:
    return by_name[name][0]["status"]


@pytest.fixture
def host(tmp_path: Path, pam_service):
    """An installed scratch service and a Teleport config that names it."""
    service = pam_service(STOCK)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pam_teleport_audit",
            "install",
            "--pam-file",
            str(PAM_DIR / service),
            "--entry",
            entry_script(),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    config = tmp_path / "teleport.yaml"
    config.write_text(
        f"version: v3\nssh_service:\n  enabled: true\n  pam:\n    enabled: true\n    service_name: {service}\n"
    )
    return PAM_DIR / service, config


def test_good_host(host) -> None:
    code, checks = doctor(*host)
    assert code == 0, checks
    for name in (
        "kernel audit",
        "auditd",
        "backlog",
        "stanza",
        "failure policy",
        "pam_python",
        "module import",
        "module files",
        "teleport config",
        "audit log disk",
    ):
        assert status(checks, name) == "pass", (name, checks[name])
    assert "pam_loginuid then pam_tty_audit then the module" in checks["stanza"][0]["message"]


def test_audit_disabled_and_auditd_stopped(host) -> None:
    with audit_switched_off():
        code, checks = doctor(*host)
    assert code == 1 and status(checks, "kernel audit") == "fail"
    assert "auditctl -e 1" in checks["kernel audit"][0]["fix"]
    with auditd_stopped():
        code, checks = doctor(*host)
    assert code == 1 and status(checks, "auditd") == "fail"


def test_stanza_missing_out_of_order_and_wrong_policy(host) -> None:
    pam_file, config = host
    installed = pam_file.read_text()
    pam_file.write_text(STOCK)
    code, checks = doctor(pam_file, config)
    assert code == 1 and status(checks, "stanza") == "fail"
    assert "no session block" in checks["stanza"][0]["message"]

    # The session block moved above pam_loginuid.
    lines = installed.splitlines(keepends=True)
    begin = next(i for i, x in enumerate(lines) if x.startswith("# BEGIN pam_teleport_audit session"))
    end = next(i for i, x in enumerate(lines) if x.startswith("# END pam_teleport_audit session"))
    block, rest = lines[begin : end + 1], lines[:begin] + lines[end + 1 :]
    loginuid = next(i for i, x in enumerate(rest) if "pam_loginuid.so" in x and not x.startswith("#"))
    pam_file.write_text("".join(rest[:loginuid] + block + rest[loginuid:]))
    code, checks = doctor(pam_file, config)
    assert code == 1 and "before pam_loginuid" in checks["stanza"][0]["message"]

    # fail_closed with control optional: a refusal would be ignored.
    pam_file.write_text(installed.replace(f"{entry_script()}", f"{entry_script()} fail_closed"))
    code, checks = doctor(pam_file, config)
    assert code == 1 and status(checks, "failure policy") == "fail"


def test_every_entry_script_on_our_lines_is_checked(host, tmp_path: Path) -> None:
    """The session line naming another copy of the module than the account line: each copy is checked."""
    pam_file, config = host
    installed = pam_file.read_text()
    missing = tmp_path / "gone" / "pam_teleport_audit" / "pam_entry.py"
    session = next(x for x in installed.splitlines() if x.startswith("session") and entry_script() in x)
    pam_file.write_text(installed.replace(session, session.replace(entry_script(), str(missing))))
    code, checks = doctor(pam_file, config)
    assert code == 1, checks
    assert [c["status"] for c in checks["module import"]] == ["pass", "fail"], checks["module import"]
    assert entry_script() in checks["module import"][0]["message"]
    assert checks["module import"][1]["message"] == f"entry script {missing} does not exist"


def test_teleport_config_without_pam(host) -> None:
    pam_file, config = host
    config.write_text("ssh_service:\n  enabled: true\n")
    code, checks = doctor(pam_file, config)
    assert code == 1 and status(checks, "teleport config") == "fail"


@pytest.fixture
def fake_daemon(tmp_path: Path):
    """A program named teleport that only sleeps, started as `teleport start ARGS` (root's, 0755)."""
    program = tmp_path / "bin" / "teleport"
    program.parent.mkdir()
    source = tmp_path / "daemon.c"
    source.write_text("#include <unistd.h>\nint main(void) { sleep(60); return 0; }\n")
    subprocess.run(["gcc", "-o", str(program), str(source)], check=True)
    started: list[subprocess.Popen] = []

    def start(*args: str, prefix: tuple[str, ...] = (), **kw: Any) -> subprocess.Popen:
        started.append(subprocess.Popen([*prefix, str(program), "start", *args], **kw))
        time.sleep(0.2)
        return started[-1]

    yield start
    for daemon in started:
        daemon.kill()
        daemon.wait()


def set_loginuid() -> None:
    with open("/proc/self/loginuid", "w") as f:
        f.write("1000")


def doctor_during_a_session(pam_file: Path, config: Path, driver: Path, login: str) -> tuple[int, dict]:
    """doctor while a Teleport-like session runs through pam_file; returns its exit code and the
    checks of teleport processes, by name."""
    argv = driver_argv(driver, pam_file.name, login, user=unique("doc-"), lines=["sleep 3"])
    session = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        code, checks = doctor(pam_file, config)
    finally:
        session.wait(timeout=30)
    assert session.returncode == 0
    return code, {name: cs for name, cs in checks.items() if name.startswith("teleport pid")}


def test_a_teleport_daemon_with_its_loginuid_set(host, fake_daemon, driver, linux_user) -> None:
    """`teleport start` run from a login shell (loginuid 1000) fails; a live session's child, whose
    loginuid pam_loginuid set, as it does in every Teleport session, is not judged."""
    pam_file, config = host
    daemon = fake_daemon("--config", str(config), preexec_fn=set_loginuid)
    code, ours = doctor_during_a_session(pam_file, config, driver, linux_user())
    assert list(ours) == [f"teleport pid {daemon.pid}"], ours
    assert [(c["status"], c["message"]) for c in ours[f"teleport pid {daemon.pid}"]] == [
        ("fail", "its loginuid is 1000, so pam_loginuid cannot give sessions a correct ses")
    ]
    assert code == 1


def test_live_sessions_do_not_fail_a_sound_daemon(host, fake_daemon, driver, linux_user) -> None:
    """A daemon started as systemd does, with a session going on: doctor passes it."""
    pam_file, config = host
    daemon = fake_daemon("--config", str(config))
    _, ours = doctor_during_a_session(pam_file, config, driver, linux_user())
    assert [(name, [c["status"] for c in cs]) for name, cs in ours.items()] == [
        (f"teleport pid {daemon.pid}", ["pass"])
    ], ours


def test_a_config_string_is_the_config_checked(host, fake_daemon) -> None:
    """`teleport start` given its configuration as --config-string, or in TELEPORT_CONFIG (from a
    systemd EnvironmentFile): that replaces the file Teleport would read, and is what doctor checks."""
    pam_file, good = host
    text = good.read_text()
    assert text.count("    enabled: true\n") == 1
    off = base64.b64encode(text.replace("    enabled: true\n", "    enabled: no\n").encode()).decode()
    on = base64.b64encode(good.read_bytes()).decode()
    daemon = fake_daemon("--config", str(good), env={"TELEPORT_CONFIG": off, "PATH": "/usr/bin:/bin"})
    code, checks = doctor(pam_file, None)
    assert [(c["status"], c["message"]) for c in checks["teleport config"]] == [
        ("fail", f"ssh_service.pam.enabled is not true in teleport pid {daemon.pid}'s TELEPORT_CONFIG"),
    ]
    assert code == 1
    daemon.kill()
    daemon.wait()
    daemon = fake_daemon(f"--config-string={on}")
    _, checks = doctor(pam_file, None)
    assert [c["status"] for c in checks["teleport config"]] == ["pass"], checks["teleport config"]
    _, checks = doctor(pam_file, good)  # the file given is not what runs: said
    assert [c["status"] for c in checks["teleport config"]] == ["pass", "warn"], checks["teleport config"]
    assert checks["teleport config"][1]["message"].startswith(
        f"teleport pid {daemon.pid} runs with its --config-string, not {good}"
    )


def test_the_config_of_the_running_teleport_is_the_one_checked(host, tmp_path: Path, fake_daemon) -> None:
    """A `teleport start --config` other than /etc/teleport.yaml, running: doctor reads that config
    when none is given, and warns when the one given is not it."""
    pam_file, good = host
    running = tmp_path / "etc" / "teleport.yaml"  # relative on the command line, from the daemon's folder
    running.parent.mkdir()
    running.write_text("version: v3\nssh_service:\n  enabled: true\n")  # PAM not enabled
    daemon = fake_daemon("--config", "etc/teleport.yaml", cwd=tmp_path)
    _, checks = doctor(pam_file, None)
    # That config's service (sshd, the default) is not the PAM file checked here: said too.
    assert [(c["status"], c["message"]) for c in checks["teleport config"]] == [
        ("fail", f"ssh_service.pam.enabled is not true in {running}"),
        ("warn", f"Teleport uses /etc/pam.d/sshd, not {pam_file}"),
    ]
    _, checks = doctor(pam_file, good)
    assert [c["status"] for c in checks["teleport config"]] == ["pass", "warn"], checks["teleport config"]
    assert checks["teleport config"][1]["message"].startswith(
        f"teleport pid {daemon.pid} runs with {running}, not {good}"
    )


def test_remote_logging_on_a_sender(tmp_path: Path) -> None:
    """au-remote off; on with an empty server; on, collector listening, audisp-remote running; collector gone."""
    import socket

    from pam_teleport_audit.admin import doctor

    conf = tmp_path / "audit"
    (conf / "plugins.d").mkdir(parents=True)
    plugin = conf / "plugins.d" / "au-remote.conf"
    (conf / "auditd.conf").write_text("name_format = hostname\n")

    def checks() -> dict[str, str]:
        return {c.name: c.status for c in doctor.remote_checks(str(conf), timeout=1.0)}

    plugin.write_text("active = no\ndirection = out\npath = /sbin/audisp-remote\n")
    assert checks() == {"remote logging": "pass"}

    plugin.write_text("active = yes\ndirection = out\npath = /sbin/audisp-remote\n")
    (conf / "audisp-remote.conf").write_text("remote_server =\nport = 60\n")
    assert checks() == {"node name": "pass", "remote logging": "fail"}

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    (conf / "audisp-remote.conf").write_text(f"remote_server = 127.0.0.1\nport = {port}\ntransport = tcp\n")
    sender = subprocess.Popen(audisp_remote(conf / "audisp-remote.conf"), stdin=subprocess.PIPE)
    try:
        time.sleep(0.5)
        assert checks() == {"node name": "pass", "remote logging": "pass", "remote collector": "pass"}
        listener.close()
        assert checks()["remote collector"] == "fail"
    finally:
        sender.stdin.close()
        sender.wait(timeout=10)
    assert checks()["remote logging"] == "fail"  # active, but no audisp-remote runs


def test_a_rule_that_drops_our_records_is_named(host) -> None:
    """`-a never,user -F msgtype=USER_START`: the kernel acks a USER_START and logs nothing; doctor says so."""
    import audit

    from .conftest import wait_for_records

    rule = ["-a", "never,user", "-F", "msgtype=USER_START"]
    dropped, logged = unique("doctor-dropped-"), unique("doctor-logged-")

    def send(op: str) -> None:
        fd = audit.audit_open()
        try:
            assert audit.audit_log_user_message(fd, 1105, f"op={op}", None, None, None, 1) > 0  # acked
        finally:
            audit.audit_close(fd)

    assert "never,user" not in subprocess.run(["auditctl", "-l"], capture_output=True, text=True, check=True).stdout
    started = time.time()
    subprocess.run(["auditctl", *rule], check=True)
    try:
        code, checks = doctor(*host)
        send(dropped)
    finally:
        subprocess.run(["auditctl", "-d", *rule[1:]], check=True)
    send(logged)
    # auditd writes in order: once the second is in the log, the first would be before it.
    ops = [
        r.get("op")
        for r in wait_for_records(started, lambda rs: logged in [r.get("op") for r in rs], "-m", "USER_START")
    ]
    assert logged in ops and dropped not in ops
    assert code == 1 and status(checks, "audit rules") == "fail", checks["audit rules"]
    assert "`-a never,user -F msgtype=USER_START` drops our USER_START records" in checks["audit rules"][0]["message"]
    code, checks = doctor(*host)
    assert status(checks, "audit rules") == "pass"


@pytest.mark.parametrize(
    ("prefix", "verdict", "says"),
    [
        # A container's pid namespace: AUDIT_GET is refused, user records are not (test_namespaces).
        (("unshare", "--pid", "--fork", "--mount-proc"), "warn", "they can be written from here"),
        (("capsh", "--drop=cap_audit_control", "--", "-c", '"$0" "$@"'), "warn", "they can be written from here"),
        (
            ("capsh", "--drop=cap_audit_control,cap_audit_write", "--", "-c", '"$0" "$@"'),
            "fail",
            "lacks CAP_AUDIT_WRITE",
        ),
        # A rootless container's user namespace: every audit message is refused.
        (("unshare", "--user", "--map-root-user"), "fail", "refuses every audit message from this user namespace"),
    ],
    ids=["pid-namespace", "no-audit-control", "no-audit-write", "user-namespace"],
)
def test_where_the_kernel_will_not_answer(host, prefix: tuple[str, ...], verdict: str, says: str) -> None:
    code, checks = doctor(*host, prefix=prefix)
    assert status(checks, "kernel audit") == verdict and says in checks["kernel audit"][0]["message"], checks
    assert "auditd" not in checks  # unknown from here: neither passed nor failed
    if verdict == "fail":
        assert code == 1


def test_a_teleport_process_without_cap_audit_write(host, fake_daemon, driver, linux_user, syslog_catcher) -> None:
    """`teleport start` without CAP_AUDIT_WRITE in its bounding set (its session children inherit it):
    doctor names it, and indeed nothing of such a session reaches the log."""
    pam_file, config = host
    pam_file.write_text(
        pam_file.read_text().replace(entry_script(), f"{entry_script()} log_socket={syslog_catcher.path}")
    )
    without = ("capsh", "--drop=cap_audit_write", "--", "-c", 'exec "$0" "$@"')
    daemon = fake_daemon("--config", str(config), prefix=without)
    tp_user = unique("nocap-")
    argv = driver_argv(driver, pam_file.name, linux_user(), user=tp_user, lines=["sleep 3"])
    started = time.time()
    proc = subprocess.Popen([*without, *argv], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        code, checks = doctor(pam_file, config)
    finally:
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out  # fail-open: the login went on
    ours = {name: cs for name, cs in checks.items() if name.startswith("teleport pid")}
    assert list(ours) == [f"teleport pid {daemon.pid}"], checks  # the session child is not judged
    (check,) = ours[f"teleport pid {daemon.pid}"]
    assert check["status"] == "fail" and "CAP_AUDIT_WRITE is not in its capability bounding set" in check["message"]
    assert code == 1
    assert any("audit record not written: [errno 1]" in line for line in syslog_catcher.lines())
    # The kernel refused them at the send (the line above): a second's wait for them is enough.
    records = wait_for_records(started, lambda rs: False, "-m", "USER_ACCT,USER_START,USER_END", timeout=1.0)
    assert [r for r in records if r.get("teleportUser") == tp_user] == []


def test_every_auditctl_signal_we_name_is_one_auditctl_takes() -> None:
    """doctor's fixes, the role's reload handler and docs/fleet.md name `auditctl --signal X`; auditctl 3.0.9
    (Debian 12) takes only TERM, HUP, USR1, USR2 and CONT, and `reload` made the role's handler fail (exit 255,
    "reload is an unsupported signal", seen following docs/fleet.md). Each one named is sent to this machine's
    auditd here (HUP re-reads its unchanged config, USR2 resumes logging): auditctl must take it, and the same
    auditd must still be registered afterwards."""
    import re

    from pam_teleport_audit.admin import doctor

    code = (ROOT / "pam_teleport_audit" / "admin" / "doctor.py").read_text()
    handler = (ROOT / "ansible" / "roles" / "pam_teleport_audit" / "handlers" / "main.yml").read_text()
    fleet = (ROOT / "docs" / "fleet.md").read_text()
    named = set(re.findall(r"`auditctl --signal (\w+)`", code + fleet))
    named |= set(re.findall(r"'/usr/sbin/auditctl', '--signal', '(\w+)'", handler))
    assert "reload" not in named, "auditctl 3.0.9 refuses --signal reload"
    assert {"HUP", "USR2"} <= named and "TERM" not in named, named

    def registered() -> str:
        check = next(c for c in doctor.audit_checks() if c.name == "auditd")
        assert check.status == "pass", check.line()
        return check.message

    before = registered()
    for name in sorted(named):
        proc = subprocess.run(["auditctl", "--signal", name], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (name, proc.returncode, proc.stdout + proc.stderr)
    time.sleep(0.5)
    assert registered() == before


def refuses_its_config(argv: list[str]) -> bool:
    """Whether a daemon stopped at start: it exits, and not 0, before auditd says DAEMON_START (exit 6 on its
    config, 1 at start: resolve_node, audisp-remote's queue). audisp-remote past its start, given no input,
    exits 0."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout or []:
            if "DAEMON_START" in line:
                return False
        return proc.wait(timeout=10) != 0
    finally:
        proc.kill()
        proc.wait()


def run_daemon_on(tmp_path: Path, daemon: str, lines: str, hostname: str | None = None) -> bool:
    """The real auditd or audisp-remote of this release on a copy of the machine's config with lines added
    (auditd: its own log and plugins, local_events = no): whether it stopped at start. auditd runs without
    CAP_AUDIT_CONTROL (it cannot take the kernel from the machine's auditd; with local_events = no it does
    not try, and so goes on to resolve its node name), with a private /run (its pid file) and its own log;
    /usr/sbin/auditd, not the `auditd` that scripts/debian13's roots put first on PATH to start the host's.
    hostname: in a UTS namespace of its own with that name."""
    conf_folder(tmp_path)
    uts = f"hostname {hostname} && " if hostname else ""
    if daemon == "auditd":
        base = Path("/etc/audit/auditd.conf").read_text()
        base += f"log_file = {tmp_path}/audit.log\nplugin_dir = {tmp_path}/plugins.d\nlocal_events = no\n"
        auditd = f"exec /usr/sbin/auditd -f -c {tmp_path}"
        run = f"{uts}mount -t tmpfs none /run && exec capsh --drop=cap_audit_control -- -c '{auditd}'"
    else:
        stock = Path("/etc/audit/audisp-remote.conf").read_text().splitlines(keepends=True)
        # Its stock `remote_server =` has no value, which is itself a line audisp-remote refuses.
        base = "".join(x for x in stock if not x.startswith("remote_server")) + "remote_server = 127.0.0.1\n"
        run = f"{uts}mount --bind {tmp_path}/audisp-remote.conf /etc/audit/audisp-remote.conf && exec audisp-remote"
        (tmp_path / "plugins.d" / "au-remote.conf").write_text("active = yes\n")
    (tmp_path / f"{daemon}.conf").write_bytes(f"{base}{lines.replace('{tmp}', str(tmp_path))}\n".encode())
    (tmp_path / f"{daemon}.conf").chmod(0o600)  # auditd refuses a config others may write
    argv = private_mounts(run)
    if hostname:
        argv.insert(argv.index("--mount") + 1, "--uts")
    return refuses_its_config(argv)


@pytest.mark.parametrize(("daemon", "line", "refused"), CONF_LINES)
def test_doctor_fails_exactly_the_config_lines_the_real_daemons_refuse(
    tmp_path: Path, daemon: str, line: str, refused: object
) -> None:
    """The real auditd and audisp-remote of this release, on a copy of the machine's config with lines
    added: doctor's config check, for the auditd installed here (auditctl -v, its listener), fails where
    the daemon does not start, warns where it starts without a line, and passes where it starts with all."""
    expect = expected_refusal(refused, audit_build())
    assert run_daemon_on(tmp_path, daemon, line) is (expect is True), f"{daemon} with {line!r}"
    checks = [c for c in config_syntax_checks(str(tmp_path)) if f"/{daemon}.conf" in c.message]
    verdict = {True: "fail", False: "pass", "skipped": "warn"}[expect]  # type: ignore[index]
    assert [c.status for c in checks] == [verdict], checks


@pytest.mark.parametrize(
    ("name_format", "host", "refused"),
    [
        ("fqd", "localhost", False),
        ("numeric", "localhost", False),
        ("fqd", "pta-no-such-host", True),
        ("numeric", "pta-no-such-host", True),
        ("hostname", "pta-no-such-host", False),
    ],
)
def test_doctor_fails_a_node_name_auditd_cannot_resolve(
    tmp_path: Path, name_format: str, host: str, refused: bool
) -> None:
    """name_format fqd or numeric: auditd resolves the host's name at start and exits 1 when it cannot
    ("Cannot resolve hostname"); doctor resolves the same name the same way (getaddrinfo, AI_ADDRCONFIG)."""
    assert run_daemon_on(tmp_path, "auditd", f"name_format = {name_format}", hostname=host) is refused
    problems = conf_problems(str(tmp_path / "auditd.conf"), "auditd", audit_build(), hostname=host)
    assert [p.refused for p in problems] == ([True] if refused else []), problems


def test_environment_keys_doctor_fails_do_replace_the_identity(host, driver, linux_user) -> None:
    """ssh_service.pam.environment keys that pam_putenv reads as TELEPORT_USERNAME: doctor fails each,
    from the real file; and the real libpam + module show why, given the C string Teleport's pam.Open
    passes for each (KEY=VALUE, cut at a NUL) after Teleport's own, as Go's map order puts it at some logins."""
    pam_file, config = host
    base = config.read_text()
    for key, verb in (
        ("TELEPORT_USERNAME", "sets"),
        ("TELEPORT_USERNAME=mallory", "sets"),
        ('"TELEPORT_USERNAME=mallory\\0"', "sets"),
        ('"TELEPORT_USERNAME\\0"', "removes"),
    ):
        config.write_text(base + f"    environment:\n      {key}: x\n")
        code, checks = doctor(pam_file, config)
        (failed,) = [c for c in checks["teleport config"] if c["status"] == "fail"]
        assert code == 1 and f"{verb} TELEPORT_USERNAME" in failed["message"], (key, checks["teleport config"])

    login, owner = linux_user(), unique("owner-")
    for passed, recorded in (("TELEPORT_USERNAME=mallory=x", "mallory=x"), ("TELEPORT_USERNAME=mallory", "mallory")):
        session = run_driver(driver, pam_file.name, login, user=owner, shell=False, extra=("-e", passed))
        assert session.returncode == 0, session.output
        ours = pid_records(session.started, session.pid, expect=7)
        names = {decode_value(r["teleportUser"]) for r in ours if "teleportUser" in r.fields}
        assert names == {recorded.encode()}, (passed, names)
    # A name with no '=' removes the variable: the login runs, and nothing of ours names anyone.
    session = run_driver(driver, pam_file.name, login, user=owner, shell=False, extra=("-e", "TELEPORT_USERNAME"))
    assert session.returncode == 0, session.output
    libpam = wait_for_records(
        session.started, lambda rs: any(r.get("op") == "PAM:session_close" for r in rs), "-p", str(session.pid)
    )
    assert [r["op"] for r in libpam if r.type in ("USER_ACCT", "USER_START", "USER_END")] == [
        "PAM:accounting",
        "PAM:session_open",
        "PAM:session_close",
    ]


def test_an_auditd_with_local_events_no_takes_no_record_of_this_host(
    tmp_path: Path, driver: Path, pam_service, linux_user
) -> None:
    """local_events = no, which doctor's `audit log` fails: the real auditd of this release started with
    it, every capability kept (its own config, log and /run), never registers with the kernel, and a
    Teleport-like login's records reach the machine's auditd and not it."""
    (tmp_path / "plugins.d").mkdir()
    base = Path("/etc/audit/auditd.conf").read_text()
    conf = tmp_path / "auditd.conf"
    conf.write_text(f"{base}log_file = {tmp_path}/audit.log\nplugin_dir = {tmp_path}/plugins.d\nlocal_events = no\n")
    conf.chmod(0o600)
    (check,) = log_write_checks(str(tmp_path))
    assert check.status == "fail" and "local_events = no" in check.message, check

    def kernel_pid() -> int:
        with AuditSocket() as audit:
            return audit.status()["pid"]

    before = kernel_pid()
    aggregator = subprocess.Popen(
        private_mounts(f"mount -t tmpfs none /run && exec /usr/sbin/auditd -f -c {tmp_path}"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert any("DAEMON_START" in line for line in aggregator.stdout or []), "auditd did not start"
        tp_user = unique("agg-")
        session = run_driver(driver, pam_service(debian_stack()), linux_user(), user=tp_user, shell=False)
        assert session.returncode == 0, session.output
        ours = pid_records(session.started, session.pid, expect=6)
        assert [r.get("teleportUser") for r in ours if r.get("op", "").startswith("teleport:")] == [tp_user] * 3
        assert kernel_pid() == before and aggregator.poll() is None
    finally:
        aggregator.terminate()
        out = aggregator.communicate(timeout=30)[0]
    # In -f it prints each event it takes: its own start and stop, nothing of this host's login.
    assert "DAEMON_END" in out and tp_user not in out and "USER_START" not in out, out


@pytest.mark.parametrize(
    ("setup", "refused"),
    [
        ("ln -s {tmp}/real.log {tmp}/logs/audit.log", True),  # "Couldn't open log file ... (Too many levels ...)"
        ("chown nobody {tmp}/logs", False),  # auditd makes the folder root's, mode 750
        ("true", False),
    ],
)
def test_doctor_fails_a_log_file_auditd_will_not_open(tmp_path: Path, setup: str, refused: bool) -> None:
    """auditd opens its log only when it runs in the background (with -f it writes to stdout), with
    O_NOFOLLOW: its parser takes a symbolic link to a root-owned file, and then auditd exits 1 at start. A
    real auditd of this release, daemonized (local_events = no: it leaves the kernel to the machine's), in a
    private /run; its parent's exit status says whether it started, and it is stopped by its pid file."""
    conf_folder(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "real.log").write_text("")
    subprocess.run(["sh", "-c", setup.format(tmp=tmp_path)], check=True)
    base = Path("/etc/audit/auditd.conf").read_text()
    conf = tmp_path / "auditd.conf"
    conf.write_text(
        f"{base}log_file = {tmp_path}/logs/audit.log\nplugin_dir = {tmp_path}/plugins.d\nlocal_events = no\n"
    )
    conf.chmod(0o600)
    run = (
        f"mount -t tmpfs none /run && capsh --drop=cap_audit_control -- -c '/usr/sbin/auditd -c {tmp_path}'; "
        "echo $?; sleep 0.5; cat /run/auditd.pid 2>/dev/null || true"
    )
    out = subprocess.run(private_mounts(run), capture_output=True, text=True, check=True).stdout.split()
    if len(out) > 1:
        subprocess.run(["kill", out[1]], check=True)
    assert (out[0] != "0") is refused, out
    (check,) = (c for c in config_syntax_checks(str(tmp_path)) if "/auditd.conf" in c.message)
    assert check.status == ("fail" if refused else "pass"), check
    assert not refused or "not a symbolic link" in check.message
