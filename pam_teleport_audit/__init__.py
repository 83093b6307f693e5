"""Teleport identity on Linux audit records, from inside the host's PAM stack.

Two rooms: the pam_*.py files run inside every login through the stack
(pam_entry.py only decides whether the others are needed, and loads them as
top-level modules from this folder, never through this package: see
pam_loader.py); admin/ is the pam-teleport-audit command.
"""

__version__ = "0.1.0"
