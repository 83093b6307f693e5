"""Hypothesis strategies for PAM service files (shared by the installer's unit tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from pam_teleport_audit.admin.pamstack import dict_resolver

ENTRY = "/usr/lib/python3/dist-packages/pam_teleport_audit/pam_entry.py"
# What the include lines of pam_file() name (_other below), with stacks that end or jump;
# any other name cannot be read.
INCLUDES = dict_resolver(
    {
        "common-account": b"account [success=1 default=ignore] pam_unix.so\naccount requisite pam_deny.so\n",
        "common-session": b"session [default=1] pam_permit.so\nsession requisite pam_deny.so\n",
        "password-auth": b"account sufficient pam_localuser.so\nsession optional pam_keyinit.so revoke\n",
        "postlogin": b"session [success=1 default=ignore] pam_succeed_if.so quiet\nsession sufficient pam_permit.so\n",
    }
)

_types = st.sampled_from(["auth", "account", "session", "password", "-session", "Session", "ACCOUNT"])
_controls = st.sampled_from(
    [
        "required",
        "Requisite",
        "optional",
        "sufficient",
        "[success=ok default=bad]",
        "[success=1 default=ignore]",
        "[default=2]",
        "[success=done new_authtok_reqd=done default=die]",
    ]
)
_modules = st.sampled_from(
    ["pam_unix.so", "pam_loginuid.so", "/lib/security/pam_loginuid.so", "pam_motd.so", "pam_tty_audit.so", "pam_env.so"]
)
_args = st.lists(st.sampled_from(["nullok", "[a b]", "x=1", "enable=*", "quiet", "[q\\]r]"]), max_size=3)
_gap = st.sampled_from([" ", "  ", "\t", "    "])
_comment = st.sampled_from(["", "", " # note", "# [x] #y", "\t#"])


@st.composite
def rule(draw: st.DrawFn) -> str:
    parts = [draw(_types), draw(_controls), draw(_modules), *draw(_args)]
    text = ""
    for word in parts:
        text += word + draw(_gap)
    if draw(st.booleans()) and len(parts) > 3:
        text = text.replace(parts[2] + " ", parts[2] + " \\\n    ", 1)  # a continuation
    return text.rstrip(" \t") + draw(_comment)


_other = st.sampled_from(
    [
        "",
        "# comment",
        "#%PAM-1.0",
        "@include common-account",
        "@include common-session",
        "account include password-auth",
        "session substack postlogin",
        "session include postlogin",
        "account substack password-auth",
        "   ",
    ]
)
_anchors = st.sampled_from(["session required pam_loginuid.so", "account required pam_nologin.so"])


@st.composite
def pam_file(draw: st.DrawFn) -> bytes:
    """Plausible service files: random rules, comments, includes, jumps, with LF or CR LF endings."""
    lines = draw(st.lists(st.one_of(rule(), _other, _anchors), min_size=0, max_size=14))
    if draw(st.booleans()):  # usually installable: make sure both anchors are there somewhere
        for anchor in ("account required pam_nologin.so", "session required pam_loginuid.so"):
            lines.insert(draw(st.integers(0, len(lines))), anchor)
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    text = ending.join(line.replace("\n", ending) for line in lines)
    if lines and draw(st.booleans()):
        text += ending
    return text.encode()


def noisy_bytes() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, and bytes made of PAM's special characters."""
    alphabet = st.sampled_from([b"#", b"\\", b"[", b"]", b"\r", b"\n", b" ", b"\t", b"a", b"=", b"\xff", b"@"])
    return st.one_of(st.binary(max_size=300), st.lists(alphabet, max_size=80).map(b"".join), pam_file())
