"""The PAM lines that put the module into a service's stack.

account: the module, anywhere in the account stack (it reads the PAM
environment Teleport filled and sets PAM_TTY for libpam's USER_ACCT).
session: pam_tty_audit right after pam_loginuid, then the module, so that
keystrokes and our records carry the session id pam_loginuid just gave.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_TTY_AUDIT = "*"
# Marker comments around each block we add; no timestamps, so that writing
# the same stanza twice gives the same bytes.
BEGIN_MARK = "# BEGIN pam_teleport_audit {part} (managed by pam-teleport-audit; do not edit)"
END_MARK = "# END pam_teleport_audit {part}"


def entry_script() -> str:
    """Absolute path of the script pam_python loads, beside this package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "pam_entry.py")


@dataclass(frozen=True)
class Stanza:
    entry: str
    tty_audit: str | None = DEFAULT_TTY_AUDIT  # enable= patterns; None: no pam_tty_audit line
    fail_closed: bool = False
    options: tuple[str, ...] = ()  # extra module options (teleport_exe=…, rhost_env=…)

    @property
    def control(self) -> str:
        # An optional module's failure cannot refuse a login; required can.
        return "required" if self.fail_closed else "optional"

    def _module_args(self) -> str:
        args = [self.entry, *(("fail_closed",) if self.fail_closed else ()), *self.options]
        return " ".join(args)

    def account_lines(self) -> list[str]:
        return [f"account    {self.control:<10} pam_python.so {self._module_args()}"]

    def session_lines(self) -> list[str]:
        lines = []
        if self.tty_audit is not None:
            lines.append(f"session    {self.control:<10} pam_tty_audit.so enable={self.tty_audit}")
        lines.append(f"session    {self.control:<10} pam_python.so {self._module_args()}")
        return lines

    def block(self, part: str) -> list[str]:
        """The account or session lines between their marker comments."""
        lines = self.account_lines() if part == "account" else self.session_lines()
        return [BEGIN_MARK.format(part=part), *lines, END_MARK.format(part=part)]

    def render(self) -> str:
        return (
            "# Account stack, after the other account modules:\n"
            + "\n".join(self.account_lines())
            + "\n# Session stack, right after 'session required pam_loginuid.so':\n"
            + "\n".join(self.session_lines())
            + "\n"
        )
