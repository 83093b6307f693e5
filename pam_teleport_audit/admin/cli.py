"""pam-teleport-audit: the administrator's side of the module."""

from __future__ import annotations

import sys

# Before any import of ours. This command imports ../pam_loader.py and ../pam_module.py; run as
# root by the Python pam_python embeds (the Debian package's /usr/bin/python3 -I, or pip's
# script), it wrote their bytecode as a side effect, so doctor's `bytecode` check passed on what
# the command had just written and never named a missing compile step (measured after a Debian 12
# -> 13 upgrade: docs/packaging.md, "Release upgrade"). Writing it is the installer's job: pip,
# py3compile and the package's trigger, or the compileall command doctor prints.
sys.dont_write_bytecode = True

import argparse  # noqa: E402
import difflib  # noqa: E402
import errno  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402
from collections.abc import Callable  # noqa: E402

from .. import __version__  # noqa: E402
from . import atomicwrite, loadable, pamedit, pamstack  # noqa: E402
from .pamedit import Refusal, Result  # noqa: E402
from .stanza import DEFAULT_TTY_AUDIT, Stanza, entry_script  # noqa: E402

DEFAULT_PAM_FILE = "/etc/pam.d/sshd"
# Exit statuses: ONE table, the same meaning in every command (docs/installer.md "Exit statuses",
# debian/pam-teleport-audit.8 EXIT STATUS). Every cmd_* function returns one of these names.
EXIT_OK = 0  # done, nothing to do or nothing found; status: installed and correct; doctor/selftest: nothing failed
EXIT_FAILED = 1  # doctor, selftest: the checks ran and at least one FAILED (each printed with its fix)
EXIT_USAGE = 2  # usage: argparse's errors (it exits 2 itself) and our own bad values (--since, selftest --pam-file)
EXIT_WOULD_CHANGE = 3  # --check: the file would change
EXIT_REFUSED = 4  # refused: input not understood or unsafe; nothing changed (the file byte-for-byte as it was)
EXIT_IO = 5  # could not read, lock or write (the PAM file, the audit log, /run): nothing changed
EXIT_NOT_INSTALLED = 6  # status: no block of ours
EXIT_BROKEN = 7  # status: present but incomplete, duplicated or out of order
EXIT_UNREACHABLE = 8  # status: present and complete, but a login can skip a line of ours (or it cannot be proven)
EXIT_UNMANAGED = 9  # status: our module is loaded only by lines outside the markers (pasted by hand)
# One pam.d token: no blanks, comment, brackets or backslash, or libpam would read another line.
_PATTERNS = re.compile(r"[^\s#\[\]\\]+")


def _tty_audit(value: str) -> str | None:
    return None if value == "off" else value


def _tty_patterns(value: str) -> str | None:
    if value != "off" and not _PATTERNS.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: patterns must be one word without '#', brackets or blanks")
    return _tty_audit(value)


def _diff(path: str, old: bytes, new: bytes) -> str:
    def lines(data: bytes) -> list[str]:
        return data.decode("utf-8", "backslashreplace").splitlines(keepends=True)

    return "".join(difflib.unified_diff(lines(old), lines(new), path, f"{path} (new)"))


def _error(command: str, message: str, code: int) -> int:
    """One line on stderr, "pam-teleport-audit COMMAND: message", and the exit status."""
    print(f"pam-teleport-audit {command}: {message}", file=sys.stderr)
    return code


def _count(value: str) -> int:
    """A number of things: 0 or more (argparse: exit EXIT_USAGE otherwise)."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: not a number of 0 or more")
    return number


def _report(args: argparse.Namespace, code: int, info: dict[str, object]) -> int:
    info["exit"] = code
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return code
    for note in info.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    if info.get("diff") is not None:
        sys.stdout.write(str(info["diff"]))
    if "error" in info:
        print(f"pam-teleport-audit {args.command}: {info['error']}", file=sys.stderr)
    elif "summary" in info:
        print(info["summary"])
    return code


def _info(args: argparse.Namespace) -> dict[str, object]:
    """The keys every install/uninstall/status --json object carries, also on a refusal or I/O error."""
    check = bool(getattr(args, "check", False))
    # diff and backup are null until there is one (a diff of an edit made, a backup written).
    return {
        "command": args.command,
        "path": args.pam_file,
        "changed": False,
        "check": check,
        "would_change": False,
        "diff": None,
        "backup": None,
    }


def _missing(path: str) -> FileNotFoundError:
    """A file libpam does not find: none there, or a symbolic link to nothing (fopen fails the same)."""
    return FileNotFoundError(errno.ENOENT, pamstack.missing_reason(path))


def _read(path: str) -> bytes:
    """The file's bytes (through a symlink: a run that changes nothing need not replace it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _missing(path) from None
    if not stat.S_ISREG(st.st_mode):  # never opened: a FIFO would block
        raise Refusal(f"{path} is not a regular file")
    with open(path, "rb") as f:
        return f.read()


def _edit(args: argparse.Namespace, edit: Callable[[bytes], Result]) -> int:
    """Read, edit and replace the file under the folder lock; report what happened."""
    path = args.pam_file
    info = _info(args)
    info["notes"] = []
    # Nothing of ours can be in a file libpam does not find (missing, or a symlink to nothing): for
    # uninstall that is done, not an I/O error, unless libpam runs our module from its vendor copy.
    if args.command == "uninstall" and not os.path.exists(path):
        return _uninstall_missing(args, info)
    try:
        with atomicwrite.folder_lock(path):
            old = _read(path)
            result = edit(old)
            changed = result.data != old
            info["notes"] = result.notes
            if changed:  # what a write would refuse, --check refuses too
                atomicwrite.check_replaceable(path)
                vendor = pamstack.vendor_problem(path)
                if vendor is not None:
                    raise Refusal(vendor)
            if args.diff:
                info["diff"] = _diff(path, old, result.data)  # null on a refusal: nothing was computed
            if changed and not args.check:
                atomicwrite.remove_stale_temps(path)
                backup_dir = args.backup_dir or (atomicwrite.DEFAULT_BACKUP_DIR if args.backup else None)
                info["backup"] = atomicwrite.replace_file(path, result.data, backup_dir=backup_dir)
                info["changed"] = True
    except Refusal as exc:
        # Nothing was written: the edit's notes (the keystrokes pam_tty_audit will record, blocks replaced)
        # would describe a change that did not happen.
        info.update(error=f"refused, {path} left unchanged: {exc}", reason=str(exc), refused=True, notes=[])
        return _report(args, EXIT_REFUSED, info)
    except OSError as exc:
        info.update(error=f"I/O error, {path} left unchanged: {exc}", reason=str(exc), refused=False, notes=[])
        return _report(args, EXIT_IO, info)
    info["would_change"] = changed
    verb = "would change" if args.check and changed else ("changed" if changed else "unchanged")
    info["summary"] = f"{path}: {verb}"
    return _report(args, EXIT_WOULD_CHANGE if args.check and changed else EXIT_OK, info)


def _uninstall_missing(args: argparse.Namespace, info: dict[str, object]) -> int:
    """uninstall of a file libpam does not find: nothing to do, unless the vendor copy it reads loads our module."""
    path = args.pam_file
    vendor = pamstack.vendor_copy(path)
    found = []
    if vendor is not None:
        try:
            found = pamedit.status(_read(vendor), pamstack.folder_resolver(vendor), vendor).unmanaged
        except (OSError, Refusal):
            found = []
        info["notes"] = [f"libpam reads {vendor} for this service; it is not edited"]
    if found:
        # state: absent cannot hold while libpam runs the module from the vendor file.
        why = (
            f"{path} does not exist, and libpam reads {vendor} for this service instead, where "
            f"{', '.join(found)} {pamedit.loads(len(found))} pam_teleport_audit; uninstall does not edit vendor "
            f"files: run {pamedit.removal(vendor)}"
        )
        info.update(error=f"refused, nothing changed: {why}", reason=why, refused=True)
        return _report(args, EXIT_REFUSED, info)
    what = "does not exist" if not os.path.islink(path) else "is a symbolic link to nothing"
    info["summary"] = f"{path}: nothing to do (it {what})"
    return _report(args, EXIT_OK, info)


def _stanza(args: argparse.Namespace) -> Stanza:
    """The Stanza the stanza options chose (see _add_stanza_options)."""
    entry = entry_script() if args.entry is None else args.entry
    return Stanza(entry, args.tty_audit, args.fail_closed, tuple(args.option))


def cmd_install(args: argparse.Namespace) -> int:
    stanza = _stanza(args)
    resolve = pamstack.folder_resolver(args.pam_file)

    def edit(data: bytes) -> Result:
        result = pamedit.install(data, stanza, resolve, args.pam_file)
        # Never write (nor keep, exit 0) lines no login can load: every Teleport login would go
        # unrecorded while status said installed.
        unloadable = loadable.problems([loadable.PAM_PYTHON], [stanza.entry])
        if unloadable:
            raise Refusal("; ".join(unloadable))
        return result

    return _edit(args, edit)


def cmd_uninstall(args: argparse.Namespace) -> int:
    resolve = pamstack.folder_resolver(args.pam_file)
    return _edit(args, lambda data: pamedit.uninstall(data, resolve, args.pam_file))


def cmd_status(args: argparse.Namespace) -> int:
    path = args.pam_file
    info = _info(args)
    info["notes"] = []
    try:
        found = pamedit.status(_read(path), pamstack.folder_resolver(path), path)
    except Refusal as exc:  # not a regular file: never opened (a FIFO would block), as install and uninstall
        info.update(error=f"refused: {exc}", reason=str(exc), refused=True)
        return _report(args, EXIT_REFUSED, info)
    except OSError as exc:
        info.update(error=f"I/O error: {exc}", reason=str(exc), refused=False)
        return _report(args, EXIT_IO, info)
    info.update(found.as_dict())
    vendor = pamstack.vendor_problem(path)
    info["notes"] = [] if vendor is None else [f"install and uninstall refuse this file: {vendor}"]
    info["notes"] += [
        f"warning: {x} can refuse the session after pam_loginuid and before the module's session line: such a "
        "refusal leaves only teleport:accounting res=success of ours (see `pam-teleport-audit doctor`)"
        for x in found.refused_before
    ]
    # Lines in place that no login can load (or that a non-root user can change) are not installed.
    unloadable = loadable.problems(found.modules, found.scripts)
    info["load_problems"] = unloadable
    if unloadable:
        info["installed"] = False
        code = EXIT_BROKEN
        info["summary"] = f"{path}: needs repair: " + "; ".join(unloadable + found.problems)
    elif found.installed:
        code, info["summary"] = EXIT_OK, f"{path}: installed (pam_tty_audit: {found.tty_audit})"
    elif found.unmanaged and not found.account and not found.session:
        code = EXIT_UNMANAGED
        info["summary"] = (
            f"{pamedit.unmanaged_summary(path, found)}. Fix: {pamedit.unmanaged_fix(path, found.unmanaged_files)}"
        )
    elif not found.account and not found.session:
        code, info["summary"] = EXIT_NOT_INSTALLED, f"{path}: not installed"
        replaced = pamstack.dpkg_replaced(path)
        info["dpkg_old"] = replaced
        if replaced is not None:
            info["summary"] += (
                f": {pamstack.dpkg_replaced_reason(path, replaced)}. Fix: {pamstack.dpkg_replaced_fix(path, replaced)}"
            )
    elif found.problems == found.skipped_by:
        code = EXIT_UNREACHABLE
        info["summary"] = f"{path}: present but unreachable: " + "; ".join(found.skipped_by)
    else:
        code, info["summary"] = EXIT_BROKEN, f"{path}: needs repair: " + "; ".join(found.problems)
    return _report(args, code, info)


def _add_common(parser: argparse.ArgumentParser, *, edits: bool) -> None:
    parser.add_argument("--pam-file", default=DEFAULT_PAM_FILE, metavar="PATH", help="default: %(default)s")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    if edits:
        parser.add_argument(
            "--check", action="store_true", help=f"write nothing; exit {EXIT_WOULD_CHANGE} if it would change"
        )
        parser.add_argument("--diff", action="store_true", help="show the change as a unified diff")


def _add_stanza_options(parser: argparse.ArgumentParser, tty_type: Callable[[str], str | None]) -> None:
    """The options that choose the Stanza (stanza and install share them)."""
    parser.add_argument("--entry", help="path of pam_entry.py (default: the installed one)")
    parser.add_argument(
        "--tty-audit",
        type=tty_type,
        default=DEFAULT_TTY_AUDIT,
        metavar="PATTERNS|off",
        help="pam_tty_audit enable= patterns (default %(default)s: the keystrokes of EVERY login through the "
        "file, OpenSSH's included); off omits the line",
    )
    parser.add_argument("--fail-closed", action="store_true", help="refuse logins that cannot be audited")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="OPT",
        help="extra module option, e.g. teleport_exe=/usr/local/bin/teleport (repeatable)",
    )


def cmd_stanza(args: argparse.Namespace) -> int:
    stanza = _stanza(args)
    problems = stanza.problems()
    if problems:
        return _error("stanza", f"refused: {'; '.join(problems)}", EXIT_REFUSED)
    sys.stdout.write(stanza.render())
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    from . import search
    from .auditlog import no_log_reason

    try:
        since = search.parse_time(args.since) if args.since else None
        until = search.parse_time(args.until) if args.until else None
    except ValueError as exc:
        return _error("search", str(exc), EXIT_USAGE)
    # This host's own log: what auditd.conf says about it (no log kept, records of other hosts).
    conf = search.auditd_conf() if not args.input else {}
    no_log = no_log_reason(conf)
    if no_log is not None:
        print(search.NO_LOG_NOTE.format(reason=no_log), file=sys.stderr)
    try:
        # The conf read above: a second reading could name another log than the one it spoke of.
        files = search.log_files(args.input, conf=conf)
        with search.opened_logs(files, rotated_live=not args.input) as logs:
            for log in logs:  # a damaged file, or one mistaken for a log, must not read as "no sessions"
                if log.note:
                    print(f"search: {log.path}: {log.note}", file=sys.stderr)
            parser = search.candidates([log.data for log in logs], args.teleport_user)
    except ImportError as exc:  # the log is read with auparse: without it, it cannot be read
        return _error("search", f"cannot read the audit log: {exc} (apt-get install python3-audit)", EXIT_IO)
    except OSError as exc:
        return _error("search", f"cannot read the audit log: {exc}", EXIT_IO)
    # Records from this machine's own logs carry no node=: name them after this host, in the
    # output and for --node alike.
    # Not on a collector (tcp_listen_port): there a record without node= may come from any sender.
    collector = search.receives_remote(conf)
    host = None if args.input or collector else os.uname().nodename
    # Every record, not only from --since on: a session that started before it must be seen to
    # start there, not taken for one whose start is not in the log.
    records = search.iter_records(parser)
    kept = search.recorded_name(args.teleport_user)
    if len(kept) < len(args.teleport_user.encode("utf-8", "surrogateescape")):
        print(
            f"search: the records keep the first {len(kept)} bytes of a Teleport user name: sessions of every name"
            " that begins with those bytes are listed",
            file=sys.stderr,
        )
    sessions = search.find_sessions(records, args.teleport_user, since=since, until=until, node=args.node, local=host)
    if collector and any(s.node is None for s in sessions):
        print(search.UNNAMED_NOTE, file=sys.stderr)
    render = search.render_json if args.format == "json" else search.render_text
    sys.stdout.write(render(sessions, host))
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    # A file doctor cannot read is one of its FAIL checks (exit EXIT_FAILED); EXIT_IO is for what
    # stops it from checking at all (e.g. --selftest cannot make its folder under /run).
    try:
        checks = doctor.run_all(args.pam_file, args.teleport_config, args.expected_senders)
        if args.selftest:
            from . import selftest, teleportconf

            config = teleportconf.chosen(args.teleport_config, teleportconf.daemons())
            path = args.pam_file or teleportconf.service_file(config)
            checks += selftest.doctor_checks(path, args.login)
    except OSError as exc:
        return _error("doctor", f"I/O error: {exc}", EXIT_IO)
    if args.json:
        print(json.dumps(doctor.summary(checks), sort_keys=True))
    else:
        for check in checks:
            print(check.line())
    return EXIT_OK if all(c.status != doctor.FAIL for c in checks) else EXIT_FAILED


def cmd_selftest(args: argparse.Namespace) -> int:
    from . import selftest

    try:
        service, path = selftest.resolve_service(args.pam_file, args.service)
    except ValueError as exc:
        return _error("selftest", str(exc), EXIT_USAGE)
    # A PAM file it cannot read is a FAIL precondition (exit EXIT_FAILED); EXIT_IO is for what stops
    # the run itself (the file gone after the checks, no folder under /run, ausearch missing).
    try:
        report = selftest.run(service, path, args.login, tty_audit=not args.allow_no_tty_audit)
    except OSError as exc:
        return _error("selftest", f"I/O error: {exc}", EXIT_IO)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        sys.stdout.write(selftest.render(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pam-teleport-audit",
        description="Teleport identity on Linux audit records: PAM stanza and tools.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    stanza = sub.add_parser("stanza", help="print the PAM lines to add to /etc/pam.d/sshd")
    _add_stanza_options(stanza, _tty_audit)
    stanza.set_defaults(func=cmd_stanza)

    install = sub.add_parser("install", help="add the stanza to a PAM file (idempotent)")
    _add_common(install, edits=True)
    _add_stanza_options(install, _tty_patterns)
    install.add_argument(
        "--backup",
        action="store_true",
        help=f"keep the replaced bytes in {atomicwrite.DEFAULT_BACKUP_DIR}/NAME.UTCTIME (0600; outside /etc/pam.d)",
    )
    install.add_argument("--backup-dir", metavar="DIR", help="keep the backup in DIR instead (implies --backup)")
    install.set_defaults(func=cmd_install)

    uninstall = sub.add_parser("uninstall", help="remove exactly what install added")
    _add_common(uninstall, edits=True)
    uninstall.set_defaults(func=cmd_uninstall, backup=False, backup_dir=None)

    status = sub.add_parser("status", help="is the stanza present, complete and in order?")
    _add_common(status, edits=False)
    status.set_defaults(func=cmd_status)

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
        help="Teleport's config file (default: the --config of the running `teleport start`, else /etc/teleport.yaml)",
    )
    doc.add_argument(
        "--expected-senders",
        type=_count,
        default=0,
        metavar="N",
        help="on a collector: the senders it is meant to take (sizes the listen queue, file limit and disk checks)",
    )
    doc.add_argument("--selftest", action="store_true", help="then run `selftest` through the same PAM file (as root)")
    doc.add_argument("--login", default="root", help="the selftest's Linux login (default: %(default)s)")
    doc.set_defaults(func=cmd_doctor)

    test = sub.add_parser(
        "selftest", help="a Teleport-like login through the PAM stack with pamtester, read back from the audit log"
    )
    where = test.add_mutually_exclusive_group()
    where.add_argument("--pam-file", metavar="PATH", help="/etc/pam.d/NAME to test (default: /etc/pam.d/sshd)")
    where.add_argument("--service", metavar="NAME", help="the PAM service to test: /etc/pam.d/NAME")
    test.add_argument(
        "--login",
        default="root",
        help="Linux login of the probe session (default: %(default)s, which every host has and nologin admits)",
    )
    test.add_argument(
        "--allow-no-tty-audit",
        action="store_true",
        help="no pam_tty_audit is a warning, not a failure (installed with --tty-audit off on purpose)",
    )
    test.add_argument("--json", action="store_true", help="one JSON object: ok, the checks, the run time")
    test.set_defaults(func=cmd_selftest)

    find = sub.add_parser(
        "search",
        help="sessions, refused logins and input of a Teleport user, from the audit log",
        # docs/records.md "Joined sessions": the kernel records a terminal's input as its reader's.
        description="Input is listed under the session's owner, also what a Teleport user who joined the session "
        "(tsh join, a moderated session) typed as a peer: the host's records cannot tell them apart. Teleport's "
        "audit log names who joined (session.join).",
    )
    find.add_argument("--teleport-user", required=True, metavar="NAME", help="the Teleport user name, as is")
    find.add_argument("--since", metavar="TIME", help="sessions with a record at or after TIME (started before it too)")
    find.add_argument("--until", metavar="TIME", help="sessions started at or before TIME")
    find.add_argument(
        "--node",
        metavar="NAME",
        help="only records with node=NAME (aggregated logs); in this host's own logs, no node= is this host",
    )
    find.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="audit log files, in any order: read oldest first; a folder: its audit.log and the rotated ones "
        "(default: auditd's logs with the rotated ones)",
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
