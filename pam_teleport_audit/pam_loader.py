"""What pam_entry.py imports at a login that may be Teleport's: one handle's pam_sm_*.

pam_entry.py puts this file's folder first on sys.path and imports it, and
then pam_module.py, as top-level modules: importing them through the package
would make the import system list the package's parent folder too
(dist-packages, hundreds of entries on a busy host) and load __init__.py, at
every Teleport login (docs/benchmarks.md). The admin side and the tests import
the same files as pam_teleport_audit.pam_module.
"""

import os
import sys

# This folder's modules that PAM imports by these top-level names.
IN_PAM_MODULES = ("pam_loader", "pam_module", "pam_fallback")
PAM_IGNORE = 25  # pam_module.py's value: a binary that is not Teleport does not load it

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def load(scope: "dict[str, object]", exe: str, args: "list[str]") -> "Callable[..., int]":
    """Put one PAM handle's pam_sm_* functions in pam_entry.py's globals; return its pam_sm_acct_mgmt.

    pam_python looks each pam_sm_* up by name at each call, so from then on the
    handle runs pam_module.py's (pam_fallback.py's when pam_module.py cannot be
    imported). Once the import is done the folder leaves sys.path, and our
    top-level names leave sys.modules: the interpreter is shared with any other
    pam_python module of the same PAM handle, whose own `pam_module` ours must
    not shadow. Nor may theirs shadow ours: a `pam_module` or `pam_fallback`
    another script imported is set aside while ours are imported and put back
    after, or the Teleport login would load no module of ours and go
    unrecorded. The functions keep their module's globals without the entry.
    A binary that pam_entry.py let through only for a teleport_exe= option is
    not loaded for unless one of those paths is it, or resolves to it (a
    symlink, as teleport-update makes): /proc/self/exe names the file itself.
    """
    folder = __file__.rpartition("/")[0]
    modules = sys.modules
    aside: dict[str, object] = {
        name: modules.pop(name) for name in IN_PAM_MODULES if name in modules and folder_of(modules[name]) != folder
    }
    try:
        if not exe.endswith("/teleport") and not exe.startswith("/memfd:") and exe not in listed(args):
            return not_teleport
        try:
            import pam_module

            scope.update(pam_module.entry_points())
        except Exception as exc:  # a broken module must not break logins, nor go unnoticed
            import pam_fallback

            scope.update(pam_fallback.entry_points(repr(exc)))
    finally:
        if sys.path and sys.path[0] == folder:
            del sys.path[0]
        for name in IN_PAM_MODULES:
            if name in modules and folder_of(modules[name]) == folder:
                del modules[name]
        modules.update(aside)  # type: ignore[arg-type]
    return scope["pam_sm_acct_mgmt"]  # type: ignore[return-value]


def folder_of(module: object) -> str:
    """The folder a module was loaded from; "" for one without a file."""
    return (getattr(module, "__file__", None) or "").rpartition("/")[0]


def not_teleport(pamh: object, flags: int, args: "list[str]") -> int:
    return PAM_IGNORE


def listed(args: "list[str]") -> "list[str]":
    """Each teleport_exe= path and the file it resolves to (pam_module's exe_is_teleport, by which the
    path itself names a binary that was replaced while it runs); none when resolving fails."""
    paths = [arg[len("teleport_exe=") :] for arg in args if arg.startswith("teleport_exe=/")]
    try:
        return paths + [os.path.realpath(path) for path in paths]
    except OSError:  # a link removed while it is resolved: this login is not let through by it
        return paths
