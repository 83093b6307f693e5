"""The PAM lines that put the module into a service's stack.

account: the module, first in the account stack (it reads the PAM environment
Teleport filled and sets PAM_TTY=ssh, as sshd does, before any other account
module runs or can end the stack).
session: pam_tty_audit right after pam_loginuid, then the module, so that
keystrokes and our records carry the session id pam_loginuid just gave.
The default pam_tty_audit enable=* records the keystrokes of EVERY login
through the service, OpenSSH's included (--tty-audit narrows or turns it off).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..pam_module import parse_options

DEFAULT_TTY_AUDIT = "*"
# Marker comments around each block we add; no timestamps, so that writing
# the same stanza twice gives the same bytes.
BEGIN_MARK = "# BEGIN pam_teleport_audit {part} (managed by pam-teleport-audit; do not edit)"
END_MARK = "# END pam_teleport_audit {part}"
ENTRY_SUFFIX = "/pam_teleport_audit/pam_entry.py"
# The comment lines `render` prints around the lines (uninstall removes them with a pasted stanza).
ACCOUNT_COMMENT = "# Account stack, FIRST: before every other account line (and any include that has some):"
SESSION_COMMENT = "# Session stack, right after 'session required pam_loginuid.so':"
TTY_COMMENT = (
    "# pam_tty_audit enable={patterns} records the keystrokes of EVERY login through this",
    "# service, OpenSSH's included. Narrow it with --tty-audit PATTERNS, or --tty-audit off.",
)
_TTY_FIRST = re.compile(re.escape(TTY_COMMENT[0]).replace(re.escape("{patterns}"), r"\S+"))
# libpam reads these as something else than part of one argument: comment, brackets, continuation.
_NOT_IN_TOKEN = "#[]\\"


def token_problem(value: str) -> str | None:
    """Why value is not exactly one plain pam.d token (None: it is)."""
    if not value:
        return "is empty"
    if not all("!" <= c <= "~" for c in value):
        return "holds a blank, a control character or a non-ASCII character"
    bad = sorted({c for c in value if c in _NOT_IN_TOKEN})
    if bad:
        return f"holds {' '.join(repr(c) for c in bad)}, which libpam would not read as part of the argument"
    return None


def entry_script() -> str:
    """Absolute path of the script pam_python loads, beside this package."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pam_entry.py")


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

    def problems(self) -> list[str]:
        """Why these lines would not be exactly the ones meant (empty: they would)."""
        found = []
        for what, value in (
            [("--entry", self.entry)]
            + [("--option", o) for o in self.options]
            + ([("--tty-audit", self.tty_audit)] if self.tty_audit is not None else [])
        ):
            why = token_problem(value)
            if why is not None:
                found.append(f"{what} {value!r} {why}")
        if token_problem(self.entry) is None and not (self.entry.startswith("/") and self.entry.endswith(ENTRY_SUFFIX)):
            found.append(f"--entry {self.entry!r} is not an absolute path ending in {ENTRY_SUFFIX[1:]}")
        for option in self.options:
            if token_problem(option) is not None:
                continue
            if option == "fail_closed":
                found.append("--option 'fail_closed': use --fail-closed, which also makes the lines required")
                continue
            # The module's own words, less the "; ignored" a login's log line ends with: install refuses.
            problems = parse_options([option])["problems"]
            found += [f"--option {option!r}: {problem.removesuffix('; ignored')}" for problem in problems]
        return found

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
        tty = [TTY_COMMENT[0].format(patterns=self.tty_audit), TTY_COMMENT[1]] if self.tty_audit is not None else []
        return "\n".join(
            [
                ACCOUNT_COMMENT,
                *self.account_lines(),
                SESSION_COMMENT,
                *tty,
                *self.session_lines(),
                "",
            ]
        )


def is_comment(text: str) -> bool:
    """A comment line `render` prints (with any --tty-audit patterns), blanks around it ignored."""
    text = text.strip()
    return text in (ACCOUNT_COMMENT, SESSION_COMMENT, TTY_COMMENT[1]) or bool(_TTY_FIRST.fullmatch(text))
