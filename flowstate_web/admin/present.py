"""Turn engine records into what templates show: ages, summaries, JSON previews, timelines."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import timeouts
from ..graph import FlowGraph, TransitionSpec
from ..records import ArtefactEntry, HistoryEntry, utc
from ..registry import find_flow_type, flow_types
from .queries import Matching, OldestErrored, StateCount

if TYPE_CHECKING:
    from ..flow import Flow

if TYPE_CHECKING:
    from ..flow import Flow


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
    text = ", ".join(f"{k}={_scalar(v)}" for k, v in (props or {}).items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def pretty(value: Any) -> str:
    """Return ``value`` as indented JSON (keys in stored order)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True)
class Preview:
    """An artefact's pretty JSON, cut at a byte budget."""

    text: str
    size: int
    truncated: bool


def preview(value: Any, limit: int) -> Preview:
    """Return the first ``limit`` bytes (UTF-8) of ``value``'s pretty JSON."""
    text = pretty(value)
    data = text.encode()
    if len(data) <= limit:
        return Preview(text=text, size=len(data), truncated=False)
    return Preview(text=data[:limit].decode(errors="ignore"), size=len(data), truncated=True)


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


def traceback_excerpt(text: str | None, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a traceback (the end is where it failed)."""
    if not text:
        return ""
    parts = text.rstrip().splitlines()
    if len(parts) <= lines:
        return "\n".join(parts)
    return "\n".join(["…", *parts[-lines:]])


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
