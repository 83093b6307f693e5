"""Reading logrotate's configuration for the olddir of a log (admin/logrotate.py), as logrotate reads it.

tests/system/test_search_rotated.py checks the same reading against the real logrotate's moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from pam_teleport_audit.admin.logrotate import matches, olddir

LOG = "/var/log/audit/audit.log"


def conf(tmp_path: Path, text: str, included: dict[str, str] | None = None) -> str:
    """A main configuration, and files in the folder tmp_path/d that it may include (INCLUDED)."""
    folder = tmp_path / "d"
    folder.mkdir(exist_ok=True)
    for name, body in (included or {}).items():
        (folder / name).write_text(body)
    main = tmp_path / "logrotate.conf"
    main.write_text(text.replace("INCLUDED", str(folder)))
    return str(main)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # Debian's own main file, and no block for the audit log: nothing moved.
        ("weekly\nrotate 4\ncreate\ninclude INCLUDED\n/var/log/wtmp {\n  monthly\n}\n", None),
        (f"{LOG} {{\n  olddir /srv/archive/audit\n}}\n", "/srv/archive/audit"),
        # Relative: to the log's folder.
        (f"{LOG} {{\n  olddir archive\n}}\n", "/var/log/audit/archive"),
        (f"{LOG} {{\n  olddir ../audit-old\n}}\n", "/var/log/audit-old"),
        # A glob, quotes, several patterns over lines, the brace on a line of its own.
        ('"/var/log/audit/*.log" {\n olddir /a\n}\n', "/a"),
        (f"/var/log/other.log\n{LOG}\n{{\n olddir /b\n}}\n", "/b"),
        ("/var/log/*/audit.log {\n olddir /c\n}\n", "/c"),
        # `*` does not cross a `/`.
        ("/var/log/*.log {\n olddir /d\n}\n", None),
        # A top-level olddir is the default of the blocks after it; noolddir undoes it.
        (f"olddir /e\n{LOG} {{\n rotate 4\n}}\n", "/e"),
        (f"{LOG} {{\n rotate 4\n}}\nolddir /f\n", None),
        (f"olddir /g\n{LOG} {{\n noolddir\n}}\n", None),
        (f"olddir /g\nnoolddir\n{LOG} {{\n}}\n", None),
        # A script's body is not read as directives; comments neither.
        (f"{LOG} {{\n postrotate\n   olddir /nope\n endscript\n # olddir /nope\n olddir /h\n}}\n", "/h"),
        # Another log's block first: its olddir is its own.
        (f"/var/log/syslog {{\n olddir /i\n}}\n{LOG} {{\n rotate 1\n}}\n", None),
    ],
)
def test_the_olddir_of_the_audit_log(tmp_path: Path, text: str, want: str | None) -> None:
    assert olddir(LOG, conf(tmp_path, text)) == want


def test_included_folder_in_name_order_taboos_skipped_defaults_carried(tmp_path: Path) -> None:
    main = conf(
        tmp_path,
        "olddir /top\ninclude INCLUDED\n",
        {
            "auditd.dpkg-old": f"{LOG} {{\n olddir /old-package-file\n}}\n",  # taboo: logrotate skips it
            "b.audit": f"{LOG} {{\n rotate 9\n}}\n",  # the default from the main file
            "c.audit": f"{LOG} {{\n olddir /second\n}}\n",  # after b: logrotate takes the first
        },
    )
    assert olddir(LOG, main) == "/top"
    (tmp_path / "d" / "a-first").write_text(f"{LOG} {{\n olddir /first\n}}\n")
    assert olddir(LOG, main) == "/first"
    # An included file.
    assert olddir(LOG, conf(tmp_path, f"include {tmp_path / 'd' / 'c.audit'}\n")) == "/second"


def test_what_cannot_be_read_moves_nothing(tmp_path: Path) -> None:
    assert olddir(LOG, str(tmp_path / "none")) is None
    assert olddir(LOG, conf(tmp_path, "include INCLUDED/missing\n")) is None
    # An include loop ends.
    loop = tmp_path / "loop.conf"
    loop.write_text(f"include {loop}\n")
    assert olddir(LOG, str(loop)) is None
    assert olddir(LOG, conf(tmp_path, f"{LOG} {{\n olddir 'unbalanced\n}}\n")) == "/var/log/audit/'unbalanced"


@pytest.mark.parametrize(
    ("pattern", "path", "want"),
    [
        ("/var/log/audit/audit.log", "/var/log/audit/audit.log", True),
        ("/var/log/audit/*", "/var/log/audit/audit.log", True),
        ("/var/log/audit/audit.lo?", "/var/log/audit/audit.log", True),
        ("/var/log/*", "/var/log/audit/audit.log", False),
        ("/var/log/audit/[ab]udit.log", "/var/log/audit/audit.log", True),
        ("/var/log/audit/audit.log", "/var/log/audit//audit.log", True),
    ],
)
def test_patterns_match_one_component_at_a_time(pattern: str, path: str, want: bool) -> None:
    assert matches(pattern, path) is want
