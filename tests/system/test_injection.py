"""Crafted Teleport user names and roles, through real Teleport-like sessions.

Pass: every record parses (auparse, and ausearch -i) into exactly the fields
we write, with one acct and one res, and the name and roles are recoverable
from teleportUser / teleportRoles. No record is split; no field is added or
changed.
"""

from __future__ import annotations

import subprocess
import time

from pam_teleport_audit.admin.auditlog import decode_value, since_args, split_roles
from pam_teleport_audit.pam_module import HOSTNAME_MAX_BYTES

from .conftest import debian_stack, driver_argv, pid_records, run_driver, unique, wait_for_records

OUR_FIELDS = [
    "type",
    "pid",
    "uid",
    "auid",
    "ses",
    "op",
    "acct",
    "exe",
    "hostname",
    "addr",
    "terminal",
    "teleportUser",
    "teleportRoles",
    "teleportChild",
    "res",
]
AUDIT_TEXT_MAX = 8560

NAMES: list[bytes] = [
    b"alice",
    b"alice bob",
    b'al"ice',
    b"o'neil",
    b"a=b",
    b"alice res=failed",
    b' acct="root"',
    b"x\nop=forged",
    b"x\rres=failed",
    b"tab\there",
    "jos\u00e9".encode(),
    "\u7528\u6237".encode(),
    b"\xff\xfe",
    b"bad\xc3(",
    b"A" * 4096,
    b"b" * 10240,
    b"?",
    b"CAFE",
    b"DEADBEEF",
    b"-",
    b"alice@example.com",
    b"alice,bob",
    b"%n%s%x",
    b"$(id)",
    b"`id`",
    b"a\\b",
    b"a\x1db",
    b"a\x7fb",
    "\u202eevil".encode(),
    b"teleportUser=mallory",
    b"x res=success teleportUser=root",
    b"' msg='forged",
    b"msg='x",
    b"a b c d e f",
    b" leading",
    b"trailing ",
    b"  ",
    b"\x1b[31mred",
    "emoji \U0001f600".encode(),
    b"a;b",
    b"a|b",
    b"a&b",
    b"a>b",
    b"new\nline\nmany",
    b"cr\r\n",
    b"<script>",
    b"null\\0",
    b"%00",
    b"name\tres=failed\tacct=root",
    b"\x01\x02\x03",
    b"uid=0",
    b"auid=0 ses=1",
    b"type=USER_LOGIN",
    b"x" * 8600,
    b"]",
    b"}{",
    b"''",
]
ROLES: list[bytes] = [
    b"access",
    b"access editor",
    b"ops,dev qa",
    b"x res=failed",
    b'a=b c"d',
    b"\xff",
    b"r" * 9000,
    b"",
]


def test_corpus_is_large_enough() -> None:
    assert len(NAMES) >= 50 and len(set(NAMES)) == len(NAMES)


def test_crafted_names_and_roles_never_change_a_record(driver, pam_service, linux_user) -> None:
    login = linux_user()
    service = pam_service(debian_stack())
    suffix = unique("-").encode()
    started = time.time()
    runs = []
    for i, name in enumerate(NAMES):
        name = name + suffix  # unique per run, so records of other runs cannot match
        roles = ROLES[i % len(ROLES)]
        argv = [a.encode() for a in driver_argv(driver, service, login, shell=False)]
        argv[-1:-1] = [b"-u", name, b"-r", roles]
        proc = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        assert proc.returncode == 0, (name, proc.stdout, proc.stderr)
        pid = int(proc.stdout.split(b"\n")[0].removeprefix(b"pid="))
        runs.append((name, roles, pid))

    for name, roles, pid in runs:
        records = pid_records(started, pid, expect=7)
        ours = [r for r in records if r.get("op", "").startswith("teleport:")]
        assert [r["op"] for r in ours] == ["teleport:accounting", "teleport:session_open", "teleport:session_close"]
        for record in ours:
            keys = [k for k in record.fields if not k.isupper()]
            omitted = int(record.fields.get("teleportRolesOmitted", 0))
            if omitted:  # roles cut (between roles only) to fit: the marker sits right after them
                assert keys.index("teleportRolesOmitted") == keys.index("teleportRoles") + 1
                keys.remove("teleportRolesOmitted")
            if "teleportUserOmitted" in keys:  # a name cut to its cap: the bytes left out, right after it
                assert keys.index("teleportUserOmitted") == keys.index("teleportUser") + 1
                assert int(record["teleportUserOmitted"]) == len(name) - 2048 > 0
                keys.remove("teleportUserOmitted")
            assert keys == OUR_FIELDS, (name[:40], record.fields)
            assert record["teleportChild"] == "exec"
            assert record["acct"] == f'"{login}"' and record["res"] == "success"
            recorded = decode_value(record["teleportUser"])
            assert recorded and name.startswith(recorded), (name[:40], record["teleportUser"][:80])
            if len(name) < 4000:
                assert recorded == name
            recorded_roles = split_roles(decode_value(record["teleportRoles"]))
            # Whole roles, in order; the ones left out are counted, never cut mid-name.
            assert recorded_roles == roles.split()[: len(recorded_roles)]
            assert len(recorded_roles) + omitted == len(roles.split()), (name[:40], roles[:40])

        # ausearch -i reads the same records the same way: one acct=, one res=, nothing after res.
        text = subprocess.run(
            ["ausearch", "--input-logs", "-i", *since_args(started), "-p", str(pid), "-m", "USER_START"],
            capture_output=True,
            text=True,
            check=False,
            errors="replace",
        ).stdout
        ours_text = [line for line in text.splitlines() if "op=teleport:" in line]
        assert len(ours_text) == 1
        msg = ours_text[0].split(" msg='", 1)[1]
        assert len(msg.encode()) <= AUDIT_TEXT_MAX + 2
        assert msg.count(" acct=") == 1 and msg.count(" res=") == 1 and msg.rstrip().endswith("res=success'")


def test_a_huge_rhost_cannot_push_res_out_of_our_records(driver, pam_service, linux_user) -> None:
    """An 8,600-byte PAM_RHOST once made 8,738 bytes of text, over what the kernel keeps."""
    login = linux_user()
    service = pam_service(debian_stack())
    tp_user = unique("rhost-")
    rhost = "h" * 8600
    session = run_driver(driver, service, login, user=tp_user, roles="access editor", shell=False, extra=("-R", rhost))
    assert session.returncode == 0, session.output
    records = wait_for_records(
        session.started,
        lambda rs: len([r for r in rs if r.get("teleportUser") == tp_user]) >= 3,
        "-p",
        str(session.pid),
    )
    ours = [r for r in records if r.get("teleportUser") == tp_user]
    assert [r["op"] for r in ours] == ["teleport:accounting", "teleport:session_open", "teleport:session_close"]
    for record in ours:
        assert record["res"] == "success" and record["teleportRoles"] == "access,editor"
        assert record["hostname"] == "h" * HOSTNAME_MAX_BYTES and record["addr"] == "?"
