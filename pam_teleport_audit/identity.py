"""Who is logging in, and whether to believe it.

The TELEPORT_* variables are plain PAM environment entries: any PAM
application, and in the session stack pam_env reading the user's own
~/.pam_environment, can set them. They are believed only when the PAM
application itself is Teleport, running as root, in the account phase.
"""

import os

from .constants import (
    DEFAULT_TELEPORT_MEMFD,
    DEFAULT_TELEPORT_NAME,
    DELETED_SUFFIX,
    ENV_TELEPORT_LOGIN,
    ENV_TELEPORT_ROLES,
    ENV_TELEPORT_USERNAME,
    MEMFD_PREFIX,
)
from .struct_type import Struct

TYPE_CHECKING = False  # typing costs an import at every PAM handle
if TYPE_CHECKING:
    from collections.abc import Callable


class TeleportIdentity(Struct):
    __slots__ = ("user", "login", "roles")
    user: str  # Teleport user name
    login: str  # Linux login (the PAM user)
    roles: tuple[str, ...]


def exe_is_teleport(exe: str, allowed: tuple[str, ...], exe_stat: "Callable[[], os.stat_result]") -> bool:
    """Whether /proc/self/exe names a Teleport binary.

    A running binary that was replaced by an upgrade reads "PATH (deleted)"
    and is still the binary that was trusted when it started; a binary run
    from a memfd reads "/memfd:NAME (deleted)". With no teleport_exe= option,
    a file named teleport owned by root and writable by nobody else, and the
    memfd Teleport itself names teleport-sessionhelper, are trusted;
    otherwise only the listed paths and memfd:NAME entries. exe_stat stats the
    running binary (os.stat of /proc/self/exe reaches its inode even when
    deleted); it is called only for the default rule's file check.
    """
    exe = exe.removesuffix(DELETED_SUFFIX)
    if exe.startswith(MEMFD_PREFIX):
        # A memfd's owner and mode say nothing: whoever runs it as root made it.
        return ("memfd:" + exe[len(MEMFD_PREFIX) :]) in (allowed or (DEFAULT_TELEPORT_MEMFD,))
    if not exe.startswith("/"):
        return False
    if allowed:
        return exe in allowed
    if os.path.basename(exe) != DEFAULT_TELEPORT_NAME:
        return False
    try:
        info = exe_stat()
    except OSError:
        return False
    # Anyone who could have rewritten the binary could be forging the environment.
    return info.st_uid == 0 and not info.st_mode & 0o022


def _stat_self() -> os.stat_result:
    return os.stat("/proc/self/exe")


def trusted_identity(
    getenv: "Callable[[str], str | None]",
    pam_user: str | None,
    exe: str,
    euid: int,
    allowed_exes: tuple[str, ...],
    exe_stat: "Callable[[], os.stat_result]" = _stat_self,
) -> tuple[TeleportIdentity | None, str]:
    """The identity to record, or None and the reason it is not believed."""
    user = getenv(ENV_TELEPORT_USERNAME)
    if not user:
        return None, "no TELEPORT_USERNAME in the PAM environment"
    if not exe_is_teleport(exe, allowed_exes, exe_stat):
        rule = "teleport_exe=" if allowed_exes else "default rule: named teleport, root's, not group/other-writable"
        return None, f"PAM application {exe!r} is not a trusted Teleport binary ({rule})"
    if euid != 0:
        return None, "PAM application is not running as root"
    if not pam_user:
        return None, "no PAM user"
    login = getenv(ENV_TELEPORT_LOGIN)
    if login is not None and login != pam_user:
        return None, "TELEPORT_LOGIN differs from the PAM user"
    roles = tuple((getenv(ENV_TELEPORT_ROLES) or "").split())
    return TeleportIdentity(user, pam_user, roles), "trusted"
