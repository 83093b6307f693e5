"""The script pam_python loads:

    session optional pam_python.so /path/to/pam_teleport_audit/pam_entry.py [options]

pam_python compiles this file from source at every PAM handle (when it held
the pam_sm_* functions and the fallback, that cost 1.4 M instructions a login,
callgrind), so it only imports the package around it, whose bytecode is
cached, and takes its pam_sm_* functions from there.
Its globals live exactly as long as the PAM handle: that is what keeps the
identity trusted at acct_mgmt for the session phases.
"""

import os
import sys

# Import the package this script belongs to, not another copy that happens to
# come earlier on sys.path; the folder is on the path only while we import.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _PACKAGE_PARENT)
try:
    from pam_teleport_audit.pam_module import entry_points

    globals().update(entry_points())
except Exception as _exc:  # a broken package must not break logins
    from pam_teleport_audit.fallback import entry_points

    globals().update(entry_points(repr(_exc)))
finally:
    sys.path.remove(_PACKAGE_PARENT)
