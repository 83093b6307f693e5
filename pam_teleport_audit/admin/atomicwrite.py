"""Replace a file so that a crash at any moment leaves the old or the new bytes.

Temporary file in the same folder (rename is atomic only within one file
system), fsync, rename over the target, fsync of the folder (so the rename
itself survives a power cut). The new file gets the old one's owner, mode and
every extended attribute (SELinux label, POSIX ACLs, user.*, trusted.*,
security.*) before it becomes visible; one that cannot be set fails the write. A lock on the folder serialises our
own concurrent runs, so two read-edit-write cycles cannot interleave.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import stat
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from .pamedit import Refusal

ACL_XATTR = "system.posix_acl_access"
# Not copied: the kernel computes them for the new file (IMA's hash of its bytes, EVM's HMAC of
# its inode); the old file's would not match it, and an IMA appraisal would then deny reading it.
KERNEL_XATTRS = frozenset({"security.ima", "security.evm"})
TEMP_PREFIX = ".pam-teleport-audit."
# Backups live outside /etc/pam.d: there libpam would read one as a service of its own, and the
# package's prerm (which looks for our stanza in /etc/pam.d) would refuse removal for good.
DEFAULT_BACKUP_DIR = "/var/backups/pam-teleport-audit"
# Steps at which the fault hook is called, in order (tests kill the process there).
STEPS = ("temp-created", "temp-written", "temp-synced", "renamed", "folder-synced")

Hook = Callable[[str], None]


def check_replaceable(path: str) -> os.stat_result:
    """The target's stat, or a Refusal when replacing it by rename would be wrong.

    Symlinks are refused rather than followed or replaced: replacing one would
    cut it from the file it points to (e.g. one another tool manages), and
    writing through it would edit a file under another name. Name the real file
    with --pam-file instead. Hard links are refused too: a rename would leave the
    other names on the old bytes.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise Refusal(f"{path} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        target, real = os.readlink(path), os.path.realpath(path)
        if os.path.dirname(real) != os.path.realpath(os.path.dirname(os.path.abspath(path))):
            # libpam resolves the includes of a file it reads through the link in the link's folder:
            # the target, checked in its own folder, would be another stack.
            raise Refusal(
                f"{path} is a symbolic link to {target!r}, outside its folder, where libpam still resolves its "
                f"includes: replace the link by a copy (`cp --remove-destination {shlex.quote(real)} "
                f"{shlex.quote(path)}`), then run again"
            )
        raise Refusal(f"{path} is a symbolic link to {target!r}: pass the real file with --pam-file")
    if not stat.S_ISREG(st.st_mode):
        raise Refusal(f"{path} is not a regular file")
    if st.st_nlink > 1:
        raise Refusal(f"{path} has {st.st_nlink} hard links: replacing it would split them")
    return st


@contextlib.contextmanager
def folder_lock(path: str, timeout: float = 30.0) -> Iterator[None]:
    """flock on the target's folder: held from reading the file to its replacement.

    The folder, not a lock file, so that nothing is left behind in /etc/pam.d.
    """
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(errno.EWOULDBLOCK, "another pam-teleport-audit run holds the lock", path) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _xattrs(source: str) -> dict[str, bytes]:
    """Every extended attribute of source: SELinux label, POSIX ACLs, user.*, trusted.*, security.*."""
    try:
        names = os.listxattr(source, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}  # a file system without extended attributes: nothing to keep
        raise
    return {name: os.getxattr(source, name, follow_symlinks=False) for name in names if name not in KERNEL_XATTRS}


class AttributeCopyError(OSError):
    """An attribute of the old file the new one cannot get: not immutability (an OSError subclass,
    so that EPERM stays this type rather than PermissionError)."""


def _copy_xattrs(source: str, fd: int, target: str) -> None:
    """Give the new file exactly the old one's extended attributes, or fail the write.

    An ACL or attribute dropped silently would change who may read the file, or what a
    security module thinks of it; so one that cannot be set stops the run (nothing replaced).
    An access ACL the new file inherited from the folder's default ACL is removed when the old
    file had none. A label the new file got from the policy is kept when the old one had none.
    """
    wanted = _xattrs(source)
    for name, value in wanted.items():
        try:
            os.setxattr(fd, name, value)
        except OSError as exc:
            raise AttributeCopyError(
                exc.errno,
                f"cannot give the new file the extended attribute {name} that {target} has ({exc.strerror}); "
                "not replaced, so as not to drop it",
            ) from None
    if ACL_XATTR not in wanted:
        with contextlib.suppress(OSError):  # ENODATA: none inherited
            os.removexattr(fd, ACL_XATTR)


# linux/fs.h: the inode flags chattr sets (+i immutable, +a append only); either makes a rename fail with EPERM.
FS_IOC_GETFLAGS = 0x80086601
FS_IMMUTABLE_FL = 0x10
FS_APPEND_FL = 0x20


def _inode_flags(path: str) -> int | None:
    """The file's chattr flags (None: unreadable, e.g. a file system without them)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)
    except OSError:
        return None
    finally:
        os.close(fd)
    return int.from_bytes(buf[:4], sys.byteorder)


def _eperm_reason(exc: OSError, path: str) -> OSError:
    """EPERM explained: root gets it for a file or folder marked immutable or append-only (chattr +i, +a)."""
    if exc.errno != errno.EPERM or isinstance(exc, AttributeCopyError):
        return exc
    for where in (path, os.path.dirname(os.path.abspath(path))):
        flags = _inode_flags(where)
        if flags is not None and flags & (FS_IMMUTABLE_FL | FS_APPEND_FL):
            what, flag = ("immutable", "i") if flags & FS_IMMUTABLE_FL else ("append-only", "a")
            return OSError(
                errno.EPERM,
                f"{where} is {what} (`lsattr -d {where}` shows '{flag}'): remove the flag with "
                f"`chattr -{flag} {where}`, run again, then set it back if it is wanted",
            )
    if os.geteuid() == 0:
        return OSError(
            errno.EPERM,
            f"{exc.strerror} ({path}): root is refused this, so the file or its folder is likely marked immutable "
            f"(`lsattr -d {path}`; `chattr -i` removes the flag)",
        )
    return exc


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(
    path: str, data: bytes, like: os.stat_result, xattrs_from: str | None, hook: Hook, mode: int | None = None
) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(folder, f"{TEMP_PREFIX}{os.path.basename(path)}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        hook("temp-created")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        hook("temp-written")
        # Owner, extended attributes, then mode, all before the rename: never visible with the wrong
        # ones. Attributes after fchown (a chown drops security.capability); mode last, which sets
        # the ACL's mask to the group bits, as the old file's mode shows them.
        os.fchown(fd, like.st_uid, like.st_gid)
        if xattrs_from is not None:
            _copy_xattrs(xattrs_from, fd, path)
        os.fchmod(fd, stat.S_IMODE(like.st_mode) if mode is None else mode)
        os.fsync(fd)
        hook("temp-synced")
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    hook("renamed")
    _fsync_folder(folder)
    hook("folder-synced")


def backup_folder(folder: str) -> str:
    """The backup folder, made 0700 if missing; refused when it is a symlink or not a folder.

    Missing parents are made too, each 0700: /var/backups is a Debian convention that RHEL,
    SUSE, Fedora and Alpine do not ship. (os.makedirs would give the parents the umask's mode.)
    """
    missing = []
    here = os.path.abspath(folder)
    while not os.path.lexists(here):
        missing.append(here)
        here = os.path.dirname(here)
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise Refusal(f"backup folder {folder} is not a folder (or is a symbolic link)")
    return folder


def replace_file(path: str, data: bytes, *, backup_dir: str | None = None, hook: Hook | None = None) -> str | None:
    """Atomically give path the bytes data; returns the backup's path when one was made.

    The caller holds folder_lock. With backup_dir, the bytes being replaced are first
    written the same atomic way to backup_dir/<name>.<UTC time>, mode 0600, same owner.
    """
    like = check_replaceable(path)
    saved = None
    if backup_dir is not None:
        folder = backup_folder(backup_dir)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        saved = os.path.join(folder, f"{os.path.basename(path)}.{stamp}")
        with open(path, "rb") as old:
            _write_new(saved, old.read(), like, None, _no_hook, mode=0o600)
    try:
        _write_new(path, data, like, path, hook or _no_hook)
    except OSError as exc:
        if saved is not None:  # the file is left unchanged: a backup of it would only mislead
            with contextlib.suppress(OSError):
                os.unlink(saved)
        raise _eperm_reason(exc, path) from None
    return saved


def _no_hook(_step: str) -> None:
    pass


def remove_stale_temps(path: str) -> list[str]:
    """Temporary files of ours left by a killed run (the target itself is intact)."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f"{TEMP_PREFIX}{os.path.basename(path)}."
    removed = []
    for name in os.listdir(folder):
        if name.startswith(prefix):
            os.unlink(os.path.join(folder, name))
            removed.append(name)
    return removed
