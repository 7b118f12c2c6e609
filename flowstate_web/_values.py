"""What the engine stores: one rule for every value, checked before anything is written.

The same rule on SQLite and PostgreSQL (``docs/limits.md``): strings hold no NUL and no lone
surrogate (PostgreSQL text and its JSON cannot hold them; SQLite would keep what PostgreSQL
refuses), integers fit in 64 bits, floats are finite, lists and dicts nest at most
:data:`MAX_DEPTH` deep, and each kind of value has a size limit. A value outside the rule is
refused with :class:`PayloadValidationError` naming the field; only the text of an exception
recorded by an error transition is repaired instead (:func:`describe_error`), so a failure
can always be recorded.
"""

from __future__ import annotations

import math
import re
import traceback
import types
import typing
from typing import Any, Final

from .errors import DefinitionError, PayloadValidationError

#: Lists and dicts may nest this deep in one value (a flat dict is depth 1).
MAX_DEPTH: Final = 64
#: Size limits, in bytes of compact UTF-8 JSON (escapes inside strings are not counted).
MAX_PROPS_BYTES: Final = 256 * 1024
MAX_ARTEFACT_BYTES: Final = 16 * 1024 * 1024
MAX_META_BYTES: Final = 64 * 1024
#: Length limits, in characters: the ``actor`` column is ``VARCHAR(200)``.
MAX_ACTOR: Final = 200
MAX_REASON: Final = 4000
#: Bounds on what an error state records, so one huge exception cannot bloat the history.
MAX_ERROR_TYPE: Final = 200
MAX_ERROR_MESSAGE: Final = 2000
MAX_TRACEBACK: Final = 8000
#: JSON integers are kept to what both databases' JSON functions read back exactly.
MAX_INT: Final = 2**63 - 1
MIN_INT: Final = -(2**63)

#: What no stored string may contain: NUL and lone surrogates (U+D800..U+DFFF).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT: Final = "\ufffd"

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


def check(value: Any, expected: type, *, what: str, max_bytes: int | None = None) -> Any:
    """Return ``value`` (floats normalised) if it is an ``expected`` the engine can store.

    The value must be JSON (:func:`json_size`) and, when ``max_bytes`` is given, at most
    that big. Raises :class:`PayloadValidationError` naming ``what`` otherwise.
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
    size = json_size(value, what=what)
    if max_bytes is not None and size > max_bytes:
        raise PayloadValidationError(f"{what} is too large: {_kb(size)} (limit {_kb(max_bytes)})")
    return value


def check_size(value: Any, max_bytes: int, *, what: str, record: bool = False) -> None:
    """Raise :class:`PayloadValidationError` if ``value``'s JSON is over ``max_bytes``.

    ``record=True``: ``value`` is a dict of fields (a flow's props) whose own level does
    not count towards :data:`MAX_DEPTH`; each field's value may nest that deep.
    """
    largest = ""
    if record and isinstance(value, dict):
        size = 1 + max(len(value), 1)
        sizes: dict[str, int] = {}
        for key, item in value.items():
            sizes[str(key)] = _walk(item, what, 0)
            size += _string_size(str(key), what) + 3 + sizes[str(key)]
        if sizes:
            name = max(sizes, key=sizes.__getitem__)
            largest = f"; the largest is {name!r} ({_kb(sizes[name])})"
    else:
        size = json_size(value, what=what)
    if size > max_bytes:
        raise PayloadValidationError(
            f"{what} is too large: {_kb(size)} (limit {_kb(max_bytes)}){largest}"
        )


def check_text(value: Any, max_chars: int, *, what: str) -> str | None:
    """Return ``value`` if it is ``None`` or a storable string of at most ``max_chars``.

    Raises :class:`PayloadValidationError` naming ``what`` otherwise.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadValidationError(f"{what} must be str, got {type(value).__name__}")
    if len(value) > max_chars:
        raise PayloadValidationError(
            f"{what} is too long: {len(value):,} characters (limit {max_chars:,})"
        )
    _check_string(value, what)
    return value


def check_meta(meta: Any, *, what: str) -> dict[str, Any] | None:
    """Return ``meta`` if it is ``None`` or a dict the engine can store (JSON, bounded)."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise PayloadValidationError(f"{what} must be a dict, got {type(meta).__name__}")
    check_size(meta, MAX_META_BYTES, what=what)
    return meta


def text_problem(value: str) -> str | None:
    """Return why ``value`` cannot be stored (a NUL or a lone surrogate), or ``None``."""
    if value.isascii():
        return "contains a NUL character" if "\x00" in value else None
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    ch = found.group()
    if ch == "\x00":
        return "contains a NUL character"
    return f"contains a lone surrogate (U+{ord(ch):04X}) at index {found.start()}"


def clean_text(value: str) -> str:
    """Return ``value`` with NUL and lone surrogates replaced by U+FFFD (storable everywhere)."""
    if value.isascii() and "\x00" not in value:
        return value
    return _UNSTORABLE.sub(REPLACEMENT, value)


def cut(value: str, limit: int, *, keep: str = "start", total: int | None = None) -> str:
    """Return ``value`` cut to at most ``limit`` characters with a marker saying how much went.

    ``keep="end"`` keeps the end instead (where a traceback says what failed). ``total``:
    the length of the text ``value`` was taken from, if it is only its start.
    """
    total = len(value) if total is None else total
    if total <= limit:
        return value
    marker = f"… [cut at {limit:,} of {total:,} characters]"
    room = max(limit - len(marker), 0)
    if keep == "end":
        return marker + value[len(value) - room :]
    return value[:room] + marker


def describe_error(error: BaseException) -> tuple[str, str, str]:
    """Return ``(type, message, traceback)`` of ``error``, safe to store and bounded.

    Never raises: an exception whose ``__str__`` raises, a huge message, NUL or lone
    surrogates in any part, or a long chain still give storable text within
    :data:`MAX_ERROR_TYPE`, :data:`MAX_ERROR_MESSAGE` and :data:`MAX_TRACEBACK` characters.
    """
    cls = type(error)
    try:
        name = f"{cls.__module__}.{cls.__qualname__}".removeprefix("builtins.")
    except Exception:  # pragma: no cover - a class whose name attributes are not str
        name = "<unnamed exception type>"
    err_type = cut(clean_text(str(name)), MAX_ERROR_TYPE)
    err_msg = cut(clean_text(_safe_str(error)), MAX_ERROR_MESSAGE)
    try:
        # Each part of the formatted chain is cut on its own: a 1 MB message must not push
        # the frames (what the operator needs) out of the kept end of the traceback.
        parts = traceback.format_exception(error)
        text = "".join(cut(part, MAX_ERROR_MESSAGE) for part in parts)
    except Exception as exc:
        text = f"<traceback could not be formatted: {type(exc).__name__}>\n{err_type}: {err_msg}"
    err_tb = cut(clean_text(text), MAX_TRACEBACK, keep="end")
    return err_type, err_msg, err_tb


def _safe_str(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception as exc:
        return f"<str() of the exception raised {type(exc).__name__}>"
    return text if isinstance(text, str) else repr(text)  # pragma: no cover - str() always str


def json_size(value: Any, *, what: str) -> int:
    """Return the size of ``value`` as compact UTF-8 JSON, checking it can be stored.

    Raises :class:`PayloadValidationError` naming ``what`` for anything JSON cannot hold
    (non-str keys, NaN/infinity, objects), strings with NUL or lone surrogates, integers
    beyond 64 bits, and lists/dicts nested deeper than :data:`MAX_DEPTH` (or containing
    themselves). The size leaves out the escapes inside strings.
    """
    return _walk(value, what, 0)


def _walk(value: Any, what: str, depth: int) -> int:
    # Recursion is bounded by MAX_DEPTH, far below Python's limit.
    if isinstance(value, str):
        return _string_size(value, what) + 2
    if value is None:
        return 4
    if isinstance(value, bool):
        return 4 if value else 5
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise PayloadValidationError(
                f"{what}: a {value.bit_length()}-bit integer does not fit in 64 bits"
                " (store it as a string)"
            )
        return len(str(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadValidationError(f"{what}: {value!r} cannot be stored in JSON")
        return len(repr(value))
    if isinstance(value, list | dict):
        if depth >= MAX_DEPTH:
            raise PayloadValidationError(
                f"{what}: lists/dicts nested deeper than {MAX_DEPTH} levels"
                " (or a list/dict that contains itself)"
            )
        size = 1 + max(len(value), 1)  # brackets and commas
        if isinstance(value, list):
            for item in value:
                size += _walk(item, what, depth + 1)
            return size
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadValidationError(
                    f"{what}: dict key {key!r:.60} is {type(key).__name__}; JSON keys must be str"
                )
            size += _string_size(key, what) + 3 + _walk(item, what, depth + 1)
        return size
    raise PayloadValidationError(
        f"{what}: {type(value).__name__} value {_safe_repr(value)} cannot be stored in JSON"
    )


def _string_size(value: str, what: str) -> int:
    if value.isascii():
        if "\x00" in value:
            _check_string(value, what)
        return len(value)
    _check_string(value, what)
    return len(value.encode())


def _check_string(value: str, what: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise PayloadValidationError(
            f"{what}: string {_safe_repr(value[:60])} {problem};"
            " NUL and lone surrogates cannot be stored"
        )


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text[:60]


def _kb(n: int) -> str:
    return f"{n:,} bytes"
