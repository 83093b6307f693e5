"""Trust rules, table-driven."""

from __future__ import annotations

import os

import pytest

from pam_teleport_audit.pam_module import exe_is_teleport, trusted_identity


def identity(user: str, login: str, roles: tuple[str, ...]) -> dict[str, object]:
    return {"user": user, "login": login, "roles": roles}


def stat_of(mode: int = 0o100755, uid: int = 0) -> os.stat_result:
    """A stat result: mode, ino, dev, nlink, uid, gid, size, atime, mtime, ctime."""
    return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("exe", "allowed", "trusted"),
    [
        ("/usr/local/bin/teleport", (), True),
        ("/opt/teleport/system/bin/teleport", (), True),  # teleport-update's system install
        ("/opt/teleport/default/versions/18.8.3/bin/teleport", (), True),  # teleport-update's versions
        ("/opt/teleport/default/versions/18.8.3/bin/teleport (deleted)", (), True),  # an older version, removed
        ("/usr/local/bin/teleport (deleted)", (), True),  # replaced by an in-place upgrade
        ("/usr/sbin/sshd", (), False),
        ("/usr/bin/pamtester", (), False),
        ("/usr/bin/su", (), False),
        ("/usr/local/bin/teleport-evil", (), False),
        ("/home/eve/teleport.sh", (), False),
        ("teleport", (), False),  # not a path
        ("/memfd:teleport-sessionhelper (deleted)", (), True),  # Teleport 18.8+'s embedded session helper
        ("/memfd:teleport-sessionhelper", (), True),
        ("/memfd:teleport (deleted)", (), False),  # other memfd names only when configured
        ("/memfd:teleport-sessionhelperx (deleted)", (), False),
        ("/memfd:teleport-session (deleted)", ("memfd:teleport-session",), True),
        ("/memfd:other (deleted)", ("memfd:teleport-session",), False),
        # configured: only what is listed, the default memfd included
        ("/memfd:teleport-sessionhelper (deleted)", ("/usr/local/bin/teleport",), False),
        # a configured path: the name alone is not enough
        ("/usr/local/bin/teleport", ("/opt/teleport/bin/teleport",), False),
        ("/opt/teleport/bin/teleport", ("/opt/teleport/bin/teleport",), True),
        ("/opt/teleport/bin/teleport (deleted)", ("/opt/teleport/bin/teleport",), True),
        ("/tmp/teleport", ("/opt/teleport/bin/teleport",), False),
    ],
)
def test_exe_is_teleport(exe: str, allowed: tuple[str, ...], trusted: bool) -> None:
    assert exe_is_teleport(exe, allowed, stat_of) is trusted


def refuse_stat() -> os.stat_result:
    raise AssertionError("stat is not needed for this rule")


@pytest.mark.parametrize(
    ("info", "trusted"),
    [
        (stat_of(0o100755), True),
        (stat_of(0o100700), True),
        (stat_of(0o104755), True),  # setuid root does not matter: the module requires euid 0 anyway
        (stat_of(0o100775), False),  # group-writable
        (stat_of(0o100757), False),  # writable by others
        (stat_of(0o100755, uid=1000), False),  # owned by a user who could rewrite it
    ],
)
def test_default_rule_wants_a_root_owned_binary_nobody_else_can_write(info, trusted) -> None:
    assert exe_is_teleport("/usr/local/bin/teleport", (), lambda: info) is trusted
    # A memfd is exempt from the file check; a configured path is matched as configured.
    assert exe_is_teleport("/memfd:teleport-sessionhelper (deleted)", (), refuse_stat)
    assert exe_is_teleport("/opt/t/teleport", ("/opt/t/teleport",), refuse_stat)


def test_default_rule_refuses_when_the_binary_cannot_be_stat() -> None:
    def gone() -> os.stat_result:
        raise FileNotFoundError("/proc/self/exe")

    assert not exe_is_teleport("/usr/local/bin/teleport", (), gone)


TELEPORT = "/usr/local/bin/teleport"
ENV = {"TELEPORT_USERNAME": "alice", "TELEPORT_LOGIN": "root", "TELEPORT_ROLES": "access  editor"}


@pytest.mark.parametrize(
    ("env", "pam_user", "exe", "euid", "expected", "reason"),
    [
        (ENV, "root", TELEPORT, 0, identity("alice", "root", ("access", "editor")), "trusted"),
        ({"TELEPORT_USERNAME": "alice"}, "root", TELEPORT, 0, identity("alice", "root", ()), "trusted"),
        ({}, "root", TELEPORT, 0, None, "no TELEPORT_USERNAME"),
        ({**ENV, "TELEPORT_USERNAME": ""}, "root", TELEPORT, 0, None, "no TELEPORT_USERNAME"),
        (ENV, "root", "/usr/sbin/sshd", 0, None, "not a trusted Teleport binary"),
        (ENV, "root", TELEPORT, 1000, None, "not running as root"),
        (ENV, "ubuntu", TELEPORT, 0, None, "TELEPORT_LOGIN differs"),
        (ENV, None, TELEPORT, 0, None, "no PAM user"),
    ],
)
def test_trusted_identity(env, pam_user, exe, euid, expected, reason) -> None:
    found, why = trusted_identity(env.get, pam_user, exe, euid, (), stat_of)
    assert found == expected
    assert reason in why
