"""Run the benchmarks: python3 -m benchmarks [login] [record] [burst] [search] [memory] [fleet] (default: all)."""

from __future__ import annotations

import fcntl
import platform
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from pam_teleport_audit.admin import doctor

from . import burst, common, fleet_scale, login_cost, memory, record_cost, search_cost

# The system tests' lock (tests/system/conftest.py), held for the whole run: their fault tests turn
# kernel audit off and restart auditd, which loses the login benchmark's records and skews its
# counts, and the burst benchmark cuts the kernel backlog, which would fail their tests.
TESTS_LOCK = "/run/pam-teleport-audit-tests.lock"

BENCHMARKS = {
    "login": login_cost.run,
    "record": record_cost.run,
    "burst": burst.run,
    "search": search_cost.run,
    "memory": memory.run,
    "fleet": fleet_scale.run,
}


def machine() -> None:
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()

    cpu = [line.split(":", 1)[1].strip() for line in out("lscpu").splitlines() if line.startswith("Model name")]
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    # The Python pam_python embeds (python3.11 on Debian 12, python3.13 on 13) is a package of that name.
    pam_python = doctor.find_pam_python()
    embedded = doctor.embedded_python(pam_python) if pam_python else None
    packages = ("libpam-python", "auditd", Path(embedded or "/usr/bin/python3").name, "libpam0g")
    versions = out("dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *packages)
    print("## Machine\n")
    print(f"- CPU: {cpu[0] if cpu else '?'}, {out('nproc')} cores; RAM {mem_kb / 1024 / 1024:.1f} GiB")
    print(f"- kernel {platform.release()}; Debian {Path('/etc/debian_version').read_text().strip()}")
    print(f"- packages: {'; '.join(versions.splitlines())}")
    print(f"- commit {out('git', '-C', str(common.ROOT), 'rev-parse', '--short', 'HEAD')}\n")


def require_audit() -> None:
    """Kernel audit on and auditd running, as doctor checks them, before minutes of logins.

    Without them the logins still run and are counted, but write no record: a
    run would end, after all its measurements, in the record check's failure.
    """
    # Not a lookup by name: when AUDIT_GET itself fails there is no auditd check, only that failure.
    wanted = ("kernel audit", "auditd")
    failed = [check.line() for check in doctor.audit_checks() if check.name in wanted and check.status != doctor.PASS]
    if failed:
        raise SystemExit("\n".join([*failed, "(scripts/host-setup starts auditd and enables kernel audit)"]))


def main(argv: list[str]) -> None:
    common.require_root()
    require_audit()
    chosen = argv or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    with open(TESTS_LOCK, "w") as lock:
        if not lock_free(lock):
            print(f"waiting for the system tests' lock ({TESTS_LOCK}): a suite is running", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        common.compile_package()
        machine()
        for name in chosen:
            BENCHMARKS[name]()


def lock_free(lock: TextIO) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


if __name__ == "__main__":
    main(sys.argv[1:])
