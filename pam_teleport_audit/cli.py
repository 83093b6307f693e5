"""pam-teleport-audit: the administrator's side of the module."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .stanza import DEFAULT_TTY_AUDIT, Stanza, entry_script


def _tty_audit(value: str) -> str | None:
    return None if value == "off" else value


def cmd_stanza(args: argparse.Namespace) -> int:
    stanza = Stanza(args.entry or entry_script(), args.tty_audit, args.fail_closed, tuple(args.option))
    sys.stdout.write(stanza.render())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pam-teleport-audit",
        description="Teleport identity on Linux audit records: PAM stanza and tools.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    stanza = sub.add_parser("stanza", help="print the PAM lines to add to /etc/pam.d/sshd")
    stanza.add_argument("--entry", help="path of pam_entry.py (default: the installed one)")
    stanza.add_argument(
        "--tty-audit",
        type=_tty_audit,
        default=DEFAULT_TTY_AUDIT,
        metavar="PATTERNS|off",
        help="pam_tty_audit enable= patterns (default: %(default)s); off omits the line",
    )
    stanza.add_argument("--fail-closed", action="store_true", help="refuse logins that cannot be audited")
    stanza.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="OPT",
        help="extra module option, e.g. rhost_env=TELEPORT_CLIENT_ADDR (repeatable)",
    )
    stanza.set_defaults(func=cmd_stanza)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
