"""The package as an administrator installs it: pip with the Python pam_python
embeds (3.11 on Debian 12, 3.13 on 13; pip 25 needs python3-setuptools for
--no-build-isolation), then `pam-teleport-audit stanza` names the entry
script, which pam_python loads from wherever the package went."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pam_teleport_audit.admin import doctor

from .conftest import EXAMPLE_SSHD, INSTALLED_ENTRY, assert_recorded_session
from .debbuild import checkout_files, clean_copy


def pam_python_interpreter() -> str:
    pam_python = doctor.find_pam_python()
    python = doctor.embedded_python(pam_python) if pam_python else None
    assert python, f"cannot tell which Python {pam_python} embeds"
    return python


def test_pip_installed_copy_runs_in_pam(tmp_path: Path, driver, pam_service, linux_user) -> None:
    # From a clean copy, as an administrator's checkout would be: pip builds in
    # the source tree (build/, *.egg-info), and a stale build/ would be installed.
    source = clean_copy(tmp_path / "src")
    target = tmp_path / "site"
    python = pam_python_interpreter()
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--root-user-action=ignore",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    entry = target / "pam_teleport_audit" / "pam_entry.py"
    installed = {str(path.relative_to(target)) for path in (target / "pam_teleport_audit").rglob("*.py")}
    assert installed == {name for name in checkout_files() if name.startswith("pam_teleport_audit/")}
    stanza = subprocess.run(
        [
            python,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(target)!r}); "
            "from pam_teleport_audit.admin.cli import main; sys.exit(main(['stanza']))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout
    module_lines = [line for line in stanza.splitlines() if "pam_python.so" in line]
    assert len(module_lines) == 2 and all(line.endswith(f"pam_python.so {entry}") for line in module_lines)

    service = pam_service(EXAMPLE_SSHD.read_text().replace(INSTALLED_ENTRY, str(entry)))
    assert_recorded_session(driver, service, linux_user(), "henry-")
