"""Whether pam_python will load the in-PAM modules from their cached bytecode.

pam_python's interpreter runs with dont_write_bytecode set (sys.flags), so it
never writes __pycache__: a module whose bytecode is missing or stale there is
compiled from source at every Teleport login, and stays so until someone
compiles it (docs/architecture.md, "Bytecode"). pip and the Debian package
(py3compile) write the bytecode at install; an edited file, a copy without
__pycache__, `pip install --no-compile` or a Python upgrade without a
recompile leave it missing or stale.

doctor runs this file as a script with the Python pam_python embeds: the
magic number, cache tag and invalidation rules that count are that Python's.
Standard library only, no imports of ours: the package may be the broken part.

    python3.11 -I bytecode.py FOLDER   prints {"python": ..., "stale": {file: why}}
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

# What pam_entry.py imports at every Teleport login (pam_fallback.py only when
# pam_module.py cannot be imported; pam_entry.py itself is always compiled).
PER_LOGIN_FILES = ("pam_loader.py", "pam_module.py")

# PEP 552: the pyc header's flags word.
_HASH_BASED = 0b01
_CHECK_SOURCE = 0b10
_HEADER_SIZE = 16  # magic, flags, then mtime and size, or the source's hash


def why_stale(source: str) -> str | None:
    """Why this Python would compile source rather than load its cached bytecode; None if it would not.

    The same tests as importlib's SourceFileLoader: the magic number, the
    flags, then the source's mtime and size, or its hash for a checked
    hash-based pyc (an unchecked one is always used).
    """
    cached = importlib.util.cache_from_source(source)
    name = os.path.relpath(cached, os.path.dirname(source))
    try:
        with open(cached, "rb") as file:
            header = file.read(_HEADER_SIZE)
    except FileNotFoundError:
        return f"no {name}"
    except OSError as exc:
        return f"cannot read {name}: {exc.strerror}"
    if len(header) < _HEADER_SIZE:
        return f"{name} is truncated"
    if header[:4] != importlib.util.MAGIC_NUMBER:
        return f"{name} was written by another Python version"
    flags = int.from_bytes(header[4:8], "little")
    if flags & ~(_HASH_BASED | _CHECK_SOURCE):
        return f"{name} has an invalid header"
    if flags & _HASH_BASED:
        if not flags & _CHECK_SOURCE:
            return None
        with open(source, "rb") as file:
            current = importlib.util.source_hash(file.read()) == header[8:16]
        return None if current else f"changed after {name} was written"
    info = os.stat(source)
    mtime, size = int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little")
    if (mtime, size) != (int(info.st_mtime) & 0xFFFFFFFF, info.st_size & 0xFFFFFFFF):
        return f"changed after {name} was written"
    return None


def stale_files(folder: str) -> dict[str, str]:
    """The files of folder that every Teleport login imports and this Python would compile, and why."""
    found = {}
    for file in PER_LOGIN_FILES:
        source = os.path.join(folder, file)
        if os.path.exists(source):
            why = why_stale(source)
            if why:
                found[file] = why
    return found


if __name__ == "__main__":
    print(json.dumps({"python": sys.version.split()[0], "stale": stale_files(sys.argv[1])}))
