"""The Ansible role with real ansible-core against this machine (connection local):
first run changed, second run unchanged, check mode unchanged, a hand-edited
stanza repaired, state=absent gives back the original file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pam_teleport_audit.admin import fleetcheck
from pam_teleport_audit.admin.auditlog import read_conf, records_since

from . import debbuild
from .conftest import PAM_DIR, ROOT
from .fleet import PORT, Fleet

PACKAGE = "pam-teleport-audit"
APT_ARCHIVES = Path("/var/cache/apt/archives")
STOCK = (ROOT / "tests" / "fixtures" / "pam" / "debian-12" / "sshd").read_text()
PLAYBOOK = """- hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: pam_teleport_audit
"""


def package_installed() -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True, text=True, check=False)
    return "ok installed" in proc.stdout


@pytest.fixture
def play(tmp_path: Path):
    ansible = Path(sys.executable).parent / "ansible-playbook"
    assert ansible.exists(), "ansible-core is a dependency of the tox system env"
    assert not package_installed(), f"{PACKAGE} is installed on this machine already; the test would remove it"
    deb = str(debbuild.build(tmp_path).deb)
    cached = APT_ARCHIVES / Path(deb).name  # where the role puts the .deb for apt
    was_cached = cached.exists()
    book = tmp_path / "play.yml"
    book.write_text(PLAYBOOK)
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROOT / "ansible" / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
    }

    def run(pam_file: Path, *flags: str, fails: bool = False, **extra: object) -> tuple[int, str]:
        """The play's changed count and output; fails: the play must fail (its count of failed tasks)."""
        variables = {"pam_teleport_audit_pam_file": str(pam_file), "pam_teleport_audit_deb": deb, **extra}
        proc = subprocess.run(
            [str(ansible), "-i", "localhost,", str(book), "-e", json.dumps(variables), *flags],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if fails:
            assert proc.returncode != 0, proc.stdout + proc.stderr
            failed = re.search(r"localhost\s*:.*\sfailed=(\d+)", proc.stdout)
            assert failed, proc.stdout
            return int(failed.group(1)), proc.stdout + proc.stderr
        assert proc.returncode == 0, proc.stdout + proc.stderr
        recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", proc.stdout)
        assert recap, proc.stdout
        return int(recap.group(1)), proc.stdout

    yield run
    if package_installed():
        subprocess.run(["dpkg", "--purge", "--force-all", PACKAGE], capture_output=True, check=False)
    if not was_cached:
        cached.unlink(missing_ok=True)


SELFTEST_TASK = "TASK [pam_teleport_audit : Self-test the PAM stack"


def selftest_probes(started: float) -> list[str]:
    """Teleport users of self-test probes recorded since started, from a teleport-named copy in /run."""
    records = records_since(started, "-m", "USER_END")
    return [
        str(r.get("teleportUser"))
        for r in records
        if r.get("op") == "teleport:session_close"
        and str(r.get("teleportUser")).startswith("pam-teleport-audit-selftest-")
        and str(r.get("exe")).startswith('"/run/pam-teleport-audit-selftest.')
    ]


def test_role_lifecycle(play, pam_service) -> None:
    pam_file = PAM_DIR / pam_service(STOCK)

    started = time.time()
    changed, out = play(pam_file)
    assert changed >= 2  # the package, the stanza
    installed = pam_file.read_text()
    assert "# BEGIN pam_teleport_audit session" in installed and package_installed()
    assert "pam_python.so /usr/lib/python3/dist-packages/pam_teleport_audit/pam_entry.py" in installed
    # The self-test ran through the installed package and stanza: its probe's records are in the log.
    assert re.search(re.escape(SELFTEST_TASK) + r"[^\n]*\nok: \[localhost\]", out), out
    assert len(selftest_probes(started)) == 1
    started = time.time()
    _, out = play(pam_file, pam_teleport_audit_selftest=False)
    assert re.search(re.escape(SELFTEST_TASK) + r"[^\n]*\nskipping: \[localhost\]", out), out
    assert selftest_probes(started) == []

    assert play(pam_file)[0] == 0
    changed, out = play(pam_file, "--check", "--diff")
    assert changed == 0, out

    # A hand edit inside our block: check mode sees it and writes nothing; a run repairs it.
    edited = installed.replace("pam_tty_audit.so enable=*", "pam_tty_audit.so enable=root")
    pam_file.write_text(edited)
    changed, out = play(pam_file, "--check", "--diff")
    assert changed == 1 and "enable=root" in out and pam_file.read_text() == edited
    assert play(pam_file)[0] == 1
    assert pam_file.read_text() == installed

    # Options of the role reach the file.
    assert play(pam_file, pam_teleport_audit_fail_closed=True, pam_teleport_audit_tty_audit="off")[0] == 1
    text = pam_file.read_text()
    assert "pam_tty_audit" not in text and "required   pam_python.so" in text and " fail_closed" in text

    changed, _ = play(pam_file, pam_teleport_audit_state="absent")
    assert changed == 2  # the stanza, the package
    assert pam_file.read_text() == STOCK
    assert not package_installed()


def test_role_check_mode_on_a_fresh_host(play, pam_service) -> None:
    """--check (a dry run before the first rollout) on a host without the package: the .deb is not copied,
    the helper is not there to ask; the play reports the package and the stanza as changes, changes
    nothing and does not fail."""
    pam_file = PAM_DIR / pam_service(STOCK)
    changed, out = play(pam_file, "--check", "--diff")
    assert changed >= 2, out  # the package (.deb copy), the stanza
    assert "the stanza would be installed in " + str(pam_file) in out, out
    assert pam_file.read_text() == STOCK and not package_installed()


def test_role_fails_clearly_on_a_refused_file(play, pam_service) -> None:
    """A PAM file the helper refuses (here: no pam_loginuid in the session stack) fails the play with the
    helper's reason, in check mode and not, and is left byte-for-byte as it was."""
    text = STOCK.replace("session    required     pam_loginuid.so", "# (pam_loginuid removed)")
    assert text != STOCK
    pam_file = PAM_DIR / pam_service(text)
    for flags in ((), ("--check",)):
        failed, out = play(pam_file, *flags, fails=True)
        assert failed == 1, out
        assert "TASK [pam_teleport_audit : Install the PAM stanza]" in out and "pam_loginuid" in out, out
        assert pam_file.read_text() == text


def test_role_absent_names_other_files_that_load_the_module(play, pam_service) -> None:
    """state: absent for one file while another still loads the module: the package's prerm refuses the
    removal; the play fails naming the other file's lines (not only apt's "dpkg returned an error code"),
    in check mode too, and the package stays."""
    first, other = (PAM_DIR / pam_service(STOCK) for _ in range(2))
    assert play(first)[0] >= 2
    helper = ["/usr/bin/pam-teleport-audit", "install", "--pam-file", str(other)]
    assert subprocess.run(helper, capture_output=True, check=False, cwd="/").returncode == 0
    for flags in (("--check",), ()):
        failed, out = play(first, *flags, fails=True, pam_teleport_audit_state="absent")
        assert failed == 1, out
        assert "The package cannot be removed: these PAM lines still load the module" in out, out
        assert f"{other}:7:account" in out and f"{first}:" not in out.split("cannot be removed")[1], out
        assert package_installed()
    assert "# BEGIN pam_teleport_audit" not in first.read_text()  # its own file was done before the failure
    assert subprocess.run([helper[0], "uninstall", *helper[2:]], capture_output=True, cwd="/").returncode == 0
    assert play(first, pam_teleport_audit_state="absent")[0] == 1  # the package
    assert not package_installed() and first.read_text() == other.read_text() == STOCK


def test_role_absent_is_not_refused_by_a_line_that_loads_another_copy(play, pam_service, tmp_path: Path) -> None:
    """A PAM line loading another copy of the module (pip's, in /usr/local) goes on loading after the
    package is removed, so the package's prerm lets the removal through: the role must not refuse it
    either (it used to, with its own grep)."""
    first = PAM_DIR / pam_service(STOCK)
    assert play(first)[0] >= 2
    copy = tmp_path / "site" / "pam_teleport_audit" / "pam_entry.py"
    copy.parent.mkdir(parents=True)
    copy.write_text("# another copy of the entry script\n")
    tmp_path.chmod(0o755)
    pip = PAM_DIR / pam_service(f"account optional pam_python.so {copy}\n")
    changed, out = play(first, pam_teleport_audit_state="absent")  # the play fails if the role refuses
    assert changed >= 2 and not package_installed(), out  # the stanza, the package
    assert first.read_text() == STOCK and pip.read_text().count(str(copy)) == 1


def test_role_fleet_settings(play, tmp_path: Path) -> None:
    """Sender and collector settings, on a copy of this machine's /etc/audit (never the real one)."""
    audit = tmp_path / "audit"
    (audit / "plugins.d").mkdir(parents=True)
    for name in ("auditd.conf", "audisp-remote.conf", "plugins.d/au-remote.conf"):
        (audit / name).write_text(Path("/etc/audit", name).read_text())
    common = {
        "pam_teleport_audit_audit_dir": str(audit),
        "pam_teleport_audit_reload_auditd": False,
        "pam_teleport_audit_manage_package": False,
    }
    sender = {
        **common,
        "pam_teleport_audit_remote_server": "collector.example.internal",
        "pam_teleport_audit_remote_port": 6060,
    }
    unused = PAM_DIR / "unused"

    changed, _ = play(unused, "--tags", "fleet", **sender)
    assert changed == 3  # auditd.conf (name_format, log_format), audisp-remote.conf, au-remote active
    assert play(unused, "--tags", "fleet", **sender)[0] == 0
    conf = (audit / "auditd.conf").read_text()
    assert "\nname_format = hostname\n" in conf and "\nlog_format = ENRICHED\n" in conf
    remote = (audit / "audisp-remote.conf").read_text()
    assert "remote_server = collector.example.internal\n" in remote and "port = 6060\n" in remote
    assert "mode = forward\n" in remote
    assert "\nactive = yes\n" in "\n" + (audit / "plugins.d" / "au-remote.conf").read_text()

    assert "format = managed\n" in remote  # the collector keeps nothing else from audisp-remote
    # Several collectors: a sender takes one by a hash of its inventory name (localhost here).
    servers = [f"collector-{i}.example.internal" for i in range(1, 4)]
    assert play(unused, "--tags", "fleet", **common, pam_teleport_audit_remote_servers=servers)[0] == 1
    chosen = servers[int(hashlib.md5(b"localhost").hexdigest(), 16) % len(servers)]
    assert f"remote_server = {chosen}\n" in (audit / "audisp-remote.conf").read_text()
    assert play(unused, "--tags", "fleet", **common, pam_teleport_audit_remote_servers=servers)[0] == 0

    systemd = tmp_path / "systemd"
    collector = {**common, "pam_teleport_audit_collector": True, "pam_teleport_audit_systemd_dir": str(systemd)}
    assert play(unused, "--tags", "fleet", **collector)[0] == 3  # auditd.conf keys, drop-in folder, drop-in
    conf = (audit / "auditd.conf").read_text()
    assert "\ntcp_listen_port = 60\n" in conf and "\ntcp_client_ports = 1024-65535\n" in conf
    assert "\ntcp_max_per_addr = 10\n" in conf and "\nmax_log_file_action = ROTATE\n" in conf
    assert play(unused, "--tags", "fleet", **collector)[0] == 0
    # Sized from the expected node count by the same rule as doctor's (fleetcheck.sizing).
    dropin = systemd / "auditd.service.d" / "pam-teleport-audit.conf"
    for nodes in (100, 2000):
        if nodes != 100:
            assert play(unused, "--tags", "fleet", **collector, pam_teleport_audit_collector_nodes=nodes)[0] == 2
        sized = fleetcheck.sizing(nodes)
        conf = read_conf(str(audit / "auditd.conf"))
        assert {key: int(conf[key]) for key in sized if key != "LimitNOFILE"} == {
            key: value for key, value in sized.items() if key != "LimitNOFILE"
        }
        assert f"\n[Service]\nLimitNOFILE={sized['LimitNOFILE']}\n" in dropin.read_text()
    assert sized["LimitNOFILE"] > 4096 and sized["num_logs"] <= 999  # 2,000 nodes: past a default soft limit

    # name_format = user needs a name = line, or auditd does not start ("User defined name missing", seen in
    # docs/fleet.md's walk-through): the role refuses it before writing anything, and writes the name it is given.
    user = {**sender, "pam_teleport_audit_name_format": "user"}
    before = (audit / "auditd.conf").read_text()
    assert play(unused, "--tags", "fleet", fails=True, **user)[0] == 1
    assert (audit / "auditd.conf").read_text() == before
    assert play(unused, "--tags", "fleet", **user, pam_teleport_audit_node_name="web-17")[0] >= 1
    conf = (audit / "auditd.conf").read_text()
    assert "\nname_format = user\n" in conf and "\nname = web-17\n" in conf
    assert read_conf(str(audit / "auditd.conf"))["name"] == "web-17"
    assert play(unused, "--tags", "fleet", **user, pam_teleport_audit_node_name="web-17")[0] == 0
    assert not package_installed()


def test_role_handlers_raise_a_running_collectors_file_limit(play) -> None:
    """The role with its handlers on a running collector auditd (started by this test in its own network, mount
    and /run namespaces, held to 64 files as by a low default soft limit; its own config folder as the role's
    audit dir, the handlers pointed at its pid): the play raises its file limit to the one sized for 100 senders,
    and then 100 senders' connections are all accepted. (The reload handler's SIGHUP reaches it too, but an
    auditd with local_events = no, as this one must be beside the machine's own, reconfigures only once the
    kernel answers its signal-info request, so it re-reads nothing here.)
    The hard limit starts high (as systemd's default 1024:524288): raising a hard limit needs CAP_SYS_RESOURCE,
    which root has on a host but this test machine's sandbox does not."""
    senders = 100
    sized = fleetcheck.sizing(senders)
    # Its listen queue already sized (the reload cannot apply one here, see above): only the file limit is at stake.
    fleet = Fleet([], nofile=64, nofile_hard=sized["LimitNOFILE"] * 4, listen_queue=sized["tcp_listen_queue"])
    try:
        audit = fleet.dir / "collector"
        pid = fleet.auditd.pid
        assert fleetcheck.open_files_limit(pid) == 64
        variables = {
            "pam_teleport_audit_audit_dir": str(audit),
            "pam_teleport_audit_systemd_dir": str(fleet.dir / "systemd"),
            "pam_teleport_audit_manage_package": False,
            "pam_teleport_audit_collector": True,
            "pam_teleport_audit_collector_nodes": senders,
            "pam_teleport_audit_collector_port": PORT,
            "pam_teleport_audit_auditd_pid": pid,
        }
        changed, out = play(PAM_DIR / "unused", "--tags", "fleet", **variables)
        assert changed >= 3  # auditd.conf keys, the drop-in folder, the drop-in (and the handlers)
        assert "RUNNING HANDLER [pam_teleport_audit : Apply auditd's file limit]" in out
        assert "RUNNING HANDLER [pam_teleport_audit : Reload auditd]" in out
        assert fleetcheck.open_files_limit(pid) == sized["LimitNOFILE"]
        assert int(read_conf(str(audit / "auditd.conf"))["tcp_listen_queue"]) == sized["tcp_listen_queue"]
        clients = fleet.connect(senders)
        assert clients.stdout.readline().strip() == str(senders)
        deadline = time.time() + 15
        while fleet.accepted() < senders and time.time() < deadline:
            time.sleep(0.2)
        assert fleet.accepted() == senders
        connected = fleetcheck.established(PORT, f"/proc/{pid}")
        checks = {
            c.name: c.status
            for c in fleetcheck.collector_checks(
                read_conf(str(audit / "auditd.conf")), fleetcheck.open_files_limit(pid), connected, None, senders
            )
        }
        assert connected == senders and checks["collector file limit"] == "pass", checks
        clients.stdin.close()
        clients.wait(timeout=10)
    finally:
        fleet.close()
