"""How search reads log files: NUL runs a crash leaves, and the order the files are read in."""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pam_teleport_audit.admin import search
from pam_teleport_audit.admin.search import _grep, log_files, opened_logs

A = "type=USER_ACCT msg=audit(1795900000.000:1): pid=5 uid=0 auid=1 ses=7 msg='op=x teleportUser=alice res=success'"
B = 'type=TTY msg=audit(1795900001.000:2): tty pid=6 uid=1 auid=1 ses=7 major=136 minor=0 comm="sh" data=6C730A'
C = "type=USER_END msg=audit(1795900002.000:3): pid=5 uid=0 auid=1 ses=7 msg='op=y teleportUser=alice res=success'"
SES = re.compile(rb" ses=7 ")


def test_nul_runs_end_lines_and_never_reach_auparse(tmp_path: Path) -> None:
    """auparse reads its buffer as a C string: a NUL in it silently ends the search."""
    log = tmp_path / "audit.log"
    # A record, a record cut by the crash, zeros, and what auditd appended after the reboot, the
    # first of it on the same "line" as the zeros; zeros again at the very end.
    log.write_bytes(f"{A}\n{B[:40]}".encode() + b"\0" * 4096 + f"{B}\n{C}\n".encode() + b"\0" * 10)
    text = _grep([log.read_bytes()], SES)
    assert "\0" not in text
    assert text.splitlines() == [A, B, C]
    # A match in the cut record gives that piece alone, not the records glued to it by the zeros.
    assert _grep([log.read_bytes()], re.compile(rb"comm=")).splitlines() == [B]
    assert _grep([log.read_bytes()], re.compile(rb"msg=audit\(1795900001")).splitlines() == [B[:40], B]


def stamped(path: Path, *seconds: int) -> str:
    path.write_text("".join(f"type=TTY msg=audit({s}.250:{s % 1000}): tty pid=1 ses=7 data=0A\n" for s in seconds))
    return str(path)


def read_order(files: list[str]) -> list[str]:
    with opened_logs(files) as logs:
        return [log.path for log in logs]


def test_given_files_are_read_oldest_first_whatever_their_order(tmp_path: Path) -> None:
    """A shell glob gives audit.log (newest) first, and .1 .10 .2 past nine rotated files."""
    names = ["audit.log", "audit.log.1", "audit.log.10", "audit.log.2"]
    ages = {"audit.log": 4000, "audit.log.1": 3000, "audit.log.2": 2000, "audit.log.10": 1000}
    files = {n: stamped(tmp_path / n, 1795900000 + ages[n], 1795900000 + ages[n] + 500) for n in names}
    oldest_first = [files[n] for n in ("audit.log.10", "audit.log.2", "audit.log.1", "audit.log")]
    assert read_order([files[n] for n in names]) == oldest_first
    assert read_order(list(reversed(oldest_first))) == oldest_first


def test_a_file_is_placed_by_its_first_record_even_after_a_cut_line(tmp_path: Path) -> None:
    late, early = tmp_path / "b", tmp_path / "a"
    stamped(late, 1795900900)
    stamped(early, 1795900100)
    early.write_bytes(b"\0\0 half a line\n" + early.read_bytes())
    # Milliseconds and serial break ties within a second.
    same = tmp_path / "c"
    same.write_text("type=TTY msg=audit(1795900100.249:9): tty pid=1 ses=7 data=0A\n")
    assert read_order([str(late), str(early), str(same)]) == [str(same), str(early), str(late)]


def test_the_default_discovery_is_ordered_by_time_too(tmp_path: Path) -> None:
    """A rotated file whose number says older than its content (renamed by hand): time wins."""
    log = stamped(tmp_path / "audit.log", 1795903000)
    one = stamped(tmp_path / "audit.log.1", 1795901000)
    two = stamped(tmp_path / "audit.log.2", 1795902000)
    (tmp_path / "audit.log.bak").write_text("")
    conf = tmp_path / "auditd.conf"
    conf.write_text(f"log_file = {log}\n")
    assert log_files(None, str(conf)) == [two, one, log]  # by name
    assert read_order(log_files(None, str(conf))) == [one, two, log]  # by time


def test_compressed_and_dated_rotations_are_found_read_and_ordered(tmp_path: Path) -> None:
    """logrotate's names (dateext, compress) beside auditd's own; each read decompressed."""
    log = stamped(tmp_path / "audit.log", 1795905000)
    plain = {name: stamped(tmp_path / name, 1795900000 + age) for name, age in (("x.1", 4000), ("x.2", 3000))}
    (tmp_path / "audit.log.1.gz").write_bytes(gzip.compress(Path(plain["x.1"]).read_bytes()))
    (tmp_path / "audit.log-20261128.xz").write_bytes(lzma.compress(Path(plain["x.2"]).read_bytes()))
    (tmp_path / "audit.log-20261127.bz2").write_bytes(
        bz2.compress(Path(stamped(tmp_path / "x.3", 1795901000)).read_bytes())
    )
    (tmp_path / "audit.log.bak").write_text("")  # not a rotation
    conf = tmp_path / "auditd.conf"
    conf.write_text(f"log_file = {log}\n")
    with opened_logs(log_files(None, str(conf))) as logs:
        names = [Path(log.path).name for log in logs]
        stamps = [line.split()[1] for line in _grep([log.data for log in logs], re.compile(rb" ses=7 ")).splitlines()]
    assert names == ["audit.log-20261127.bz2", "audit.log-20261128.xz", "audit.log.1.gz", "audit.log"]
    assert stamps == [f"msg=audit({s}.250:{s % 1000}):" for s in (1795901000, 1795903000, 1795904000, 1795905000)]


def test_files_are_read_as_they_were_when_opened(tmp_path: Path) -> None:
    """auditd rotates by renaming: a search holds each file open once, so it reads every record once."""
    one, log = tmp_path / "audit.log.1", tmp_path / "audit.log"
    stamped(one, 1795900000)
    stamped(log, 1795900100)
    with opened_logs([str(one), str(log)]) as logs:
        log.rename(tmp_path / "audit.log.2")  # what was .1 goes on as .2 …
        one.rename(log)  # … and so on: the paths now name other contents
        stamped(one, 1795900200)
        lines = _grep([log.data for log in logs], re.compile(rb" ses=7 ")).splitlines()
    assert [line.split()[1] for line in lines] == ["msg=audit(1795900000.250:0):", "msg=audit(1795900100.250:100):"]


def test_a_file_that_is_not_a_log_a_damaged_one_and_a_copy_are_named(tmp_path: Path) -> None:
    empty, notes, log = tmp_path / "audit.log", tmp_path / "notes.txt", tmp_path / "audit.log.1"
    empty.write_text("")  # a fresh log: nothing yet, not an error
    notes.write_text("not an audit log\n")
    stamped(log, *range(1795900000, 1795903000))
    whole = log.read_bytes()
    # logrotate compressing audit.log.1: the .gz beside it, complete or still being written.
    (tmp_path / "audit.log.1.gz").write_bytes(gzip.compress(whole))
    cut = tmp_path / "audit.log.2.gz"
    cut.write_bytes(gzip.compress(whole)[:3000])
    files = [str(p) for p in (empty, notes, log, tmp_path / "audit.log.1.gz", cut)]
    with opened_logs(files) as logs:
        notes_by_name = {Path(x.path).name: x.note for x in logs}
        read = b"".join(bytes(x.data) for x in logs)
    assert notes_by_name["audit.log"] is None and "not an audit log" in (notes_by_name["notes.txt"] or "")
    assert "damaged or incomplete (EOFError" in (notes_by_name["audit.log.2.gz"] or "")
    # Each record once: the cut .gz gave its first records, a copy of the start of the same log.
    copies = [n for n, note in notes_by_name.items() if note and "the same log as" in note]
    assert len(copies) == 2 and read.count(b"msg=audit(1795902999.250:") == 1


def packed_by(*argv: str) -> Callable[[bytes], bytes]:
    """A compressor's command line, reading standard input and writing standard output."""
    return lambda data: subprocess.run(argv, input=data, capture_output=True, check=True).stdout


zstd = packed_by("zstd", "-q", "-c")
# What logrotate's compresscmd makes (COMMAND -c), and what search reads it with (COMMAND -dc).
BY_COMMAND = {
    ".zst": zstd,
    ".lz4": packed_by("lz4", "-q", "-c"),
    ".lz": packed_by("lzip", "-c"),
    ".lzo": packed_by("lzop", "-c"),
    ".br": packed_by("brotli", "-c"),
    ".Z": packed_by("compress", "-c", "-f"),  # -f: even when it saves nothing
}


def lzma_alone(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_ALONE)


@pytest.mark.parametrize("ext, pack", [*BY_COMMAND.items(), (".lzma", lzma_alone)])
def test_rotations_compressed_by_a_command_or_as_lzma_are_found_and_read(tmp_path: Path, ext: str, pack) -> None:
    """logrotate with compresscmd /usr/bin/zstd, compressext .zst (or lz4, lzip, lzop, brotli,
    compress): read through the command, Python 3.11 has no module for them; lzma, xz's older
    format, with the standard library."""
    log = stamped(tmp_path / "audit.log", 1795903000)
    (tmp_path / f"audit.log.1{ext}").write_bytes(pack(Path(stamped(tmp_path / "x", 1795902000)).read_bytes()))
    (tmp_path / f"audit.log-20261128{ext}").write_bytes(pack(Path(stamped(tmp_path / "x", 1795901000)).read_bytes()))
    conf = tmp_path / "auditd.conf"
    conf.write_text(f"log_file = {log}\n")
    with opened_logs(log_files(None, str(conf))) as logs:
        assert [(Path(x.path).name, x.note) for x in logs] == [
            (f"audit.log-20261128{ext}", None),
            (f"audit.log.1{ext}", None),
            ("audit.log", None),
        ]
        lines = _grep([x.data for x in logs], SES).splitlines()
    want = [f"msg=audit({s}.250:{s % 1000}):" for s in (1795901000, 1795902000, 1795903000)]
    assert [line.split()[1] for line in lines] == want


# compress(1)'s .Z has no end marker: a cut one reads as a shorter log, for gzip as for any reader.
@pytest.mark.parametrize("ext", [ext for ext in BY_COMMAND if ext != ".Z"])
def test_a_cut_file_read_through_a_command_is_named_without_the_commands_stdin(tmp_path: Path, ext: str) -> None:
    whole = Path(stamped(tmp_path / "x", *range(1795900000, 1795900400))).read_bytes()
    packed = BY_COMMAND[ext](whole)
    cut = tmp_path / f"audit.log.1{ext}"
    cut.write_bytes(packed[: len(packed) // 2])  # logrotate still writing it
    with opened_logs([str(cut)]) as (log,):
        note = log.note or ""
        read = bytes(log.data)
    command = search._COMMANDS[ext][0]
    assert note.startswith(f"damaged or incomplete ({command} exit ") and note.endswith("): read up to the damage")
    assert "stdin" not in note and f"{command}: " not in note and ": )" not in note, note
    assert whole.startswith(read)


def test_a_cut_or_damaged_zstd_file_is_read_up_to_the_damage_and_named(tmp_path: Path) -> None:
    whole = Path(stamped(tmp_path / "x", *range(1795900000, 1795960000))).read_bytes()
    first = whole[: whole.index(b"\n", len(whole) // 2) + 1]
    packed = zstd(whole)
    cut, damaged = tmp_path / "audit.log.1.zst", tmp_path / "audit.log.2.zst"
    cut.write_bytes(packed[: len(packed) // 2])  # logrotate still writing it
    # Two frames (zstd appended to a .zst), the second one's header damaged.
    damaged.write_bytes(zstd(first) + b"XXXX" + zstd(whole[len(first) :])[4:])
    for path, said in ((cut, "premature end"), (damaged, "unsupported format")):
        with opened_logs([str(path)]) as (log,):
            note = log.note or ""
            assert note.startswith("damaged or incomplete (zstd exit 1: ") and said in note, note
            assert note.endswith("): read up to the damage") and "stdin" not in note
            read = bytes(log.data)
        # What came before the damage: a beginning of the log, past zstd's first 128 KiB block.
        assert 128 * 1024 < len(read) < len(whole) and whole.startswith(read)
    assert read == first


def test_without_the_zstd_command_a_zst_file_is_named_as_not_read(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "audit.log.1.zst"
    log.write_bytes(zstd(Path(stamped(tmp_path / "x", 1795900000)).read_bytes()))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with opened_logs([str(log)]) as (read,):
        assert read.note == "not read: the zstd command is not installed (apt-get install zstd)"
        assert read.data == b""


# What a log folder holds beside the rotations (each a real log, so that reading one would show).
NOT_ROTATIONS = [
    "audit.log.lock",
    "audit.log~",
    "audit.log.1~",
    "#audit.log#",
    ".audit.log.swp",
    "audit.log.bak",
    "audit.log.orig",
    "audit.log.dpkg-old",
    "audit.log.dpkg-dist",
    "audit.log.ucf-old",
    "audit.log-other.conf",
    "audit.log-20261129.bak",
    "audit.log.1.gz.tmp",
    "audit.logs",
    "audit.log2",
    "my-audit.log",
    "audit.log.old",
]


def test_every_logrotate_dateformat_and_auditds_numbers_are_found_and_nothing_else(tmp_path: Path) -> None:
    """dateext with dateformat -%Y%m%d (the default), -%Y%m%d%H (hourly), -%Y-%m-%d, .%Y%m%d, -%s,
    -%Y%m%d-%s, compressed or not, beside auditd's audit.log.1 ... .N."""
    rotations = [
        "audit.log.1",
        "audit.log.2",
        "audit.log.12",
        "audit.log-20261101",
        "audit.log-2026110213",
        "audit.log-2026-11-03",
        "audit.log.20261104",
        "audit.log-1795900000",
        "audit.log-20261105-1795901000",
        "audit.log.3.gz",
        "audit.log-20261106.gz",
        "audit.log-2026110713.bz2",
        "audit.log-2026-11-08.xz",
        "audit.log.20261109.zst",
        "audit.log-1795902000.zst",
        "audit.log-2026-11-10.zst",
        "audit.log-20261111.lz4",
        "audit.log.4.lzma",
    ]
    for i, name in enumerate(rotations + NOT_ROTATIONS):
        stamped(tmp_path / name, 1795800000 + i)
    log = stamped(tmp_path / "audit.log", 1795990000)
    conf = tmp_path / "auditd.conf"
    conf.write_text(f"log_file = {log}\n")
    found = log_files(None, str(conf))
    assert sorted(Path(p).name for p in found) == sorted([*rotations, "audit.log"])
    # By name (files without records keep it): auditd's numbers first, higher is older.
    numbered = ["audit.log.12", "audit.log.4.lzma", "audit.log.3.gz", "audit.log.2", "audit.log.1"]
    assert found[-1] == log and found[:5] == [str(tmp_path / n) for n in numbered]


def test_a_live_log_gone_beside_its_rotations_is_named_and_the_rotations_read(tmp_path: Path) -> None:
    """logrotate without `create` leaves no audit.log until auditd reopens it (auditd writes on into
    the renamed file): the rotations are read and the missing log named; with no rotation it is an error."""
    log = tmp_path / "audit.log"
    (tmp_path / "audit.log.1.gz").write_bytes(gzip.compress(Path(stamped(tmp_path / "x", 1795901000)).read_bytes()))
    stamped(tmp_path / "audit.log-20261129", 1795902000)
    conf = tmp_path / "auditd.conf"
    conf.write_text(f"log_file = {log}\n")
    with opened_logs(log_files(None, str(conf)), rotated_live=True) as logs:
        assert [(Path(x.path).name, x.note) for x in logs] == [
            ("audit.log", "does not exist: its rotations are read (logrotate without `create`?)"),
            ("audit.log.1.gz", None),
            ("audit.log-20261129", None),
        ]
        assert len(_grep([x.data for x in logs], SES).splitlines()) == 2
    for path in tmp_path.glob("audit.log?*"):
        path.unlink()
    with pytest.raises(FileNotFoundError), opened_logs(log_files(None, str(conf)), rotated_live=True):
        pass


def test_a_folder_given_stands_for_its_audit_log_and_rotations(tmp_path: Path) -> None:
    """A copy of a host's /var/log/audit, or logrotate's olddir (rotations only), named as a folder."""
    host = tmp_path / "host1"
    host.mkdir()
    log = stamped(host / "audit.log", 1795903000)
    one = stamped(host / "audit.log.1", 1795902000)
    (host / "audit.log-20261128.gz").write_bytes(gzip.compress(Path(stamped(tmp_path / "x", 1795901000)).read_bytes()))
    (host / "audit.log.bak").write_text("")  # not a rotation
    (host / "notes.txt").write_text("")
    old = tmp_path / "old"  # olddir: no audit.log in it
    old.mkdir()
    older = stamped(old / "audit.log-20261101", 1795800000)
    single = stamped(tmp_path / "other.log", 1795904000)
    found = log_files([str(host), str(old), single])
    assert found == [one, str(host / "audit.log-20261128.gz"), log, older, single]  # by name, as without --input
    assert [Path(p).name for p in read_order(found)] == [
        "audit.log-20261101",
        "audit.log-20261128.gz",
        "audit.log.1",
        "audit.log",
        "other.log",
    ]


def test_a_folder_without_an_audit_log_is_an_error_that_names_it(tmp_path: Path) -> None:
    (tmp_path / "audit.log.bak").write_text("")
    with pytest.raises(FileNotFoundError) as raised:
        log_files([str(tmp_path)])
    assert raised.value.filename == str(tmp_path) and "no audit.log nor a rotation of it" in str(raised.value)


def test_logrotates_olddir_adds_its_rotations_once(tmp_path: Path) -> None:
    """olddir elsewhere: its rotations come first; olddir naming the log's own folder adds nothing twice."""
    folder, archive = tmp_path / "audit", tmp_path / "archive"
    folder.mkdir()
    archive.mkdir()
    log = stamped(folder / "audit.log", 1795903000)
    one = stamped(folder / "audit.log.1", 1795902000)
    old = stamped(archive / "audit.log-20261101", 1795901000)
    stamped(archive / "other.log-20261101", 1795900000)  # not a rotation of the log
    auditd = tmp_path / "auditd.conf"
    auditd.write_text(f"log_file = {log}\n")
    rotate = tmp_path / "logrotate.conf"
    rotate.write_text(f"{log} {{\n  olddir ../archive\n}}\n")
    assert log_files(None, str(auditd), str(rotate)) == [old, one, log]
    rotate.write_text(f"{log} {{\n  olddir .\n}}\n")
    assert log_files(None, str(auditd), str(rotate)) == [one, log]
    rotate.write_text(f"{log} {{\n  olddir ../missing\n}}\n")
    assert log_files(None, str(auditd), str(rotate)) == [one, log]


def test_search_reads_auditd_conf_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What search says about this host's log (write_logs = no, a collector) and the log it reads come
    from one reading of auditd.conf: read twice, an edit in between made it read another log than the
    one it spoke of."""
    from pam_teleport_audit.admin import cli

    first, second = tmp_path / "a" / "audit.log", tmp_path / "b" / "audit.log"
    for log in (first, second):
        log.parent.mkdir()
        log.write_bytes(b"")
    readings = iter([{"log_file": str(first)}, {"log_file": str(second)}])
    monkeypatch.setattr(search, "read_conf", lambda path: next(readings))
    opened: list[list[str]] = []

    def stop(files: list[str], rotated_live: bool = False) -> None:
        opened.append(files)
        raise OSError("stop here")

    monkeypatch.setattr(search, "opened_logs", stop)
    assert cli.main(["search", "--teleport-user", "alice"]) == cli.EXIT_IO
    assert opened == [[str(first)]]
    assert next(readings) == {"log_file": str(second)}, "auditd.conf was read once"
