"""The Debian package: built with dpkg-buildpackage (debhelper, dh-python) from a
clean copy of the checkout, checked by lintian (pedantic and info tags),
installed with apt, used by a Teleport-like session, refused removal while a
PAM file holds the stanza (marked or pasted by hand), then removed and purged; and its autopkgtest run on
this machine (autopkgtest ... -- null)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pam_teleport_audit.admin import doctor, pamedit

from . import debbuild
from .conftest import PAM_DIR, ROOT, assert_recorded_session, pid_records, run_driver, unique

PACKAGE = debbuild.PACKAGE
ENTRY = "/usr/lib/python3/dist-packages/pam_teleport_audit/pam_entry.py"
SHARE = Path("/usr/share/pam-teleport-audit")
MARKER = b"# BEGIN pam_teleport_audit "
# Debian 12 (lintian 2.116) and Ubuntu 24.04 (2.117) know policy up to 4.6.2.
NEWER_POLICY_ON_DEBIAN_12 = f"W: {PACKAGE} source: newer-standards-version 4.7.2 (current is 4.6.2)"
# What Debian testing's lintian (forky: 2.143) says of one debian/ that builds on Debian 12 and 13, each the
# price of building there: policy 4.7.2 is Debian 13's; debhelper compat 14 is stable only from debhelper 14
# (Debian 12 and 13 have 13.x, where 13 is the highest stable); Priority: optional and Rules-Requires-Root: no
# are defaults only from dpkg 1.22.13, and Debian 12's dpkg (1.21) would build as root without the latter.
FROM_DEBIAN_TESTING = (
    re.compile(
        rf"I: {PACKAGE} source: out-of-date-standards-version 4\.7\.2 \(released 2025-02-27\) \(current is [0-9.]+\)"
    ),
    re.compile(re.escape(f"P: {PACKAGE} source: package-uses-old-debhelper-compat-version 13")),
    re.compile(re.escape(f"P: {PACKAGE} source: redundant-priority-optional-field [debian/control:3]")),
    re.compile(re.escape(f"P: {PACKAGE} source: redundant-rules-requires-root-no-field [debian/control:13]")),
)


def unexpected_tags(lintian_output: str) -> list[str]:
    """lintian's lines but the ones the package's releases make unavoidable (above)."""
    return [
        line
        for line in lintian_output.splitlines()
        if line != NEWER_POLICY_ON_DEBIAN_12 and not any(tag.fullmatch(line) for tag in FROM_DEBIAN_TESTING)
    ]


def installed() -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True, text=True, check=False)
    return "ok installed" in proc.stdout


def apt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "-y", "-q", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**debbuild.BUILD_ENV, "DEBIAN_FRONTEND": "noninteractive"},
    )


def pam_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(PAM_DIR.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[debbuild.Built]:
    folder = tmp_path_factory.mktemp("deb")
    yield debbuild.build(folder)
    shutil.rmtree(folder)


@pytest.fixture
def host() -> Iterator[None]:
    """This machine without the package, purged again afterwards (request it before pam_service)."""
    assert not installed(), f"{PACKAGE} is installed on this machine already; the test would remove it"
    holding = [name for name, data in pam_files().items() if MARKER in data]
    assert not holding, f"{PAM_DIR} files hold the stanza already (left by another run?): {holding}"
    yield
    if installed():
        subprocess.run(["dpkg", "--purge", "--force-all", PACKAGE], capture_output=True, check=False)


def test_only_the_named_lintian_tags_pass() -> None:
    forky = [  # as Debian testing's lintian 2.143 printed them for this package
        f"I: {PACKAGE} source: out-of-date-standards-version 4.7.2 (released 2025-02-27) (current is 4.7.4)",
        f"P: {PACKAGE} source: package-uses-old-debhelper-compat-version 13",
        f"P: {PACKAGE} source: redundant-priority-optional-field [debian/control:3]",
        f"P: {PACKAGE} source: redundant-rules-requires-root-no-field [debian/control:13]",
    ]
    others = [
        f"W: {PACKAGE} source: out-of-date-standards-version 4.7.2 (released 2025-02-27) (current is 4.7.4)",
        f"P: {PACKAGE} source: package-uses-old-debhelper-compat-version 12",
        f"P: {PACKAGE}: redundant-priority-optional-field [debian/control:3] and more",
        f"W: {PACKAGE} source: newer-standards-version 4.7.2 (current is 4.7.0)",
    ]
    assert unexpected_tags("\n".join([NEWER_POLICY_ON_DEBIAN_12, *forky, *others])) == others


def test_build_from_clean_checkout_lintian_clean(built: debbuild.Built) -> None:
    assert built.deb.is_file(), sorted(p.name for p in built.folder.iterdir())
    changelog = subprocess.run(
        ["dpkg-parsechangelog", "-l", str(ROOT / "debian" / "changelog"), "-S", "Version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert changelog == debbuild.version(), "debian/changelog and pam_teleport_audit.__version__ disagree"

    # Nothing at all: no error, warning, info or pedantic tag, on the binary and the source package,
    # but these: Debian 12's lintian knows policy up to 4.6.2 and calls the package's 4.7.2 (current
    # policy, Debian 13's lintian) newer; Debian testing's wants what Debian 12 and 13 cannot build
    # (FROM_DEBIAN_TESTING). An override would be an unused-override tag elsewhere.
    # Debian's profile also on Ubuntu, whose own profile refuses a Debian distribution (`unstable`)
    # in the changes file: the package is Debian's, and Ubuntu 24.04 installs it as it is.
    lint = subprocess.run(
        ["lintian", "--profile", "debian", "-I", "--pedantic", "--tag-display-limit", "0", built.changes, built.dsc],
        capture_output=True,
        text=True,
        check=False,
        env=debbuild.BUILD_ENV,
    )
    assert (lint.returncode, unexpected_tags(lint.stdout)) == (0, []), lint.stdout + lint.stderr

    # debian/rules clean gives back exactly the tree the build started from: a rebuild starts clean.
    tree = built.folder / PACKAGE
    debbuild.run(["dpkg-buildpackage", "-T", "clean"], tree)
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()) == debbuild.checkout_files()

    fields = subprocess.run(["dpkg-deb", "-f", str(built.deb)], capture_output=True, text=True, check=True).stdout
    depends = re.search(r"^Depends: (.*)$", fields, re.M)
    assert depends, fields
    names = {d.split()[0].split(":")[0] for d in depends.group(1).split(", ")}
    assert {"python3", "libpam-python", "auditd", "pamtester"} <= names, depends.group(1)
    assert "python3." not in depends.group(1), "no pin to one Python version (Debian 12 and 13)"
    assert re.search(r"^Recommends: .*python3-audit", fields, re.M), fields

    listing = subprocess.run(["dpkg-deb", "-c", str(built.deb)], capture_output=True, text=True, check=True).stdout
    paths = {line.split()[-1].removeprefix(".") for line in listing.splitlines()}
    for path in (
        "/usr/bin/pam-teleport-audit",
        ENTRY,
        "/usr/lib/python3/dist-packages/pam_teleport_audit/pam_module.py",
        f"{SHARE}/pam_teleport_audit.stanza",
        f"{SHARE}/sshd.example",
        "/usr/share/man/man8/pam-teleport-audit.8.gz",
        "/usr/share/doc/pam-teleport-audit/copyright",
    ):
        assert path in paths, path
    assert not [p for p in paths if re.match(r"/usr/lib/python3\.\d+/", p)], "dh_python3 moves the module to python3/"
    assert not [p for p in paths if p.startswith("/etc/")], "the package ships nothing under /etc"


def test_install_use_remove_purge(built: debbuild.Built, host, driver, pam_service, linux_user) -> None:
    before = pam_files()
    proc = apt("install", "--no-install-recommends", str(built.deb))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert installed()
    assert pam_files() == before, "installing never edits /etc/pam.d"
    stanza = subprocess.run(
        ["/usr/bin/pam-teleport-audit", "stanza"], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    assert stanza == (SHARE / "pam_teleport_audit.stanza").read_text()
    assert f"pam_python.so {ENTRY}" in stanza
    # The helper runs the packaged module, even beside a pip-installed copy in /usr/local.
    helper = Path("/usr/bin/pam-teleport-audit").read_text()
    assert helper.startswith("#!/usr/bin/python3 -I\n")
    assert 'sys.path.insert(0, "/usr/lib/python3/dist-packages")' in helper
    # dh_python3's postinst byte-compiles, for the Python pam_python embeds (which never writes bytecode).
    python = doctor.embedded_python(doctor.find_pam_python() or "")
    assert python and doctor.bytecode_check(python, str(Path(ENTRY).parent)).status == doctor.PASS
    assert Path("/usr/share/man/man8/pam-teleport-audit.8.gz").is_file()

    # A Teleport-like session through the packaged example stack.
    service = pam_service((SHARE / "sshd.example").read_text())
    assert_recorded_session(driver, service, linux_user(), "deb-")

    # While a PAM file holds the stanza, removal is refused and nothing is removed.
    proc = apt("remove", PACKAGE)
    assert proc.returncode != 0 and installed()
    assert f"{PAM_DIR}/{service}" in proc.stderr + proc.stdout
    assert list(Path(ENTRY).parent.glob("__pycache__/pam_module.*.pyc")), "a refused removal cleans nothing"
    (PAM_DIR / service).unlink()

    # The same lines pasted by hand without the markers (README's `stanza` route) hold it too; a
    # commented-out line does not. `uninstall` removes the pasted lines, and then the package goes.
    example = (SHARE / "sshd.example").read_text().splitlines(keepends=True)
    pasted = "".join(x for x in example if not x.startswith(("# BEGIN pam_teleport_audit", "# END pam_teleport_a")))
    hand = pam_service(pasted + f"# account required pam_python.so {ENTRY}\n")
    loading = [n for n, x in enumerate(pasted.splitlines(), 1) if ENTRY in x]
    assert len(loading) == 2
    proc = apt("remove", PACKAGE)
    assert proc.returncode != 0 and installed()
    assert all(f"{PAM_DIR}/{hand}:{n}:" in proc.stderr + proc.stdout for n in loading), proc.stderr + proc.stdout
    helper = ["/usr/bin/pam-teleport-audit", "uninstall", "--pam-file", str(PAM_DIR / hand)]
    assert subprocess.run(helper, capture_output=True, text=True, check=False, cwd="/").returncode == 0
    assert [x for x in (PAM_DIR / hand).read_text().splitlines() if ENTRY in x] == [
        f"# account required pam_python.so {ENTRY}"
    ]
    (PAM_DIR / hand).unlink()

    proc = apt("remove", PACKAGE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not Path(ENTRY).parent.exists(), "dh_python3's prerm removes the byte-compiled files too"
    # No conffiles: nothing is left to purge after remove, and purge still succeeds.
    proc = subprocess.run(["dpkg", "--purge", PACKAGE], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PACKAGE], capture_output=True, text=True, check=False
    )
    assert status.returncode != 0 or status.stdout.strip() in ("", "un", "pn")
    assert not SHARE.exists() and not Path("/usr/bin/pam-teleport-audit").exists()
    assert pam_files() == before


def test_autopkgtest(built: debbuild.Built, host) -> None:
    """debian/tests on the installed package, on this machine (the null runner installs the .deb)."""
    before = pam_files()
    # The test declares isolation-machine (it needs kernel audit, which containers lack). Debian 13's
    # null runner never claims that capability, so it is lifted here: real_audit has proven that
    # this machine has kernel audit and a running auditd, which is what the restriction asks for.
    proc = subprocess.run(
        ["autopkgtest", "--ignore-restrictions=isolation-machine", str(built.deb), str(built.dsc), "--", "null"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=debbuild.BUILD_ENV,
    )
    out = proc.stdout + proc.stderr
    # 0: every test passed (2 would be "some skipped", 8 "no tests").
    assert proc.returncode == 0, out
    assert re.search(r"^teleport-login\s+PASS$", out, re.M), out
    assert "PASS: teleport:accounting, teleport:session_open, teleport:session_close" in out, out
    assert "pass: pam_loader.py and pam_module.py load from cached bytecode" in out, out
    assert pam_files() == before, "the autopkgtest removes its scratch PAM service"


def conffile_package(folder: Path, name: str, version: str, pam_text: bytes) -> Path:
    """A scratch package shipping /etc/pam.d/NAME as a conffile, as openssh-server ships /etc/pam.d/sshd."""
    tree = folder / f"{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "etc" / "pam.d").mkdir(parents=True)
    (tree / "etc" / "pam.d" / name).write_bytes(pam_text)
    (tree / "DEBIAN" / "conffiles").write_text(f"/etc/pam.d/{name}\n")
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: test <test@example.com>\n"
        "Description: a PAM service file as a conffile (pam-teleport-audit's test_deb)\n"
    )
    deb = folder / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)], capture_output=True, check=True)
    return deb


def dpkg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["dpkg", *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, env=debbuild.BUILD_ENV
    )


def test_conffile_replaced_by_an_upgrade_is_reported(
    built: debbuild.Built, host, driver, linux_user, tmp_path: Path
) -> None:
    """openssh-server's /etc/pam.d/sshd is a conffile. An upgrade whose version of it changed, run with
    --force-confnew (apt -o Dpkg::Options::=--force-confnew, or the maintainer's version chosen at the
    prompt), puts the package's file in place: the stanza is gone, dpkg says nothing and exits 0, and
    Teleport logins are no longer recorded. The package's /etc/pam.d trigger says so (stderr, syslog),
    `status` exits 6 naming the .dpkg-old, doctor fails. --force-confold keeps the stanza: no warning."""
    proc = apt("install", "--no-install-recommends", str(built.deb))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    name = unique("pta-conffile-")
    path = PAM_DIR / name
    stock = pamedit.uninstall((SHARE / "sshd.example").read_bytes()).data  # Debian's sshd without the stanza
    old = conffile_package(tmp_path, name, "1.0", stock)
    new = conffile_package(tmp_path, name, "2.0", stock + b"# a change in the new version\n")
    helper = "/usr/bin/pam-teleport-audit"

    def run_helper(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([helper, *argv, "--pam-file", str(path)], capture_output=True, text=True, cwd="/")

    warning = f"pam-teleport-audit: WARNING: {path} no longer loads pam_teleport_audit"
    try:
        proc = dpkg("-i", str(old))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert warning not in proc.stdout + proc.stderr
        assert run_helper("install").returncode == 0
        login = linux_user()
        assert_recorded_session(driver, name, login, "conffile-")

        # --force-confold: ours stays, the package's version beside it; no warning.
        proc = dpkg("-i", "--force-confold", str(new))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert warning not in proc.stdout + proc.stderr
        assert Path(f"{path}.dpkg-dist").is_file()
        st = run_helper("status")
        assert st.returncode == 0, st.stdout + st.stderr

        # Back to 1.0 with our file, then the upgrade with --force-confnew.
        assert dpkg("-i", "--force-confold", str(old)).returncode == 0
        proc = dpkg("-i", "--force-confnew", str(new))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert path.read_bytes() == stock + b"# a change in the new version\n", "dpkg put its version in place"
        assert warning in out, out
        assert f"kept the lines in {path}.dpkg-old" in out, out
        assert f"pam-teleport-audit install --pam-file {path}" in out, out

        # The loss is real: a Teleport-like login through the file now writes no record of ours.
        tp_user = unique("conffile-lost-")
        session = run_driver(driver, name, login, user=tp_user, shell=False)
        assert session.returncode == 0, session.output
        records = pid_records(session.started, session.pid, expect=4)
        assert any(r.get("op") == "PAM:session_close" for r in records), records
        assert not [r for r in records if r.get("teleportUser") == tp_user]

        st = run_helper("status")
        assert st.returncode == 6, st.stdout + st.stderr
        assert f"the file with the stanza is now {path}.dpkg-old" in st.stdout + st.stderr
        doc = run_helper("doctor")
        assert doc.returncode == 1, doc.stdout + doc.stderr
        where = re.escape(str(path))
        assert re.search(rf"^FAIL +stanza: {where}: .*{where}\.dpkg-old", doc.stdout, re.M), doc.stdout

        # The fix it names gives the records back.
        assert run_helper("install").returncode == 0
        assert_recorded_session(driver, name, login, "conffile-back-")
        assert run_helper("uninstall").returncode == 0
    finally:
        dpkg("--purge", name)  # removes the conffile and its .dpkg-old / .dpkg-dist
        for leftover in PAM_DIR.glob(f"{name}*"):
            leftover.unlink()


def run_trigger(tmp_path: Path, steps: str, trigger: str = "/etc/pam.d") -> dict[str, str]:
    """The postinst as dpkg runs it for a trigger (`triggered /etc/pam.d`), in a private mount
    namespace over an empty /etc/pam.d and /var/lib (the host's are never touched). steps: shell lines that
    set up files and run the trigger with `trig NAME` (its stderr to NAME.err, its status to NAME.rc);
    `logger` is a stand-in writing to NAME.log, `py3compile` one writing its arguments to NAME.py3compile
    and exiting $PY3COMPILE_RC (0 when unset). Returns every file of the run's output folder by name."""
    out, bin_ = tmp_path / "out", tmp_path / "bin"
    out.mkdir()
    bin_.mkdir()
    for tool in ("find", "grep", "mkdir", "mv", "touch", "cat", "sleep", "stat", "cksum", "sed"):
        (bin_ / tool).symlink_to(shutil.which(tool, path="/usr/bin:/bin"))
    (bin_ / "logger").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >>"{out}/$NAME.log"\n')
    (bin_ / "logger").chmod(0o755)
    (bin_ / "py3compile").write_text(f'#!/bin/sh\necho "$*" >>"{out}/$NAME.py3compile"\nexit ${{PY3COMPILE_RC:-0}}\n')
    (bin_ / "py3compile").chmod(0o755)
    postinst = ROOT / "debian" / "pam-teleport-audit.postinst"
    script = (
        "set -e; mount -t tmpfs tmpfs /etc/pam.d; mount -t tmpfs tmpfs /var/lib\n"
        f'trig() {{ NAME=$1 PATH={bin_} /bin/sh {postinst} triggered {trigger} 2>"{out}/$1.err"'
        f' && echo 0 >"{out}/$1.rc" || echo $? >"{out}/$1.rc"; }}\n' + steps
    )
    from .namespaces import private_mounts

    proc = subprocess.run(private_mounts(script), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {p.name: p.read_text() for p in out.iterdir()}


def test_pam_d_trigger_names_each_dpkg_old_once_and_never_fails(tmp_path: Path) -> None:
    """The trigger runs after every package change in /etc/pam.d. It names a .dpkg-old that holds our
    lines once, at the first trigger after dpkg made it, not at every later one (one kept from long ago,
    or after the stanza was dropped on purpose, would warn forever); a new one is named again; a file name
    with a space is named whole. A closed stderr or a missing `logger` never fails it (it would fail the
    upgrade of whichever package set it off)."""
    line = f"session optional pam_python.so {ENTRY}"
    files = run_trigger(
        tmp_path,
        f"""echo '{line}' >/etc/pam.d/sshd.dpkg-old; echo 'session required pam_unix.so' >/etc/pam.d/sshd
        trig first; trig again
        sleep 0.05; cp /etc/pam.d/sshd.dpkg-old '/etc/pam.d/a b.dpkg-old'; trig new
        cp /etc/pam.d/sshd.dpkg-old /etc/pam.d/sshd; sleep 0.05  # the stanza installed again, then
        rm /etc/pam.d/sshd.dpkg-old; ln /etc/pam.d/sshd /etc/pam.d/sshd.dpkg-old  # another --force-confnew,
        echo 'session required pam_unix.so' >/etc/pam.d/sshd.new; mv /etc/pam.d/sshd.new /etc/pam.d/sshd  # as dpkg
        trig relinked
        cp /etc/pam.d/sshd.dpkg-old /etc/pam.d/x.dpkg-old
        NAME=closed PATH={tmp_path}/bin /bin/sh {ROOT}/debian/pam-teleport-audit.postinst triggered /etc/pam.d 2>&- \
            && echo 0 >{tmp_path}/out/closed.rc || echo $? >{tmp_path}/out/closed.rc
        cp /etc/pam.d/sshd.dpkg-old /etc/pam.d/y.dpkg-old; rm -f {tmp_path}/bin/logger; trig nologger
        """,
    )
    named = "pam-teleport-audit: WARNING: {} no longer loads pam_teleport_audit"
    first = files["first.err"]
    assert named.format("/etc/pam.d/sshd") in first and "then remove /etc/pam.d/sshd.dpkg-old" in first, first
    logged = "-p authpriv.warning -t pam-teleport-audit -- WARNING: {} no longer loads pam_teleport_audit"
    assert logged.format("/etc/pam.d/sshd") in files["first.log"], files
    assert (files["again.rc"], files["again.err"], "again.log" in files) == ("0\n", "", False), files
    assert files["new.err"].count("WARNING") == 1 and named.format("/etc/pam.d/a b") in files["new.err"], files
    assert files["relinked.err"].count("WARNING") == 1 and named.format("/etc/pam.d/sshd") in files["relinked.err"]
    assert files["closed.rc"] == "0\n" and logged.format("/etc/pam.d/x") in files["closed.log"], files
    assert files["nologger.rc"] == "0\n" and named.format("/etc/pam.d/y") in files["nologger.err"], files


def test_pam_d_trigger_ignores_a_metadata_change_and_quotes_the_paths_it_prints(tmp_path: Path) -> None:
    """A .dpkg-old once named is not named again when only its metadata changes (a hardening tool's
    `chmod 644 /etc/pam.d/*`, chown, touch: each sets the ctime the trigger looks at); a change of its
    lines is named again. The command the warning prints is one to paste: a path with a space or a
    quote is quoted, and the shell gives the command the whole path."""
    line = f"session optional pam_python.so {ENTRY}"
    old = "/etc/pam.d/it's my sshd.dpkg-old"
    files = run_trigger(
        tmp_path,
        f"""printf '%s\\n' '{line}' >"{old}"; echo 'session required pam_unix.so' >"{old[:-9]}"
        trig first
        sleep 0.05; chmod 600 "{old}"; trig chmod
        sleep 0.05; chown 1:1 "{old}"; trig chown
        sleep 0.05; touch -m -d 2020-01-01 "{old}"; trig touch
        sleep 0.05; echo '# edited' >>"{old}"; trig edited
        """,
    )
    assert files["first.err"].count("WARNING") == 1, files
    for quiet in ("chmod", "chown", "touch"):
        assert (files[f"{quiet}.rc"], files[f"{quiet}.err"], f"{quiet}.log" in files) == ("0\n", "", False), quiet
    assert files["edited.err"].count("WARNING") == 1, files
    printed = re.search(r"run `(pam-teleport-audit install --pam-file [^`]*)`", files["first.err"])
    assert printed, files["first.err"]
    assert printed[1] == "pam-teleport-audit install --pam-file '/etc/pam.d/it'\\''s my sshd'", printed[1]
    stub = tmp_path / "stub" / "pam-teleport-audit"  # prints its arguments, one a line
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{stub.parent}:/usr/bin:/bin"}
    argv = subprocess.run(["sh", "-c", printed[1]], capture_output=True, text=True, check=True, env=env).stdout
    argv = argv.splitlines()
    assert argv == ["install", "--pam-file", old[:-9]], argv
    assert "then remove '/etc/pam.d/it'\\''s my sshd.dpkg-old'" in files["first.err"], files["first.err"]


def test_removal_is_not_refused_for_lines_that_load_another_copy(
    built: debbuild.Built, host, pam_service, tmp_path: Path
) -> None:
    """The prerm refuses removal while a PAM line loads the package's module. A line that loads another
    copy of it (pip's, in /usr/local) goes on loading after the removal: it does not hold the package.
    One naming the package's copy does, by whatever path (a symlink to it)."""
    proc = apt("install", "--no-install-recommends", str(built.deb))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    copy = tmp_path / "site" / "pam_teleport_audit" / "pam_entry.py"
    copy.parent.mkdir(parents=True)
    shutil.copy(ENTRY, copy)
    pip = pam_service(f"account optional pam_python.so {copy}\nsession optional pam_python.so {copy} debug\n")
    link = tmp_path / "link"
    link.symlink_to(Path(ENTRY).parent.parent)
    linked = pam_service(f"session optional pam_python.so {link}/pam_teleport_audit/pam_entry.py\n")
    proc = apt("remove", PACKAGE)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and installed(), out
    assert f"{PAM_DIR}/{linked}:1:" in out and f"{PAM_DIR}/{pip}:" not in out, out
    (PAM_DIR / linked).unlink()
    proc = apt("remove", PACKAGE)
    assert proc.returncode == 0 and not installed(), proc.stdout + proc.stderr
    assert (PAM_DIR / pip).read_text().count(str(copy)) == 2, "the removal leaves PAM files alone"


DEBIAN_DEFAULTS = "/usr/share/python3/debian_defaults"  # python3-minimal's: the default and supported Pythons


def test_trigger_byte_compiles_the_module_and_never_fails(tmp_path: Path) -> None:
    """A release upgrade (Debian 12 -> 13) changes python3-minimal's debian_defaults but never reconfigures
    this package, and nothing else writes the bytecode of the new Python (measured: docs/packaging.md,
    "Release upgrade"). The trigger runs `py3compile -p pam-teleport-audit`, for that trigger and for the
    /etc/pam.d one; a failing py3compile, even with stderr closed, never fails it (it would fail the upgrade)."""
    files = run_trigger(
        tmp_path,
        f"""trig python; export PY3COMPILE_RC=1; trig failing
        NAME=closed PATH={tmp_path}/bin /bin/sh {ROOT}/debian/pam-teleport-audit.postinst \\
            triggered {DEBIAN_DEFAULTS} 2>&- && echo 0 >{tmp_path}/out/closed.rc || echo $? >{tmp_path}/out/closed.rc
        """,
        trigger=DEBIAN_DEFAULTS,
    )
    assert (files["python.rc"], files.get("python.py3compile")) == ("0\n", f"-p {PACKAGE}\n"), files
    assert files["failing.rc"] == "0\n" and files["failing.py3compile"] == f"-p {PACKAGE}\n", files
    assert "warning: py3compile failed" in files["failing.err"], files
    assert (files["closed.rc"], files["closed.py3compile"]) == ("0\n", f"-p {PACKAGE}\n"), files
    (tmp_path / "pam.d").mkdir()
    assert run_trigger(tmp_path / "pam.d", "trig pam")["pam.py3compile"] == f"-p {PACKAGE}\n"


def test_a_new_default_python_gets_the_bytecode(built: debbuild.Built, host) -> None:
    """The installed package, its bytecode for the Python pam_python embeds gone (as after a release
    upgrade, where that Python is new): python3-minimal's debian_defaults changing (here: its file trigger
    activated by hand, as dpkg does when python3-minimal is upgraded) writes it again, so Teleport logins
    load the module from bytecode (doctor's check, which never writes any)."""
    proc = apt("install", "--no-install-recommends", str(built.deb))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    python = doctor.embedded_python(doctor.find_pam_python() or "")
    assert python
    folder = Path(ENTRY).parent
    for pyc in folder.glob("__pycache__/*.pyc"):
        pyc.unlink()
    assert doctor.bytecode_check(python, str(folder)).status == doctor.WARN
    activate = subprocess.run(
        ["dpkg-trigger", "--no-await", DEBIAN_DEFAULTS], capture_output=True, text=True, check=False
    )
    assert activate.returncode == 0, activate.stdout + activate.stderr
    trigger = dpkg("--triggers-only", "--pending")
    assert trigger.returncode == 0, trigger.stdout + trigger.stderr
    check = doctor.bytecode_check(python, str(folder))
    assert check.status == doctor.PASS, (check.line(), trigger.stdout + trigger.stderr)
