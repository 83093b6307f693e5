"""A tiny immutable record type for the code that runs inside PAM.

pam_python starts a fresh interpreter for every PAM handle, so every import
is paid at every login: dataclasses (with inspect) and typing cost about
30 ms there, against 16 ms for pam_python itself. This costs nothing.
"""


class Struct:
    """Fields are named by __slots__; set positionally or by keyword; read-only."""

    __slots__: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}  # noqa: RUF012 - per subclass, never mutated

    def __init__(self, *args: object, **kwargs: object) -> None:
        names = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} values")
        values = {**self._defaults, **dict(zip(names, args, strict=False)), **kwargs}
        for name in names:
            if name not in values:
                raise TypeError(f"{type(self).__name__} needs {name}")
            object.__setattr__(self, name, values.pop(name))
        if values:
            raise TypeError(f"{type(self).__name__} has no field {next(iter(values))}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({inner})"
