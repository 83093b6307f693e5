"""What the in-PAM path imports, in a fresh isolated interpreter as pam_python runs it.

pam_python starts an interpreter per PAM handle, imports traceback, then execs
pam_entry.py: every module imported after that is paid at every login. A
login that is not Teleport's must import nothing; a Teleport login only
pam_loader.py and pam_module.py (as top-level modules: not the package) and
the built-in modules on ALLOWED. A heavy import (socket, struct, typing,
dataclasses, json …) added anywhere on the path makes this fail, naming it,
unless pam_python's own start already loaded it: Python 3.14's traceback
imports dataclasses, inspect and ast at every handle, so importing them again
costs us nothing there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The Python pam_python embeds (tests/system/conftest.py checks that tox runs it).
PAM_PYTHON = "/usr/bin/python3"
ALLOWED = frozenset(
    {
        "pam_loader",
        "pam_module",
        "_socket",  # built into the interpreter: the netlink and syslog sockets
        "time",  # built in: only when a line is logged (syslog_line)
    }
)
# Run in the fresh interpreter: pam_python's own start, then one whole login
# through the script (acct_mgmt, open_session, close_session, pam_end), with
# debug on so that the logging path runs too. An audit hook sees every import.
# The kernel and syslog are stood in for after the load (they are sockets; what
# matters here is what loads).
CHILD = """
import os, sys, traceback  # what pam_python has loaded; json only once the imports are counted
imported = set()  # every import from here on, even of a module that later leaves sys.modules
sys.addaudithook(lambda event, args: imported.add(args[0]) if event == "import" else None)
path, kind = sys.argv[1], sys.argv[2]


class Env(dict):
    pass


class Pamh:
    user, tty, rhost, service = "root", None, None, "sshd"
    env = Env(TELEPORT_USERNAME="alice", TELEPORT_ROLES="access")


scope = {"__file__": path, "__name__": "pam_entry"}
exec(compile(open(path).read(), path, "exec"), scope)
listing = {"teleport": os.readlink("/proc/self/exe"), "elsewhere": "/nonexistent/bin/teleport-node"}.get(kind)
args = [path, "debug"] + (["teleport_exe=" + listing] if listing else [])
codes = [scope["pam_sm_acct_mgmt"](Pamh(), 0, args)]
loaded = "pam_sm_end" in scope
if loaded:
    module = scope["pam_sm_open_session"].__func__.__globals__  # pam_module's, bound to this handle
    module["write_records"] = lambda records, timeout: None
    module["syslog"](6, "test", "the logging path", "/nonexistent")
    module["syslog"] = lambda *a: True
codes += [scope[name](Pamh(), 0, args) for name in ("pam_sm_open_session", "pam_sm_close_session")]
if loaded:
    codes.append(scope["pam_sm_end"](Pamh()))
ours = [name for name in ("pam_loader", "pam_module", "pam_fallback") if name in sys.modules]
new = sorted(imported)
import json

print(json.dumps({"new": new, "codes": codes, "loaded": loaded, "left": ours}))
"""


def in_pam_imports(entry: Path, teleport: bool, kind: str = "") -> dict:
    """kind: teleport (this interpreter listed with teleport_exe=), other (no option), elsewhere
    (teleport_exe= naming another binary)."""
    proc = subprocess.run(
        [PAM_PYTHON, "-I", "-c", CHILD, str(entry), kind or ("teleport" if teleport else "other")],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    return json.loads(proc.stdout)


def loaded_at_pam_python_start() -> set[str]:
    """The modules in sys.modules once pam_python has started and imported traceback."""
    proc = subprocess.run(
        [PAM_PYTHON, "-I", "-c", "import sys, traceback; print(*sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    return set(proc.stdout.split())


def test_a_login_that_is_not_teleport_imports_nothing() -> None:
    got = in_pam_imports(ROOT / "pam_teleport_audit" / "pam_entry.py", teleport=False)
    assert got == {"new": [], "codes": [25, 25, 25], "loaded": False, "left": []}


def test_with_teleport_exe_a_login_that_is_not_teleport_imports_only_the_loader() -> None:
    """teleport_exe= lets every binary through to pam_loader.py, which resolves the listed paths
    (symlinks) and goes no further for one that is not listed; nothing of it is left behind."""
    got = in_pam_imports(ROOT / "pam_teleport_audit" / "pam_entry.py", teleport=False, kind="elsewhere")
    assert got == {"new": ["pam_loader"], "codes": [25, 25, 25], "loaded": False, "left": []}


def test_a_teleport_login_imports_only_the_allowlist() -> None:
    got = in_pam_imports(ROOT / "pam_teleport_audit" / "pam_entry.py", teleport=True)
    assert got["loaded"] and got["codes"] == [25, 0, 0, 0]  # the module ran every phase
    assert set(got["new"]) <= ALLOWED, f"in-PAM path imports more than allowed: {set(got['new']) - ALLOWED}"
    assert {"pam_loader", "pam_module"} <= set(got["new"])
    assert got["left"] == []  # generic top-level names must not shadow another pam_python module's


@pytest.mark.parametrize("heavy", ["socket", "struct", "_struct", "typing", "dataclasses", "json"])
def test_the_allowlist_catches_a_heavy_import(tmp_path: Path, heavy: str) -> None:
    copy = tmp_path / "pam_teleport_audit"
    shutil.copytree(ROOT / "pam_teleport_audit", copy, ignore=shutil.ignore_patterns("__pycache__", "admin"))
    module = copy / "pam_module.py"
    module.write_text(module.read_text().replace("import os\n", f"import os\nimport {heavy}\n", 1))
    got = in_pam_imports(copy / "pam_entry.py", teleport=True)
    assert got["loaded"]
    if heavy in loaded_at_pam_python_start():  # paid by pam_python at every handle, not by us
        assert heavy not in got["new"]
    else:
        assert heavy in set(got["new"]) - ALLOWED
