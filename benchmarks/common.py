"""What every benchmark needs: scratch PAM services and users, the C
programs, and statistics.

PAM stacks holding pam_python.so are driven only by C processes (a Python
process driving one through ctypes crashes); Python here only orchestrates.
Everything made has a unique name and is removed on exit; the host's own
/etc/pam.d files are never touched.
"""

from __future__ import annotations

import atexit
import compileall
import os
import secrets
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pam_teleport_audit"
ENTRY = PACKAGE / "pam_entry.py"
NOOP = Path(__file__).resolve().parent / "noop_module.py"
DRIVER_SOURCE = ROOT / "tests" / "c" / "teleport_driver.c"
EXAMPLE_SSHD = ROOT / "pam.d" / "sshd.example"
INSTALLED_ENTRY = "/usr/lib/python3/dist-packages/pam_teleport_audit/pam_entry.py"
PAM_DIR = Path("/etc/pam.d")
# A stack without pam_python: the account and session calls Teleport makes,
# with pam_loginuid as in every real session stack. {account}/{session} mark
# where the pam_python lines go.
MINIMAL_STACK = """\
account    required   pam_permit.so
{account}
session    required   pam_loginuid.so
{session}
session    required   pam_permit.so
"""

_scratch = Path(tempfile.mkdtemp(prefix="pta-bench-"))
_cleanups: list[tuple[str, str]] = []


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def _cleanup() -> None:
    for kind, name in reversed(_cleanups):
        if kind == "service":
            (PAM_DIR / name).unlink(missing_ok=True)
        elif kind == "user":
            subprocess.run(["pkill", "-KILL", "-u", name], check=False)
            subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
    subprocess.run(["rm", "-rf", str(_scratch)], check=False)


atexit.register(_cleanup)


def scratch_folder(name: str) -> Path:
    """A folder in the scratch area that any PAM application (and user) can read; removed on exit."""
    folder = _scratch / name
    folder.mkdir(mode=0o755, exist_ok=True)
    _scratch.chmod(0o755)
    return folder


def compile_c(source: Path, name: str) -> Path:
    """Compile a C program into the scratch folder (the driver must be named teleport)."""
    binary = scratch_folder("bin") / name
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(source), "-lpam", "-lutil"], check=True)
    return binary


def driver() -> Path:
    """The C stand-in for `teleport exec`, under the name the module trusts."""
    return compile_c(DRIVER_SOURCE, "teleport")


def compile_package() -> None:
    """Write the package's bytecode, as pip does at install time.

    Without it (PYTHONDONTWRITEBYTECODE, a read-only checkout) every PAM
    handle would compile the modules from source, which is not what an
    installed module costs.
    """
    if not compileall.compile_dir(str(PACKAGE), quiet=1, force=False):
        raise RuntimeError("cannot compile the package")


def service(text: str) -> str:
    """A scratch /etc/pam.d service holding text; removed on exit."""
    name = unique("pta-bench-")
    _cleanups.append(("service", name))
    (PAM_DIR / name).write_text(text)
    return name


def minimal_stack(script: Path | None, args: str = "") -> str:
    """MINIMAL_STACK, with account and session pam_python lines for script (and its args), or none."""
    line = f"pam_python.so {script} {args}".rstrip() if script else ""
    return MINIMAL_STACK.format(
        account=f"account    optional   {line}" if script else "",
        session=f"session    optional   {line}" if script else "",
    )


def debian_stack(script: Path | None, args: str = "") -> str:
    """Debian 12's stock sshd stack with our stanza, for script (and its args); without pam_python lines when None.

    pam_tty_audit stays in all three variants: they differ only by the pam_python lines.
    """
    text = EXAMPLE_SSHD.read_text()
    if script is None:
        return "".join(line for line in text.splitlines(keepends=True) if "pam_python.so" not in line)
    return text.replace(INSTALLED_ENTRY, f"{script} {args}".rstrip())


def linux_user() -> str:
    """A scratch Linux user with a home; removed on exit."""
    name = unique("ptb")
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
    _cleanups.append(("user", name))
    return name


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> str:
    """A Markdown table, so a run's output can go into docs/benchmarks.md as is."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("benchmarks run as root (scratch PAM services, users, kernel audit)")
