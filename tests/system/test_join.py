"""A Teleport session that others joined (`tsh join`, moderated sessions): what the host's records say.

Teleport runs no PAM and writes no auditd record for a participant who joins a session (lib/srv/sess.go
OpenSession -> session.join: no `teleport exec`, so no lib/pam and no lib/auditd). A peer's input is
copied, with the owner's, into one stream that the teleport daemon writes into the PTY master it holds
(io.Copy(s.term.PTY(), s.io)); the shell the exec child started reads the slave. The kernel writes a
TTY record for the process that READS the terminal, with that process's auid and ses: the owner's.

The driver's -J mode types the lines from a separate process with a loginuid of its own, as the daemon
does; these tests prove on the real stack that the records and `search` give every line to the owner.
"""

from __future__ import annotations

import pwd
import subprocess
import time

import pytest

from .conftest import UNSET_SES, debian_stack, driver_argv, unique, wait_for_records
from .test_search import json_sessions


@pytest.mark.parametrize("writer", ["unset", "another user"])
def test_a_joined_peers_input_is_recorded_as_the_owners(driver, pam_service, linux_user, writer: str) -> None:
    owner_login = linux_user()
    owner_uid = str(pwd.getpwnam(owner_login).pw_uid)
    # The daemon's loginuid is unset (doctor fails it otherwise); "another user" proves the writer's own
    # identity is not what the kernel records either.
    writer_loginuid = UNSET_SES if writer == "unset" else str(pwd.getpwnam(linux_user()).pw_uid)
    service = pam_service(debian_stack())
    owner = unique("owner-")
    own_line, peer_line = f"echo {unique('typed-by-owner-')}", f"echo {unique('typed-by-peer-')}"
    started = time.time()
    proc = subprocess.run(
        driver_argv(
            driver, service, owner_login, user=owner, lines=[own_line, peer_line], extra=("-J", writer_loginuid)
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = dict(line.partition("=")[::2] for line in proc.stdout.splitlines() if "=" in line)
    driver_pid, writer_pid = out["pid"], out["writer"]

    ours = wait_for_records(started, lambda rs: len(rs) >= 3, "-m", "USER_ACCT,USER_START,USER_END", "-p", driver_pid)
    opened = next(r for r in ours if r.get("op") == "teleport:session_open")
    ses = opened["ses"]
    assert ses != UNSET_SES and opened["auid"] == owner_uid and opened["teleportUser"] == owner

    tty = wait_for_records(
        started, lambda rs: b"exit\n" in b"".join(bytes.fromhex(r["data"]) for r in rs), "-m", "TTY", "--session", ses
    )
    typed = b"".join(bytes.fromhex(r["data"]) for r in tty)
    assert typed.count(f"{own_line}\n".encode()) == 1 and typed.count(f"{peer_line}\n".encode()) == 1, typed
    # Every keystroke record, the peer's line included, is the shell's: the owner's auid and ses, the pid
    # of the process that read the terminal; none names the process that wrote it.
    assert {(r["auid"], r["ses"]) for r in tty} == {(owner_uid, ses)}
    assert writer_pid not in {r["pid"] for r in tty} and driver_pid not in {r["pid"] for r in tty}
    assert {r["comm"] for r in tty} == {'"sh"'}
    # The writer really was another identity: the kernel logged its loginuid change (and a new ses, for a uid).
    (changed,) = wait_for_records(started, lambda rs: len(rs) >= 1, "-m", "LOGIN", "-p", writer_pid)
    assert (changed["old-auid"], changed["old-ses"], changed["auid"]) == (owner_uid, ses, writer_loginuid)
    assert changed["ses"] == UNSET_SES if writer == "unset" else changed["ses"] not in (ses, UNSET_SES)

    # search gives both lines to the owner's Teleport user, as typed input of the owner's session.
    (session,) = json_sessions("--teleport-user", owner, "--since", f"@{int(started)}")
    assert session["teleport_user"] == owner and session["ses"] == int(ses) and session["auid"] == int(owner_uid)
    assert [k["text"] for k in session["input"]] == [f"{own_line}\n", f"{peer_line}\n", "exit\n"]
    assert session["input_joined"] is True
