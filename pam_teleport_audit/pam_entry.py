"""The script pam_python loads; docs/architecture.md says why it is this small.

pam_python compiles it from source at every PAM handle, Teleport's login or
not. Before importing anything, pam_sm_acct_mgmt asks whether the PAM
application may be Teleport: a binary named teleport, a memfd, or one a
teleport_exe= option names (pam_module.py then applies the trust rule itself).
Only then does it load pam_module.py, whose functions replace these ones for
the rest of the PAM handle; otherwise the handle goes on as if the line were
not there.
"""

import os


def pam_sm_acct_mgmt(pamh, flags, args):
    try:
        exe = os.readlink("/proc/self/exe")  # as the records will say it: " (deleted)" after an upgrade
        path = exe.removesuffix(" (deleted)")
        if path.endswith("/teleport") or path.startswith("/memfd:") or "teleport_exe=" + path in args:
            import sys

            sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))  # this package, not another copy
            try:
                from pam_teleport_audit import load
            finally:
                del sys.path[0]
            globals().update(load(exe))  # this handle's pam_sm_* from now on
            return pam_sm_acct_mgmt(pamh, flags, args)
    except Exception:
        pass
    return 25  # PAM_IGNORE


def pam_sm_open_session(pamh, flags, args):
    return 25  # not Teleport: pam_sm_acct_mgmt loaded nothing


pam_sm_close_session = pam_sm_open_session
