"""A module that changes PAM_USER after our account line, on the real stack.

pam_canonicalize_user (Linux-PAM 1.5.3+, in the auth stack) replaces PAM_USER with the name the
password database gives back: with a case-insensitive directory (SSSD's `case_sensitive = false`,
winbind) a Teleport login `ALICE` becomes `alice`; pam_sss does the same for a smartcard login
with no user name, pam_winbind for a mapped name. Teleport calls pam_authenticate (use_pam_auth)
after pam_acct_mgmt, where our line captured the identity, and runs the session anyway: the
session is still the Teleport user's, and must be recorded. libpam and pam_loginuid use the new
PAM_USER; so do our records.

Debian's files database is case-sensitive, so a second passwd entry with the same uid stands in
for the directory's other spelling, and a small module does what pam_canonicalize_user does.
"""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pam_teleport_audit.admin.auditlog import records_since
from pam_teleport_audit.admin.stanza import entry_script

from .conftest import OUR_OPS, pid_records, run_driver, unique

# pam_canonicalize_user's effect, with the canonical name given: it sets PAM_USER, returns PAM_IGNORE.
SET_USER = r"""
#include <security/pam_modules.h>
static int set(pam_handle_t *h, int c, const char **v) {
    return c == 1 && pam_set_item(h, PAM_USER, v[0]) == PAM_SUCCESS ? PAM_IGNORE : PAM_SERVICE_ERR;
}
int pam_sm_authenticate(pam_handle_t *h, int f, int c, const char **v) { return set(h, c, v); }
int pam_sm_setcred(pam_handle_t *h, int f, int c, const char **v) { return PAM_IGNORE; }
int pam_sm_acct_mgmt(pam_handle_t *h, int f, int c, const char **v) { return set(h, c, v); }
"""


@pytest.fixture(scope="module")
def set_user_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pam")
    folder.chmod(0o755)
    (folder / "set_user.c").write_text(SET_USER)
    module = folder / "pam_set_user_test.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(module), str(folder / "set_user.c"), "-lpam"], check=True)
    return module


@pytest.fixture
def other_spelling(linux_user) -> Iterator[tuple[str, str]]:
    """(the Linux account, another name for the same uid, as a case-insensitive directory answers)."""
    login = linux_user()
    entry = pwd.getpwnam(login)
    spelling = login.upper()
    subprocess.run(
        ["useradd", "--badname", "-o", "-u", str(entry.pw_uid), "-g", str(entry.pw_gid), "-M", "-N", spelling],
        check=True,
    )
    yield login, spelling
    subprocess.run(["userdel", spelling], check=False, capture_output=True)


def stack(module: Path, canonical: str, where: str) -> str:
    ours = f"pam_python.so {entry_script()}"
    auth = f"auth required {module} {canonical}" if where == "auth" else "auth required pam_permit.so"
    account = f"account required {module} {canonical}" if where == "account" else ""
    return (
        f"{auth}\nauth required pam_permit.so\n"
        f"account optional {ours}\n{account}\naccount required pam_permit.so\n"
        "session required pam_loginuid.so\n"
        f"session optional {ours}\nsession required pam_permit.so\n"
    )


# Where the module runs: the auth stack (Teleport's use_pam_auth), or the account stack after our line.
PLACES = {"auth (use_pam_auth)": ("auth", ("-A",)), "account, after our line": ("account", ())}


@pytest.mark.parametrize("place", list(PLACES))
def test_a_pam_user_changed_after_our_account_line_is_still_recorded(
    place, set_user_module, other_spelling, pam_service, driver
) -> None:
    canonical, typed = other_spelling
    where, extra = PLACES[place]
    service = pam_service(stack(set_user_module, canonical, where))
    tp_user = unique("case-")
    # Teleport starts PAM with the login as the Teleport user typed it, and TELEPORT_LOGIN the same.
    session = run_driver(driver, service, typed, user=tp_user, roles="access", shell=False, extra=extra)
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=7)
    ours = [r for r in records if r.get("teleportUser") == tp_user]
    assert [r["op"] for r in ours] == OUR_OPS, records
    assert all(r["res"] == "success" for r in ours)
    # Named as libpam's records of the same login name it, and as pam_loginuid set the auid.
    libpam = [r for r in records_since(session.started, "-p", str(session.pid)) if r.get("op", "").startswith("PAM:")]
    assert {r["acct"] for r in libpam if r["op"] != "PAM:accounting"} == {f'"{canonical}"'}
    assert {r["acct"] for r in ours} == {f'"{canonical}"'}
    uid = str(pwd.getpwnam(canonical).pw_uid)
    assert {r["auid"] for r in ours} == {uid}
