# The script on the pam.d line, compiled from source at every PAM handle: docs/architecture.md.
import os
import sys


def pam_sm_acct_mgmt(pamh, flags, args):
    try:
        exe = os.readlink("/proc/self/exe").removesuffix(" (deleted)")
    except OSError:
        return 25
    # With teleport_exe= any binary may be listed, through a symlink too: pam_loader resolves the paths.
    if exe.endswith("/teleport") or exe.startswith("/memfd:") or "teleport_exe=/" in " ".join(args):
        sys.path.insert(0, os.path.dirname(__file__))
        return __import__("pam_loader").load(globals(), exe, args)(pamh, flags, args)  # the module's from now on
    return 25


pam_sm_open_session = pam_sm_close_session = lambda pamh, flags, args: 25
