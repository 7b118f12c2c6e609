"""The type page's heat map: figures from the rollup (three statements), put on the diagram.

Counts, errored and stalled per state come from what the page already read (the counters
and the capped stalled counts); edge volumes and time-in-state percentiles come from
:func:`flowstate_web.rollup.window`, which reads at most a few hundred rows per edge
whatever the size of the history.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from flask import current_app, url_for
from markupsafe import Markup
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from .. import rollup
from ..diagrams import DiagramView
from ..diagrams.dot import TIMES
from ..diagrams.heat import (
    EN_DASH,
    FAILURE_COLOURS,
    FAILURE_STEPS,
    IDLE_COLOUR,
    VOLUME_COLOURS,
    EdgeHeat,
    StateHeat,
    duration,
    edge_lines,
    overlay_heat,
    percent,
    state_lines,
    volume_class,
    volume_ranges,
)
from .queries import Matching

if TYPE_CHECKING:
    from ..flow import Flow

DEFAULT_WINDOW: Final = "24h"
#: The figures are flagged when the rollup has not run for this long.
STALE_AFTER: Final = timedelta(minutes=10)
WINDOW_LABELS: Final = {"1h": "hour", "24h": "24 h", "7d": "7 days"}


@dataclass(frozen=True, slots=True)
class HeatView:
    """What ``_heat.html`` shows next to the diagram."""

    window: str
    label: str
    links: dict[str, str]
    edges: list[EdgeHeat]
    states: list[StateHeat]
    since_text: str
    #: When the rollup last ran ("" if never), and whether that is too long ago.
    rolled_up_text: str
    stale: bool
    #: ``(swatch colour, meaning)`` rows of the legend.
    volume_legend: list[tuple[str, str]]
    failure_legend: list[tuple[str, str]]

    def edge_text(self, e: EdgeHeat) -> list[str]:
        """Return an edge's figures, one per line."""
        return edge_lines(e, self.label)

    def state_text(self, s: StateHeat) -> list[str]:
        """Return a state's figures, one per line."""
        return state_lines(s, self.label)

    @staticmethod
    def duration(seconds: float | None) -> str:
        """Return a time in state, short."""
        return duration(seconds)

    @staticmethod
    def percent(rate: float | None) -> str:
        """Return a failure rate as a percentage."""
        return percent(rate)


def enabled() -> bool:
    """Return whether the type page shows the heat map (``FLOWSTATE_HEATMAP``, default on)."""
    return bool(current_app.config.get("FLOWSTATE_HEATMAP", True))


def window_name(args: MultiDict[str, str]) -> str:
    """Return the window asked for in ``?window=`` (an unknown value means the default)."""
    name = args.get("window", DEFAULT_WINDOW)
    return name if name in rollup.WINDOWS else DEFAULT_WINDOW


def build(
    session: Session,
    cls: type[Flow],
    counts: Mapping[str, int],
    errored: Mapping[str, int],
    stalled: Mapping[str, Matching],
    window: str,
) -> HeatView:
    """Return the heat map of ``cls`` over ``window`` (three statements)."""
    graph = cls.graph()
    name = cls.type_name
    figures = rollup.window(session, name, window)
    last = rollup.last_run(session)
    taken = {(e.name, e.from_state): e.n for e in figures.edges}
    edges: list[EdgeHeat] = []
    for t in graph.transitions:
        into_error = t.target in graph.error_states
        for src in t.sources:
            n = taken.get((t.name, src), 0)
            out = figures.out_of(src)
            edges.append(
                EdgeHeat(
                    t.name,
                    src,
                    t.target,
                    n,
                    into_error=into_error,
                    rate=(n / out if out else None) if into_error else None,
                    out_of_source=out,
                    url=url_for(".flow_type", type_name=name, state=t.target, errored="1")
                    if into_error
                    else None,
                )
            )
    states = [
        StateHeat(
            s.name,
            counts.get(s.name, 0),
            errored.get(s.name, 0),
            stalled[s.name].n if s.name in stalled else 0,
            stalled[s.name].capped if s.name in stalled else False,
            figures.p(s.name, 0.5),
            figures.p(s.name, 0.95),
            figures.out_of(s.name),
        )
        for s in graph.states
    ]
    label = WINDOW_LABELS[window]
    steps = [0.0, *FAILURE_STEPS]
    failure_legend = [
        (colour, f"{percent(lo)}{EN_DASH}{percent(steps[i + 1])}" if i + 1 < len(steps)
         else f"over {percent(lo)}")
        for i, (colour, lo) in enumerate(zip(FAILURE_COLOURS, steps, strict=True))
    ]  # fmt: skip
    top = max((e.n for e in edges if not e.into_error), default=0)
    return HeatView(
        window=window,
        label=label,
        links={
            w: url_for(".flow_type", type_name=name, window=w, _anchor="flowstate-heat")
            for w in rollup.WINDOWS
        },
        edges=edges,
        states=states,
        since_text=figures.since.strftime("%Y-%m-%d %H:%M UTC"),
        rolled_up_text=last.strftime("%Y-%m-%d %H:%M:%S UTC") if last else "",
        stale=last is None or datetime.now(UTC) - last > STALE_AFTER,
        volume_legend=[(IDLE_COLOUR, "not taken")]
        + [
            (VOLUME_COLOURS[volume_class(hi, top) - 1], _range(lo, hi))
            for lo, hi in volume_ranges(top)
        ],
        failure_legend=failure_legend,
    )


def _range(lo: int, hi: int) -> str:
    return f"{lo:,}{TIMES}" if lo == hi else f"{lo:,}{EN_DASH}{hi:,}{TIMES}"


def apply(view: DiagramView, heat: HeatView, type_name: str) -> DiagramView:
    """Return ``view`` with the heat map drawn on its SVG (and its poll keeping the window)."""
    svg = view.svg
    if svg is not None:
        # overlay_heat writes through ElementTree: every value is escaped.
        svg = Markup(overlay_heat(str(svg), heat.edges, heat.states, heat.label))  # noqa: S704
    poll = view.poll_url
    if poll is not None:
        window = heat.window if heat.window != DEFAULT_WINDOW else None
        poll = url_for(".type_diagram", type_name=type_name, window=window)
    return dataclasses.replace(view, svg=svg, poll_url=poll)
