"""Unit-test wide: the CLI's load checks (admin/loadable.py) left to the tests that ask for them."""

from __future__ import annotations

import sys

import pytest

from pam_teleport_audit.admin import loadable


@pytest.fixture(autouse=True)
def _lines_load(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """install and status check that a login can load the lines (pam_python.so, the entry script, root-only
    folders): the editing tests name an entry script this host need not have (pam_strategies.ENTRY) and
    run as any user, so there the check finds nothing. Tests marked load_checks run the real one."""
    if request.node.get_closest_marker("load_checks") is None:
        monkeypatch.setattr(loadable, "problems", lambda *args, **kwargs: [])


# `python -m pam_teleport_audit` in a subprocess, with the same stand-in for the load checks.
CLI = [
    sys.executable,
    "-c",
    "import sys; from pam_teleport_audit.admin import cli, loadable; loadable.problems = lambda *a, **k: []; "
    "sys.exit(cli.main(sys.argv[1:]))",
]
