"""pam-teleport-audit: the administrator's side of the module."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .stanza import DEFAULT_TTY_AUDIT, Stanza, entry_script


def _tty_audit(value: str) -> str | None:
    return None if value == "off" else value


def cmd_stanza(args: argparse.Namespace) -> int:
    stanza = Stanza(args.entry or entry_script(), args.tty_audit, args.fail_closed, tuple(args.option))
    sys.stdout.write(stanza.render())
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from . import search

    try:
        since = search.parse_time(args.since) if args.since else None
        until = search.parse_time(args.until) if args.until else None
    except ValueError as exc:
        print(f"pam-teleport-audit search: {exc}", file=sys.stderr)
        return 2
    try:
        parser = search.open_parser(args.input)
    except (OSError, ImportError) as exc:
        print(f"pam-teleport-audit search: cannot read the audit log: {exc}", file=sys.stderr)
        return 1
    lookback = None if since is None else since - search.ACCOUNT_LOOKBACK
    sessions = search.find_sessions(
        search.iter_records(parser, lookback), args.teleport_user, since=since, until=until, node=args.node
    )
    # Records from this machine's own logs carry no node=: name them after this host.
    host = None if args.input else os.uname().nodename
    render = search.render_json if args.format == "json" else search.render_text
    sys.stdout.write(render(sessions, host))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from . import doctor

    checks = doctor.run_all(args.pam_file, args.teleport_config)
    if args.json:
        print(json.dumps(doctor.summary(checks), sort_keys=True))
    else:
        for check in checks:
            print(check.line())
    return 0 if all(c.status != doctor.FAIL for c in checks) else 1


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

    doc = sub.add_parser("doctor", help="check this host: kernel audit, auditd, the module, the stanza, Teleport")
    doc.add_argument("--json", action="store_true", help="one JSON object: ok and the checks")
    doc.add_argument(
        "--pam-file",
        metavar="PATH",
        help="PAM file to check (default: the one Teleport's config names, else /etc/pam.d/sshd)",
    )
    doc.add_argument(
        "--teleport-config",
        metavar="PATH",
        default="/etc/teleport.yaml",
        help="Teleport's config file (default: %(default)s)",
    )
    doc.set_defaults(func=cmd_doctor)

    find = sub.add_parser("search", help="sessions and typed input of a Teleport user, from the audit log")
    find.add_argument("--teleport-user", required=True, metavar="NAME", help="the Teleport user name, as is")
    find.add_argument("--since", metavar="TIME", help="sessions started at or after TIME")
    find.add_argument("--until", metavar="TIME", help="sessions started at or before TIME")
    find.add_argument("--node", metavar="NAME", help="only records with node=NAME (aggregated logs)")
    find.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="audit log files, oldest first (default: auditd's logs with the rotated ones)",
    )
    find.add_argument(
        "--format", choices=("text", "json"), default="text", help="json: one object per session and line"
    )
    find.set_defaults(func=cmd_search)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
