"""The script pam_python loads:

    session optional pam_python.so /path/to/pam_teleport_audit/pam_entry.py [options]

Every login through the stack runs it, Teleport's or not, and pam_python
compiles it from source at every PAM handle. So it only decides, from
/proc/self/exe and the teleport_exe= options and before importing anything,
whether the PAM application may be Teleport at all; only then does it load
pam_module.py (cached bytecode), which applies the trust rule itself (owner,
mode, which memfd, root) and does the work. Its globals live exactly as long
as the PAM handle: that keeps the identity trusted at acct_mgmt for the
session phases, and two handles never share one.
"""

import os
import sys

PAM_SUCCESS = 0
PAM_IGNORE = 25
_handle = None  # this handle's pam_sm_* functions once loaded, {} when not Teleport


def may_be_teleport(exe: str, args: list[str]) -> bool:
    """A binary named teleport, a memfd, or one a teleport_exe= option names."""
    exe = exe.removesuffix(" (deleted)")
    return exe.rpartition("/")[2] == "teleport" or exe.startswith("/memfd:") or "teleport_exe=" + exe in args


def _load(args: list[str]) -> dict:
    try:
        exe = os.readlink("/proc/self/exe")
    except OSError:
        return {}
    if not may_be_teleport(exe, args):
        return {}
    # Import the package this script belongs to, not another copy that happens to
    # come earlier on sys.path; the folder is on the path only while we import.
    parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, parent)
    try:
        from pam_teleport_audit.pam_module import entry_points

        return entry_points(exe)
    except Exception as exc:  # a broken module must not break logins
        from pam_teleport_audit.fallback import entry_points

        return entry_points(repr(exc))
    finally:
        sys.path.remove(parent)


def _call(name: str, pamh: object, flags: int, args: list[str]) -> int:
    global _handle
    try:
        if _handle is None:
            _handle = _load(args)
        phase = _handle.get(name)
        return phase(pamh, flags, args) if phase else PAM_IGNORE
    except Exception:  # the functions never raise; this is for the loading itself
        return PAM_IGNORE


def pam_sm_acct_mgmt(pamh: object, flags: int, args: list[str]) -> int:
    return _call("acct_mgmt", pamh, flags, args)


def pam_sm_open_session(pamh: object, flags: int, args: list[str]) -> int:
    return _call("open_session", pamh, flags, args)


def pam_sm_close_session(pamh: object, flags: int, args: list[str]) -> int:
    return _call("close_session", pamh, flags, args)


def pam_sm_end(pamh: object) -> int:
    """pam_python calls it from pam_end; only a loaded module has anything to say."""
    end = _handle.get("end") if _handle else None
    return end(pamh) if end else PAM_SUCCESS


def pam_sm_setcred(pamh: object, flags: int, args: list[str]) -> int:
    return PAM_IGNORE  # nothing to do with credentials


def pam_sm_authenticate(pamh: object, flags: int, args: list[str]) -> int:
    return PAM_IGNORE  # Teleport authenticates; we only record
