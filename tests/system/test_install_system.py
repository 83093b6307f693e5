"""install on the real stack: a scratch service made from the stock Debian sshd file, then a real
OpenSSH login and a Teleport-like session through it; a read-only folder."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pam_teleport_audit.admin import atomicwrite, cli
from pam_teleport_audit.admin.auditlog import records_since
from pam_teleport_audit.admin.stanza import entry_script

from .conftest import PAM_DIR, ROOT, assert_recorded_session, pid_records, run_driver, unique, wait_for_records

STOCK = (ROOT / "tests" / "fixtures" / "pam" / "debian-12" / "sshd").read_text()


def install(service: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pam_teleport_audit", "install", "--pam-file", str(PAM_DIR / service)]
    argv += ["--entry", entry_script(), *extra]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)


def test_openssh_login_through_the_installed_stack(pam_service, linux_user, openssh):
    service = pam_service(STOCK)
    done = install(service)
    assert done.returncode == cli.EXIT_OK, done.stderr
    assert "# BEGIN pam_teleport_audit session" in (PAM_DIR / service).read_text()
    user = linux_user()
    marker = unique("typed-")
    server = openssh(service)
    started = time.time()
    login = server.login(user, [f"echo {marker}", "id -un"])
    assert login.returncode == 0, login.stdout + login.stderr + server.server_log()
    assert marker in login.stdout and user in login.stdout
    # libpam's session record of that sshd: the stack with our block succeeded and our pam_tty_audit
    # ran. (Our module ignores sshd, which is not Teleport, so it is not among the grantors.)
    opened = wait_for_records(
        started,
        lambda rs: any(r.get("op") == "PAM:session_open" for r in rs),
        "-m",
        "USER_START",
        "-x",
        str(server.binary),
    )
    opened = [r for r in opened if r.get("acct") == f'"{user}"' and r.get("op") == "PAM:session_open"]
    assert len(opened) == 1, server.server_log()
    assert "pam_tty_audit" in opened[0]["grantors"].split(",")
    assert opened[0]["res"] == "success"


def test_teleport_session_through_the_installed_stack(driver, pam_service, linux_user):
    service = pam_service(STOCK)
    assert install(service).returncode == cli.EXIT_OK
    login = linux_user()
    tp_user = unique("dave-")
    session = run_driver(driver, service, login, user=tp_user, roles="access", shell=False)
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=7)
    ours = {r["op"]: r for r in records if "teleportUser" in r.fields}
    assert sorted(ours) == ["teleport:accounting", "teleport:session_close", "teleport:session_open"]
    assert all(r["teleportUser"] == tp_user for r in ours.values())
    # uninstall gives back the stock bytes.
    argv = [sys.executable, "-m", "pam_teleport_audit", "uninstall", "--pam-file", str(PAM_DIR / service)]
    assert subprocess.run(argv, cwd=ROOT, capture_output=True, check=False).returncode == cli.EXIT_OK
    assert (PAM_DIR / service).read_text() == STOCK
    assert records_since(session.started, "-p", str(session.pid))  # the log query itself worked


def cli_run(command: str, service: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pam_teleport_audit", command, "--pam-file", str(PAM_DIR / service)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)


def test_a_pasted_stanza_is_what_libpam_runs_and_uninstall_takes_it_out(driver, pam_service, linux_user):
    """status's "present but not managed" lines are run by libpam (our records); after uninstall they are not."""
    entry = entry_script()
    pasted = STOCK.replace(
        "# Disallow non-root", f"account    required   pam_python.so {entry} fail_closed\n# Disallow non-root", 1
    ).replace(
        "session    required     pam_loginuid.so\n",
        f"session    required     pam_loginuid.so\nsession    required   pam_python.so {entry} fail_closed\n",
    )
    service = pam_service(pasted)
    status = cli_run("status", service)
    assert status.returncode == cli.EXIT_UNMANAGED, status.stdout + status.stderr
    assert "present but not managed" in status.stdout
    login = linux_user()
    assert_recorded_session(driver, service, login, "hand-")
    refused = install(service)
    assert refused.returncode == cli.EXIT_REFUSED and "uninstall --pam-file" in refused.stderr
    assert (PAM_DIR / service).read_text() == pasted

    done = cli_run("uninstall", service)
    assert done.returncode == cli.EXIT_OK, done.stderr
    assert (PAM_DIR / service).read_text() == STOCK
    assert cli_run("status", service).returncode == cli.EXIT_NOT_INSTALLED
    assert_no_records_of_ours(driver, service, login)


def assert_no_records_of_ours(driver, service: str, login: str) -> None:
    """A Teleport-like session through the service succeeds, and libpam loaded our module nowhere in it."""
    tp_user = unique("gone-")
    session = run_driver(driver, service, login, user=tp_user, shell=False)
    assert session.returncode == 0, session.output
    # libpam writes its record of each phase after the stack ran, so after any record of ours:
    # once its three are in the log, none of ours can still come. The window opens a second early:
    # the kernel stamps records with its coarse clock, which can read a tick behind time.time(),
    # and this stack runs in a few ms; -p keeps it to this process.
    libpam = {"PAM:accounting", "PAM:session_open", "PAM:session_close"}
    records = wait_for_records(
        session.started - 1.0, lambda rs: libpam <= {r.get("op") for r in rs}, "-p", str(session.pid)
    )
    assert libpam <= {r.get("op") for r in records}, [r.fields for r in records]
    assert not [r for r in records if "teleportUser" in r.fields]


def test_our_lines_in_an_included_file_are_what_libpam_runs_and_are_named(driver, pam_service, linux_user):
    """status names lines of ours in an included file (libpam runs them: our records); install and uninstall
    of the service refuse and edit no file; uninstall of the included file takes them out."""
    entry = entry_script()
    common = f"account    required   pam_python.so {entry}\nsession    required   pam_python.so {entry}\n"
    included = pam_service(common)
    text = STOCK.replace("@include common-session\n", f"@include common-session\n@include {included}\n")
    service = pam_service(text)
    status = cli_run("status", service)
    assert status.returncode == cli.EXIT_UNMANAGED, status.stdout + status.stderr
    assert f"{PAM_DIR / included}:2 'session    required   pam_python.so" in status.stdout
    login = linux_user()
    assert_recorded_session(driver, service, login, "incl-")
    for command in ("install", "uninstall"):
        refused = cli_run(command, service)
        assert refused.returncode == cli.EXIT_REFUSED, refused.stderr
        assert f"uninstall --pam-file {PAM_DIR / included}` edits only that file" in refused.stderr
    assert (PAM_DIR / service).read_text() == text and (PAM_DIR / included).read_text() == common

    assert cli_run("uninstall", included).returncode == cli.EXIT_OK
    assert cli_run("status", service).returncode == cli.EXIT_NOT_INSTALLED
    assert_no_records_of_ours(driver, service, login)


def test_a_line_of_ours_ending_in_cr_loads_nothing_and_uninstall_takes_it_out(driver, pam_service, linux_user):
    """A CR LF paste: libpam hands pam_python `pam_entry.py\\r`, which it cannot open, so a required
    line refuses every login; status says so and uninstall removes it."""
    line = f"account    required   pam_python.so {entry_script()}\r\n"
    text = STOCK.replace("# Disallow non-root", line + "# Disallow non-root", 1)
    service = pam_service(text)
    assert (PAM_DIR / service).read_bytes().count(b".py\r\n") == 1
    login = linux_user()
    refused = run_driver(driver, service, login, user=unique("cr-"), shell=False)
    assert refused.returncode != 0, refused.output
    status = cli_run("status", service)
    assert status.returncode == cli.EXIT_UNMANAGED and "ends in a CR" in status.stdout, status.stdout
    assert cli_run("uninstall", service).returncode == cli.EXIT_OK
    assert (PAM_DIR / service).read_text() == STOCK
    assert_no_records_of_ours(driver, service, login)


@pytest.mark.parametrize(
    "option",
    ["debug\nauth sufficient pam_permit.so", "two words", "x#y", "[x]", "", "a\\", "unknown_option"],
)
def test_hostile_option_is_refused_and_the_service_file_keeps_its_bytes(pam_service, option):
    service = pam_service(STOCK)
    before = (PAM_DIR / service).read_bytes()
    done = install(service, "--option", option)
    assert done.returncode == cli.EXIT_REFUSED, done.stdout + done.stderr
    assert "refused" in done.stderr and (PAM_DIR / service).read_bytes() == before


def test_backup_goes_to_var_backups_not_etc_pam_d(pam_service):
    """libpam would read a copy in /etc/pam.d as a service; the package's prerm would find our stanza in it."""
    folder = Path(atomicwrite.DEFAULT_BACKUP_DIR)
    made_folder = not folder.exists()
    service = pam_service(STOCK)
    before = sorted(p.name for p in PAM_DIR.iterdir())
    done = install(service, "--backup", "--json")
    backup = Path(json.loads(done.stdout)["backup"])
    try:
        assert done.returncode == cli.EXIT_OK, done.stderr
        assert backup.parent == folder and backup.name.startswith(f"{service}.")
        assert backup.read_text() == STOCK and stat.S_IMODE(backup.stat().st_mode) == 0o600
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert sorted(p.name for p in PAM_DIR.iterdir()) == before
    finally:
        backup.unlink(missing_ok=True)
        if made_folder:
            folder.rmdir()


def test_read_only_folder_is_a_clear_io_error_and_changes_nothing():
    mount = Path(tempfile.mkdtemp(prefix="pta-ro-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        target = mount / "sshd"
        target.write_text(STOCK)
        for common in (ROOT / "tests" / "fixtures" / "pam" / "debian-12").glob("common-*"):
            (mount / common.name).write_bytes(common.read_bytes())  # what it includes, for the proof
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        argv = [
            sys.executable,
            "-m",
            "pam_teleport_audit",
            "install",
            "--pam-file",
            str(target),
            "--entry",
            entry_script(),
        ]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        assert proc.returncode == cli.EXIT_IO, proc.stderr
        assert "Read-only file system" in proc.stderr and "left unchanged" in proc.stderr
        assert target.read_text() == STOCK
        check = subprocess.run([*argv, "--check"], cwd=ROOT, capture_output=True, text=True, check=False)
        assert check.returncode == cli.EXIT_WOULD_CHANGE, check.stderr
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()
