"""Can a login load the lines of ours (admin/loadable.py), and what status and install make of it."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from pam_teleport_audit.admin import cli, doctor, loadable

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "pam"
DEBIAN = (FIXTURES / "debian-12" / "sshd").read_bytes()

pytestmark = pytest.mark.load_checks

# `ldd pam_python.so`, as each system prints it.
LDD_DEBIAN_12 = """\
\tlinux-vdso.so.1 (0x00007fc62ce9a000)
\tlibpam.so.0 => /lib/x86_64-linux-gnu/libpam.so.0 (0x00007fc62ce68000)
\tlibpython3.11.so.1.0 => /lib/x86_64-linux-gnu/libpython3.11.so.1.0 (0x00007fc62c600000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fc62c41e000)
\tlibaudit.so.1 => /lib/x86_64-linux-gnu/libaudit.so.1 (0x00007fc62ce37000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007fc62c33e000)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007fc62ce16000)
\tlibexpat.so.1 => /lib/x86_64-linux-gnu/libexpat.so.1 (0x00007fc62cdeb000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007fc62ce9c000)
\tlibcap-ng.so.0 => /lib/x86_64-linux-gnu/libcap-ng.so.0 (0x00007fc62cde3000)
"""
# Debian 13, its first lines (the rest as Debian 12's).
LDD_DEBIAN_13 = """\
\tlinux-vdso.so.1 (0x00007f5ca56fd000)
\tlibpam.so.0 => /lib/x86_64-linux-gnu/libpam.so.0 (0x00007f5ca56d1000)
\tlibpython3.13.so.1.0 => /lib/x86_64-linux-gnu/libpython3.13.so.1.0 (0x00007f5ca4f32000)
"""
# Ubuntu 22.04 / 20.04: libpam-python 1.0.x Depends: libpython2.7. Not captured there (no such root here):
# Debian's lines with the soname it links; tests/system/test_loadable_system.py runs the real ldd on a
# gcc-made module linked against libpython2.7.so.1.0.
LDD_UBUNTU_2204 = """\
\tlinux-vdso.so.1 (0x00007ffd6b5f2000)
\tlibpam.so.0 => /lib/x86_64-linux-gnu/libpam.so.0 (0x00007f3c9a8a0000)
\tlibpython2.7.so.1.0 => /lib/x86_64-linux-gnu/libpython2.7.so.1.0 (0x00007f3c9a400000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3c9a1d8000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f3c9a8d0000)
"""
# RHEL 9 (EPEL pam_python), lib64 without multiarch: its libpython line, in ldd's format.
LDD_RHEL_9 = "\tlibpython3.9.so.1.0 => /lib64/libpython3.9.so.1.0 (0x00007f1e2a200000)\n"
# Debian 13's pam_python read by Debian 12's loader: the libpython it was built for is not there.
LDD_NOT_FOUND = (
    "\tlibpam.so.0 => /lib/x86_64-linux-gnu/libpam.so.0 (0x00007f1d51858000)\n\tlibpython3.13.so.1.0 => not found\n"
)
LDD_NOT_DYNAMIC = "\tnot a dynamic executable\n"


@pytest.mark.parametrize(
    ("output", "version", "python"),
    [
        (LDD_DEBIAN_12, (3, 11, True), "/usr/bin/python3.11"),
        (LDD_DEBIAN_13, (3, 13, True), "/usr/bin/python3.13"),
        (LDD_UBUNTU_2204, (2, 7, True), "/usr/bin/python2.7"),
        (LDD_RHEL_9, (3, 9, True), "/usr/bin/python3.9"),
        (LDD_NOT_FOUND, (3, 13, False), "/usr/bin/python3.13"),
        (LDD_NOT_DYNAMIC, None, None),
        ("", None, None),
    ],
)
def test_ldd_shapes(output: str, version: tuple[int, int, bool] | None, python: str | None) -> None:
    assert loadable.libpython(output) == version
    assert loadable.embedded_python("/x/pam_python.so", output) == python


def test_python_2_is_named_with_the_fix() -> None:
    why = loadable.python_problem("/lib/security/pam_python.so", LDD_UBUNTU_2204)
    assert why is not None and why.startswith("pam_python.so embeds Python 2.7; this module needs a pam_python built")
    assert "Debian 12+ and Ubuntu 24.04+" in why
    assert "libpython3.13, which the dynamic loader does not find" in (
        loadable.python_problem("/p.so", LDD_NOT_FOUND) or ""
    )
    for good in (LDD_DEBIAN_12, LDD_DEBIAN_13, LDD_RHEL_9, LDD_NOT_DYNAMIC):
        assert loadable.python_problem("/p.so", good) is None


@pytest.mark.parametrize(
    ("output", "says", "fix"),
    [
        (
            LDD_UBUNTU_2204,
            "pam_python.so embeds Python 2.7; this module needs a pam_python built",
            "built for Python 3",
        ),
        (LDD_NOT_FOUND, "needs libpython3.13, which the dynamic loader does not find", "--reinstall libpam-python"),
    ],
)
def test_doctor_fails_a_pam_python_that_cannot_run_the_module(
    output: str, says: str, fix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pam_python.so").write_bytes(b"\x7fELF")
    monkeypatch.setattr(loadable, "ldd", lambda path: output)
    checks = list(doctor.module_checks([str(tmp_path / "nowhere" / "pam_entry.py")], (str(tmp_path),)))
    assert [(c.name, c.status) for c in checks] == [("pam_python", doctor.FAIL)]
    assert says in checks[0].message and fix in checks[0].fix


def mode(uid: int, gid: int, bits: int) -> os.stat_result:
    return os.stat_result((bits, 1, 1, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("st", "says"),
    [
        (mode(0, 0, stat.S_IFREG | 0o644), None),
        (mode(0, 0, stat.S_IFDIR | 0o775), None),  # group root: root's
        (mode(0, 0, stat.S_IFDIR | 0o777), "is writable by everyone"),
        (mode(0, 0, stat.S_IFDIR | 0o1777), None),  # sticky (/tmp): its root-owned entries stay root's
        (mode(0, 0, stat.S_IFREG | 0o1777), "is writable by everyone"),  # sticky means nothing on a file
        (mode(0, 50, stat.S_IFDIR | 0o2775), "is writable by group"),  # Debian's /usr/local (root:staff)
        (mode(0, 50, stat.S_IFREG | 0o664), "is writable by group"),
        (mode(0, 50, stat.S_IFREG | 0o644), None),
        (mode(1000, 0, stat.S_IFREG | 0o444), "is owned by"),  # its owner may chmod it
        (mode(1000, 0, stat.S_IFDIR | 0o1777), "is owned by"),
    ],
)
def test_who_but_root_can_change_a_path(st: os.stat_result, says: str | None) -> None:
    why = loadable._not_root_only("/p", st)
    assert (why is None) if says is None else (why is not None and says in why), why


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the in-PAM files under tmp_path, owned by whoever runs the tests (as root's, for the checks)."""
    monkeypatch.setattr(loadable, "ROOT_UIDS", frozenset({0, os.geteuid()}))
    folder = tmp_path / "site" / "pam_teleport_audit"
    folder.mkdir(parents=True)
    for name in ("pam_entry.py", "pam_loader.py", "pam_module.py", "pam_fallback.py", "__init__.py"):
        shutil.copy(ROOT / "pam_teleport_audit" / name, folder / name)
    for path in (tmp_path, tmp_path / "site", folder, *folder.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder / "pam_entry.py"


def test_a_root_only_package_has_nothing_to_say(package: Path) -> None:
    assert loadable.writable_by_others(str(package)) == [], "tmp_path's parents must be root's (or the tester's)"


@pytest.mark.parametrize(
    "where",
    ["site", "site/pam_teleport_audit", "site/pam_teleport_audit/pam_module.py", "site/pam_teleport_audit/__pycache__"],
)
def test_every_file_and_folder_pam_python_reads_is_checked(package: Path, where: str) -> None:
    path = package.parents[2] / where
    if not path.exists():
        path.mkdir(mode=0o755)
    path.chmod(path.stat().st_mode | 0o002)
    assert loadable.writable_by_others(str(package)) == [f"{path} is writable by everyone"]


def test_a_sticky_folder_is_root_s_above_the_entry_but_not_as_the_entry_s_own(package: Path) -> None:
    """Anyone may add a file to a sticky folder: above the entry that changes nothing root owns, but
    the entry's own folder is first on sys.path, where a new file is a module that can be imported."""
    site = package.parents[1]
    site.chmod(0o1777)
    assert loadable.writable_by_others(str(package)) == []
    package.parent.chmod(0o1777)
    assert loadable.writable_by_others(str(package)) == [f"{package.parent} is writable by everyone"]


def test_a_planted_bytecode_file_is_checked(package: Path) -> None:
    cache = package.parent / "__pycache__"
    cache.mkdir(mode=0o755)
    pyc = cache / "pam_module.cpython-311.pyc"
    pyc.write_bytes(b"")
    pyc.chmod(0o666)
    assert loadable.writable_by_others(str(package)) == [f"{pyc} is writable by everyone"]


def test_a_symlinked_folder_is_checked_where_it_points(package: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(package.parent.parent)
    (tmp_path / "site").chmod(0o777)
    found = loadable.writable_by_others(str(link / "pam_teleport_audit" / "pam_entry.py"))
    assert found == [f"{tmp_path / 'site'} is writable by everyone"]


def test_entry_problems(package: Path, tmp_path: Path) -> None:
    assert loadable.entry_problem(str(package)) is None
    assert loadable.entry_problem(str(tmp_path / "gone" / "pam_entry.py")) == (
        f"the entry script {tmp_path / 'gone' / 'pam_entry.py'} does not exist"
    )
    assert "is not a regular file" in (loadable.entry_problem(str(package.parent)) or "")
    (package.parent / "pam_module.py").unlink()
    assert loadable.entry_problem(str(package)) == f"pam_module.py missing beside the entry script {package}"


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module folder with a pam_python.so whose ldd reads as Debian 12's, in place of libpam's folders."""
    folder = tmp_path / "security"
    folder.mkdir()
    (folder / "pam_python.so").write_bytes(b"\x7fELF")
    monkeypatch.setattr(loadable, "MODULE_DIRS", (str(folder),))
    monkeypatch.setattr(loadable, "ldd", lambda path: LDD_DEBIAN_12)
    return folder


def test_problems(package: Path, modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = str(package)
    assert loadable.problems(["pam_python.so"], [entry]) == []
    assert loadable.problems([str(modules / "pam_python.so")], [entry, entry]) == []
    gone = loadable.problems(["/nowhere/pam_python.so"], [entry])
    assert gone == [
        "/nowhere/pam_python.so is not there, so libpam cannot load the lines of ours: install libpam-python "
        "(its Python 3 build)"
    ]
    (modules / "pam_python.so").unlink()
    assert (
        f"pam_python.so is not there in libpam's module folders ({modules})"
        in loadable.problems(["pam_python.so"], [])[0]
    )
    (modules / "pam_python.so").write_bytes(b"")
    monkeypatch.setattr(loadable, "ldd", lambda path: LDD_UBUNTU_2204)
    assert loadable.problems(["pam_python.so"], [])[0].startswith("pam_python.so embeds Python 2.7")


@pytest.fixture
def pam(tmp_path: Path) -> Path:
    """Debian 12's sshd in a folder with the common-* files it includes."""
    folder = tmp_path / "pam.d"
    folder.mkdir()
    for common in (FIXTURES / "debian-12").glob("common-*"):
        shutil.copy(common, folder / common.name)
    (folder / "sshd").write_bytes(DEBIAN)
    return folder / "sshd"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = cli.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_install_and_status_on_a_host_where_it_loads(
    pam: Path, package: Path, modules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "install", "--pam-file", str(pam), "--entry", str(package))
    assert code == cli.EXIT_OK and out["changed"], out
    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert (code, out["installed"], out["load_problems"]) == (cli.EXIT_OK, True, [])
    assert out["modules"] == ["pam_python.so"] and out["scripts"] == [str(package)]


@pytest.mark.parametrize(
    ("breakage", "says"),
    [
        ("entry gone", "the entry script {entry} does not exist: pam_python cannot run it"),
        ("pam_python gone", "pam_python.so is not there in libpam's module folders ({modules})"),
        ("python 2", "pam_python.so embeds Python 2.7; this module needs a pam_python built for Python 3"),
        ("group writable", "{entry} is writable by group"),
    ],
)
def test_status_of_lines_no_login_can_load_is_needs_repair_and_install_refuses(
    breakage: str,
    says: str,
    pam: Path,
    package: Path,
    modules: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(capsys, "install", "--pam-file", str(pam), "--entry", str(package))[0] == cli.EXIT_OK
    installed = pam.read_bytes()
    if breakage == "entry gone":
        shutil.rmtree(package.parent)
    elif breakage == "pam_python gone":
        (modules / "pam_python.so").unlink()
    elif breakage == "python 2":
        monkeypatch.setattr(loadable, "ldd", lambda path: LDD_UBUNTU_2204)
    else:
        os.chown(package, -1, 50 if os.geteuid() == 0 else next(g for g in os.getgroups() if g))  # root: staff
        package.chmod(0o664)
    said = says.format(entry=package, modules=modules)

    code, out = run(capsys, "status", "--pam-file", str(pam))
    assert (code, out["exit"], out["installed"]) == (cli.EXIT_BROKEN, cli.EXIT_BROKEN, False)
    assert len(out["load_problems"]) == 1 and said in out["load_problems"][0]
    assert cli.main(["status", "--pam-file", str(pam)]) == cli.EXIT_BROKEN
    assert capsys.readouterr().out.startswith(f"{pam}: needs repair: {said}")

    # install refuses, also where it would change nothing: the lines stay as they are, and the run fails.
    for argv in ([], ["--tty-audit", "root"], ["--check"]):
        code, out = run(capsys, "install", "--pam-file", str(pam), "--entry", str(package), *argv)
        assert (code, out["refused"], out["changed"]) == (cli.EXIT_REFUSED, True, False)
        assert said in out["reason"]
        assert pam.read_bytes() == installed
    # uninstall still works: it is how such a host is cleaned up.
    assert run(capsys, "uninstall", "--pam-file", str(pam))[0] == cli.EXIT_OK
    assert pam.read_bytes() == DEBIAN


def test_install_refuses_a_missing_entry_before_writing(pam: Path, modules: Path, tmp_path: Path, capsys) -> None:
    entry = str(tmp_path / "nonexistent" / "pam_teleport_audit" / "pam_entry.py")
    code = cli.main(["install", "--pam-file", str(pam), "--entry", entry])
    err = capsys.readouterr().err
    assert code == cli.EXIT_REFUSED
    assert f"refused, {pam} left unchanged: the entry script {entry} does not exist" in err
    assert "--entry of an installed copy" in err
    assert pam.read_bytes() == DEBIAN
