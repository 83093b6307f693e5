"""Teleport's configuration as the running `teleport start` reads it (doctor, selftest).

Teleport reads `--config`/`-c`, else /etc/teleport.yaml; a base64 `--config-string`, or the
TELEPORT_CONFIG environment variable in its place, replaces that file entirely (lib/config
Configure). Its ssh_service.pam fields are strings it parses itself (`enabled` through
ParseBool: `on`, `Yes`, `1` are true), so the YAML is read with every scalar left a string.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from ..pam_module import (
    DEFAULT_TELEPORT_NAME,
    DELETED_SUFFIX,
    ENV_TELEPORT_LOGIN,
    ENV_TELEPORT_ROLES,
    ENV_TELEPORT_USERNAME,
)

DEFAULT_CONFIG = "/etc/teleport.yaml"
DEFAULT_PAM_SERVICE = "sshd"
CONFIG_STRING_FLAG = "--config-string"
CONFIG_STRING_ENV = "TELEPORT_CONFIG"
# api/utils ParseBool, compared lower-case: anything else is false to Teleport.
TRUE_WORDS = frozenset({"yes", "yeah", "y", "true", "1", "on"})
# YAML's null: Teleport's string field stays empty (its default then applies).
YAML_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
# `teleport start`'s short flags that take a value (-c config, -r roles, -l listen-ip); kingpin lets
# booleans (-d) bundle before one of them: `-dc FILE`, `-dcFILE`.
SHORT_VALUE_FLAGS = frozenset("crl")
IDENTITY_VARIABLES = (ENV_TELEPORT_USERNAME, ENV_TELEPORT_LOGIN, ENV_TELEPORT_ROLES)


class ConfigError(Exception):
    """The configuration cannot be read or decoded; the message says which and why."""


@dataclass(frozen=True)
class Source:
    """Where a Teleport reads its configuration: a file, or base64 YAML that replaces it."""

    path: str  # the file; absolute for a running daemon (as it opens it)
    inline: str | None = None  # base64 from --config-string or TELEPORT_CONFIG
    via: str = ""  # which of the two
    pid: int | None = None  # the running daemon it is of

    def __str__(self) -> str:
        return self.path if self.inline is None else f"teleport pid {self.pid}'s {self.via}"


@dataclass(frozen=True)
class Daemon:
    """A running `teleport start`; its session children (exec, networking, park …) are not daemons."""

    pid: int
    exe: str
    uid: int
    loginuid: int
    source: Source


@dataclass(frozen=True)
class PamSettings:
    """ssh_service.pam as Teleport applies it."""

    enabled: bool
    service: str
    # (TELEPORT_* name, environment: key) for each key that sets or removes an identity variable.
    overridden: tuple[tuple[str, str], ...]


def start_config(argv: list[str]) -> str | None:
    """The config file of a `teleport start` command line (-c, --config, else Teleport's default); None
    for any other command line (`teleport exec`, `teleport networking`, ...)."""
    positional = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
    if positional != "start":
        return None
    config = DEFAULT_CONFIG
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif arg.startswith("--config="):
            config = arg.partition("=")[2]
        elif arg.startswith("-") and not arg.startswith("--"):
            for k, flag in enumerate(arg[1:], 2):
                if flag in SHORT_VALUE_FLAGS:  # its value: the rest of the bundle, else the next argument
                    value = arg[k:] or (argv[i + 1] if i + 1 < len(argv) else "")
                    config = value if flag == "c" and value else config
                    break
    return config


def config_string(argv: list[str], environ: dict[str, str]) -> tuple[str, str] | None:
    """(base64 text, where from) when a `teleport start` takes its config as a string: the flag,
    else the environment variable (kingpin's Envar); None when neither is set or both are empty."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == CONFIG_STRING_FLAG and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(CONFIG_STRING_FLAG + "="):
            value = arg.partition("=")[2]
        else:
            continue
        return (value, CONFIG_STRING_FLAG) if value else None
    value = environ.get(CONFIG_STRING_ENV, "")
    return (value, CONFIG_STRING_ENV) if value else None


def _nul_separated(path: str) -> list[str]:
    with open(path, "rb") as f:
        return [os.fsdecode(item) for item in f.read().split(b"\0")[:-1]]


def daemons(proc: str = "/proc", names: tuple[str, ...] = (DEFAULT_TELEPORT_NAME,)) -> list[Daemon]:
    """Each running `teleport start` (a program named teleport), in pid order."""
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        folder = f"{proc}/{entry}"
        try:
            exe = os.readlink(f"{folder}/exe").removesuffix(DELETED_SUFFIX)
            if os.path.basename(exe) not in names:
                continue
            argv = _nul_separated(f"{folder}/cmdline")
            path = start_config(argv)
            if path is None:
                continue  # a session child: its loginuid and uid are its session's, by design
            environ: dict[str, str] = {}
            for item in _nul_separated(f"{folder}/environ"):
                name, _, value = item.partition("=")
                environ.setdefault(name, value)  # the first, as getenv(3) finds it
            with open(f"{folder}/loginuid") as f:
                loginuid = int(f.read().strip())
            uid = os.stat(folder).st_uid
            source = Source(os.path.join(os.readlink(f"{folder}/cwd"), path), pid=int(entry))
            inline = config_string(argv, environ)
            if inline is not None:
                source = Source(source.path, inline[0], inline[1], int(entry))
        except (OSError, ValueError):
            continue  # gone, or a kernel thread
        found.append(Daemon(int(entry), exe, uid, loginuid, source))
    return sorted(found, key=lambda daemon: daemon.pid)


def chosen(given: str | None, running: list[Daemon]) -> Source:
    """The config doctor reads: the one given, else the running daemon's, else Teleport's default."""
    if given:
        return Source(given)
    return running[0].source if running else Source(DEFAULT_CONFIG)


def read(source: Source) -> dict[str, object]:
    """The configuration as YAML with string scalars; raises FileNotFoundError when the file does
    not exist, ConfigError when it cannot be read or decoded."""
    import yaml  # python3-yaml: doctor says so when it is missing

    try:
        if source.inline is None:
            with open(source.path, encoding="utf-8") as f:
                text = f.read()
        else:
            # Go's StdEncoding skips line breaks: `base64 FILE` wraps its output at 76 columns.
            text = base64.b64decode(source.inline.replace("\r", "").replace("\n", ""), validate=True).decode("utf-8")
        config = yaml.load(text, Loader=yaml.BaseLoader)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, binascii.Error, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {source}: {exc}") from exc
    return config if isinstance(config, dict) else {}


def pam_settings(config: dict[str, object]) -> PamSettings:
    """ssh_service.pam of a configuration read by read()."""
    ssh = config.get("ssh_service")
    pam = ssh.get("pam") if isinstance(ssh, dict) else None
    if not isinstance(pam, dict):
        return PamSettings(False, DEFAULT_PAM_SERVICE, ())
    environment = pam.get("environment")
    return PamSettings(
        _string(pam.get("enabled")).lower() in TRUE_WORDS,
        _string(pam.get("service_name")) or DEFAULT_PAM_SERVICE,
        overrides(environment if isinstance(environment, dict) else {}),
    )


def putenv_name(key: str) -> str:
    """The variable an environment: key names in the PAM environment. Teleport passes each entry as the
    C string KEY=VALUE to pam_putenv (lib/pam Open), which ends at the first NUL and takes the name up to
    the first `=`: the key `TELEPORT_USERNAME=x` sets TELEPORT_USERNAME to `x=VALUE`, the key
    `TELEPORT_USERNAME=x\\0` (YAML's "\\0") sets it to `x`, and `TELEPORT_USERNAME\\0` is a name with no
    `=`, which pam_putenv removes."""
    return key.split("\0", 1)[0].split("=", 1)[0]


def putenv_removes(key: str) -> bool:
    """Whether pam_putenv removes the variable an environment: key names: Teleport's KEY=VALUE has an
    `=` unless a NUL in the key cuts the C string before any."""
    name, nul, _ = key.partition("\0")
    return bool(nul) and "=" not in name


def overrides(environment: dict[str, object]) -> tuple[tuple[str, str], ...]:
    """The environment: keys that set or remove TELEPORT_USERNAME, TELEPORT_LOGIN or TELEPORT_ROLES.

    Teleport fills one map with its own three values, then writes every environment: entry into it
    (lib/srv ctx.go getPAMConfig), so an entry named like one replaces Teleport's value; an entry whose
    pam_putenv name is one (putenv_name) is a second key of the map, put after or before Teleport's own
    in Go's random map order: it wins at some logins and not others."""
    found = [(putenv_name(key), key) for key in environment if isinstance(key, str)]
    return tuple(sorted(((name, key) for name, key in found if name in IDENTITY_VARIABLES), key=_by_variable))


def _by_variable(override: tuple[str, str]) -> tuple[int, str]:
    return IDENTITY_VARIABLES.index(override[0]), override[1]


def _string(value: object) -> str:
    """A scalar as Teleport's string field gets it: empty for a YAML null or a non-scalar."""
    return value if isinstance(value, str) and value not in YAML_NULLS else ""


def same_config(a: Source, b: Source) -> bool:
    """Whether two sources give Teleport the same configuration (the same file, or the same text)."""
    if a.inline is not None or b.inline is not None:
        return a.inline == b.inline
    return os.path.normpath(a.path) == os.path.normpath(b.path)


def pam_service(source: Source) -> str | None:
    """The PAM service name the configuration names (default sshd); None when it cannot be read."""
    try:
        return pam_settings(read(source)).service
    except Exception:
        return None


def service_file(source: Source) -> str:
    """The /etc/pam.d file of the PAM service the configuration names (sshd when it cannot be read)."""
    return f"/etc/pam.d/{pam_service(source) or DEFAULT_PAM_SERVICE}"
