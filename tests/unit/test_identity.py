"""Trust rules, table-driven."""

from __future__ import annotations

import pytest

from pam_teleport_audit.identity import TeleportIdentity, exe_is_teleport, trusted_identity


@pytest.mark.parametrize(
    ("exe", "allowed", "trusted"),
    [
        ("/usr/local/bin/teleport", (), True),
        ("/opt/teleport/system/bin/teleport", (), True),
        ("/usr/local/bin/teleport (deleted)", (), True),  # replaced by an in-place upgrade
        ("/usr/sbin/sshd", (), False),
        ("/usr/bin/pamtester", (), False),
        ("/usr/bin/su", (), False),
        ("/usr/local/bin/teleport-evil", (), False),
        ("/home/eve/teleport.sh", (), False),
        ("teleport", (), False),  # not a path
        ("/memfd:teleport (deleted)", (), False),  # memfd only when configured
        ("/memfd:teleport-session (deleted)", ("memfd:teleport-session",), True),
        ("/memfd:other (deleted)", ("memfd:teleport-session",), False),
        # a configured path: the name alone is not enough
        ("/usr/local/bin/teleport", ("/opt/teleport/bin/teleport",), False),
        ("/opt/teleport/bin/teleport", ("/opt/teleport/bin/teleport",), True),
        ("/opt/teleport/bin/teleport (deleted)", ("/opt/teleport/bin/teleport",), True),
        ("/tmp/teleport", ("/opt/teleport/bin/teleport",), False),
    ],
)
def test_exe_is_teleport(exe: str, allowed: tuple[str, ...], trusted: bool) -> None:
    assert exe_is_teleport(exe, allowed) is trusted


TELEPORT = "/usr/local/bin/teleport"
ENV = {"TELEPORT_USERNAME": "alice", "TELEPORT_LOGIN": "root", "TELEPORT_ROLES": "access  editor"}


@pytest.mark.parametrize(
    ("env", "pam_user", "exe", "euid", "expected", "reason"),
    [
        (ENV, "root", TELEPORT, 0, TeleportIdentity("alice", "root", ("access", "editor")), "trusted"),
        ({"TELEPORT_USERNAME": "alice"}, "root", TELEPORT, 0, TeleportIdentity("alice", "root", ()), "trusted"),
        ({}, "root", TELEPORT, 0, None, "no TELEPORT_USERNAME"),
        ({**ENV, "TELEPORT_USERNAME": ""}, "root", TELEPORT, 0, None, "no TELEPORT_USERNAME"),
        (ENV, "root", "/usr/sbin/sshd", 0, None, "not a trusted Teleport binary"),
        (ENV, "root", TELEPORT, 1000, None, "not running as root"),
        (ENV, "ubuntu", TELEPORT, 0, None, "TELEPORT_LOGIN differs"),
        (ENV, None, TELEPORT, 0, None, "no PAM user"),
    ],
)
def test_trusted_identity(env, pam_user, exe, euid, expected, reason) -> None:
    identity, why = trusted_identity(env.get, pam_user, exe, euid, ())
    assert identity == expected
    assert reason in why
