"""One table of exit statuses (cli.EXIT_*), the same meaning in every command (issue #16).

Each row runs cli.main([...]) for one command and one kind of failure, and checks the status and
the one line on stderr ("pam-teleport-audit COMMAND: ..."), or argparse's usage message.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import shutil
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pam_teleport_audit.admin import cli, doctor, loadable, selftest
from pam_teleport_audit.admin.doctor import FAIL, PASS, Check

from .pam_strategies import ENTRY

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_12 = ROOT / "tests" / "fixtures" / "pam" / "debian-12"
MISSING_SERVICE = "pam-teleport-audit-exit-codes-missing"  # no /etc/pam.d/NAME of that name
GONE = "/nonexistent/pam_teleport_audit/pam_entry.py"  # an entry script no host has
LOAD_PROBLEMS = loadable.problems  # the real checks, before tests/unit/conftest.py stands in for them


def load_checks(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(loadable, "problems", LOAD_PROBLEMS)


class FakeParser:
    """Just enough of auparse.AuParser for a buffer with no event."""

    def __init__(self, source: int, text: str) -> None:
        assert not text

    def search_add_expression(self, expression: str, how: int) -> None:
        pass

    def search_set_stop(self, how: int) -> None:
        pass

    def search_next_event(self) -> bool:
        return False


def fake_auparse(mp: pytest.MonkeyPatch) -> None:
    """auparse is Debian's python3-audit, not in the unit venv: the files are opened before it parses."""
    module = types.ModuleType("auparse")
    module.AuParser = FakeParser  # type: ignore[attr-defined]
    module.AUSOURCE_BUFFER = module.AUSEARCH_RULE_CLEAR = module.AUSEARCH_STOP_EVENT = 0  # type: ignore[attr-defined]
    mp.setitem(sys.modules, "auparse", module)


def no_auparse(mp: pytest.MonkeyPatch) -> None:
    mp.setitem(sys.modules, "auparse", None)  # import auparse raises ImportError


def checks_are(*statuses: str) -> Callable[[pytest.MonkeyPatch], None]:
    def setup(mp: pytest.MonkeyPatch) -> None:
        checks = [Check(f"check {i}", s, f"said {s}", "the fix") for i, s in enumerate(statuses)]
        mp.setattr(doctor, "run_all", lambda *args: list(checks))
        mp.setattr(selftest, "preconditions", lambda *args, **kwargs: list(checks))

    return setup


def doctor_reads_only_the_stanza(mp: pytest.MonkeyPatch) -> None:
    """doctor's stanza check on the file given, the host's checks left out."""
    mp.setattr(doctor, "run_all", lambda pam_file, *args: list(doctor.stanza_checks(pam_file)))


def selftest_ran_ok(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(selftest, "run", lambda service, path, login, **kw: selftest.Report(service, path, login, "t", ran=True))


@dataclass
class Case:
    id: str
    argv: list[str]  # {tmp}: a folder holding sshd (Debian 12's) and the common-* files it includes
    code: int
    stderr: str  # a part of the one line "pam-teleport-audit COMMAND: ..."; "usage" for argparse; "" for none
    setup: list[Callable[[pytest.MonkeyPatch], None]] = field(default_factory=list)


CASES = [
    # stanza
    Case("stanza ok", ["stanza", "--entry", ENTRY], cli.EXIT_OK, ""),
    Case("stanza refused entry", ["stanza", "--entry", "rel"], cli.EXIT_REFUSED, "refused: --entry 'rel'"),
    Case("stanza refused option", ["stanza", "--entry", ENTRY, "--option", "a b"], cli.EXIT_REFUSED, "refused:"),
    Case("stanza usage", ["stanza", "--no-such-flag"], cli.EXIT_USAGE, "usage"),
    # install
    Case(
        "install would change",
        ["install", "--pam-file", "{tmp}/sshd", "--entry", ENTRY, "--check"],
        cli.EXIT_WOULD_CHANGE,
        "",
    ),
    Case("install ok", ["install", "--pam-file", "{tmp}/sshd", "--entry", ENTRY], cli.EXIT_OK, ""),
    Case("install usage", ["install", "--pam-file", "{tmp}/sshd", "--tty-audit", "a b"], cli.EXIT_USAGE, "usage"),
    Case(
        "install refused",
        ["install", "--pam-file", "{tmp}", "--entry", ENTRY],
        cli.EXIT_REFUSED,
        "refused, {tmp} left unchanged: {tmp} is not a regular file",
    ),
    Case(
        "install refused option",
        ["install", "--pam-file", "{tmp}/sshd", "--entry", ENTRY, "--option", "x#y"],
        cli.EXIT_REFUSED,
        "refused, {tmp}/sshd left unchanged",
    ),
    Case(
        "install refused entry missing",
        ["install", "--pam-file", "{tmp}/sshd", "--entry", GONE],
        cli.EXIT_REFUSED,
        f"the entry script {GONE} does not exist",
        [load_checks],
    ),
    Case(
        "install io",
        ["install", "--pam-file", "{tmp}/gone/sshd", "--entry", ENTRY],
        cli.EXIT_IO,
        "I/O error, {tmp}/gone/sshd left unchanged: [Errno 2]",
    ),
    # uninstall
    Case("uninstall nothing to do", ["uninstall", "--pam-file", "{tmp}/sshd", "--check"], cli.EXIT_OK, ""),
    Case("uninstall usage", ["uninstall", "--pam-file"], cli.EXIT_USAGE, "usage"),
    Case("uninstall missing file", ["uninstall", "--pam-file", "{tmp}/missing"], cli.EXIT_OK, ""),
    Case("uninstall missing folder", ["uninstall", "--pam-file", "{tmp}/gone/sshd"], cli.EXIT_OK, ""),
    Case(
        "uninstall refused",
        ["uninstall", "--pam-file", "{tmp}"],
        cli.EXIT_REFUSED,
        "refused, {tmp} left unchanged: {tmp} is not a regular file",
    ),
    Case(
        "install io missing file",
        ["install", "--pam-file", "{tmp}/missing", "--entry", ENTRY],
        cli.EXIT_IO,
        "I/O error, {tmp}/missing left unchanged: [Errno 2] {tmp}/missing does not exist",
    ),
    # status
    Case("status not installed", ["status", "--pam-file", "{tmp}/sshd"], cli.EXIT_NOT_INSTALLED, ""),
    Case("status cannot load", ["status", "--pam-file", "{tmp}/unloadable"], cli.EXIT_BROKEN, "", [load_checks]),
    Case(
        "status io",
        ["status", "--pam-file", "{tmp}/missing"],
        cli.EXIT_IO,
        "I/O error: [Errno 2] {tmp}/missing does not exist",
    ),
    Case("status refused folder", ["status", "--pam-file", "{tmp}"], cli.EXIT_REFUSED, "is not a regular file"),
    # search
    Case(
        "search nothing found",
        ["search", "--teleport-user", "u", "--input", "{tmp}/empty"],
        cli.EXIT_OK,
        "",
        [fake_auparse],
    ),
    Case("search usage", ["search", "--since", "today"], cli.EXIT_USAGE, "usage"),
    Case(
        "search bad since",
        ["search", "--teleport-user", "u", "--since", "last tuesday"],
        cli.EXIT_USAGE,
        "cannot read time",
    ),
    Case("search bad until", ["search", "--teleport-user", "u", "--until", "soon"], cli.EXIT_USAGE, "cannot read time"),
    Case(
        "search missing input",
        ["search", "--teleport-user", "u", "--input", "{tmp}/empty", "{tmp}/audit.log"],
        cli.EXIT_IO,
        "cannot read the audit log: [Errno 2] No such file or directory: '{tmp}/audit.log'",
        [fake_auparse],
    ),
    Case(
        "search input is a folder without an audit log",
        ["search", "--teleport-user", "u", "--input", "{tmp}"],
        cli.EXIT_IO,
        "cannot read the audit log: [Errno 2] no audit.log nor a rotation of it in the folder: '{tmp}'",
        [fake_auparse],
    ),
    Case(
        "search without auparse",
        ["search", "--teleport-user", "u", "--input", "{tmp}/empty"],
        cli.EXIT_IO,
        "cannot read the audit log: import of auparse halted; None in sys.modules (apt-get install python3-audit)",
        [no_auparse],
    ),
    # selftest
    Case("selftest ok", ["selftest"], cli.EXIT_OK, "", [selftest_ran_ok]),
    Case("selftest failed", ["selftest", "--json"], cli.EXIT_FAILED, "", [checks_are(PASS, FAIL)]),
    Case("selftest usage", ["selftest", "--pam-file", "a", "--service", "b"], cli.EXIT_USAGE, "usage"),
    Case(
        "selftest bad pam file",
        ["selftest", "--pam-file", "{tmp}/sshd"],
        cli.EXIT_USAGE,
        "--pam-file {tmp}/sshd: libpam only reads services from /etc/pam.d/NAME",
    ),
    Case("selftest bad service", ["selftest", "--service", ".."], cli.EXIT_USAGE, "--service '..' is not a PAM"),
    Case(
        "selftest io",  # the checks passed, then the file cannot be read
        ["selftest", "--service", MISSING_SERVICE],
        cli.EXIT_IO,
        f"I/O error: [Errno 2] No such file or directory: '/etc/pam.d/{MISSING_SERVICE}'",
        [checks_are()],
    ),
    # doctor
    Case("doctor ok", ["doctor"], cli.EXIT_OK, "", [checks_are(PASS, "warn")]),
    Case("doctor failed", ["doctor", "--json"], cli.EXIT_FAILED, "", [checks_are(PASS, FAIL, PASS)]),
    Case(
        "doctor unreadable file is a check",
        ["doctor", "--pam-file", "{tmp}/missing"],
        1,
        "",
        [doctor_reads_only_the_stanza],
    ),
    Case("doctor usage", ["doctor", "--expected-senders", "-1"], cli.EXIT_USAGE, "usage"),
    Case("doctor usage word", ["doctor", "--expected-senders", "many"], cli.EXIT_USAGE, "usage"),
    Case(
        "doctor selftest io",
        ["doctor", "--selftest", "--pam-file", f"/etc/pam.d/{MISSING_SERVICE}"],
        cli.EXIT_IO,
        f"I/O error: [Errno 2] No such file or directory: '/etc/pam.d/{MISSING_SERVICE}'",
        [checks_are()],
    ),
    # no command
    Case("no command", [], cli.EXIT_USAGE, "usage"),
]


def run_main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse
        return int(exc.code or 0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_exit_status_and_message(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not Path("/etc/pam.d", MISSING_SERVICE).exists()
    for common in DEBIAN_12.glob("common-*"):
        shutil.copy(common, tmp_path / common.name)
    shutil.copy(DEBIAN_12 / "sshd", tmp_path / "sshd")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "unloadable").write_text((ROOT / "pam.d" / "sshd.example").read_text().replace(ENTRY, GONE))
    for setup in case.setup:
        setup(monkeypatch)
    command = case.argv[0] if case.argv else ""

    code = run_main([arg.replace("{tmp}", str(tmp_path)) for arg in case.argv])

    err = capsys.readouterr().err
    assert code == case.code, err
    lines = [x for x in err.splitlines() if not x.startswith("note: ")]
    if case.stderr == "usage":
        assert err.startswith("usage: pam-teleport-audit") and "error: " in err, err
    elif case.stderr:
        assert len(lines) == 1, err
        assert lines[0].startswith(f"pam-teleport-audit {command}: "), err
        assert case.stderr.replace("{tmp}", str(tmp_path)) in lines[0], err
    else:
        assert lines == [], err


def test_argparse_usage_status_is_exit_usage() -> None:
    with pytest.raises(SystemExit) as caught:
        cli.build_parser().parse_args(["status", "--bogus"])
    assert caught.value.code == cli.EXIT_USAGE == 2


def test_the_table() -> None:
    table = {name: value for name, value in vars(cli).items() if name.startswith("EXIT_")}
    assert table == {
        "EXIT_OK": 0,
        "EXIT_FAILED": 1,
        "EXIT_USAGE": 2,
        "EXIT_WOULD_CHANGE": 3,
        "EXIT_REFUSED": 4,
        "EXIT_IO": 5,
        "EXIT_NOT_INSTALLED": 6,
        "EXIT_BROKEN": 7,
        "EXIT_UNREACHABLE": 8,
        "EXIT_UNMANAGED": 9,
    }


def test_every_command_returns_a_named_status() -> None:
    """No bare number in a return of a cmd_* function (or of the helpers they return through)."""
    tree = ast.parse(inspect.getsource(cli))
    functions = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.returns is not None]
    commands = [f for f in functions if f.name.startswith("cmd_") or f.name in ("_edit", "_report", "_error")]
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {f.name for f in commands} >= {f"cmd_{name}" for name in sub.choices}
    bare = [
        f"{f.name}:{node.lineno}"
        for f in commands
        for ret in ast.walk(f)
        if isinstance(ret, ast.Return) and ret.value is not None
        for node in ast.walk(ret.value)
        if isinstance(node, ast.Constant) and isinstance(node.value, int)
    ]
    assert bare == []


def test_docs_and_man_page_list_the_table() -> None:
    """docs/installer.md's table and the man page's EXIT STATUS name every status, and no other."""
    statuses = {value for name, value in vars(cli).items() if name.startswith("EXIT_")}
    docs = (ROOT / "docs" / "installer.md").read_text()
    section = docs.split("## Exit statuses", 1)[1].split("\n## ", 1)[0]
    assert {int(x) for x in re.findall(r"^\| (\d+) \|", section, re.M)} == statuses
    man = (ROOT / "debian" / "pam-teleport-audit.8").read_text()
    section = man.split(".SH EXIT STATUS", 1)[1].split("\n.SH ", 1)[0]
    assert {int(x) for x in re.findall(r"^\.B (\d+)$", section, re.M)} == statuses


def test_man_page_synopsis_lists_every_option() -> None:
    """The man page's SYNOPSIS names every flag each command accepts (it once lacked install's
    --entry/--option and doctor's --expected-senders), and no flag the command does not have."""
    man = (ROOT / "debian" / "pam-teleport-audit.8").read_text()
    synopsis = man.split(".SH SYNOPSIS", 1)[1].split("\n.SH ", 1)[0].replace("\\-", "-")
    lines = re.split(r"^\.br$", synopsis, flags=re.M)
    named = {
        m.group(1): set(re.findall(r"--[a-z-]+", line))
        for line in lines
        if (m := re.search(r"pam-teleport-audit (\w+)", line))
    }
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        flags = {s for a in command._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
        assert named.get(name) == flags, name
    assert any("pam-teleport-audit --version" in line for line in lines)
