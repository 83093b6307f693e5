"""The script pam_python loads:

    session optional pam_python.so /path/to/pam_teleport_audit/pam_entry.py [options]

pam_python compiles this file from source at every PAM handle, so it stays
tiny and imports the package that sits around it (whose bytecode is cached).
Its globals live exactly as long as the PAM handle, which is what keeps the
identity trusted at acct_mgmt for the session phases.
"""

import os
import sys

# Import the package this script belongs to, not another copy that happens to
# come earlier on sys.path; the folder is on the path only while we import.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _PACKAGE_PARENT)
try:
    from pam_teleport_audit.pam_module import TeleportAuditModule
except Exception as _exc:  # package missing or broken: a login must not depend on it
    _IMPORT_ERROR = repr(_exc)
    _module = None
else:
    _module = TeleportAuditModule()
finally:
    sys.path.remove(_PACKAGE_PARENT)


_reported = False


def _unavailable(pamh, args):
    # Without the package only fail_closed and log_socket= are understood, and
    # nothing is recorded. One log line per PAM handle, as for other failures.
    global _reported
    refuse = "fail_closed" in args[1:]
    if not _reported:
        _reported = True
        path = next((a[len("log_socket=") :] for a in args[1:] if a.startswith("log_socket=")), "/dev/log")
        verdict = "login refused (fail_closed)" if refuse else "login goes on"
        text = f"pam_teleport_audit: cannot load: {_IMPORT_ERROR}; {verdict}"
        try:
            from pam_teleport_audit import syslog
            from pam_teleport_audit.constants import LOG_ERR

            syslog.log(LOG_ERR, "pam_python", text, path)
        except Exception:
            pass
    return 4 if refuse else 25  # PAM_SYSTEM_ERR / PAM_IGNORE


def pam_sm_acct_mgmt(pamh, flags, args):
    return _module.acct_mgmt(pamh, flags, args) if _module else _unavailable(pamh, args)


def pam_sm_open_session(pamh, flags, args):
    return _module.open_session(pamh, flags, args) if _module else _unavailable(pamh, args)


def pam_sm_close_session(pamh, flags, args):
    return _module.close_session(pamh, flags, args) if _module else 25


def pam_sm_setcred(pamh, flags, args):
    return 25  # PAM_IGNORE: nothing to do with credentials


def pam_sm_authenticate(pamh, flags, args):
    return 25  # PAM_IGNORE: Teleport authenticates; we only record
