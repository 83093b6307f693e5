"""pam-teleport-audit selftest on the real stack: a host prepared by `install` passes; each way a host
cannot record fails naming its reason; nothing is left behind."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pam_teleport_audit.admin.auditlog import records_since
from pam_teleport_audit.admin.stanza import entry_script

from .conftest import PAM_DIR, ROOT
from .test_faults import auditd_stopped

STOCK = (ROOT / "tests" / "fixtures" / "pam" / "debian-12" / "sshd").read_text()
LEFTOVERS = "/run/pam-teleport-audit-selftest.*"


def helper(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pam_teleport_audit", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def install(service: str, *options: str) -> None:
    proc = helper("install", "--pam-file", str(PAM_DIR / service), "--entry", entry_script(), *options)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def selftest(service: str, *options: str) -> tuple[int, dict]:
    """The self-test's exit status and JSON report; the PAM file is byte-for-byte as it was."""
    before = (PAM_DIR / service).read_bytes()
    proc = helper("selftest", "--service", service, "--json", *options)
    assert (PAM_DIR / service).read_bytes() == before
    assert not glob.glob(LEFTOVERS), "the private folder of the teleport-named copy is left behind"
    report = json.loads(proc.stdout)
    assert report["ok"] == (proc.returncode == 0), proc.stdout + proc.stderr
    return proc.returncode, report


def statuses(report: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def failing(report: dict) -> dict[str, str]:
    return {c["name"]: c["message"] for c in report["checks"] if c["status"] == "fail"}


@pytest.fixture
def installed(pam_service) -> str:
    """A scratch copy of Debian 12's sshd file with the stanza added by `install`."""
    service = pam_service(STOCK)
    install(service)
    return service


def test_a_host_prepared_by_install_passes(installed: str) -> None:
    started = time.time()
    code, report = selftest(installed)
    assert code == 0, failing(report)
    assert report["ran"] and report["login"] == "root" and report["pam_file"] == f"/etc/pam.d/{installed}"
    assert set(statuses(report).values()) == {"pass"}
    for name in ("our records", "session id", "libpam records", "non-Teleport program", "pam_tty_audit", "auditd"):
        assert name in statuses(report)
    assert report["seconds"] > 0, report["seconds"]  # reported, not judged: speed is for benchmarks
    # Read back independently: the probe's three records, from a teleport-named program in /run that is gone now.
    user = report["teleport_user"]
    assert user.startswith("pam-teleport-audit-selftest-")
    ours = [r for r in records_since(started, "-m", "USER_ACCT,USER_START,USER_END") if r.get("teleportUser") == user]
    assert [r["op"] for r in ours] == ["teleport:accounting", "teleport:session_open", "teleport:session_close"]
    exe = ours[0]["exe"].strip('"')
    assert exe.startswith("/run/pam-teleport-audit-selftest.") and exe.endswith("/teleport")
    assert not os.path.exists(os.path.dirname(exe))


def test_text_output_and_pam_file_option(installed: str) -> None:
    proc = helper("selftest", "--pam-file", str(PAM_DIR / installed))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lines[0].startswith(f"selftest of /etc/pam.d/{installed} as login root, Teleport user ")
    assert all(x.startswith("PASS  ") for x in lines[1:-1]) and len(lines) >= 10
    assert lines[-1].startswith("this host records Teleport logins (")
    outside = helper("selftest", "--pam-file", "/tmp/sshd")
    assert outside.returncode == 2 and "/etc/pam.d/NAME" in outside.stderr


def test_no_stanza(pam_service) -> None:
    code, report = selftest(pam_service(STOCK))
    assert code == 1 and not report["ran"]
    assert "no account block" in failing(report)["stanza"]


def test_the_module_file_missing(installed: str) -> None:
    path = PAM_DIR / installed
    gone = "/usr/lib/pam-teleport-audit-missing/pam_teleport_audit/pam_entry.py"
    path.write_text(path.read_text().replace(entry_script(), gone))
    code, report = selftest(installed)
    assert code == 1 and not report["ran"]
    assert f"{gone}, which does not exist" in failing(report)["module file"]


def test_pam_tty_audit_missing(pam_service) -> None:
    service = pam_service(STOCK)
    install(service, "--tty-audit", "off")
    code, report = selftest(service)
    assert code == 1 and not report["ran"]
    assert list(failing(report)) == ["pam_tty_audit"]
    # Left out on purpose: a warning, and the transaction then shows the rest works.
    code, report = selftest(service, "--allow-no-tty-audit")
    assert code == 0 and report["ran"] and statuses(report)["pam_tty_audit"] == "warn", failing(report)


def test_an_unreachable_account_line(installed: str) -> None:
    """`account sufficient pam_permit.so` before our account line ends the account stack for everyone."""
    path = PAM_DIR / installed
    text = path.read_text()
    begin = "# BEGIN pam_teleport_audit account"
    path.write_text(text.replace(begin, f"account sufficient pam_permit.so\n{begin}", 1))
    code, report = selftest(installed)
    assert code == 1 and not report["ran"]
    assert "'account sufficient pam_permit.so' (sufficient ends the account stack" in failing(report)["stanza"]


def test_auditd_stopped(installed: str) -> None:
    with auditd_stopped():
        code, report = selftest(installed)
    assert code == 1 and not report["ran"]
    assert list(failing(report)) == ["auditd"]
    assert "no audit daemon" in failing(report)["auditd"]


def test_a_stanza_that_trusts_one_path_runs_the_probe_bound_over_it(pam_service, tmp_path: Path) -> None:
    """teleport_exe=PATH: the probe runs as PATH in a private mount namespace; the real file is untouched."""
    tmp_path.chmod(0o755)
    binary = tmp_path / "teleport"
    binary.write_bytes(b"#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    service = pam_service(STOCK)
    install(service, "--option", f"teleport_exe={binary}")
    code, report = selftest(service)
    assert code == 0, failing(report)
    assert binary.read_bytes() == b"#!/bin/sh\nexit 0\n"
    binary.unlink()
    code, report = selftest(service)
    assert code == 1 and "teleport_exe" in failing(report)


def test_doctor_runs_it_after_the_static_checks(installed: str, tmp_path: Path) -> None:
    config = tmp_path / "teleport.yaml"
    config.write_text(f"ssh_service:\n  enabled: true\n  pam:\n    enabled: true\n    service_name: {installed}\n")
    proc = helper("doctor", "--json", "--selftest", "--teleport-config", str(config))
    report = json.loads(proc.stdout)
    names = [c["name"] for c in report["checks"]]
    assert names.index("selftest our records") > names.index("stanza")
    ours = {c["name"]: c["status"] for c in report["checks"] if c["name"].startswith("selftest")}
    assert ours["selftest"] == "pass" and set(ours.values()) == {"pass"}, report
    assert proc.returncode == (0 if report["ok"] else 1)
