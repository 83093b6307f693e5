"""Build the Debian package from a clean copy of this checkout, as a build farm would.

dpkg-buildpackage writes its results to the parent of the source tree and
leaves build directories in debian/, so the build runs in a copy under a
temporary folder: the checkout itself is never touched.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .conftest import ROOT

PACKAGE = "pam-teleport-audit"
# A build farm's environment, not the test runner's: with a virtualenv first
# on PATH, pybuild would run the venv's python3 instead of the distro's.
BUILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}
# Files in this checkout or about to be added to it; ignored ones (build/, .tox/, dist/) are left out.
LIST_FILES = ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]


@dataclass
class Built:
    folder: Path  # dpkg-buildpackage's output folder, holding the built tree (PACKAGE)
    deb: Path
    changes: Path
    dsc: Path  # the source package, from a tree that was never built in


def version() -> str:
    text = (ROOT / "pam_teleport_audit" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "(.+)"$', text, re.M)
    assert found, "no __version__ in pam_teleport_audit/__init__.py"
    return found.group(1)


def checkout_files() -> list[str]:
    """This checkout's files (with uncommitted edits), without anything built or ignored."""
    names = subprocess.run(LIST_FILES, capture_output=True, check=True).stdout.decode().split("\0")
    return sorted(name for name in names if name and (ROOT / name).is_file())  # deleted but indexed: no


def clean_copy(dest: Path) -> Path:
    for name in checkout_files():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    return dest


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=BUILD_ENV, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stdout}{proc.stderr}"
    return proc


def build(folder: Path) -> Built:
    """The source package (dpkg-source -b) and the binary package (dpkg-buildpackage -us -uc -b)."""
    source = clean_copy(folder / "source")
    run(["dpkg-source", "-b", "source"], folder)
    work = clean_copy(folder / "build" / PACKAGE)
    run(["dpkg-buildpackage", "-us", "-uc", "-b"], work)
    out = work.parent
    shutil.rmtree(source)
    return Built(
        folder=out,
        deb=out / f"{PACKAGE}_{version()}_all.deb",
        changes=next(out.glob(f"{PACKAGE}_{version()}_*.changes")),
        dsc=folder / f"{PACKAGE}_{version()}.dsc",
    )
