"""Forged identities: TELEPORT_* variables from anything but Teleport, or a
`teleport` that is not the configured one, never yield a teleportUser record."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pam_teleport_audit.admin.auditlog import decode_value
from pam_teleport_audit.admin.stanza import entry_script

from .conftest import (
    OUR_OPS,
    SyslogCatcher,
    debian_stack,
    driver_argv,
    pid_records,
    private_mounts,
    run_driver,
    unique,
    wait_for_records,
)


def named_records(started: float, name: str) -> list:
    return [
        r
        for r in wait_for_records(started, lambda rs: False, "-m", "USER_ACCT,USER_START,USER_END", timeout=1.0)
        if r.get("teleportUser") == name
    ]


def test_su_with_teleport_variables_from_pam_env(tmp_path: Path, pam_service, linux_user) -> None:
    """su runs the stack with TELEPORT_USERNAME from the user's ~/.pam_environment (pam_env)."""
    login = linux_user()
    forged = unique("mallory-")
    Path(f"/home/{login}/.pam_environment").write_text(
        f"TELEPORT_USERNAME DEFAULT={forged}\nTELEPORT_LOGIN DEFAULT={login}\n"
    )
    # su's service name is fixed ("su"): give it our stack in a private mount namespace only.
    stack = tmp_path / "su"
    stack.write_text(
        "auth sufficient pam_rootok.so\n"
        "account required pam_permit.so\n"
        f"account optional pam_python.so {entry_script()}\n"
        "session required pam_env.so readenv=1 user_readenv=1\n"
        "session required pam_loginuid.so\n"
        f"session optional pam_python.so {entry_script()}\n"
    )
    started = time.time()
    proc = subprocess.run(
        private_mounts(f"mount --bind {stack} /etc/pam.d/su && exec su -c 'echo su-ran' {login}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "su-ran" in proc.stdout, proc.stderr
    # The stack did run (libpam logged su's session), yet nothing of ours.
    libpam = wait_for_records(
        started, lambda rs: any(r.get("op") == "PAM:session_open" for r in rs), "-m", "USER_START", "-x", "/usr/bin/su"
    )
    ours = [r for r in libpam if r.get("acct") == f'"{login}"' and r.get("op") == "PAM:session_open"]
    # our stack ran (the host's su file has no pam_loginuid), and our module stayed out (PAM_IGNORE)
    assert ours and ours[-1]["grantors"] == "pam_env,pam_loginuid"
    assert named_records(started, forged) == []


def test_teleport_outside_the_configured_path_is_not_trusted(driver, pam_service, linux_user, tmp_path) -> None:
    login = linux_user()
    real = tmp_path / "opt" / "teleport" / "bin" / "teleport"
    real.parent.mkdir(parents=True)
    shutil.copy2(driver, real)
    for folder in (tmp_path, real.parent.parent.parent, real.parent.parent, real.parent):
        folder.chmod(0o755)
    service = pam_service(debian_stack(f"teleport_exe={real}"))

    impostor = unique("impostor-")
    session = run_driver(driver, service, login, user=impostor, shell=False)  # named teleport, elsewhere
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=4)
    assert not [r for r in records if "teleportUser" in r.fields]

    genuine = unique("genuine-")
    session = run_driver(real, service, login, user=genuine, shell=False)
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=7)
    assert [r["teleportUser"] for r in records if "teleportUser" in r.fields] == [genuine] * 3


@pytest.mark.parametrize("name", ["teleport", "teleport-18.1.0"])
def test_teleport_exe_may_name_the_symlink_teleport_update_makes(
    driver, pam_service, linux_user, tmp_path, name
) -> None:
    """teleport-update installs each version under /opt/teleport and links /usr/local/bin/teleport to
    it; the unit starts the link, /proc/self/exe names the version's file, whatever its name: the
    entry script resolves the link before it decides not to load the module."""
    login = linux_user()
    real = tmp_path / "opt" / "teleport" / "versions" / "18.1.0" / "bin" / name
    real.parent.mkdir(parents=True)
    shutil.copy2(driver, real)
    link = tmp_path / "usr-local-bin" / "teleport"
    link.parent.mkdir()
    link.symlink_to(real)
    for folder in (tmp_path, *real.parents[:4], link.parent):
        folder.chmod(0o755)
    service = pam_service(debian_stack(f"teleport_exe={link}"))
    user = unique("linked-")
    session = run_driver(link, service, login, user=user, shell=False)
    assert session.returncode == 0, session.output
    records = pid_records(session.started, session.pid, expect=7)
    assert [r["teleportUser"] for r in records if "teleportUser" in r.fields] == [user] * 3
    assert {r["exe"] for r in records if "teleportUser" in r.fields} == {f'"{real}"'}


def test_a_binary_not_named_teleport_is_recorded_only_when_teleport_exe_names_it(
    driver, pam_service, linux_user, tmp_path
) -> None:
    """pam_entry.py's gate lets a teleport_exe= path of any name through to pam_module, and only that path."""
    login = linux_user()
    node = tmp_path / "bin" / "tp-node"  # e.g. a renamed or versioned Teleport build
    node.parent.mkdir()
    shutil.copy2(driver, node)
    for folder in (tmp_path, node.parent):
        folder.chmod(0o755)

    def teleport_users(*options: str) -> tuple[str, list[str]]:
        user = unique("renamed-")
        session = run_driver(node, pam_service(debian_stack(*options)), login, user=user, shell=False)
        assert session.returncode == 0, session.output
        # with our three records, or libpam's four alone
        records = pid_records(session.started, session.pid, expect=7 if options else 4)
        return user, [r["teleportUser"] for r in records if "teleportUser" in r.fields]

    assert teleport_users()[1] == []
    named, seen = teleport_users(f"teleport_exe={node}")
    assert seen == [named] * 3


def test_sshd_with_client_sent_teleport_variables(pam_service, linux_user, openssh) -> None:
    """AcceptEnv TELEPORT_*: the client sends TELEPORT_USERNAME; sshd is not Teleport."""
    service = pam_service(debian_stack())
    server = openssh(service, accept_env="TELEPORT_*")
    login = linux_user()
    forged = unique("mallory-")
    started = time.time()
    proc = server.login(
        login, ["echo TELEPORT_USERNAME=$TELEPORT_USERNAME"], env={"TELEPORT_USERNAME": forged, "TELEPORT_LOGIN": login}
    )
    assert proc.returncode == 0, proc.stderr
    assert f"TELEPORT_USERNAME={forged}" in proc.stdout  # the variable did reach the session
    libpam = wait_for_records(
        started, lambda rs: any(r.get("op") == "PAM:session_close" for r in rs), "-m", "USER_START,USER_END"
    )
    assert any(r.get("acct") == f'"{login}"' for r in libpam)
    assert named_records(started, forged) == []


def exe_run(argv: list[str], *, pass_fds: tuple[int, ...] = (), before: Callable[[], object] | None = None) -> int:
    """Run a -W driver: `before()` runs while it waits, then it goes on; returns its pid."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, pass_fds=pass_fds)
    pid = int(proc.stdout.readline().strip().removeprefix("pid="))
    if before:
        before()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return pid


def test_a_teleport_binary_replaced_by_an_upgrade_is_still_trusted(driver, pam_service, linux_user, tmp_path) -> None:
    """/proc/self/exe of a running binary whose file was replaced reads 'PATH (deleted)'."""
    login = linux_user()
    service = pam_service(debian_stack())
    folder = tmp_path / "bin"
    folder.mkdir(mode=0o755)
    binary = folder / "teleport"
    shutil.copy2(driver, binary)
    tp_user = unique("upgraded-")
    started = time.time()
    argv = [str(binary), "-S", "-W", "-n", "-s", service, "-u", tp_user, login]
    pid = exe_run(argv, before=binary.unlink)
    records = pid_records(started, pid, expect=7)
    ours = [r for r in records if r.get("teleportUser") == tp_user]
    assert len(ours) == 3 and all("(deleted)" in decode_value(r["exe"]).decode() for r in ours)


def test_a_teleport_helper_run_from_a_memfd_is_trusted_only_when_named(driver, pam_service, linux_user) -> None:
    """Recent Teleport may exec a session helper from a memfd: /proc/self/exe reads '/memfd:NAME (deleted)'."""
    login = linux_user()
    fd = os.memfd_create("teleport-session", 0)
    os.write(fd, driver.read_bytes())
    try:
        for options, trusted in (((), False), (("teleport_exe=memfd:teleport-session",), True)):
            service = pam_service(debian_stack(*options))
            tp_user = unique("memfd-")
            started = time.time()
            argv = [f"/proc/{os.getpid()}/fd/{fd}", "-S", "-W", "-n", "-s", service, "-u", tp_user, login]
            pid = exe_run(argv, pass_fds=(fd,))
            records = pid_records(started, pid, expect=7 if trusted else 4)
            ours = [r for r in records if r.get("teleportUser") == tp_user]
            if trusted:
                assert [r["op"] for r in ours] == OUR_OPS
                assert decode_value(ours[0]["exe"]) == b"/memfd:teleport-session (deleted)"
            else:
                assert ours == [], options
    finally:
        os.close(fd)


def memfd_with(driver: Path, name: str) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, driver.read_bytes())
    return fd


def test_teleports_own_memfd_session_helper_is_trusted_by_default_as_root(driver, pam_service, linux_user) -> None:
    """Teleport 18.8+ may run `teleport exec` from a memfd it names teleport-sessionhelper."""
    login = linux_user()
    fd = memfd_with(driver, "teleport-sessionhelper")
    try:
        service = pam_service(debian_stack())
        tp_user = unique("helper-")
        started = time.time()
        pid = exe_run([f"/proc/self/fd/{fd}", "-S", "-W", "-n", "-s", service, "-u", tp_user, login], pass_fds=(fd,))
        records = pid_records(started, pid, expect=7)
        ours = [r for r in records if r.get("teleportUser") == tp_user]
        assert [r["op"] for r in ours] == OUR_OPS
        assert all(decode_value(r["exe"]) == b"/memfd:teleport-sessionhelper (deleted)" for r in ours)
    finally:
        os.close(fd)


def test_the_memfd_session_helper_run_by_a_user_is_not_trusted(driver, pam_service, linux_user) -> None:
    """Anyone can make a memfd of that name: root is what makes it Teleport's."""
    login = linux_user()
    # A log socket the user can reach (pytest's tmp_path is root's alone).
    folder = Path(tempfile.mkdtemp(prefix="pta-log-"))
    folder.chmod(0o755)
    catcher = SyslogCatcher(folder / "sock")
    (folder / "sock").chmod(0o666)
    module = f"pam_python.so {entry_script()} debug log_socket={catcher.path}"
    service = pam_service(
        f"account optional {module}\naccount required pam_permit.so\n"
        f"session optional {module}\nsession required pam_permit.so\n"
    )
    uid = subprocess.run(["id", "-u", login], capture_output=True, text=True, check=True).stdout.strip()
    fd = memfd_with(driver, "teleport-sessionhelper")
    try:
        tp_user = unique("helper-")
        started = time.time()
        setpriv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        argv = [*setpriv, f"/proc/self/fd/{fd}", "-S", "-n", "-s", service, "-u", tp_user, login]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, pass_fds=(fd,), check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = catcher.lines()
    finally:
        os.close(fd)
        catcher.sock.close()
        shutil.rmtree(folder)
    # The module looked, found Teleport's memfd, and refused it for want of root.
    assert any("not running as root" in line for line in lines), lines
    assert named_records(started, tp_user) == []


def test_a_teleport_binary_others_can_write_is_not_trusted(driver, pam_service, linux_user, tmp_path) -> None:
    """A file named teleport that someone besides root could have rewritten proves nothing."""
    login = linux_user()
    service = pam_service(debian_stack())
    folder = tmp_path / "bin"
    folder.mkdir()
    for path in (tmp_path, folder):
        path.chmod(0o755)
    binary = folder / "teleport"
    shutil.copy2(driver, binary)
    uid = int(subprocess.run(["id", "-u", login], capture_output=True, text=True, check=True).stdout)
    for mode, owner, trusted in ((0o775, 0, False), (0o757, 0, False), (0o755, uid, False), (0o755, 0, True)):
        os.chown(binary, owner, 0)
        binary.chmod(mode)
        tp_user = unique("writable-")
        session = run_driver(binary, service, login, user=tp_user, shell=False)
        assert session.returncode == 0, session.output
        records = pid_records(session.started, session.pid, expect=7 if trusted else 4)
        ours = [r["op"] for r in records if r.get("teleportUser") == tp_user]
        assert ours == (OUR_OPS if trusted else []), (oct(mode), owner)


def test_the_networking_child_is_marked(driver, pam_service, linux_user) -> None:
    """Port, agent and X11 forwarding run PAM in `teleport networking` (argv[1]), which then takes the
    login user's uid (Teleport 17+, RunNetworking), as the driver does: its close cannot be recorded
    by anyone, so only the accounting record is written, and one line says why; for root, all three."""
    folder = Path(tempfile.mkdtemp(prefix="pta-log-"))
    folder.chmod(0o755)  # the line is sent as the login user, as to /dev/log
    syslog_catcher = SyslogCatcher(folder / "log.sock")
    (folder / "log.sock").chmod(0o666)
    service = pam_service(debian_stack(f"log_socket={syslog_catcher.path}"))
    for word, login in (("networking", linux_user()), ("exec", linux_user()), ("networking", "root")):
        tp_user = unique("fwd-")
        started = time.time()
        argv = driver_argv(driver, service, login, user=tp_user, shell=False)
        proc = subprocess.run([argv[0], word, *argv[1:]], capture_output=True, text=True, timeout=60, check=False)
        dropped = word == "networking" and login != "root"
        # As the login user pam_tty_audit cannot restore the TTY audit state (AUDIT_TTY_SET): its close
        # fails (the driver exits 70 + PAM_SESSION_ERR), which Teleport ignores (a deferred Close).
        assert proc.returncode == (84 if dropped else 0), proc.stdout + proc.stderr
        assert "open_session=0 " in proc.stdout
        pid = int(proc.stdout.splitlines()[0].removeprefix("pid="))
        # libpam's USER_END is lost too when root was dropped (it ignores the EPERM)
        records = pid_records(started, pid, expect=5 if dropped else 7)
        ours = [r for r in records if r.get("teleportUser") == tp_user]
        expected = OUR_OPS[:1] if dropped else OUR_OPS
        assert [(r["op"], r["teleportChild"]) for r in ours] == [(op, word) for op in expected], records
        said = [line for line in syslog_catcher.lines() if f"[{pid}]" in line]
        if dropped:
            (line,) = said
            assert line.startswith("<86>") and "teleport:session_open, teleport:session_close not recorded" in line
        else:
            assert said == []
    syslog_catcher.sock.close()
    shutil.rmtree(folder)
