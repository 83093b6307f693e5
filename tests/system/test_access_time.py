"""What pam_access and pam_time decide under Teleport, with our account line first or last.

Our account line sets PAM_TTY=ssh, as sshd does before pam_acct_mgmt. Placed first (where
install puts it), pam_access and pam_time rules that look at the tty see `ssh`; placed after
them, they see no tty at all, as Teleport alone leaves it. Teleport never sets PAM_RHOST, so
pam_access judges the tty: an origin without a dot is LOCAL. docs/installer.md tells operators
what this means; these tests are where it comes from (scratch accessfile= / conffile= files).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pam_teleport_audit.admin.stanza import entry_script

from .conftest import driver_argv, unique

PAM_PERM_DENIED = 6


def stack(first: bool, rule: str) -> str:
    ours = f"account    optional   pam_python.so {entry_script()}\n"
    lines = [
        ours if first else "",
        rule,
        "account    required   pam_permit.so\n",
        "" if first else ours,
        "session    required   pam_loginuid.so\n",
        f"session    optional   pam_python.so {entry_script()}\n",
    ]
    return "".join(lines)


def acct_mgmt(driver: Path, service: str, login: str) -> int:
    """pam_acct_mgmt's result for a Teleport-like login (stdin not a terminal, as Teleport's child)."""
    argv = driver_argv(driver, service, login, user=unique("acc-"), shell=False)
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    steps = dict(line.split("=", 1) for line in proc.stdout.splitlines() if line.startswith("acct_mgmt="))
    assert "acct_mgmt" in steps, proc.stdout + proc.stderr
    return int(steps["acct_mgmt"].split()[0])


# (access.conf line with LOGIN for the user, result with our line first, result with it last)
ACCESS_RULES = {
    "deny from tty ssh": ("-:LOGIN:ssh", PAM_PERM_DENIED, 0),
    "deny LOCAL": ("-:LOGIN:LOCAL", PAM_PERM_DENIED, PAM_PERM_DENIED),
    "allow only from tty ssh": ("+:LOGIN:ssh\n-:LOGIN:ALL", 0, PAM_PERM_DENIED),
}


@pytest.mark.parametrize("case", list(ACCESS_RULES))
@pytest.mark.parametrize("first", [True, False], ids=["first", "last"])
def test_pam_access_rules(case, first, driver, pam_service, linux_user, tmp_path):
    text, when_first, when_last = ACCESS_RULES[case]
    login = linux_user()
    access = tmp_path / "access.conf"
    access.write_text(text.replace("LOGIN", login) + "\n")
    service = pam_service(stack(first, f"account    required   pam_access.so accessfile={access}\n"))
    assert acct_mgmt(driver, service, login) == (when_first if first else when_last)


# (time.conf line for the scratch service and user, result first, result last)
TIME_RULES = {
    "never on tty ssh": ("SERVICE;ssh;LOGIN;!Al0000-2400", PAM_PERM_DENIED, 0),
    "never on a tty but ssh": ("SERVICE;!ssh;LOGIN;!Al0000-2400", 0, PAM_PERM_DENIED),
}


@pytest.mark.parametrize("case", list(TIME_RULES))
@pytest.mark.parametrize("first", [True, False], ids=["first", "last"])
def test_pam_time_rules(case, first, driver, pam_service, linux_user, tmp_path):
    text, when_first, when_last = TIME_RULES[case]
    login = linux_user()
    conf = tmp_path / "time.conf"
    service = pam_service(stack(first, f"account    required   pam_time.so conffile={conf}\n"))
    conf.write_text(text.replace("SERVICE", service).replace("LOGIN", login) + "\n")
    assert acct_mgmt(driver, service, login) == (when_first if first else when_last)
