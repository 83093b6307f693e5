"""admin/bytecode.py: when the Python pam_python embeds would compile a per-login module from source."""

from __future__ import annotations

import os
import py_compile
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pam_teleport_audit import pam_loader
from pam_teleport_audit.admin import bytecode, doctor
from pam_teleport_audit.admin.doctor import PASS, WARN

TIMESTAMP = py_compile.PycInvalidationMode.TIMESTAMP
CHECKED = py_compile.PycInvalidationMode.CHECKED_HASH
UNCHECKED = py_compile.PycInvalidationMode.UNCHECKED_HASH
PYC = f"__pycache__/m.{sys.implementation.cache_tag}.pyc"


def compiled(tmp_path: Path, mode: py_compile.PycInvalidationMode = TIMESTAMP) -> Path:
    source = tmp_path / "m.py"
    source.write_text("VALUE = 1\n")
    py_compile.compile(str(source), invalidation_mode=mode, doraise=True)
    return source


def edit_keeping_size(source: Path) -> None:
    source.write_text("VALUE = 2\n")


def edit(source: Path) -> None:
    source.write_text("VALUE = 22\n")


def touch(source: Path) -> None:
    info = source.stat()
    os.utime(source, (info.st_atime, info.st_mtime + 10))


def remove_pyc(source: Path) -> None:
    (source.parent / PYC).unlink()


def patch_pyc(offset: int, data: bytes) -> Callable[[Path], None]:
    def patch(source: Path) -> None:
        pyc = source.parent / PYC
        raw = bytearray(pyc.read_bytes())
        raw[offset : offset + len(data)] = data
        pyc.write_bytes(bytes(raw))

    return patch


def truncate(source: Path) -> None:
    pyc = source.parent / PYC
    pyc.write_bytes(pyc.read_bytes()[:10])


def untouched(source: Path) -> None:
    pass


# (how the pyc was written, what happened after, what why_stale says: None or a fragment)
CASES = {
    "timestamp, current": (TIMESTAMP, untouched, None),
    "timestamp, edited": (TIMESTAMP, edit, f"changed after {PYC} was written"),
    "timestamp, same size, new mtime": (TIMESTAMP, touch, f"changed after {PYC} was written"),
    "missing": (TIMESTAMP, remove_pyc, f"no {PYC}"),
    "another Python's magic": (TIMESTAMP, patch_pyc(0, b"\x00\x00\r\n"), "another Python version"),
    "truncated header": (TIMESTAMP, truncate, "truncated"),
    "invalid flags": (TIMESTAMP, patch_pyc(4, b"\x04"), "invalid header"),
    "checked hash, current": (CHECKED, touch, None),
    "checked hash, edited": (CHECKED, edit_keeping_size, f"changed after {PYC} was written"),
    "unchecked hash, edited": (UNCHECKED, edit, None),  # Python uses it whatever the source says
}


@pytest.mark.parametrize("case", list(CASES))
def test_why_stale(case: str, tmp_path: Path) -> None:
    mode, after, expected = CASES[case]
    source = compiled(tmp_path, mode)
    after(source)
    why = bytecode.why_stale(str(source))
    if expected is None:
        assert why is None
    else:
        assert why is not None and expected in why, why


@pytest.mark.parametrize("case", list(CASES))
def test_why_stale_agrees_with_the_import_system(case: str, tmp_path: Path) -> None:
    """A fresh interpreter that writes no bytecode (as pam_python's) compiles the source iff why_stale says so."""
    mode, after, _ = CASES[case]
    source = compiled(tmp_path, mode)
    after(source)
    probe = (
        "import builtins, sys; compiled = []; real = builtins.compile\n"
        "builtins.compile = lambda *a, **k: (compiled.append(a[1]), real(*a, **k))[1]\n"
        f"sys.path.insert(0, {str(tmp_path)!r}); import m; print({str(source)!r} in compiled)"
    )
    run = subprocess.run([sys.executable, "-I", "-B", "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == str(bytecode.why_stale(str(source)) is not None)


def test_per_login_files_are_what_pam_entry_loads_at_every_teleport_login() -> None:
    # pam_entry.py imports pam_loader, which imports pam_module; pam_fallback only when that fails.
    assert [file.removesuffix(".py") for file in bytecode.PER_LOGIN_FILES] == [
        name for name in pam_loader.IN_PAM_MODULES if name != "pam_fallback"
    ]


def test_stale_files_names_only_per_login_files(tmp_path: Path) -> None:
    for file in ("pam_loader.py", "pam_module.py", "pam_fallback.py", "other.py"):
        (tmp_path / file).write_text("X = 1\n")
    py_compile.compile(str(tmp_path / "pam_loader.py"), doraise=True)
    pyc = f"__pycache__/pam_module.{sys.implementation.cache_tag}.pyc"
    assert bytecode.stale_files(str(tmp_path)) == {"pam_module.py": f"no {pyc}"}


def test_doctor_warns_with_a_fix_that_works(tmp_path: Path) -> None:
    for file in bytecode.PER_LOGIN_FILES:
        (tmp_path / file).write_text("X = 1\n")
    check = doctor.bytecode_check(sys.executable, str(tmp_path))
    assert check.status == WARN
    assert "pam_loader.py: no __pycache__/" in check.message and "pam_module.py: no __pycache__/" in check.message
    assert "pam_python never writes bytecode" in check.message
    subprocess.run(shlex.split(check.fix), check=True)
    assert doctor.bytecode_check(sys.executable, str(tmp_path)).status == PASS


def test_doctor_says_when_the_python_cannot_check(tmp_path: Path) -> None:
    check = doctor.bytecode_check("/bin/false", str(tmp_path))
    assert check.status == WARN and "cannot check the bytecode" in check.message


def test_the_command_writes_no_bytecode_of_the_in_pam_modules(tmp_path: Path) -> None:
    """The command imports pam_loader.py and pam_module.py. Run as root by the Python pam_python embeds
    (the Debian package's `python3 -I`: PYTHONDONTWRITEBYTECODE ignored), it must not write their
    bytecode: doctor's `bytecode` check would pass on what the command itself had just written (after a
    Debian 12 -> 13 upgrade it did, at its first run), and never name a missing compile step."""
    package = Path(pam_loader.__file__).parent
    copy = tmp_path / "pam_teleport_audit"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); sys.argv = ['pam-teleport-audit', 'stanza'];"
        " from pam_teleport_audit.admin.cli import main; sys.exit(main())"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "pam_python.so" in proc.stdout, proc.stdout + proc.stderr
    imported = subprocess.run(
        [sys.executable, "-I", "-c", code.replace("sys.exit(main())", "print(sorted(sys.modules))")],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert "'pam_teleport_audit.pam_loader'" in imported and "'pam_teleport_audit.pam_module'" in imported
    # What Python imported before cli.py's first line (the two __init__.py, cli.py) may have bytecode.
    written = sorted(p.name for p in copy.rglob("*.pyc"))
    assert not [name for name in written if name.startswith("pam_")], written
