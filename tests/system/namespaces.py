"""Namespaces for system tests and benchmarks alike (no pytest here: benchmarks import it)."""

from __future__ import annotations


def private_mounts(script: str, netns: str | None = None) -> list[str]:
    """argv running a shell script in a private mount namespace (and a network namespace):
    how a test binds its own file over a fixed system path without touching the real one."""
    enter = ["ip", "netns", "exec", netns] if netns else []
    return [*enter, "unshare", "--mount", "--propagation", "private", "sh", "-c", script]
