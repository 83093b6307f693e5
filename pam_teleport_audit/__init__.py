"""Teleport identity on Linux audit records, from inside the host's PAM stack.

Two rooms: pam_entry.py and pam_module.py run inside every login through the
stack (the first only decides whether the second is needed); admin/ is the
pam-teleport-audit command. Nothing is imported here at the top: the PAM side
imports this package at every Teleport login.
"""

__version__ = "0.1.0"


def load(exe: str) -> "dict[str, object]":
    """The pam_sm_* functions of one PAM handle, for pam_entry.py; the fallback's when pam_module.py is broken."""
    try:
        from .pam_module import entry_points

        return entry_points(exe)
    except Exception as exc:  # a broken module must not break logins
        from .fallback import entry_points

        return entry_points(repr(exc))
