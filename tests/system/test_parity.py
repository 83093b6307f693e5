"""Parity with OpenSSH on one stack: the stock Debian 12 sshd file plus the
stanza, a real sshd on loopback and a Teleport-like session."""

from __future__ import annotations

import re
import subprocess
import time
from contextlib import nullcontext

import pytest

from pam_teleport_audit.admin.auditlog import decode_value
from pam_teleport_audit.admin.stanza import Stanza, entry_script

from .conftest import ROOT, audit_switched_off, debian_stack, run_driver, unique, wait_for_records
from .parity import TYPED, openssh_login, teleport_login, uid_of
from .test_faults import auditd_stopped, package_copy

STOCK = (ROOT / "tests" / "fixtures" / "pam" / "debian-12" / "sshd").read_text()


def stock_with_tty_audit() -> str:
    """The stock file plus only the pam_tty_audit line: what the stanza adds besides our module."""
    tty = Stanza(entry_script()).session_lines()[0]
    return re.sub(r"(?m)^(session\s+required\s+pam_loginuid\.so.*)$", lambda m: f"{m.group(1)}\n{tty}", STOCK)


def test_openssh_and_teleport_logins_have_the_same_shape(driver, pam_service, linux_user, openssh) -> None:
    service = pam_service(debian_stack())
    server = openssh(service)
    user = linux_user()

    ssh = openssh_login(server, user, time.time())
    tp_user = unique("parity-")
    tele = teleport_login(driver, service, user, tp_user)

    # The same sequence of libpam and kernel records, once the application's own are set aside.
    assert ssh.pam_shape() == tele.pam_shape()
    assert [t for t, _ in ssh.pam_shape()][:4] == ["USER_ACCT", "LOGIN", "CONFIG_CHANGE", "USER_START"]
    assert {t for t, _ in ssh.shape()} - {t for t, _ in tele.shape()} == {"CRED_ACQ", "CRED_DISP", "USER_LOGIN"}

    # libpam's records: same field names, terminal=ssh in both.
    for op in ("PAM:accounting", "PAM:session_open", "PAM:session_close"):
        (a,) = [r for r in ssh.records if r.get("op") == op]
        (b,) = [r for r in tele.records if r.get("op") == op]
        assert list(a.fields) == list(b.fields), op
        assert a["terminal"] == b["terminal"] == "ssh", op
    assert next(r for r in ssh.records if r.get("op") == "PAM:accounting")["hostname"] == "127.0.0.1"

    # OpenSSH gets nothing of ours; Teleport gets exactly three records, joined to its keystrokes by ses.
    assert ssh.ours() == []
    assert [(r.type, r["op"]) for r in tele.ours()] == [
        ("USER_ACCT", "teleport:accounting"),
        ("USER_START", "teleport:session_open"),
        ("USER_END", "teleport:session_close"),
    ]
    assert all(decode_value(r["teleportUser"]) == tp_user.encode() for r in tele.ours())
    tty_ses = {r["ses"] for r in tele.records if r.type == "TTY"}
    assert tty_ses == {tele.ses} == {r["ses"] for r in tele.ours()[1:]}

    # Keystrokes decode to the typed commands for both.
    for login in (ssh, tele):
        for line in TYPED:
            assert f"{line}\n".encode() in login.typed(), login.kind


def same_pty(value: str | None) -> str | None:
    """sshd's own records name the login's pty (terminal=/dev/pts/N or pts/N): which N depends on
    what else holds a pty at that moment, not on the PAM stack."""
    return re.sub(r"(pts/)[0-9]+", r"\1N", value) if value else value


def test_openssh_login_is_unchanged_by_the_module(pam_service, linux_user, openssh) -> None:
    """Against the stock file plus pam_tty_audit alone, the full stanza changes no record of an OpenSSH login."""
    with_module = openssh(pam_service(debian_stack()))
    without = openssh(pam_service(stock_with_tty_audit()))
    user = linux_user()
    a = openssh_login(without, user, time.time())
    b = openssh_login(with_module, user, time.time())
    assert a.shape() == b.shape()
    for x, y in zip(a.records, b.records, strict=True):
        assert list(x.fields) == list(y.fields)
        for name in ("op", "grantors", "acct", "hostname", "addr", "terminal", "res"):
            assert same_pty(x.get(name)) == same_pty(y.get(name)), (x.type, name)


def test_the_documented_recipes_work_verbatim(driver, pam_service, linux_user) -> None:
    """The commands in docs/records.md ("Finding things"), with this run's values."""
    doc = (ROOT / "docs" / "records.md").read_text()
    block = doc.split("## Finding things", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 5
    user = linux_user()
    tp_user = unique("recipe-")
    tele = teleport_login(driver, pam_service(debian_stack()), user, tp_user)
    # and one refused login of the same Teleport user
    refusing = pam_service(f"account optional pam_python.so {entry_script()}\naccount required pam_deny.so\n")
    refused = run_driver(driver, refusing, user, user=tp_user, shell=False)
    assert refused.steps == {"acct_mgmt": 7}, refused.output
    wait_for_records(
        refused.started, lambda rs: any(r.get("op") == "teleport:login" for r in rs), "-p", str(refused.pid)
    )
    values = {"alice@example.com": tp_user, "858": tele.ses, "1001": uid_of(user)}
    outputs = []
    for command in commands:
        for old, new in values.items():
            command = command.replace(old, new)
        proc = subprocess.run(
            command, shell=True, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        outputs.append(proc.stdout)
    sessions, refusals, one_session, keystrokes, by_user = outputs
    assert f"teleportUser={tp_user}" in sessions and f"ses={tele.ses}" in sessions
    refused_lines = [line for line in refusals.splitlines() if f"teleportUser={tp_user}" in line]
    assert len(refused_lines) == 1 and "op=teleport:login" in refused_lines[0] and "res=failed" in refused_lines[0]
    assert f"teleportUser={tp_user}" in one_session and "type=TTY" in one_session
    assert "echo parity-check" in keystrokes
    assert f"teleportUser={tp_user}" in by_user


@pytest.mark.parametrize("fault", ["audit disabled", "auditd stopped", "module file corrupt"])
def test_openssh_logins_survive_faults(fault, tmp_path, pam_service, linux_user, openssh) -> None:
    entry = package_copy(tmp_path, "pam_module.py", None) if fault == "module file corrupt" else entry_script()
    # With the fault there may be no record to tell which stack sshd ran: a last session line
    # leaves a file, so the login is proven to have gone through this stack, past our line.
    marker = tmp_path / "session-stack-ran"
    stack = debian_stack().replace(entry_script(), entry) + f"session optional pam_exec.so /usr/bin/touch {marker}\n"
    server = openssh(pam_service(stack))
    user = linux_user()
    context = {"audit disabled": audit_switched_off, "auditd stopped": auditd_stopped}.get(fault, nullcontext)
    with context():
        proc = server.login(user, ["echo still-works"])
    assert proc.returncode == 0 and "still-works" in proc.stdout, (proc.stderr, server.server_log())
    assert marker.exists(), f"sshd did not run /etc/pam.d/{server.service}: {server.server_log()}"
