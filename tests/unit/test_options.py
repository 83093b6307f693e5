"""Module options: parsed in one place, unknown ones reported, never fatal."""

from __future__ import annotations

import pytest

from pam_teleport_audit.pam_module import DEFAULT_LOG_SOCKET, DEFAULT_TIMEOUT_MS, exe_is_teleport, parse_options


def test_defaults() -> None:
    assert parse_options([]) == {
        "fail_closed": False,
        "debug": False,
        "teleport_exe": (),
        "rhost_env": None,
        "timeout_ms": DEFAULT_TIMEOUT_MS,
        "log_socket": DEFAULT_LOG_SOCKET,
        "problems": (),
    }


def test_every_option() -> None:
    opts = parse_options(
        [
            "fail_closed",
            "debug",
            "teleport_exe=/opt/t/teleport",
            "teleport_exe=memfd:teleport-session",
            "rhost_env=TELEPORT_CLIENT_ADDR",
            "timeout_ms=250",
            "log_socket=/run/log.sock",
        ]
    )
    assert opts["fail_closed"] and opts["debug"]
    assert opts["teleport_exe"] == ("/opt/t/teleport", "memfd:teleport-session")
    assert opts["rhost_env"] == "TELEPORT_CLIENT_ADDR"
    assert opts["timeout_ms"] == 250
    assert opts["log_socket"] == "/run/log.sock"
    assert opts["problems"] == ()


@pytest.mark.parametrize(
    "arg",
    [
        "fail_open",
        "fail_closed=yes",
        "teleport_exe=teleport",
        "teleport_exe=memfd:",
        "rhost_env=A-B",
        "rhost_env=",
        "timeout_ms=0",
        "timeout_ms=abc",
        "timeout_ms=999999",
        "log_socket=dev/log",
        "debug=1",
    ],
)
def test_bad_options_are_reported_and_ignored(arg: str) -> None:
    opts = parse_options([arg, "fail_closed"])
    assert len(opts["problems"]) == 1 and repr(arg.partition("=")[2] or arg)[1:-1] in opts["problems"][0]
    assert opts["fail_closed"]  # the good option still counts
    assert opts["timeout_ms"] == DEFAULT_TIMEOUT_MS


def test_teleport_exe_through_a_symlink_names_its_target_too(tmp_path) -> None:
    """teleport-update makes /usr/local/bin/teleport a symlink; /proc/self/exe names the target."""
    target = tmp_path / "versions" / "18.1.0" / "bin" / "teleport"
    target.parent.mkdir(parents=True)
    target.write_text("")
    link = tmp_path / "teleport"
    link.symlink_to(target)
    opts = parse_options([f"teleport_exe={link}", f"teleport_exe={target}"])
    assert opts["teleport_exe"] == (str(link), str(target), str(target)) and opts["problems"] == ()
    assert exe_is_teleport(str(target), opts["teleport_exe"])
