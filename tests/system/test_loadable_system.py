"""Lines in place that no login can load, on the real stack: what libpam and pam_python do (a Teleport-like
login through the scratch service writes no record of ours), beside what status, install and doctor say."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pam_teleport_audit.admin import cli, doctor, loadable
from pam_teleport_audit.admin.auditlog import AuditRecord
from pam_teleport_audit.admin.stanza import entry_script

from .conftest import (
    PAM_DIR,
    ROOT,
    assert_recorded_session,
    debian_stack,
    run_driver,
    unique,
    wait_for_records,
)

GONE_ENTRY = "/nonexistent/pam_teleport_audit/pam_entry.py"
GONE_MODULE = "/nonexistent/security/pam_python.so"
STOCK = (ROOT / "tests" / "fixtures" / "pam" / "debian-12" / "sshd").read_text()


def helper(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pam_teleport_audit", *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )


def status(service: str) -> tuple[int, dict]:
    proc = helper("status", "--pam-file", str(PAM_DIR / service), "--json")
    return proc.returncode, json.loads(proc.stdout)


def unrecorded_session(driver: Path, service: str, login: str) -> list[AuditRecord]:
    """A Teleport-like session through the service: libpam's records are there, none of ours."""
    tp_user = unique("unloaded-")
    session = run_driver(driver, service, login, user=tp_user, shell=False)
    assert session.returncode == 0, session.output  # optional lines: the login goes on, unrecorded
    # The kernel stamps records with its coarse clock (up to a tick behind time.time()): without pam_python
    # this login's first record can carry a time before session.started. The pid chooses the records.
    records = wait_for_records(
        session.started - 0.1,
        lambda rs: any(r.get("op") == "PAM:session_close" for r in rs),
        "-p",
        str(session.pid),
    )
    assert [r["op"] for r in records if r["type"] in ("USER_ACCT", "USER_START", "USER_END")] == [
        "PAM:accounting",
        "PAM:session_open",
        "PAM:session_close",
    ], records
    assert [r for r in records if "teleportUser" in r.fields or (r.get("op") or "").startswith("teleport:")] == []
    return records


def test_the_installed_stack_loads_and_records(driver, pam_service, linux_user) -> None:
    """The control: the same stack with the checkout's entry script is installed, and records."""
    service = pam_service(debian_stack())
    code, out = status(service)
    assert (code, out["load_problems"], out["scripts"]) == (cli.EXIT_OK, [], [entry_script()]), out
    assert_recorded_session(driver, service, linux_user(), "loads-")


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (entry_script(), GONE_ENTRY, f"the entry script {GONE_ENTRY} does not exist"),
        ("pam_python.so", GONE_MODULE, f"{GONE_MODULE} is not there, so libpam cannot load the lines of ours"),
    ],
    ids=["entry script gone", "pam_python.so gone"],
)
def test_lines_that_cannot_load_record_nothing_and_status_says_so(
    old: str, new: str, says: str, driver, pam_service, linux_user
) -> None:
    service = pam_service(debian_stack().replace(old, new))
    assert f" {new}" in (PAM_DIR / service).read_text()
    unrecorded_session(driver, service, linux_user())
    code, out = status(service)
    assert (code, out["installed"]) == (cli.EXIT_BROKEN, False), out
    assert len(out["load_problems"]) == 1 and out["load_problems"][0].startswith(says), out
    assert out["summary"].startswith(f"{PAM_DIR / service}: needs repair: {says}")
    # The text status prints, as configuration management reads it.
    proc = helper("status", "--pam-file", str(PAM_DIR / service))
    assert proc.returncode == cli.EXIT_BROKEN and "needs repair" in proc.stdout and ": installed" not in proc.stdout


def test_install_refuses_an_entry_script_that_is_not_there(pam_service) -> None:
    service = pam_service(STOCK)
    path = PAM_DIR / service
    proc = helper("install", "--pam-file", str(path), "--entry", GONE_ENTRY)
    assert proc.returncode == cli.EXIT_REFUSED, proc.stderr
    assert f"refused, {path} left unchanged: the entry script {GONE_ENTRY} does not exist" in proc.stderr
    assert path.read_text() == STOCK


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A root-owned copy of the checkout's module (the in-PAM files and the package), its entry script."""
    folder = tmp_path / "site" / "pam_teleport_audit"
    shutil.copytree(ROOT / "pam_teleport_audit", folder, ignore=shutil.ignore_patterns("__pycache__"))
    for path in (tmp_path, tmp_path / "site"):
        path.chmod(0o755)
    return folder / "pam_entry.py"


def test_a_script_a_group_can_change_is_not_installed(driver, pam_service, linux_user, package: Path) -> None:
    service = pam_service(debian_stack().replace(entry_script(), str(package)))
    assert status(service)[0] == cli.EXIT_OK
    module = package.parent / "pam_module.py"
    os.chown(module, 0, 50)  # Debian's staff: not root
    module.chmod(0o664)
    # It loads, and runs as root whatever that group writes into it: a login records, status refuses it.
    assert_recorded_session(driver, service, linux_user(), "writable-")
    code, out = status(service)
    assert code == cli.EXIT_BROKEN and out["installed"] is False, out
    assert out["load_problems"][0].startswith(f"{module} is writable by group staff (gid 50): pam_python runs"), out
    proc = helper("install", "--pam-file", str(PAM_DIR / service), "--entry", str(package))
    assert proc.returncode == cli.EXIT_REFUSED and f"{module} is writable by group staff" in proc.stderr
    module.chmod(0o644)
    assert status(service)[0] == cli.EXIT_OK


PYTHON2_LIB = "int Py_Initialize(void) { return 0; }\n"
PAM_MODULE = """
#include <security/pam_modules.h>
extern int Py_Initialize(void);
int pam_sm_acct_mgmt(pam_handle_t *h, int f, int c, const char **v) { return Py_Initialize(); }
int pam_sm_open_session(pam_handle_t *h, int f, int c, const char **v) { return PAM_SUCCESS; }
int pam_sm_close_session(pam_handle_t *h, int f, int c, const char **v) { return PAM_SUCCESS; }
"""


@pytest.fixture
def python2_pam_python(tmp_path: Path) -> Path:
    """A pam_python.so linked as Ubuntu 22.04's is (DT_NEEDED libpython2.7.so.1.0), against a stand-in
    libpython2.7 that is not on the loader's path: what ldd says of it is the real ldd's."""
    lib = tmp_path / "lib"
    security = tmp_path / "security"
    lib.mkdir()
    security.mkdir()
    (tmp_path / "py.c").write_text(PYTHON2_LIB)
    (tmp_path / "pam.c").write_text(PAM_MODULE)
    stub = lib / "libpython2.7.so.1.0"
    cc = ["gcc", "-shared", "-fPIC", "-o"]
    subprocess.run([*cc, str(stub), "-Wl,-soname,libpython2.7.so.1.0", str(tmp_path / "py.c")], check=True)
    module = security / "pam_python.so"
    subprocess.run([*cc, str(module), str(tmp_path / "pam.c"), str(stub)], check=True)
    return module


def test_a_python_2_pam_python_is_named(python2_pam_python: Path, pam_service, driver, linux_user) -> None:
    ldd = loadable.ldd(str(python2_pam_python)) or ""
    assert "libpython2.7.so.1.0 => not found" in ldd, ldd
    checks = list(doctor.module_checks([entry_script()], (str(python2_pam_python.parent),)))
    assert [(c.name, c.status) for c in checks] == [("pam_python", doctor.FAIL)], checks
    assert checks[0].message == (
        "pam_python.so embeds Python 2.7; this module needs a pam_python built for Python 3, as Debian 12+ "
        f"and Ubuntu 24.04+ ship ({python2_pam_python})"
    )
    # Named by its path on the lines: libpam cannot load it here, the login records nothing, status says why.
    service = pam_service(debian_stack().replace("pam_python.so", str(python2_pam_python)))
    unrecorded_session(driver, service, linux_user())
    code, out = status(service)
    assert code == cli.EXIT_BROKEN and out["load_problems"][0].startswith("pam_python.so embeds Python 2.7"), out
