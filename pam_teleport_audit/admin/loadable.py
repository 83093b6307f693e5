"""Can a login load the lines of ours? Cheap file checks for status, install and doctor.

A line of ours is `TYPE CONTROL pam_python.so /path/pam_teleport_audit/pam_entry.py …`. At every
login libpam loads pam_python.so (a relative name: from its module folder), whose embedded
interpreter runs the script, which imports the in-PAM modules beside it, as root. When any of
that is missing the line fails (optional: ignored) and the login goes unrecorded; when a user
other than root can change any of it, that user runs code as root at the next Teleport login.

No import of the module here (doctor does that, in a subprocess): a few stat calls and one ldd.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
import subprocess
import sys

from ..pam_loader import IN_PAM_MODULES

PAM_PYTHON = "pam_python.so"
# Where libpam looks for a relative module name: its compiled-in folder (Debian: multiarch under
# /lib or /usr/lib; RHEL, SUSE: /usr/lib64/security; Arch, Alpine: /usr/lib/security, /lib/security),
# and Debian's compatibility /lib/security, where Debian 12's libpam-python puts pam_python.so.
# This machine's multiarch triplet first (the Python running this is the distribution's, or built
# like it): an armhf, ppc64el or s390x host is not refused for want of its folder in a list.
_MULTIARCH = getattr(sys.implementation, "_multiarch", "") or "x86_64-linux-gnu"
MODULE_DIRS = tuple(
    dict.fromkeys(
        (
            f"/lib/{_MULTIARCH}/security",
            f"/usr/lib/{_MULTIARCH}/security",
            "/lib/x86_64-linux-gnu/security",
            "/usr/lib/x86_64-linux-gnu/security",
            "/lib/security",
            "/usr/lib/security",
            "/lib64/security",
            "/usr/lib64/security",
            "/lib/aarch64-linux-gnu/security",
        )
    )
)
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # PATH of the commands run (ldd, auditctl)
# One ldd line naming libpython: `libpython3.11.so.1.0 => /lib/…/libpython3.11.so.1.0 (0x…)`,
# `libpython2.7.so.1.0 => not found`, or an absolute DT_NEEDED without `=>`.
_LIBPYTHON = re.compile(r"^\s*\S*libpython(\d+)\.(\d+)\S*(?:\s+=>\s+(not found|\S+))?", re.M)
PYTHON2 = (
    "pam_python.so embeds Python {version}; this module needs a pam_python built for Python 3, "
    "as Debian 12+ and Ubuntu 24.04+ ship"
)
ROOT_UIDS = frozenset({0})  # pam_python runs the script as root: only root may be able to change it
ROOT_ONLY_FIX = "make each of them root's and not writable by group or others (chown root:root, chmod go-w)"


def find_pam_python(dirs: tuple[str, ...] | None = None) -> str | None:
    """The pam_python.so libpam loads for the relative name (None: not installed)."""
    return module_file(PAM_PYTHON, dirs)


def module_file(token: str, dirs: tuple[str, ...] | None = None) -> str | None:
    """The file libpam loads for a line's module token: an absolute path as is, else from its folders."""
    folders = MODULE_DIRS if dirs is None else dirs
    candidates = [token] if token.startswith("/") else [os.path.join(folder, token) for folder in folders]
    return next((path for path in candidates if os.path.isfile(path)), None)


def ldd(path: str) -> str | None:
    """`ldd path` (None: it could not run). The dynamic loader traces; nothing of path runs."""
    try:
        proc = subprocess.run(
            ["ldd", path], capture_output=True, text=True, check=False, env={"LC_ALL": "C", "PATH": SAFE_PATH}
        )
    except OSError:
        return None
    return proc.stdout


def libpython(ldd_output: str) -> tuple[int, int, bool] | None:
    """(major, minor, found) of the libpython in ldd's output; None when none is named."""
    match = _LIBPYTHON.search(ldd_output)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), match.group(3) != "not found"


def embedded_python(pam_python: str, ldd_output: str | None = None) -> str | None:
    """The interpreter pam_python.so links against (libpython3.X → /usr/bin/python3.X)."""
    found = libpython(ldd(pam_python) or "" if ldd_output is None else ldd_output)
    return f"/usr/bin/python{found[0]}.{found[1]}" if found else None


def python_problem(pam_python: str, ldd_output: str | None = None) -> str | None:
    """Why the Python pam_python.so embeds cannot run the module (None: it can, or ldd cannot tell)."""
    found = libpython(ldd(pam_python) or "" if ldd_output is None else ldd_output)
    if found is None:
        return None
    major, minor, present = found
    if major < 3:
        return PYTHON2.format(version=f"{major}.{minor}") + f" ({pam_python})"
    if not present:
        return (
            f"{pam_python} needs libpython{major}.{minor}, which the dynamic loader does not find (ldd: not found), "
            f"so libpam cannot load it; install libpython{major}.{minor} or reinstall libpam-python"
        )
    return None


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def _not_root_only(path: str, st: os.stat_result, sticky_ok: bool = True) -> str | None:
    """Who but root can change path (None: nobody). sticky_ok: false for the entry's own folder,
    where a new file is a new module (it is first on sys.path while the in-PAM modules import)."""
    if st.st_uid not in ROOT_UIDS:
        return f"{path} is owned by {_owner(st.st_uid)}"
    # In a sticky folder only an entry's owner may rename or delete it: its root-owned entries are safe.
    if sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
        return None
    if st.st_mode & stat.S_IWGRP and st.st_gid != 0:
        return f"{path} is writable by group {_group(st.st_gid)}"
    if st.st_mode & stat.S_IWOTH:
        return f"{path} is writable by everyone"
    return None


def _folders(path: str) -> list[str]:
    """path's folders up to /, as written and as resolved (a symlink on the way is replaced in its folder)."""
    found: list[str] = []
    for start in (os.path.abspath(path), os.path.realpath(path)):
        folder = os.path.dirname(start)
        while folder not in found:
            found.append(folder)
            if folder == "/":
                break
            folder = os.path.dirname(folder)
    return found


def _package_files(folder: str) -> list[str]:
    """What Python reads from the entry's folder at a login: it is first on sys.path while the in-PAM
    modules import (any module there can shadow the standard library), and their cached bytecode."""
    files: list[str] = []
    for base in (folder, os.path.join(folder, "__pycache__")):
        try:
            names = sorted(os.listdir(base))
        except OSError:
            continue
        files += [os.path.join(base, name) for name in names]
    return files


def writable_by_others(entry: str) -> list[str]:
    """Who but root can change the code pam_python runs as root from entry: the script, the files
    beside it, their bytecode, and every folder above them."""
    # pam_entry.py puts its folder as written on sys.path; the script itself is read resolved.
    folders = dict.fromkeys(os.path.dirname(p) for p in (os.path.abspath(entry), os.path.realpath(entry)))
    found = []
    for path in dict.fromkeys([*(f for folder in folders for f in _package_files(folder)), *_folders(entry)]):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue  # its folder (checked) decides who may replace it, its target is checked resolved
        why = _not_root_only(path, st, sticky_ok=path not in folders)
        if why is not None:
            found.append(why)
    return found


def entry_problem(entry: str) -> str | None:
    """Why pam_python cannot run the script entry and the modules it imports (None: it can)."""
    try:
        st = os.stat(entry)
    except OSError as exc:
        why = "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read: {exc.strerror}"
        return f"the entry script {entry} {why}"
    if not stat.S_ISREG(st.st_mode):
        return f"the entry script {entry} is not a regular file"
    folder = os.path.dirname(entry)
    missing = [name for name in IN_PAM_MODULES if not os.path.isfile(os.path.join(folder, f"{name}.py"))]
    if missing:
        return f"{', '.join(f'{m}.py' for m in missing)} missing beside the entry script {entry}"
    return None


def problems(modules: list[str], entries: list[str], dirs: tuple[str, ...] | None = None) -> list[str]:
    """Why a login cannot load the lines of ours (their module tokens and entry scripts), or must not:
    each message with its fix; empty when they load."""
    found: list[str] = []
    for token in dict.fromkeys(modules):
        path = module_file(token, dirs)
        if path is None:
            folders = ", ".join(MODULE_DIRS if dirs is None else dirs)
            where = "" if token.startswith("/") else f" in libpam's module folders ({folders})"
            found.append(
                f"{token} is not there{where}, so libpam cannot load the lines of ours: "
                "install libpam-python (its Python 3 build)"
            )
            continue
        python = python_problem(path)
        if python is not None:
            found.append(python)
    for entry in dict.fromkeys(entries):
        missing = entry_problem(entry)
        if missing is not None:
            found.append(
                f"{missing}: pam_python cannot run it, so no Teleport login is recorded; install the package, or "
                "run install with --entry of an installed copy (its default is the running helper's own)"
            )
            continue
        unsafe = writable_by_others(entry)
        if unsafe:
            found.append(
                f"{'; '.join(unsafe)}: pam_python runs {entry} and the modules beside it as root at every login, "
                f"so that user or group can run code as root; {ROOT_ONLY_FIX}, or install the .deb"
            )
    return found
