"""Turn engine records into what templates show: ages, summaries, JSON previews, timelines."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from .. import timeouts
from .._values import clean_text, cut
from ..graph import FlowGraph, TransitionSpec
from ..records import ArtefactEntry, HistoryEntry, utc
from ..registry import find_flow_type, flow_types
from .queries import COUNT_LIMIT, Matching, OldestErrored, StateCount
from .stored import Decoded, StoredText, Unreadable, decode

if TYPE_CHECKING:
    from ..flow import Flow

__all__ = ["COUNT_LIMIT"]  # templates: a filtered count above it stopped counting


def now() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


def duration(delta: timedelta) -> str:
    """Return ``delta`` as a short human duration: ``42s``, ``5m 03s``, ``3h 12m``, ``4d 2h``."""
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def age(value: datetime | None, reference: datetime | None = None) -> str:
    """Return how long ago ``value`` was (``""`` for ``None``)."""
    if value is None:
        return ""
    return duration((reference or now()) - utc(value))


def iso(value: datetime | None) -> str:
    """Return ``value`` as an absolute UTC time for ``title`` attributes."""
    return "" if value is None else utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def props_summary(props: Mapping[str, Any] | None, limit: int = 90) -> str:
    """Return ``k=v, k=v`` of ``props``, cut at ``limit`` characters."""
    parts: list[str] = []
    used = 0
    for k, v in (props or {}).items():
        part = f"{clean_text(str(k)[:limit])}={_scalar(v, limit)}"
        parts.append(part)
        used += len(part) + 2
        if used > limit:
            break
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scalar(value: Any, limit: int) -> str:
    if isinstance(value, str):
        return clean_text(value[: limit + 1])
    return render_json(value, budget=limit + 1, indent=None).text


#: Lists/dicts shown deeper than this are cut with a marker (``[… 3 items]``).
DISPLAY_DEPTH: Final = 24
#: The pretty-printed part of a full page (the artefact page, a prop) is cut here.
PRETTY_LIMIT: Final = 256 * 1024


class _Full(Exception):
    """The output budget of :func:`render_json` is spent."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """JSON text for a page: at most a budget of characters, and whether it was cut."""

    text: str
    truncated: bool


def render_json(
    value: Any,
    *,
    budget: int = PRETTY_LIMIT,
    indent: int | None = 2,
    max_depth: int = DISPLAY_DEPTH,
) -> Rendered:
    """Return ``value`` as JSON text of at most ``budget`` characters, safe for any page.

    Stops writing when the budget is spent (a 10 MB value costs what is shown, not 10 MB),
    cuts lists/dicts deeper than ``max_depth`` with a ``[… N items]`` marker, replaces NUL
    and lone surrogates, writes NaN/Infinity as Python's json does, and shows
    :class:`~flowstate_web.admin.stored.Unreadable` values as their marker text.
    """
    out: list[str] = []
    left = [budget]

    def put(text: str) -> None:
        if len(text) > left[0]:
            out.append(text[: left[0]])
            left[0] = 0
            raise _Full
        out.append(text)
        left[0] -= len(text)

    def emit(v: Any, depth: int) -> None:
        if isinstance(v, str):
            put(json.dumps(clean_text(v[: left[0] + 1]), ensure_ascii=False))
        elif v is None or isinstance(v, bool | int | float):
            put(json.dumps(v))
        elif isinstance(v, dict | list):
            is_dict = isinstance(v, dict)
            open_, close = ("{", "}") if is_dict else ("[", "]")
            if not v:
                put(open_ + close)
                return
            if depth >= max_depth:
                put(f"{open_}… {len(v)} {'keys' if is_dict else 'items'}{close}")
                return
            pad = "" if indent is None else "\n" + " " * (indent * (depth + 1))
            sep = "," if indent is not None else ", "
            put(open_)
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for i, (key, item) in enumerate(items):
                put((sep if i else "") + pad)
                if is_dict:
                    put(json.dumps(clean_text(str(key)[: left[0] + 1]), ensure_ascii=False))
                    put(": ")
                emit(item, depth + 1)
            put(("" if indent is None else "\n" + " " * (indent * depth)) + close)
        else:
            put(clean_text(str(v)))

    try:
        emit(value, 0)
    except _Full:
        return Rendered("".join(out), truncated=True)
    return Rendered("".join(out), truncated=False)


def pretty(value: Any, limit: int = PRETTY_LIMIT) -> str:
    """Return ``value`` as indented JSON (keys in stored order), cut with a note past ``limit``."""
    rendered = render_json(value, budget=limit)
    if rendered.truncated:
        return rendered.text + f"\n… (cut at {size(limit)})"
    return rendered.text


def clip(text: str | None, limit: int = 4000) -> str:
    """Return stored text for a page: NUL/lone surrogates replaced, cut at ``limit`` chars."""
    if not text:
        return ""
    if len(text) <= limit:
        return clean_text(text)
    # Only the part shown is cleaned (a 10 MB value costs what is shown); the marker is
    # the same as the engine's (``_values.cut``).
    return cut(clean_text(text[:limit]), limit, total=len(text))


@dataclass(frozen=True, slots=True)
class Preview:
    """An artefact's pretty JSON, cut at a byte budget."""

    text: str
    size: int
    truncated: bool


def preview(value: Any, limit: int) -> Preview:
    """Return the first ``limit`` characters of ``value``'s pretty JSON (about that many bytes).

    ``value`` may be what :func:`~flowstate_web.admin.stored.artefact_previews` reads: a
    ``Decoded`` value (its size is then the stored text's) or a ``StoredText`` (a payload too
    large to decode for a preview, shown from the start of its stored text).
    """
    if isinstance(value, StoredText):
        return Preview(text=clean_text(value.head[:limit]), size=value.length, truncated=True)
    stored_size = value.length if isinstance(value, Decoded) else None
    if isinstance(value, Decoded):
        value = value.value
    rendered = render_json(value, budget=limit + 1)
    n = stored_size if stored_size is not None else len(rendered.text)
    if not rendered.truncated and len(rendered.text) <= limit:
        return Preview(text=rendered.text, size=n, truncated=False)
    return Preview(text=rendered.text[:limit], size=max(n, limit), truncated=True)


#: Artefacts whose stored text is longer than this are shown from their text, not decoded.
ARTEFACT_PARSE_CHARS: Final = 32 * 1024 * 1024


def artefact_page(raw: str | None, limit: int = PRETTY_LIMIT) -> dict[str, Any]:
    """Return what ``artefact.html`` shows of a payload's stored text: at most ``limit`` chars.

    Keys: ``json_text`` (pretty-printed, or the stored text if it cannot be decoded),
    ``truncated``, ``stored_size`` (bytes), ``limit``, ``problem`` (why it is shown raw).
    """
    raw = "null" if raw is None else raw
    problem: str | None = None
    value: Any = decode(raw) if len(raw) <= ARTEFACT_PARSE_CHARS else None
    if len(raw) > ARTEFACT_PARSE_CHARS:
        problem = "too large to pretty-print"
    elif isinstance(value, Unreadable):
        problem = value.why
    if problem is None:
        rendered = render_json(value, budget=limit)
        text, truncated = rendered.text, rendered.truncated
    else:
        text, truncated = clean_text(raw[:limit]), len(raw) > limit
    return {
        "json_text": text,
        "truncated": truncated,
        "stored_size": len(raw.encode(errors="replace")),
        "limit": limit,
        "problem": problem,
    }


def chunks(text: str, size: int = 64 * 1024) -> Iterator[bytes]:
    """Yield ``text`` as UTF-8 in pieces of ``size`` characters (a streamed response body)."""
    for start in range(0, len(text), size):
        yield text[start : start + size].encode(errors="replace")


def size(n: int) -> str:
    """Return a byte count as ``512 B``, ``4.2 kB``, ``1.3 MB``."""
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"


def state_kind(graph: FlowGraph, state: str) -> str:
    """Return the CSS role of ``state``: initial, error, final, normal or undeclared."""
    spec = graph.state(state)
    if spec is None:
        return "undeclared"
    if spec.error:
        return "error"
    if spec.final:
        return "final"
    return "initial" if spec.initial else "normal"


@dataclass(frozen=True, slots=True)
class Step:
    """One history entry with its artefacts and how long the flow stayed in ``to_state``."""

    entry: HistoryEntry
    artefacts: tuple[ArtefactEntry, ...]
    stayed: timedelta
    current: bool


def timeline(history: Sequence[HistoryEntry], found: Sequence[ArtefactEntry]) -> list[Step]:
    """Return the history, oldest first, each entry with the artefacts it persisted.

    Prop updates (``flow.save()``) are steps too, but not state changes: the time a flow
    stayed in a state runs to the next transition, and the current step is the last
    transition.
    """
    by_transition: dict[int, list[ArtefactEntry]] = {}
    for artefact in found:
        by_transition.setdefault(artefact.transition_id, []).append(artefact)
    steps: list[Step] = []
    moment = now()
    left = moment
    last_transition = next((e.id for e in reversed(history) if not e.is_update), None)
    for entry in reversed(history):
        steps.append(
            Step(
                entry=entry,
                artefacts=tuple(by_transition.get(entry.id, ())),
                stayed=timedelta(0) if entry.is_update else left - entry.created_at,
                current=entry.id == last_transition,
            )
        )
        if not entry.is_update:
            left = entry.created_at
    return steps[::-1]


def retry_blockers(flow: Flow) -> dict[str, str]:
    """Return why each retry transition of an errored ``flow`` cannot run now (blocked only)."""
    if not flow.errored:
        return {}
    return {t.name: why for t in flow.retry_transitions() if (why := flow.why_not(t.name))}


def change_text(value: Any) -> str:
    """Return an old/new value of a recorded prop change as short JSON (marking a cut one)."""
    if isinstance(value, dict) and value.keys() == {"truncated", "chars"}:
        return f"{value['truncated']}… ({value['chars']} characters)"
    return json.dumps(value, ensure_ascii=False, default=str)


def traversed(history: Sequence[HistoryEntry]) -> dict[tuple[str, str, str], int]:
    """Return ``{(transition, from, to): times}`` for the instance diagram overlay."""
    counts: dict[tuple[str, str, str], int] = {}
    for entry in history:
        if entry.is_update:
            continue  # a prop update moves along no edge
        key = (entry.name, entry.from_state, entry.to_state)
        counts[key] = counts.get(key, 0) + 1
    return counts


def traceback_excerpt(text: str | None, lines: int = 40, limit: int = 16_000) -> str:
    """Return the last ``lines`` lines of a traceback (the end is where it failed), bounded."""
    if not text:
        return ""
    total = len(text)
    parts = clean_text(text[-limit:]).rstrip().splitlines()
    if len(parts) > lines:
        parts = ["…", *parts[-lines:]]
    joined = "\n".join(parts)
    return cut(joined, limit, keep="end", total=max(total, len(joined)))


@dataclass(frozen=True, slots=True)
class StateCell:
    """One state of a type on the overview."""

    name: str
    total: int
    errored: int
    kind: str
    stalled: Matching | None = None


@dataclass(frozen=True, slots=True)
class TypeSummary:
    """One row of the overview: a flow type (defined or not) and its counts."""

    name: str
    defined: bool
    states: tuple[StateCell, ...]
    total: int
    errored: int
    oldest: OldestErrored | None
    #: Stalled flows (capped per state at ``queries.COUNT_LIMIT``, then "+").
    stalled: int = 0
    stalled_capped: bool = False
    #: Whether any state of the type declares a timeout (else "stalled" cannot apply).
    timed: bool = False

    @property
    def undeclared(self) -> tuple[str, ...]:
        """Return states that have rows but are not declared on the class."""
        return tuple(s.name for s in self.states if s.kind == "undeclared" and s.total)


def summarize(
    counts: Sequence[StateCount],
    oldest: Mapping[str, OldestErrored],
    stalled: Mapping[tuple[str, str], Matching] | None = None,
) -> list[TypeSummary]:
    """Return one summary per defined type and per type found only in the table."""
    stalled = stalled or {}
    by_type: dict[str, dict[str, StateCount]] = {}
    for c in counts:
        by_type.setdefault(c.type, {})[c.state] = c
    names = sorted(set(by_type) | set(flow_types()))
    out: list[TypeSummary] = []
    for name in names:
        cls = find_flow_type(name)
        found = by_type.get(name, {})
        cells: list[StateCell] = []
        if cls is not None:
            graph = cls.graph()
            for state in graph.state_names:
                hit = found.get(state)
                kind = state_kind(graph, state)
                cells.append(
                    StateCell(
                        state,
                        hit.total if hit else 0,
                        hit.errored if hit else 0,
                        kind,
                        stalled.get((name, state)),
                    )
                )
            declared = set(graph.state_names)
        else:
            declared = set()
        for state, c in sorted(found.items()):
            if state not in declared:
                cells.append(StateCell(state, c.total, c.errored, "undeclared"))
        out.append(
            TypeSummary(
                name=name,
                defined=cls is not None,
                states=tuple(cells),
                total=sum(c.total for c in found.values()),
                errored=sum(c.errored for c in found.values()),
                oldest=oldest.get(name),
                stalled=sum(c.stalled.n for c in cells if c.stalled),
                stalled_capped=any(c.stalled.capped for c in cells if c.stalled),
                timed=cls is not None and bool(cls.graph().timed_states),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Stall:
    """A flow in a state with a timeout: since when it is (or will be) stalled, and why."""

    state: str
    entered_at: datetime
    timeout: timedelta
    #: When the timeout passed (or passes).
    since: datetime
    stalled: bool
    #: The history entry that entered the state, and its declaration (what it handed off).
    entry: HistoryEntry | None
    entered_by: TransitionSpec | None
    #: Transitions into an error state an operator can run ("fail it").
    fail_options: tuple[TransitionSpec, ...]
    #: The flow's pending hand-offs (``flowstate_web.outbox.pending_handoffs``), if any.
    handoffs: tuple[Any, ...] = ()

    @property
    def stayed(self) -> timedelta:
        """Return how long the flow has been in its state."""
        return now() - self.entered_at

    @property
    def enqueue(self) -> str | None:
        """Return the job the entering transition declared to hand off, if any."""
        value = getattr(self.entered_by, "enqueue", None)
        return value if isinstance(value, str) else None


def stall(flow: Flow, history: Sequence[HistoryEntry]) -> Stall | None:
    """Return the stall of ``flow`` (``None`` when its state has no timeout)."""
    spec = timeouts.timed_state(flow)
    since = timeouts.stalled_since(flow)
    if spec is None or spec.timeout is None or since is None:
        return None
    # The last transition (a save() after it entered no state) and only if it entered this one.
    entry = next((h for h in reversed(history) if not h.is_update), None)
    if entry is not None and entry.to_state != flow.state:
        entry = None
    return Stall(
        state=flow.state,
        entered_at=utc(flow.state_entered_at),
        timeout=spec.timeout,
        since=since,
        stalled=since < now(),
        entry=entry,
        entered_by=flow.graph().transition(entry.name) if entry is not None else None,
        fail_options=timeouts.fail_transitions(type(flow), flow.state),
    )


def fail_options(flow: Flow) -> tuple[TransitionSpec, ...]:
    """Return the transitions "fail it" offers for ``flow`` (into an error state)."""
    return timeouts.fail_transitions(type(flow), flow.state)


def short_duration(delta: timedelta) -> str:
    """Return a declared timeout as ``10m``, ``1h 30m`` (at most two units)."""
    return timeouts.short(delta)
