"""Module options from the pam.d line, parsed in this one place.

    account optional pam_python.so /path/pam_entry.py [fail_closed] [debug]
        [teleport_exe=/usr/local/bin/teleport|memfd:NAME ...] [rhost_env=NAME]
        [timeout_ms=N] [log_socket=/dev/log]

An unknown or malformed option is reported back to be logged; it never stops
a login.
"""

from .struct_type import Struct

DEFAULT_TIMEOUT_MS = 1000
DEFAULT_LOG_SOCKET = "/dev/log"


class Options(Struct):
    __slots__ = ("fail_closed", "debug", "teleport_exe", "rhost_env", "timeout_ms", "log_socket", "problems")
    _defaults = {  # noqa: RUF012
        "fail_closed": False,
        "debug": False,
        "teleport_exe": (),
        "rhost_env": None,
        "timeout_ms": DEFAULT_TIMEOUT_MS,
        "log_socket": DEFAULT_LOG_SOCKET,
        "problems": (),
    }
    fail_closed: bool
    debug: bool
    # Empty: the default rule (identity.exe_is_teleport: a root-owned file named
    # "teleport" nobody else can write, or memfd:teleport-sessionhelper).
    # Otherwise absolute paths and "memfd:NAME" entries, matched exactly.
    teleport_exe: tuple[str, ...]
    # PAM environment variable that carries the client address, if any.
    rhost_env: str | None
    timeout_ms: int
    # Where the syslog daemon listens (a chroot or a test may use another).
    log_socket: str
    problems: tuple[str, ...]  # what was wrong with the arguments, to be logged


def parse_options(argv: list[str] | tuple[str, ...]) -> Options:
    """Parse module arguments (without pam_python's script path)."""
    fail_closed = debug = False
    exes: list[str] = []
    rhost_env: str | None = None
    timeout_ms = DEFAULT_TIMEOUT_MS
    log_socket = DEFAULT_LOG_SOCKET
    problems: list[str] = []
    for arg in argv:
        name, has_value, value = arg.partition("=")
        if not has_value and name == "fail_closed":
            fail_closed = True
        elif not has_value and name == "debug":
            debug = True
        elif has_value and name == "teleport_exe":
            if value.startswith("/") or (value.startswith("memfd:") and len(value) > 6):
                exes.append(value)
            else:
                problems.append(f"teleport_exe={value!r} is neither an absolute path nor memfd:NAME; ignored")
        elif has_value and name == "rhost_env":
            if value and value.isascii() and value.replace("_", "a").isalnum():
                rhost_env = value
            else:
                problems.append(f"rhost_env={value!r} is not an environment variable name; ignored")
        elif has_value and name == "timeout_ms":
            if value.isdigit() and 0 < int(value) <= 60000:
                timeout_ms = int(value)
            else:
                problems.append(f"timeout_ms={value!r} is not a number of milliseconds in 1..60000; ignored")
        elif has_value and name == "log_socket":
            if value.startswith("/"):
                log_socket = value
            else:
                problems.append(f"log_socket={value!r} is not an absolute path; ignored")
        else:
            problems.append(f"unknown option {arg!r}; ignored")
    return Options(fail_closed, debug, tuple(exes), rhost_env, timeout_ms, log_socket, tuple(problems))
