"""Teleport identity on Linux audit records, from inside the host's PAM stack.

Nothing is imported here on purpose: pam_python imports this package at every
PAM handle, so each caller imports only the module it needs.
"""

__version__ = "0.1.0"
