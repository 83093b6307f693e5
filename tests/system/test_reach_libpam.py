"""pamstack's reachability proof judged by libpam itself.

Random stacks of pam_permit/pam_deny (deterministic outcomes) under random controls, jumps,
`include`s and `substack`s of scratch files, with a marker line (pam_exec touching a file) where
our line would be. libpam runs them (pamtester). Soundness: whenever pamstack finds nothing that
can skip the marker, libpam runs it — on every acct_mgmt for an account line, on every
successful open_session for a session line. (pamstack is conservative: it may name a line that,
with these modules' fixed outcomes, happens not to skip; that direction is only counted.)
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from pam_teleport_audit.admin.cli import EXIT_REFUSED
from pam_teleport_audit.admin.pamstack import expand, folder_resolver, locate, skippers

from .conftest import PAM_DIR, ROOT

CONTROLS = [
    "required",
    "requisite",
    "sufficient",
    "optional",
    "[success=1 default=ignore]",
    "[success=2 default=ignore]",
    "[default=1]",
    "[success=done default=die]",
    "[success=ok default=bad]",
    "[success=ok default=done]",
    "[success=die default=ignore]",
]
MODULES = ["pam_permit.so", "pam_deny.so"]
STACKS = 300


def rules(rng: random.Random, type_: str, count: int) -> list[str]:
    return [f"{type_} {rng.choice(CONTROLS)} {rng.choice(MODULES)}" for _ in range(count)]


def run(service: str, type_: str) -> int:
    op = "acct_mgmt" if type_ == "account" else "open_session"
    proc = subprocess.run(["pamtester", service, "root", op], capture_output=True, text=True, timeout=30, check=False)
    return proc.returncode


@pytest.mark.parametrize("type_", ["account", "session"])
def test_what_pamstack_proves_reachable_libpam_reaches(type_, pam_service, tmp_path):
    rng = random.Random(f"reach-{type_}")
    mark = tmp_path / "mark"
    proven = confirmed = conservative = 0
    for _ in range(STACKS):
        inner = pam_service("\n".join(rules(rng, type_, rng.randint(1, 3))) + "\n")
        before = rules(rng, type_, rng.randint(0, 4))
        if rng.random() < 0.6:
            before.insert(rng.randint(0, len(before)), f"{type_} {rng.choice(['include', 'substack'])} {inner}")
        marker = f"{type_} optional pam_exec.so quiet /usr/bin/touch {mark}"
        text = "\n".join([*before, marker, *rules(rng, type_, rng.randint(0, 2))]) + "\n"
        service = pam_service(text)
        path = str(PAM_DIR / service)
        entries = expand(path, text.encode(), type_, folder_resolver(path))
        at = locate(entries, len(before))  # one line per rule: the marker is line len(before)
        assert at is not None and "pam_exec" in entries[at].line.text
        can_skip = skippers(entries, at, type_)
        mark.unlink(missing_ok=True)
        status = run(service, type_)
        ran = mark.exists()
        if not can_skip:
            proven += 1
            if type_ == "account" or status == 0:
                assert ran, (text, Path(PAM_DIR / inner).read_text(), status)
                confirmed += 1
        elif ran:
            conservative += 1
        (PAM_DIR / service).unlink()
        (PAM_DIR / inner).unlink()
    print(
        f"{type_}: {STACKS} stacks, {proven} proven reachable ({confirmed} confirmed by libpam), "
        f"{conservative} named a possible skip although libpam ran the line"
    )
    assert proven >= STACKS // 5 and confirmed >= STACKS // 10  # the property is not vacuous


def libpam_version() -> tuple[int, int]:
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "libpam0g"], capture_output=True, text=True, check=True
    ).stdout
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_libpam_releases_read_a_continuation_across_a_comment_differently_and_install_refuses_it(pam_service):
    """Why such a file is refused: libpam 1.5 (Debian 12) joins the line after the comment to the
    continued one; 1.6 and later (Debian 13: 1.7) end the continued line at the comment, so the
    next line is a rule of its own. Here that rule is a pam_deny."""
    text = "auth required pam_permit.so \\\n# a comment\naccount required pam_deny.so\naccount required pam_permit.so\n"
    service = pam_service(text)
    refused = run(service, "account") != 0
    assert refused == (libpam_version() >= (1, 6)), libpam_version()
    before = (PAM_DIR / service).read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "pam_teleport_audit", "install", "--pam-file", str(PAM_DIR / service)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == EXIT_REFUSED and "libpam 1.5 joins the lines after it" in proc.stderr, proc
    assert (PAM_DIR / service).read_bytes() == before
