"""pam_entry.py as pam_python runs it: exec'd afresh per PAM handle, each
pam_sm_* looked up in its globals at each call.

The real stack (pam_python.so in a C process) is in tests/system, and what the
script imports in a fresh interpreter is in test_imports.py; here the script
is exec'd in this interpreter to check what it leaves in its globals. This
interpreter is not named teleport, so the tests that need the module loaded
either name it with teleport_exe=, as an administrator would, or stand in for
/proc/self/exe.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from pam_teleport_audit import pam_module

from .test_pam_module import FakePamh, sink  # noqa: F401 - sink is a fixture

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "pam_teleport_audit" / "pam_entry.py"
PHASES = ("pam_sm_acct_mgmt", "pam_sm_open_session", "pam_sm_close_session")
# This process's binary, named the way an administrator widens the trusted binaries.
THIS_EXE = f"teleport_exe={os.readlink('/proc/self/exe')}"


def exec_entry(path: Path) -> dict[str, object]:
    """What pam_python does with the script at each PAM handle."""
    scope = {"__file__": str(path), "__name__": "pam_entry"}
    exec(compile(path.read_text(), str(path), "exec"), scope)
    return scope


def login(scope: dict, args: list[str]) -> list[int]:
    """acct_mgmt, open_session, close_session, each looked up when called, as pam_python does."""
    return [scope[name](FakePamh(), 0, args) for name in PHASES]  # type: ignore[operator]


def test_each_handle_gets_its_own_state(sink) -> None:  # noqa: F811
    sink.exe = os.readlink("/proc/self/exe")  # what pam_module reads, as the option names it
    first, second = exec_entry(SCRIPT), exec_entry(SCRIPT)
    assert "pam_sm_end" not in first  # pam_python calls it only if the module defines it
    args = [str(SCRIPT), THIS_EXE]
    assert first["pam_sm_acct_mgmt"](FakePamh(), 0, args) == 25
    assert callable(first["pam_sm_end"])  # the module's functions now stand in the script's globals
    # The second handle never ran acct_mgmt: it loaded nothing and trusts nobody.
    assert second["pam_sm_open_session"](FakePamh(), 0, args) == 25
    assert "pam_sm_end" not in second
    assert first["pam_sm_open_session"](FakePamh(), 0, args) == 0
    assert len(sink.records) == 1
    assert str(SCRIPT.parent) not in sys.path  # put there for the import only
    assert not [name for name in IN_PAM if name in sys.modules]  # generic names, never left to shadow another module's


@pytest.mark.parametrize(
    ("exe", "options", "loaded"),
    [
        ("/usr/local/bin/teleport", [], True),
        ("/opt/teleport/system/bin/teleport (deleted)", [], True),  # replaced by an upgrade
        ("/memfd:teleport-sessionhelper (deleted)", [], True),
        ("/memfd:anything (deleted)", [], True),  # which memfd is pam_module's rule
        ("/usr/sbin/sshd", [], False),
        ("/usr/bin/pamtester", [], False),
        ("/usr/bin/teleport-helper", [], False),
        ("/usr/local/bin/tsh", ["teleport_exe=/usr/local/bin/tsh"], True),
        ("/usr/local/bin/tsh (deleted)", ["teleport_exe=/usr/local/bin/tsh"], True),
        ("/usr/local/bin/tsh", ["teleport_exe=/usr/local/bin/tsh2"], False),
        ("/usr/sbin/sshd", ["debug", "teleport_exe=/usr/local/bin/teleport"], False),
        # teleport-update's link: /proc/self/exe names the file it resolves to, whatever its name.
        ("/srv/tp/teleport-18.1", ["teleport_exe=/srv/tp/link"], True),
        ("/srv/tp/teleport-17.9", ["teleport_exe=/srv/tp/link"], False),
        # a listed file replaced by a link while the old binary runs: still the listed path itself
        ("/srv/tp/link (deleted)", ["teleport_exe=/srv/tp/link"], True),
    ],
)
def test_only_what_may_be_teleport_loads_the_module(monkeypatch, sink, exe, options, loaded) -> None:  # noqa: F811
    scope = exec_entry(SCRIPT)
    real, realpath = os.readlink, os.path.realpath
    monkeypatch.setattr(os, "readlink", lambda path: exe if path == "/proc/self/exe" else real(path))
    monkeypatch.setattr(
        os.path, "realpath", lambda path: "/srv/tp/teleport-18.1" if path == "/srv/tp/link" else realpath(path)
    )
    assert scope["pam_sm_acct_mgmt"](FakePamh(), 0, [str(SCRIPT), *options]) == 25
    assert ("pam_sm_end" in scope) is loaded


def test_a_login_that_is_not_teleport_goes_on_as_if_the_line_were_not_there(sink) -> None:  # noqa: F811
    scope = exec_entry(SCRIPT)
    assert login(scope, [str(SCRIPT), "fail_closed", "debug"]) == [25, 25, 25]
    assert "pam_sm_end" not in scope and sink.records == [] and sink.logs == []


def test_no_proc_means_no_record_and_no_exception(monkeypatch, sink) -> None:  # noqa: F811
    def no_proc(path: str) -> str:
        raise FileNotFoundError(path)

    scope = exec_entry(SCRIPT)
    monkeypatch.setattr(os, "readlink", no_proc)
    assert login(scope, [str(SCRIPT), THIS_EXE]) == [25, 25, 25]


# What the script and pam_loader.py import, as top-level modules from the script's folder.
IN_PAM = ("pam_loader", "pam_module", "pam_fallback")


@pytest.fixture(autouse=True)
def top_level_modules() -> Iterator[None]:
    """The script's `pam_module` is this interpreter's pam_teleport_audit.pam_module, which the sink patches.

    (Under pam_python nothing is imported yet and pam_loader imports the file
    beside the script; here the test must see the same module object it
    patched.) Whatever the test imported under the top-level names goes after it.
    """
    saved = {name: sys.modules.pop(name) for name in IN_PAM if name in sys.modules}
    sys.modules["pam_module"] = pam_module
    try:
        yield
    finally:
        for name in IN_PAM:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@pytest.mark.parametrize(("fail_closed", "code"), [(False, 25), (True, 4)])
def test_a_broken_module_gives_the_fallback(tmp_path: Path, fail_closed: bool, code: int) -> None:
    copy = tmp_path / "pam_teleport_audit"
    shutil.copytree(ROOT / "pam_teleport_audit", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "pam_module.py").write_text("this is not python (\n")
    del sys.modules["pam_module"]  # the copy's, broken, is what the script must meet
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind(str(tmp_path / "log"))
    log.settimeout(0.01)
    scope = exec_entry(copy / "pam_entry.py")
    args = [str(copy / "pam_entry.py"), THIS_EXE, f"log_socket={tmp_path / 'log'}"]
    args += ["fail_closed"] if fail_closed else []
    assert login(scope, args) == [code, code, 25]
    lines = []
    while True:
        try:
            lines.append(log.recv(4096).decode())
        except TimeoutError:
            break
    log.close()
    verdict = "login refused (fail_closed)" if fail_closed else "login goes on"
    assert len(lines) == 1 and "cannot load: SyntaxError" in lines[0] and verdict in lines[0], lines
    assert str(copy) not in sys.path  # the folder went once the import was done
    assert scope["pam_sm_acct_mgmt"].__code__.co_filename == str(copy / "pam_fallback.py")  # the copy's
    assert not [name for name in IN_PAM if name in sys.modules]  # they went too


def foreign(name: str, folder: Path) -> types.ModuleType:
    """A module another pam_python script of the handle imported under one of our names."""
    module = types.ModuleType(name)
    module.__file__ = str(folder / f"{name}.py")
    return module


def test_another_scripts_module_named_like_ours_neither_shadows_ours_nor_goes(sink, tmp_path: Path) -> None:  # noqa: F811
    """One interpreter runs every pam_python script of a handle: a script before ours that imported its own
    `pam_module` used to hand ours its module (no record of the Teleport login). Ours is loaded now, and
    theirs is where their script will look for it again."""
    name = "pam_module"  # their module named like ours (a `pam_loader` is not guarded: docs/architecture.md)
    theirs = sys.modules[name] = foreign(name, tmp_path)
    scope = exec_entry(SCRIPT)
    assert scope["pam_sm_acct_mgmt"](FakePamh(), 0, [str(SCRIPT), THIS_EXE]) == 25
    assert scope["pam_sm_open_session"].__code__.co_filename == str(SCRIPT.parent / "pam_module.py")  # type: ignore[attr-defined]
    assert callable(scope["pam_sm_end"])
    assert sys.modules[name] is theirs
    assert [other for other in IN_PAM if other in sys.modules] == [name]  # ours went, theirs stayed


def test_another_scripts_pam_fallback_does_not_stand_in_for_ours(tmp_path: Path) -> None:
    copy = tmp_path / "pam_teleport_audit"
    shutil.copytree(ROOT / "pam_teleport_audit", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "pam_module.py").write_text("this is not python (\n")
    del sys.modules["pam_module"]  # the copy's, broken, is what the script must meet
    theirs = sys.modules["pam_fallback"] = foreign("pam_fallback", tmp_path)
    scope = exec_entry(copy / "pam_entry.py")
    args = [str(copy / "pam_entry.py"), THIS_EXE, f"log_socket={tmp_path / 'no-log'}"]
    assert login(scope, args) == [25, 25, 25]  # fail-open: our fallback's answer
    assert scope["pam_sm_acct_mgmt"].__code__.co_filename == str(copy / "pam_fallback.py")  # type: ignore[attr-defined]
    assert sys.modules["pam_fallback"] is theirs


def test_a_broken_loader_is_left_to_pam_python(tmp_path: Path) -> None:
    """pam_loader.py itself broken: no fallback of ours can be reached. The one exception the script
    lets out: pam_python logs its traceback and returns PAM_SERVICE_ERR, which the stanza's optional
    line ignores (fail-open) and fail_closed's required line refuses (tests/system/test_faults.py)."""
    copy = tmp_path / "pam_teleport_audit"
    shutil.copytree(ROOT / "pam_teleport_audit", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "pam_loader.py").write_text("this is not python (\n")
    scope = exec_entry(copy / "pam_entry.py")
    try:
        with pytest.raises(SyntaxError):
            scope["pam_sm_acct_mgmt"](FakePamh(), 0, [str(copy / "pam_entry.py"), THIS_EXE])  # type: ignore[operator]
        # A login that is not Teleport's never meets it (unless the line has teleport_exe=: README).
        assert scope["pam_sm_acct_mgmt"](FakePamh(), 0, [str(copy / "pam_entry.py")]) == 25  # type: ignore[operator]
    finally:  # the failed import left the folder on sys.path
        while str(copy) in sys.path:
            sys.path.remove(str(copy))
