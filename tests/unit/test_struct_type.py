"""The in-PAM record type that stands in for dataclasses."""

from __future__ import annotations

import pytest

from pam_teleport_audit.pam_module import Struct


class Point(Struct):
    __slots__ = ("x", "y", "label")
    _defaults = {"label": None}  # noqa: RUF012


def test_positional_keyword_and_default() -> None:
    assert Point(1, 2) == Point(x=1, y=2) == Point(1, y=2, label=None)
    assert Point(1, 2, "a").label == "a"
    assert repr(Point(1, 2)) == "Point(x=1, y=2, label=None)"
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert Point(1, 2) != Point(2, 1) and Point(1, 2) != (1, 2, None)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [((1,), {}, "needs y"), ((1, 2, 3, 4), {}, "at most 3"), ((1, 2), {"z": 0}, "no field z")],
)
def test_wrong_fields_are_errors(args, kwargs, message) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_read_only() -> None:
    with pytest.raises(AttributeError):
        Point(1, 2).x = 3  # type: ignore[misc]
