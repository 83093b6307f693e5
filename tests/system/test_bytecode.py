"""Bytecode on the real stack: pam_python never writes it, so a per-login module without current
bytecode is compiled from source at every Teleport login, and doctor says so (admin/bytecode.py)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pam_teleport_audit.admin import doctor
from pam_teleport_audit.admin.stanza import entry_script
from pam_teleport_audit.pam_loader import IN_PAM_MODULES

from .conftest import OUR_OPS, debian_stack, driver_argv, pid_records, unique

PACKAGE = Path(entry_script()).parent
# The package's __init__ too: doctor's import check imports the copy as pam_teleport_audit.
COPIED = ("__init__", "pam_entry", *IN_PAM_MODULES)

pytestmark = pytest.mark.system


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A copy of the in-PAM files as a package folder, without __pycache__ (doctor imports it from its parent)."""
    tmp_path.chmod(0o755)
    folder = tmp_path / "pam_teleport_audit"
    folder.mkdir(mode=0o755)
    for name in COPIED:
        shutil.copy2(PACKAGE / f"{name}.py", folder / f"{name}.py")
    return folder


def traced_login(driver: Path, service: str, login: str, folder: Path, trace: Path) -> set[str]:
    """One Teleport-like login under strace: it must write our three records; returns the files of folder it opened."""
    tp_user = unique("bytecode-")
    started = time.time()
    argv = driver_argv(driver, service, login, user=tp_user, shell=False)
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(trace), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pid = int(re.search(r"^pid=(\d+)", proc.stdout, re.M).group(1))  # type: ignore[union-attr]
    records = pid_records(started, pid, expect=7)
    assert [r["op"] for r in records if r.get("teleportUser") == tp_user] == OUR_OPS
    opened = re.findall(rf'openat\([^,]+, "({re.escape(str(folder))}/[^"]+)", [^)]*\) = \d+', trace.read_text())
    return {str(Path(path).relative_to(folder)) for path in opened}


def bytecode_check(entry: Path) -> doctor.Check:
    checks = {check.name: check for check in doctor.module_checks([str(entry)])}
    assert checks["module import"].status == doctor.PASS, checks
    return checks["bytecode"]


def test_without_bytecode_every_login_compiles_and_doctor_names_it(
    package: Path, driver: Path, pam_service, linux_user, tmp_path: Path
) -> None:
    entry = package / "pam_entry.py"
    service = pam_service(debian_stack().replace(entry_script(), str(entry)))
    login = linux_user()
    trace = tmp_path / "trace"
    pyc = f"__pycache__/pam_module.{sys.implementation.cache_tag}.pyc"

    # No bytecode: each login reads pam_module.py to compile it, and leaves none behind.
    for _ in range(2):
        opened = traced_login(driver, service, login, package, trace)
        assert {"pam_loader.py", "pam_module.py"} <= opened, opened
        assert not (package / "__pycache__").exists()
    check = bytecode_check(entry)
    assert check.status == doctor.WARN, check
    assert "pam_loader.py: no __pycache__/" in check.message and "pam_module.py: no __pycache__/" in check.message

    # doctor's fix: the login loads the bytecode and never opens the source.
    subprocess.run(shlex.split(check.fix), check=True)
    assert bytecode_check(entry).status == doctor.PASS
    opened = traced_login(driver, service, login, package, trace)
    assert pyc in opened and "pam_module.py" not in opened, opened

    # An edited module: compiled again at every login until recompiled.
    with (package / "pam_module.py").open("a") as file:
        file.write("# edited by hand\n")
    check = bytecode_check(entry)
    assert check.status == doctor.WARN and f"pam_module.py: changed after {pyc} was written" in check.message, check
    assert "pam_module.py" in traced_login(driver, service, login, package, trace)
