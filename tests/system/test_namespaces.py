"""Teleport in its own pid namespace (a container, or a unit without
CAP_AUDIT_CONTROL): the kernel refuses AUDIT_GET there but takes user records,
so the module still writes all of them (issue 13)."""

from __future__ import annotations

import subprocess
import sys
import time

from pam_teleport_audit.admin.auditlog import AuditRecord

from .conftest import OUR_OPS, ROOT, debian_stack, driver_argv, unique, wait_for_records

IN_PID_NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc"]

# What AUDIT_GET and a user record get from the kernel, from inside the namespace.
PROBE = """
from pam_teleport_audit.pam_module import AuditError, AuditSocket
with AuditSocket() as audit:
    try:
        audit.status()
        print("AUDIT_GET ok")
    except AuditError as exc:
        print(f"AUDIT_GET errno={exc.errno}")
    audit.send_user(1005, "op=pam-teleport-audit-test-pidns res=success")
    print("record acked")
"""


def test_audit_get_is_refused_in_a_pid_namespace_and_a_record_is_not() -> None:
    proc = subprocess.run(
        [*IN_PID_NAMESPACE, sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["AUDIT_GET errno=1", "record acked"]  # EPERM


def test_a_teleport_login_in_a_pid_namespace_gives_our_three_records(
    driver, pam_service, linux_user, syslog_catcher
) -> None:
    """And debug says they were sent unverified: there the kernel will not say whether audit is on,
    and it acks a record even when audit is off."""
    login = linux_user()
    service = pam_service(debian_stack(f"debug log_socket={syslog_catcher.path}"))
    tp_user = unique("container-")
    started = time.time()
    proc = subprocess.run(
        [*IN_PID_NAMESPACE, *driver_argv(driver, service, login, user=tp_user, roles="access", shell=False)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("pid=1\n")  # it did run in its own namespace

    def ours(records: list[AuditRecord]) -> list[AuditRecord]:
        return [r for r in records if r.get("teleportUser") == tp_user]

    # The pid the driver printed is its namespace's: find the records by name instead.
    records = wait_for_records(started, lambda rs: len(ours(rs)) >= 3, "-x", str(driver))
    assert [r["op"] for r in ours(records)] == OUR_OPS
    assert all(r["res"] == "success" and r["teleportChild"] == "exec" for r in ours(records))
    # libpam's records of the same process, for comparison: the same three phases.
    pid = ours(records)[0]["pid"]
    libpam = [r["op"] for r in records if r.get("pid") == pid and r.get("op", "").startswith("PAM:")]
    assert libpam == ["PAM:accounting", "PAM:session_open", "PAM:session_close"]
    said = [line.partition(": pam_teleport_audit(")[2] for line in syslog_catcher.lines()]
    sent = [line for line in said if "for Teleport user" in line]
    assert [line.partition("): ")[2].partition(" teleport:")[0] for line in sent] == [
        "sent, unverified (the kernel will not say whether audit is on),"
    ] * 2, said
