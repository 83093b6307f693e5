"""Where logrotate moves a log's rotations (`olddir`), read from its configuration as logrotate reads it.

A site that rotates the audit log with logrotate (auditd's max_log_file_action = ignore) may keep the
rotations in another folder: search must read them there too, or it silently misses older sessions.

What is read (logrotate(8), config.c): the main file and what it includes (a file, or every file of
a folder in name order, taboo extensions skipped); `olddir DIR` and `noolddir`, at the top level
(a default for the blocks that follow) or in a block; a block's path patterns, globs, matched one
path component at a time; script bodies (postrotate ... endscript) skipped. A relative olddir is
relative to the log's folder. Anything else is ignored: this reads, it never judges a configuration.
"""

from __future__ import annotations

import fnmatch
import os
import shlex

DEFAULT_CONF = "/etc/logrotate.conf"
# logrotate's default tabooext: files of an included folder that it skips.
TABOO_SUFFIXES = (
    ",v",
    ".cfsaved",
    ".disabled",
    ".dpkg-bak",
    ".dpkg-del",
    ".dpkg-dist",
    ".dpkg-new",
    ".dpkg-old",
    ".rpmnew",
    ".rpmorig",
    ".rpmsave",
    ".swp",
    ".ucf-dist",
    ".ucf-new",
    ".ucf-old",
    "~",
)
SCRIPTS = ("postrotate", "prerotate", "firstaction", "lastaction", "preremove")
MAX_INCLUDES = 64  # logrotate refuses include loops; a bound keeps a strange tree from running on


def olddir(log: str, conf: str = DEFAULT_CONF) -> str | None:
    """The folder logrotate moves log's rotations to, or None (beside the log, or no logrotate)."""
    found = _Reader(log).read(conf)
    if not found:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(log), found))


def matches(pattern: str, path: str) -> bool:
    """A logrotate path pattern (glob(3)): `*` and `?` never cross a `/`."""
    want, have = pattern.split("/"), os.path.normpath(path).split("/")
    return len(want) == len(have) and all(fnmatch.fnmatchcase(h, w) for w, h in zip(want, have, strict=True))


class _Reader:
    """One pass over the configuration, in logrotate's order, until the block that rotates log."""

    def __init__(self, log: str) -> None:
        self.log = log
        self.default: str | None = None  # the top level's olddir, for the blocks that follow it
        self.includes = 0

    def read(self, path: str) -> str | None:
        """The olddir of log's block in path (or what it includes); None: no block, or no olddir."""
        return self._file(path)[1]

    def _file(self, path: str) -> tuple[bool, str | None]:
        """(whether log's block was found, its olddir)."""
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return False, None
        block: tuple[list[str], str | None] | None = None  # patterns, olddir
        patterns: list[str] = []
        in_script = False
        for raw in lines:
            line = raw.strip()
            if in_script:
                in_script = line != "endscript"
                continue
            if not line or line.startswith("#"):
                continue
            if block is None:
                opened = line.endswith("{")
                if opened or line.startswith(("/", '"', "'", "~")):
                    # A block's patterns, maybe over several lines, then its `{`.
                    patterns += _words(line.removesuffix("{"))
                    if opened:
                        block, patterns = (patterns, self.default), []
                    continue
                found = self._top_level(_words(line))
                if found is not None:
                    return found
                continue
            if line.startswith("}"):
                if any(matches(p, self.log) for p in block[0]):
                    return True, block[1]
                block = None
                continue
            words = _words(line)
            if words and words[0] in SCRIPTS:
                in_script = True
            elif words and words[0] == "olddir" and len(words) > 1:
                block = (block[0], words[1])
            elif words == ["noolddir"]:
                block = (block[0], None)
        return False, None

    def _top_level(self, words: list[str]) -> tuple[bool, str | None] | None:
        """A directive outside any block; the result when an included file held log's block."""
        if not words:
            return None
        if words[0] == "olddir" and len(words) > 1:
            self.default = words[1]
        elif words == ["noolddir"]:
            self.default = None
        elif words[0] == "include" and len(words) > 1 and self.includes < MAX_INCLUDES:
            self.includes += 1
            for path in _included(words[1]):
                found = self._file(path)
                if found[0]:
                    return found
        return None


def _included(path: str) -> list[str]:
    """The files an `include` reads: the file, or a folder's regular files in name order, taboos skipped."""
    if not os.path.isdir(path):
        return [path]
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return []
    return [
        os.path.join(path, name)
        for name in names
        if not name.endswith(TABOO_SUFFIXES) and os.path.isfile(os.path.join(path, name))
    ]


def _words(text: str) -> list[str]:
    """A line's words, quotes as logrotate reads them."""
    try:
        return shlex.split(text, comments=False)
    except ValueError:  # an unbalanced quote: read as plain words
        return text.split()
