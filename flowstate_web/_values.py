"""Type checks for props and artefacts: what JSON can hold, checked before anything is written."""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from .errors import DefinitionError, PayloadValidationError

#: The Python types a JSON column can hold and give back unchanged.
JSON_TYPES: tuple[type, ...] = (str, int, float, bool, dict, list)


def base_type(declared: Any, *, owner: str, name: str) -> type:
    """Return the runtime class to check values against, or raise :class:`DefinitionError`.

    ``dict[str, int]`` and ``list[str]`` are accepted and checked as ``dict`` and ``list``
    (their contents must be JSON); anything JSON cannot hold is refused at class definition.
    """
    origin = typing.get_origin(declared) or declared
    if isinstance(origin, type) and origin in JSON_TYPES:
        return origin
    raise DefinitionError(
        f"{owner}.{name}: type {type_name(declared)} cannot be stored in JSON;"
        " use str, int, float, bool, dict or list (encode anything else yourself)"
    )


def type_name(declared: Any) -> str:
    """Return a readable name for a declared type (``dict[str, int]``, ``str``)."""
    if isinstance(declared, type) and not isinstance(declared, types.GenericAlias):
        return declared.__name__
    return str(declared).replace("typing.", "")


def check(value: Any, expected: type, *, what: str) -> Any:
    """Return ``value`` (floats normalised) if it is an ``expected`` that JSON can hold.

    Raises :class:`PayloadValidationError` naming ``what`` otherwise.
    """
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise PayloadValidationError(
            f"{what} must be {expected.__name__}, got {type(value).__name__}"
        )
    _check_json(value, what)
    return value


def _check_json(value: Any, what: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadValidationError(f"{what}: {value!r} cannot be stored in JSON")
        return
    if isinstance(value, list):
        for item in value:
            _check_json(item, what)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadValidationError(
                    f"{what}: dict key {key!r} is {type(key).__name__}; JSON keys must be str"
                )
            _check_json(item, what)
        return
    raise PayloadValidationError(
        f"{what}: {type(value).__name__} value {value!r:.60} cannot be stored in JSON"
    )
