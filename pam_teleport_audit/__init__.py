"""Teleport identity on Linux audit records, from inside the host's PAM stack.

Two rooms: pam_entry.py and pam_module.py run inside every login through the
stack (the first only decides whether the second is needed); admin/ is the
pam-teleport-audit command. Nothing is imported here at the top: the PAM side
imports this package at every Teleport login.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__version__ = "0.1.0"


def load(scope: "dict[str, object]") -> "Callable[..., int]":
    """Put one PAM handle's pam_sm_* functions in pam_entry.py's globals; return its pam_sm_acct_mgmt.

    pam_python looks each pam_sm_* up by name at each call, so from then on the
    handle runs pam_module.py's (the fallback's when pam_module.py is broken).
    pam_entry.py put this package's folder first on sys.path to import this
    copy of it, not another one; the entry goes once the import is done.
    """
    import sys

    if sys.path and sys.path[0] == __path__[0].rpartition("/")[0]:
        del sys.path[0]
    try:
        from .pam_module import entry_points

        scope.update(entry_points())
    except Exception as exc:  # a broken module must not break logins
        from .fallback import entry_points

        scope.update(entry_points(repr(exc)))
    return scope["pam_sm_acct_mgmt"]  # type: ignore[return-value]
