"""A bounded, JSON-aware diff of two values: added, removed and changed paths.

Used by the admin to show what a retried step wrote differently into an artefact. Pure: no
database, no Flask. Paths are jq-style (``.items[2].price``, ``.["odd key"]``, ``.`` for the
whole value). Objects are compared key by key; arrays by aligning equal items (so an item
inserted at the front is one ``added``, not a change of every index after it), falling back
to index by index for long arrays. ``true`` and ``1`` differ; ``1`` and ``1.0`` do not.

Everything is bounded: at most ``max_changes`` changes are reported (``truncated`` says
more exist), values are shown as compact JSON cut at ``value_chars`` characters, and
structures nested deeper than ``max_depth`` are compared whole.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any, Final, Literal

Kind = Literal["added", "removed", "changed"]

MAX_CHANGES: Final = 200
VALUE_CHARS: Final = 120
MAX_DEPTH: Final = 32
#: Arrays whose lengths multiply to more than this are compared index by index.
ALIGN_LIMIT: Final = 250_000
_IDENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: where, what kind, and the old and new values as short JSON text."""

    kind: Kind
    path: str
    old: str | None = None
    new: str | None = None


@dataclass(frozen=True, slots=True)
class JsonDiff:
    """The differences between two JSON values, in document order."""

    changes: tuple[Change, ...]
    #: More changes exist than were collected (see ``max_changes``).
    truncated: bool = False

    @property
    def empty(self) -> bool:
        """Return whether both values are the same."""
        return not self.changes

    def count(self, kind: Kind) -> int:
        """Return how many of the collected changes are of ``kind``."""
        return sum(1 for c in self.changes if c.kind == kind)

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready description (stable keys)."""
        return {
            "changes": [
                {"kind": c.kind, "path": c.path, "old": c.old, "new": c.new} for c in self.changes
            ],
            "truncated": self.truncated,
        }


class _Full(Exception):
    """Enough changes were collected."""


def diff(
    old: Any,
    new: Any,
    *,
    max_changes: int = MAX_CHANGES,
    value_chars: int = VALUE_CHARS,
    max_depth: int = MAX_DEPTH,
) -> JsonDiff:
    """Return what changed from ``old`` to ``new`` (both JSON-like values)."""
    walker = _Walker(max_changes, value_chars, max_depth)
    try:
        walker.walk(old, new, "", 0)
    except _Full:
        return JsonDiff(tuple(walker.found[:max_changes]), truncated=True)
    return JsonDiff(tuple(walker.found))


def short(value: Any, limit: int = VALUE_CHARS) -> str:
    """Return ``value`` as compact JSON of at most ``limit`` characters (``…`` when cut).

    Never fails: text that UTF-8 cannot hold (lone surrogates) is shown escaped, and values
    JSON cannot encode are shown by their ``repr`` (or a marker when nested too deep).
    """
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (ValueError, RecursionError):
        try:
            text = repr(value)
        except RecursionError:
            text = f"<{_kind_of(value)} nested too deep to show>"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def key_path(parent: str, key: str) -> str:
    """Return the jq-style path of ``key`` inside the object at ``parent``."""
    if _IDENT.match(key):
        return f"{parent}.{key}"
    return f"{parent}.[{short(key, 80)}]" if not parent else f"{parent}[{short(key, 80)}]"


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _canonical(value: Any) -> str | None:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (ValueError, RecursionError):
        return None


def _same_scalar(a: Any, b: Any) -> bool:
    if _kind_of(a) != _kind_of(b):
        return False
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


class _Walker:
    def __init__(self, max_changes: int, value_chars: int, max_depth: int) -> None:
        self.max_changes = max_changes
        self.value_chars = value_chars
        self.max_depth = max_depth
        self.found: list[Change] = []

    def add(self, kind: Kind, path: str, old: Any = None, new: Any = None) -> None:
        if len(self.found) >= self.max_changes:
            raise _Full
        self.found.append(
            Change(
                kind=kind,
                path=path or ".",
                old=None if kind == "added" else short(old, self.value_chars),
                new=None if kind == "removed" else short(new, self.value_chars),
            )
        )

    def walk(self, a: Any, b: Any, path: str, depth: int) -> None:
        kind = _kind_of(a)
        if kind != _kind_of(b):
            self.add("changed", path, a, b)
        elif depth >= self.max_depth and kind in ("object", "array"):
            if not _same_whole(a, b):
                self.add("changed", path, a, b)
        elif kind == "object":
            self.objects(a, b, path, depth)
        elif kind == "array":
            self.arrays(list(a), list(b), path, depth)
        elif not _same_scalar(a, b):
            self.add("changed", path, a, b)

    def objects(self, a: dict[Any, Any], b: dict[Any, Any], path: str, depth: int) -> None:
        for key, value in a.items():
            where = key_path(path, str(key))
            if key not in b:
                self.add("removed", where, old=value)
            else:
                self.walk(value, b[key], where, depth + 1)
        for key, value in b.items():
            if key not in a:
                self.add("added", key_path(path, str(key)), new=value)

    def arrays(self, a: list[Any], b: list[Any], path: str, depth: int) -> None:
        if len(a) * len(b) > ALIGN_LIMIT:
            self.by_index(a, b, path, depth, 0, 0)
            return
        keys_a, keys_b = _keys(a, "a"), _keys(b, "b")
        matcher = SequenceMatcher(None, keys_a, keys_b, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                continue
            self.by_index(a[i1:i2], b[j1:j2], path, depth, i1, j1)

    def by_index(
        self, a: Sequence[Any], b: Sequence[Any], path: str, depth: int, i0: int, j0: int
    ) -> None:
        """Pair ``a`` and ``b`` item by item; the surplus is removed (old index) or added."""
        for k in range(min(len(a), len(b))):
            self.walk(a[k], b[k], f"{path}[{j0 + k}]", depth + 1)
        for k in range(len(b), len(a)):
            self.add("removed", f"{path}[{i0 + k}]", old=a[k])
        for k in range(len(a), len(b)):
            self.add("added", f"{path}[{j0 + k}]", new=b[k])


def _keys(items: list[Any], side: str) -> list[str]:
    # An item JSON cannot encode gets a key of its own, so it never matches another.
    return [_canonical(v) or f"\0{side}{i}" for i, v in enumerate(items)]


def _same_whole(a: Any, b: Any) -> bool:
    ca, cb = _canonical(a), _canonical(b)
    if ca is not None and cb is not None:
        return ca == cb
    try:
        return bool(a == b)
    except RecursionError:
        return False
