"""atomicwrite: the new file keeps every extended attribute of the old one (ACLs, user.*, trusted.*, security.*)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from pam_teleport_audit.admin import atomicwrite, cli

from .pam_strategies import ENTRY

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "pam"
ACL = "system.posix_acl_access"
# The kernel's POSIX ACL xattr format (linux/posix_acl_xattr.h): version 2, then (tag, perm, id) entries.
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_NO_ID = 0xFFFFFFFF


def acl_value(user: int, user_perm: int, group: int, mask: int, other: int) -> bytes:
    """An ACL with owner rw, one named user, the group, mask and other entries."""
    entries = [(_USER_OBJ, 6, _NO_ID), (_USER, user_perm, user), (_GROUP_OBJ, group, _NO_ID)]
    entries += [(_MASK, mask, _NO_ID), (_OTHER, other, _NO_ID)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def acl(uid: int) -> bytes:
    """`setfacl -m u:UID:r` on a 0640 file: owner rw, user UID r, group r, mask r, other none."""
    return acl_value(uid, 4, 4, 4, 0)


def default_acl() -> bytes:
    """A folder default ACL: new files get owner rw, group r, other r, and user 65534 rw."""
    return acl_value(65534, 6, 4, 6, 4)


def xattrs(path: Path) -> dict[str, bytes]:
    return {name: os.getxattr(path, name) for name in sorted(os.listxattr(path))}


@pytest.fixture
def pam(tmp_path: Path) -> Path:
    """Debian 12's sshd with its common-* files, mode 0640, an ACL granting a user read, and a user.* attribute."""
    for common in (FIXTURES / "debian-12").glob("common-*"):
        shutil.copy(common, tmp_path / common.name)
    path = tmp_path / "sshd"
    path.write_bytes((FIXTURES / "debian-12" / "sshd").read_bytes())
    path.chmod(0o640)
    try:
        os.setxattr(path, "user.pam-teleport-audit-test", b"kept")
        os.setxattr(path, ACL, acl(65534))
    except OSError as exc:  # pragma: no cover - a file system without them
        pytest.skip(f"no user xattrs or ACLs here: {exc}")
    return path


def install(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = cli.main(["install", "--pam-file", str(path), "--entry", ENTRY, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_install_keeps_acls_and_other_xattrs(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The old atomicwrite kept only security.selinux: the ACL and user.* attribute were lost on rename."""
    before, mode = xattrs(pam), os.stat(pam).st_mode
    assert set(before) == {ACL, "user.pam-teleport-audit-test"}
    code, out = install(pam, capsys)
    assert code == cli.EXIT_OK and out["changed"], out
    assert xattrs(pam) == before
    assert os.stat(pam).st_mode == mode


@pytest.mark.skipif(os.geteuid() != 0, reason="trusted.* needs CAP_SYS_ADMIN")
def test_install_keeps_trusted_xattrs(pam: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.setxattr(pam, "trusted.pam-teleport-audit-test", b"\x00\x01binary")
    before = xattrs(pam)
    code, out = install(pam, capsys)
    assert code == cli.EXIT_OK and out["changed"], out
    assert xattrs(pam) == before


def test_an_acl_inherited_from_the_folder_is_not_added(tmp_path: Path) -> None:
    """The temporary file inherits the folder's default ACL; the old file had none, so neither has the new."""
    path = tmp_path / "sshd"
    path.write_bytes(b"old\n")
    path.chmod(0o644)
    os.setxattr(tmp_path, "system.posix_acl_default", default_acl())
    assert ACL not in os.listxattr(path)
    atomicwrite.replace_file(str(path), b"new\n")
    assert path.read_bytes() == b"new\n"
    assert ACL not in os.listxattr(path)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_an_attribute_that_cannot_be_set_fails_the_write(
    pam: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropping it silently would change who may read the file: exit 5, the file left as it was, named."""
    original, before = pam.read_bytes(), xattrs(pam)
    real = os.setxattr

    def refuse_user(target: int | str, name: str, value: bytes, *args: object, **kwargs: object) -> None:
        if name.startswith("user."):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        real(target, name, value, *args, **kwargs)

    monkeypatch.setattr(atomicwrite.os, "setxattr", refuse_user)
    code, out = install(pam, capsys)
    assert code == cli.EXIT_IO
    assert out["reason"].endswith(
        "extended attribute user.pam-teleport-audit-test that " + str(pam) + " has (Operation not permitted); "
        "not replaced, so as not to drop it"
    )  # an EPERM of the attribute, not taken for an immutable file
    assert "left unchanged" in out["error"]
    assert pam.read_bytes() == original and xattrs(pam) == before
    assert not [p for p in pam.parent.iterdir() if p.name.startswith(atomicwrite.TEMP_PREFIX)]


def test_a_failed_write_leaves_no_backup(
    pam: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is left unchanged: a backup of it beside would only say it was replaced."""
    backups = tmp_path / "backups"
    monkeypatch.setattr(atomicwrite.os, "setxattr", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "EIO")))
    code = cli.main(["install", "--pam-file", str(pam), "--entry", ENTRY, "--backup-dir", str(backups), "--json"])
    assert code == cli.EXIT_IO, capsys.readouterr().out
    assert list(backups.iterdir()) == []


def test_attributes_the_kernel_computes_are_not_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IMA's hash of the old bytes on the new ones would make an appraisal deny reading the file; EVM's
    HMAC is the old inode's. Everything else is copied."""
    path = tmp_path / "sshd"
    path.write_bytes(b"old\n")
    held = {"security.ima": b"\x04hash", "security.evm": b"\x02hmac", "user.kept": b"yes"}
    monkeypatch.setattr(atomicwrite.os, "listxattr", lambda *a, **k: list(held))
    monkeypatch.setattr(atomicwrite.os, "getxattr", lambda _path, name, **k: held[name])
    set_on_new: dict[str, bytes] = {}
    monkeypatch.setattr(atomicwrite.os, "setxattr", lambda _fd, name, value, *a, **k: set_on_new.update({name: value}))
    atomicwrite.replace_file(str(path), b"new\n")
    assert path.read_bytes() == b"new\n" and set_on_new == {"user.kept": b"yes"}
