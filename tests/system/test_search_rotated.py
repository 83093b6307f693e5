"""pam-teleport-audit search over the rotations real hosts keep: the real logrotate's names (every
dateformat, compressed with gzip, bzip2 and zstd) beside auditd's own audit.log.N, found without
--input and read in full; the files beside them that are not rotations left alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pam_teleport_audit.admin import search
from tests.unit.test_search_files import NOT_ROTATIONS

from .conftest import ROOT
from .test_search import run_search

FIXTURES = ROOT / "tests" / "fixtures" / "audit"
USERS = ["alice", 'bob "the admin" smith', "carol"]
# One logrotate run each, in this order, on the next piece of the log: its dateformat, its compression
# (the command and extension, None: not compressed) and the name it must give.
LOGROTATE = [
    ("-%Y%m%d", None, r"audit\.log-\d{8}"),
    ("-%Y%m%d%H", ("/usr/bin/gzip", ".gz"), r"audit\.log-\d{10}\.gz"),
    ("-%Y-%m-%d", ("/usr/bin/zstd", ".zst"), r"audit\.log-\d{4}-\d\d-\d\d\.zst"),
    (".%Y%m%d", ("/usr/bin/bzip2", ".bz2"), r"audit\.log\.\d{8}\.bz2"),
    ("-%s", ("/usr/bin/zstd", ".zst"), r"audit\.log-\d{10}\.zst"),
]


def sessions(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def logrotate(folder: Path, dateformat: str, compress: tuple[str, str] | None, olddir: Path | None = None) -> str:
    """Rotate folder/audit.log with the real logrotate (into olddir, if given); the name it gave the rotated file."""
    assert shutil.which("logrotate"), "logrotate is missing: scripts/host-setup installs it"
    conf = folder.parent / "logrotate.conf"
    lines = [f"{folder / 'audit.log'} {{", "rotate 10", "dateext", f"dateformat {dateformat}"]
    if compress is not None:
        lines += ["compress", f"compresscmd {compress[0]}", f"compressext {compress[1]}"]
    if olddir is not None:
        lines.append(f"olddir {olddir}")
    conf.write_text("\n".join([*lines, "}"]) + "\n")
    into = olddir or folder
    before = set(os.listdir(into))
    run = subprocess.run(
        ["logrotate", "-f", "-s", str(folder.parent / "state"), str(conf)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    (made,) = set(os.listdir(into)) - before
    return made


@pytest.mark.parametrize("fmt", ["raw", "enriched"])
def test_logrotate_and_auditd_rotations_are_all_found_and_read_and_nothing_else(tmp_path: Path, fmt: str) -> None:
    """A real log cut in eight, oldest first: five rotated by logrotate, one dateformat and compression
    each, then two as auditd rotates (audit.log.2, .1), the rest in audit.log. Search finds each rotation
    and only those, and gives what it gives on the whole log, naming nothing on stderr."""
    whole = [str(FIXTURES / fmt / "audit.log.1"), str(FIXTURES / fmt / "audit.log")]
    lines = b"".join(Path(f).read_bytes() for f in whole).splitlines(keepends=True)
    pieces = [b"".join(lines[i : i + 9]) for i in range(0, len(lines), 9)]
    assert len(pieces) == 8
    folder = tmp_path / "audit"
    folder.mkdir(mode=0o700)
    log = folder / "audit.log"
    made = []
    for piece, (dateformat, compress, name) in zip(pieces[:5], LOGROTATE, strict=True):
        log.write_bytes(piece)
        made.append(logrotate(folder, dateformat, compress))
        assert re.fullmatch(name, made[-1]), made
    for piece in pieces[5:7]:  # auditd: audit.log.1 becomes .2, audit.log becomes .1
        log.write_bytes(piece)
        if (folder / "audit.log.1").exists():
            (folder / "audit.log.1").rename(folder / "audit.log.2")
        log.rename(folder / "audit.log.1")
    log.write_bytes(pieces[7])
    # Other files of the folder, each a log holding other sessions of the same users (and one more).
    other = (FIXTURES / "teleport" / "audit.log").read_bytes()
    for name in NOT_ROTATIONS:
        (folder / name).write_bytes(other)
    conf = tmp_path / "auditd.conf"
    conf.write_text(f"log_file = {log}\n")

    found = search.log_files(None, str(conf))
    assert sorted(Path(p).name for p in found) == sorted([*made, "audit.log.2", "audit.log.1", "audit.log"])
    for user in USERS:
        reference = sessions(run_search("--teleport-user", user, "--format", "json", "--input", *whole))
        assert len(reference) == 1 and reference[0]["end_result"] == "success"
        got = run_search("--teleport-user", user, "--format", "json", "--input", *found)
        assert sessions(got) == reference and got.stderr == "", user
    # The other files are logs: named, they would be read (the teleport fixture's sessions of alice).
    backup = run_search("--teleport-user", "alice", "--format", "json", "--input", *found, str(folder / "audit.log~"))
    assert len(sessions(backup)) > 1


def test_without_zstd_the_zst_rotations_are_named_on_stderr_as_not_read(tmp_path: Path) -> None:
    """No zstd command: each .zst is named as not read (never skipped in silence), the rest is read."""
    whole = [str(FIXTURES / "raw" / "audit.log.1"), str(FIXTURES / "raw" / "audit.log")]
    folder = tmp_path / "audit"
    folder.mkdir(mode=0o700)
    log = folder / "audit.log"
    log.write_bytes(Path(whole[0]).read_bytes())
    zst = folder / logrotate(folder, "-%Y-%m-%d", ("/usr/bin/zstd", ".zst"))
    log.write_bytes(Path(whole[1]).read_bytes())
    reference = sessions(run_search("--teleport-user", "alice", "--format", "json", "--input", *whole))
    read = run_search("--teleport-user", "alice", "--format", "json", "--input", str(log), str(zst))
    assert sessions(read) == reference and read.stderr == ""

    empty = tmp_path / "bin"
    empty.mkdir()
    unread = run_search("--teleport-user", "alice", "--format", "json", "--input", str(log), str(zst), path=str(empty))
    assert unread.returncode == 0
    assert unread.stderr == f"search: {zst}: not read: the zstd command is not installed (apt-get install zstd)\n"
    (partial,) = sessions(unread)  # alice's session began in the file not read
    assert not partial["start_in_log"] and partial["end"] == reference[0]["end"]
    text = run_search("--teleport-user", "alice", "--input", str(zst), path=str(empty))
    assert (text.returncode, text.stdout) == (0, "no sessions found\n") and "not read" in text.stderr


def test_folders_given_are_read_whole_logrotate_olddir_included(tmp_path: Path) -> None:
    """`--input FOLDER ...`: each folder's audit.log and its rotations, such as a copy of a host's
    /var/log/audit and the olddir logrotate moved the older rotations to (no audit.log in it)."""
    whole = [str(FIXTURES / "enriched" / "audit.log.1"), str(FIXTURES / "enriched" / "audit.log")]
    lines = b"".join(Path(f).read_bytes() for f in whole).splitlines(keepends=True)
    pieces = [b"".join(lines[i : i + 18]) for i in range(0, len(lines), 18)]
    folder, olddir = tmp_path / "audit", tmp_path / "archive"
    folder.mkdir(mode=0o700)
    olddir.mkdir(mode=0o700)
    log = folder / "audit.log"
    for piece, (dateformat, compress, _) in zip(pieces[:-2], LOGROTATE, strict=False):
        log.write_bytes(piece)
        logrotate(folder, dateformat, compress, olddir)
    log.write_bytes(pieces[-2])
    log.rename(folder / "audit.log.1")
    log.write_bytes(pieces[-1])
    assert len(os.listdir(olddir)) == len(pieces) - 2 >= 2, os.listdir(olddir)
    for user in USERS:
        reference = sessions(run_search("--teleport-user", user, "--format", "json", "--input", *whole))
        got = run_search("--teleport-user", user, "--format", "json", "--input", str(folder), str(olddir))
        assert sessions(got) == reference and got.stderr == "", user
    # Without the olddir the sessions that began in it are not whole: the folder alone reads less.
    alone = run_search("--teleport-user", "alice", "--format", "json", "--input", str(folder))
    assert sessions(alone) != sessions(run_search("--teleport-user", "alice", "--format", "json", "--input", *whole))
    nothing = run_search("--teleport-user", "alice", "--input", str(tmp_path))
    assert nothing.returncode == 5, nothing.stderr
    assert f"no audit.log nor a rotation of it in the folder: '{tmp_path}'" in nothing.stderr


def test_without_input_the_olddir_of_logrotates_configuration_is_read(tmp_path: Path) -> None:
    """A site rotating the audit log with logrotate into an olddir, set the way sites set it: a
    relative olddir in a file of an included folder. The real logrotate moves each rotation there;
    search, without --input, finds every one of them from logrotate's configuration."""
    whole = [str(FIXTURES / "enriched" / "audit.log.1"), str(FIXTURES / "enriched" / "audit.log")]
    lines = b"".join(Path(f).read_bytes() for f in whole).splitlines(keepends=True)
    pieces = [b"".join(lines[i : i + 18]) for i in range(0, len(lines), 18)]
    folder = tmp_path / "audit"
    (tmp_path / "audit-archive").mkdir(mode=0o700)
    folder.mkdir(mode=0o700)
    log = folder / "audit.log"
    included = tmp_path / "logrotate.d"
    included.mkdir()
    main = tmp_path / "logrotate.conf"
    main.write_text(f"weekly\nrotate 4\ncreate\ninclude {included}\n")
    (included / "auditd.dpkg-old").write_text(f"{log} {{\n  olddir /nonexistent\n}}\n")  # logrotate skips it
    for piece, (dateformat, compress, _) in zip(pieces[:-1], LOGROTATE, strict=False):
        log.write_bytes(piece)
        block = [f'"{log}" {{', "  rotate 10", "  olddir ../audit-archive", "  dateext", f"  dateformat {dateformat}"]
        if compress is not None:
            block += ["  compress", f"  compresscmd {compress[0]}", f"  compressext {compress[1]}"]
        (included / "auditd").write_text("\n".join([*block, "  postrotate", "    true", "  endscript", "}"]) + "\n")
        run = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(main)], capture_output=True)
        assert run.returncode == 0, run.stderr
    log.write_bytes(pieces[-1])
    moved = sorted(os.listdir(tmp_path / "audit-archive"))
    assert len(moved) == len(pieces) - 1 >= 2 and os.listdir(folder) == ["audit.log"], moved
    conf = tmp_path / "auditd.conf"
    conf.write_text(f"log_file = {log}\n")

    found = search.log_files(None, str(conf), str(main))
    assert sorted(Path(p).name for p in found) == sorted([*moved, "audit.log"])
    for user in USERS:
        reference = sessions(run_search("--teleport-user", user, "--format", "json", "--input", *whole))
        got = run_search("--teleport-user", user, "--format", "json", "--input", *found)
        assert sessions(got) == reference and got.stderr == "", user
    # Without the configuration only audit.log is found.
    assert search.log_files(None, str(conf), str(tmp_path / "none")) == [str(log)]
