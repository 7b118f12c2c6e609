"""Every flow type defined in the process, by type name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import DefinitionError, UnknownFlowTypeError

if TYPE_CHECKING:
    from .flow import Flow

_types: dict[str, type[Flow]] = {}


def register(cls: type[Flow]) -> None:
    """Add ``cls`` under its type name; a different class under the same name is an error."""
    name = cls.type_name
    known = _types.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise DefinitionError(
            f"flow type name {name!r} is taken by {known.__module__}.{known.__qualname__};"
            f" give {cls.__module__}.{cls.__qualname__} another with"
            " class X(Flow, type_name='...')"
        )
    _types[name] = cls


def unregister(name: str) -> None:
    """Forget the flow type called ``name`` (tests and reloads)."""
    _types.pop(name, None)


def flow_types() -> dict[str, type[Flow]]:
    """Return every registered flow type, sorted by name."""
    return dict(sorted(_types.items()))


def get_flow_type(name: str) -> type[Flow]:
    """Return the flow class called ``name`` or raise :class:`UnknownFlowTypeError`."""
    try:
        return _types[name]
    except KeyError:
        raise UnknownFlowTypeError(
            f"no flow type {name!r} is defined (known: {', '.join(sorted(_types)) or 'none'})"
        ) from None


def find_flow_type(name: str) -> type[Flow] | None:
    """Return the flow class called ``name``, or ``None`` when it is not defined (any more)."""
    return _types.get(name)


def row_problem(type_name: str, state: str) -> str | None:
    """Say what is wrong with a stored (type, state) pair, or ``None`` when both are declared.

    Listings use this to flag rows whose class or state no longer exists instead of failing.
    """
    cls = _types.get(type_name)
    if cls is None:
        return f"flow type {type_name!r} is not defined in this process"
    if state not in cls.states:
        return f"state {state!r} is not declared on {cls.type_name}"
    return None
