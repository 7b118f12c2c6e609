"""Parse and validate the query string of the instance list: filters, search and cursors.

Everything a list shows is in its query string, so a filtered view is bookmarkable and the
live refresh re-fetches exactly the same view. Anything malformed raises ``BadRequest``
(HTTP 400) naming the parameter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

if TYPE_CHECKING:
    from ..flow import Flow

MAX_TEXT: Final = 200
MAX_STATES: Final = 50
#: Prop types a ``prop=value`` search can compare (JSON scalars).
SEARCHABLE: Final[tuple[type, ...]] = (str, int, float, bool)
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_DATES: Final = ("created_from", "created_to", "updated_from", "updated_to")
#: ``name=value`` names a prop when ``name`` looks like one; otherwise it is a bare value.
_PROP_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class PropSearch:
    """``name=value`` against one declared prop, ``value`` already of the prop's type."""

    name: str
    value: str | int | float | bool
    kind: type


@dataclass(frozen=True, slots=True)
class ListFilter:
    """A validated list view: filters, search, cursor and live flag."""

    states: tuple[str, ...] = ()
    errored: bool | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    updated_from: datetime | None = None
    updated_to: datetime | None = None
    q: str = ""
    flow_id: int | None = None
    prop: PropSearch | None = None
    #: A bare value: flows whose id is ``flow_id`` or any of these props equals it.
    anywhere: tuple[PropSearch, ...] = ()
    #: ``q`` is a bare value (searched in every prop), not ``#id`` or ``name=value``.
    free_text: bool = False
    before: int | None = None
    after: int | None = None
    live: bool = True
    #: ``True``: only flows past their state's timeout; ``False``: only the others.
    stalled: bool | None = None

    @property
    def active(self) -> bool:
        """Return whether any filter or search narrows the list."""
        return bool(
            self.states
            or self.errored is not None
            or self.stalled is not None
            or self.q
            or any(getattr(self, k) is not None for k in _DATES)
        )

    def query(self, **changes: Any) -> dict[str, Any]:
        """Return the query-string arguments of this view (for ``url_for``), with changes.

        Cursors are not carried over unless given in ``changes``.
        """
        f = replace(self, **({"before": None, "after": None} | changes))
        args: dict[str, Any] = {}
        if f.states:
            args["state"] = list(f.states)
        if f.errored is not None:
            args["errored"] = "1" if f.errored else "0"
        if f.stalled is not None:
            args["stalled"] = "1" if f.stalled else "0"
        for key in _DATES:
            value: datetime | None = getattr(f, key)
            if value is not None:
                args[key] = value.strftime("%Y-%m-%dT%H:%M")
        if f.q:
            args["q"] = f.q
        if f.before is not None:
            args["before"] = str(f.before)
        if f.after is not None:
            args["after"] = str(f.after)
        if not f.live:
            args["live"] = "0"
        return args

    def for_bulk(self) -> ListFilter:
        """Return this filter restricted to errored flows, without cursor."""
        return replace(self, errored=True, before=None, after=None)

    def for_bulk_fail(self) -> ListFilter:
        """Return this filter restricted to stalled flows, without cursor."""
        return replace(self, stalled=True, errored=None, before=None, after=None)


def parse(args: MultiDict[str, str], cls: type[Flow]) -> ListFilter:
    """Return the :class:`ListFilter` in ``args`` for flow type ``cls``.

    :raises BadRequest: a malformed date, cursor, flag or search, naming the parameter.
    """
    refuse_nul(args)
    states = tuple(dict.fromkeys(s for s in args.getlist("state") if s))
    if len(states) > MAX_STATES or any(len(s) > MAX_TEXT for s in states):
        raise BadRequest(f"state: at most {MAX_STATES} states of at most {MAX_TEXT} characters")
    dates = {key: _date(args, key) for key in _DATES}
    for lo, hi in (("created_from", "created_to"), ("updated_from", "updated_to")):
        low, high = dates[lo], dates[hi]
        if low is not None and high is not None and low > high:
            raise BadRequest(f"{lo} is after {hi}")
    q = args.get("q", "").strip()
    if len(q) > MAX_TEXT:
        raise BadRequest(f"q: at most {MAX_TEXT} characters")
    flow_id, prop, anywhere = _search(q, cls)
    before, after = _cursor(args, "before"), _cursor(args, "after")
    if before is not None and after is not None:
        raise BadRequest("give either 'before' or 'after', not both")
    return ListFilter(
        states=states,
        errored=_flag(args, "errored"),
        q=q,
        flow_id=flow_id,
        prop=prop,
        anywhere=anywhere,
        free_text=bool(q) and prop is None and not q.startswith("#"),
        before=before,
        after=after,
        live=_flag(args, "live") is not False,
        stalled=_flag(args, "stalled"),
        **dates,
    )


def refuse_nul(args: MultiDict[str, str]) -> None:
    """Refuse NUL characters in any parameter: no database column can hold them (PostgreSQL).

    :raises BadRequest: naming the parameter.
    """
    for key, value in args.items(multi=True):
        if "\x00" in value:
            raise BadRequest(f"{key[:40]}: NUL characters are not allowed")


def parse_flow_id(raw: str) -> int | None:
    """Return ``raw`` as a flow id, or ``None`` when it cannot be one."""
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < len(raw) <= 18 else None


def _flag(args: MultiDict[str, str], key: str) -> bool | None:
    raw = args.get(key, "").strip().lower()
    if not raw:
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise BadRequest(f"{key}: expected 1 or 0, got {raw[:40]!r}")


def _date(args: MultiDict[str, str], key: str) -> datetime | None:
    raw = args.get(key, "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"{key}: expected a date or date-time like 2024-05-01T13:30, got {raw[:40]!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _cursor(args: MultiDict[str, str], key: str) -> int | None:
    raw = args.get(key, "").strip()
    if not raw:
        return None
    value = parse_flow_id(raw)
    if value is None:
        raise BadRequest(f"{key}: the page cursor must be a flow id, got {raw[:40]!r}")
    return value


def _search(
    q: str, cls: type[Flow]
) -> tuple[int | None, PropSearch | None, tuple[PropSearch, ...]]:
    """Return (flow id, ``name=value`` prop, props a bare value may equal) of search ``q``.

    ``#123`` is a flow id; ``name=value`` one declared prop (400 when ``name`` is not a
    prop); anything else a bare value: the flow id when it is one, every string prop, and
    every numeric prop where it parses as a number.
    """
    if not q:
        return None, None, ()
    if q.startswith("#"):
        flow_id = parse_flow_id(q[1:])
        if flow_id is None:
            raise BadRequest(f"q: '#' is followed by a flow id (#123), got {q[:40]!r}")
        return flow_id, None, ()
    name, eq, raw = (part.strip() for part in q.partition("="))
    # "name=value" with a name that could be a prop: a typo'd prop name gets a 400 naming
    # the props; a value that merely holds "=" (base64 "abc==") is a bare value.
    if eq and _PROP_NAME.fullmatch(name) and (name in cls.prop_fields or "=" not in raw):
        field = cls.prop_fields.get(name)
        if field is None:
            known = ", ".join(cls.prop_fields) or "none"
            raise BadRequest(
                f"q: {cls.type_name} has no prop {name[:40]!r} (props: {known});"
                " search a bare value to look in every prop"
            )
        kind = field.runtime_type
        if kind not in SEARCHABLE:
            raise BadRequest(
                f"q: prop {name!r} is a {kind.__name__}; only scalar props are searchable"
            )
        return None, PropSearch(name=name, value=_typed(raw, kind, name), kind=kind), ()
    return parse_flow_id(q), None, _anywhere(q, cls)


def _anywhere(value: str, cls: type[Flow]) -> tuple[PropSearch, ...]:
    """Return one search per prop of ``cls`` that ``value`` can equal (never bool props)."""
    found: list[PropSearch] = []
    for name, field in cls.prop_fields.items():
        kind = field.runtime_type
        if kind is str:
            found.append(PropSearch(name=name, value=value, kind=str))
        elif kind in (int, float):
            try:
                typed = _typed(value, kind, name)
            except BadRequest:
                continue
            found.append(PropSearch(name=name, value=typed, kind=kind))
    return tuple(found)


def _typed(raw: str, kind: type, name: str) -> str | int | float | bool:
    try:
        if kind is bool:
            if raw.lower() in _TRUE | {"t"}:
                return True
            if raw.lower() in _FALSE | {"f"}:
                return False
            raise ValueError(raw)
        if kind is int:
            number = int(raw)
            if not -(2**63) <= number < 2**63:  # the engine stores 64-bit integers only
                raise ValueError(raw)
            return number
        if kind is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
    except ValueError:
        raise BadRequest(f"q: prop {name!r} is a {kind.__name__}, got {raw[:40]!r}") from None
    return raw


def live_flag(args: MultiDict[str, str]) -> bool:
    """Return whether live refresh is on (``live=0`` pauses it; the default is on)."""
    return _flag(args, "live") is not False
