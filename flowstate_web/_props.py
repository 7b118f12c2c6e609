"""Props: checking values before anything is written, and the bounded record of what changed.

:func:`check_props` is the one check of prop values (create, assignment, ``update()``); it
reports every problem at once. :func:`merged_props` puts an instance's staged edits on top of
the stored props for the transition or ``save()`` that writes them, with the old -> new
record its history row keeps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from . import _values
from .errors import PayloadValidationError

if TYPE_CHECKING:
    from .flow import Flow

#: Bounds on the prop changes a history row records: each old/new value's JSON, and all of
#: them together (past it, further values are recorded as truncated with an empty preview).
MAX_CHANGE_VALUE: Final = 500
MAX_CHANGES_TOTAL: Final = 8000


def check_props(
    cls: type[Flow], props: Mapping[str, Any], *, where: str, partial: bool = False
) -> dict[str, Any]:
    """Return ``props`` checked (with defaults filled in unless ``partial``).

    Raises one :class:`PayloadValidationError` naming every unknown, missing (unless
    ``partial``: an update names only what it changes), ``None`` or mistyped prop.
    """
    fields = cls.prop_fields
    problems: list[tuple[str, str]] = [
        (name, f"unknown prop {name!r}") for name in props if name not in fields
    ]
    clean: dict[str, Any] = {}
    for name, prop in fields.items():
        if name not in props:
            if partial:
                continue
            if prop.required:
                problems.append((name, f"prop {name!r} is missing"))
            else:
                clean[name] = prop.default
            continue
        value = props[name]
        if value is None:
            problems.append((name, f"prop {name!r} is None"))
            continue
        try:
            clean[name] = _values.check(value, prop.runtime_type, what=f"prop {name!r}")
        except PayloadValidationError as exc:
            problems.append((name, str(exc)))
    if problems:
        text = "; ".join(message for _, message in problems)
        if any(message.startswith("unknown") for _, message in problems):
            text += f" (declared props: {', '.join(fields) or 'none'})"
        raise PayloadValidationError(f"{where}: {text}", problems)
    if not partial:
        _values.check_size(clean, _values.MAX_PROPS_BYTES, what=f"{where}: props", record=True)
    return clean


def merged_props(flow: Flow) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Return the stored props with ``flow``'s staged edits on top, and what changed (bounded).

    The changes are ``None`` when every staged value equals the stored one.
    """
    stored = flow._props
    changed = {
        name: value
        for name, value in flow._staged.items()
        if name not in stored or stored[name] != value or type(stored[name]) is not type(value)
    }
    if not changed:
        return stored, None
    budget = MAX_CHANGES_TOTAL
    changes: dict[str, Any] = {}
    for name, new in changed.items():
        old = stored.get(name, flow.prop_fields[name].default if name in flow.prop_fields else None)
        entry = {}
        for key, value in (("old", old), ("new", new)):
            entry[key], used = _bounded(value, budget)
            budget -= used
        changes[name] = entry
    merged = {**stored, **changed}
    where = f"{flow.type_name} #{flow.id}: props"
    _values.check_size(merged, _values.MAX_PROPS_BYTES, what=where, record=True)
    return merged, changes


def _bounded(value: Any, budget: int) -> tuple[Any, int]:
    """Return ``value``, or a truncated preview of its JSON if longer than allowed."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    limit = max(0, min(MAX_CHANGE_VALUE, budget))
    if len(text) <= limit:
        return value, len(text)
    return {"truncated": text[: min(limit, 200)], "chars": len(text)}, min(limit, 200) + 40
