"""The Debian package: built with dpkg-deb from the checkout, checked by
lintian, installed with apt, used by a Teleport-like session, refused removal
while a PAM file holds the stanza, then removed and purged."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import PAM_DIR, ROOT, assert_recorded_session

PACKAGE = "pam-teleport-audit"
ENTRY = "/usr/lib/python3/dist-packages/pam_teleport_audit/pam_entry.py"


def installed() -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True, text=True, check=False)
    return "ok installed" in proc.stdout


def apt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "-y", "-q", *args],
        capture_output=True,
        text=True,
        check=False,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


@pytest.fixture
def deb(tmp_path: Path) -> Path:
    assert not installed(), f"{PACKAGE} is installed on this machine already; the test would remove it"
    out = subprocess.run(
        [str(ROOT / "packaging" / "build-deb"), str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    yield Path(out)
    if installed():
        subprocess.run(["dpkg", "--purge", "--force-all", PACKAGE], capture_output=True, check=False)


def test_build_lint_install_use_remove_purge(deb: Path, driver, pam_service, linux_user) -> None:
    assert deb.name == f"{PACKAGE}_0.1.0_all.deb"
    lint = subprocess.run(
        ["lintian", "--tag-display-limit", "0", str(deb)], capture_output=True, text=True, check=False
    )
    errors = [line for line in lint.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], lint.stdout

    proc = apt("install", "--no-install-recommends", str(deb))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert installed()
    stanza = subprocess.run(
        ["/usr/bin/pam-teleport-audit", "stanza"], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    assert stanza == Path("/usr/share/pam-teleport-audit/pam_teleport_audit.stanza").read_text()
    assert f"pam_python.so {ENTRY}" in stanza
    assert list(Path(ENTRY).parent.glob("__pycache__/pam_module.*.pyc")), "postinst byte-compiles"
    assert Path("/usr/share/man/man8/pam-teleport-audit.8.gz").is_file()

    # A Teleport-like session through the packaged example stack.
    service = pam_service(Path("/usr/share/pam-teleport-audit/sshd.example").read_text())
    assert_recorded_session(driver, service, linux_user(), "deb-")

    # While a PAM file holds the stanza, removal is refused and nothing is removed.
    proc = apt("remove", PACKAGE)
    assert proc.returncode != 0 and installed()
    assert f"{PAM_DIR}/{service}" in proc.stderr + proc.stdout
    (PAM_DIR / service).unlink()

    proc = apt("remove", PACKAGE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not Path(ENTRY).parent.exists(), "prerm removes the byte-compiled files too"
    # No conffiles: nothing is left to purge after remove, and purge still succeeds.
    proc = subprocess.run(["dpkg", "--purge", PACKAGE], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PACKAGE], capture_output=True, text=True, check=False
    )
    assert status.returncode != 0 or status.stdout.strip() in ("", "un", "pn")
    assert not Path("/usr/share/pam-teleport-audit").exists() and not Path("/usr/bin/pam-teleport-audit").exists()
