"""The type page's heat map: colour a cached diagram's edges by volume and failure rate.

Like :mod:`.overlay`, it rewrites the rendered-once SVG (no ``dot`` per view). Palettes are
ColorBrewer's sequential *Blues* for volume and *Oranges* for failure rate: blue against
orange stays distinct for every common colour-vision deficiency, and each edge's volume is
also drawn as its stroke width, so nothing depends on hue alone.

- an edge into an **error state** is coloured by its failure rate: the share of all
  transitions out of its source state (in the window) that went this way, and links to the
  errored flows in that error state;
- every other edge is coloured by how many times it was taken (log scale);
- an edge not taken in the window is thin and grey.

Every state and edge gets ``data-heat`` (its figures, one per line), a ``<title>`` (native
tooltip), an ``aria-label`` and is keyboard-focusable; ``static/flowstate/heat.js`` shows the
figures on hover and focus.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .dot import TIMES, TIMES_PLACEHOLDER, edge_dom_id, state_dom_id
from .overlay import _Svg

#: ColorBrewer Blues (5 of its 9 classes), light to dark: volume.
VOLUME_COLOURS: Final = ("#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08306b")
#: ColorBrewer Oranges (5 classes), light to dark: failure rate.
FAILURE_COLOURS: Final = ("#fdae6b", "#fd8d3c", "#f16913", "#d94801", "#7f2704")
#: Upper bounds of the failure-rate classes (the last class is everything above).
FAILURE_STEPS: Final = (0.01, 0.05, 0.10, 0.25)
IDLE_COLOUR: Final = "#b0bec5"
EN_DASH: Final = "\u2013"
#: Stroke widths, by volume class (0 = not taken).
WIDTHS: Final = (1.0, 1.6, 2.4, 3.2, 4.2, 5.4)


@dataclass(frozen=True, slots=True)
class EdgeHeat:
    """One edge's figures over the window.

    :param rate: for an edge into an error state, taken / all transitions out of ``source``.
    :param url: where clicking it goes (the errored flows in ``target``), if anywhere.
    """

    transition: str
    source: str
    target: str
    n: int
    into_error: bool = False
    rate: float | None = None
    out_of_source: int = 0
    url: str | None = None


@dataclass(frozen=True, slots=True)
class StateHeat:
    """One state's figures: counts now, time spent in it over the window."""

    state: str
    count: int
    errored: int = 0
    stalled: int = 0
    stalled_capped: bool = False
    p50: float | None = None
    p95: float | None = None
    left: int = 0


def volume_class(n: int, top: int) -> int:
    """Return 0 (not taken) or 1..5: ``n`` on a log scale where ``top`` is class 5."""
    if n <= 0 or top <= 0:
        return 0
    return max(1, min(5, math.ceil(5 * math.log1p(n) / math.log1p(top))))


def volume_ranges(top: int) -> list[tuple[int, int]]:
    """Return the ``(lowest, highest)`` count of each volume class 1..5 (empty ones dropped)."""
    out: list[tuple[int, int]] = []
    low = 1
    for k in range(1, 6):
        high = top if k == 5 else math.floor(math.expm1(k * math.log1p(top) / 5) + 1e-9)
        if high >= low:
            out.append((low, high))
            low = high + 1
    return out


def failure_class(rate: float) -> int:
    """Return 1..5 for a failure rate (see :data:`FAILURE_STEPS`)."""
    return 1 + sum(rate > step for step in FAILURE_STEPS)


def duration(seconds: float | None) -> str:
    """Return ``seconds`` short and readable: ``850 ms``, ``42 s``, ``7.5 min``, ``3.1 h``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def percent(rate: float | None) -> str:
    """Return a rate as a percentage (one decimal below 10%)."""
    if rate is None:
        return "—"
    if rate == 0:
        return "0%"
    return f"{rate * 100:.1f}%" if rate < 0.1 else f"{rate * 100:.0f}%"


def edge_lines(e: EdgeHeat, window: str) -> list[str]:
    """Return an edge's figures, one per line (tooltip, aria-label, table)."""
    lines = [
        f"{e.transition}: {e.source} → {e.target}",
        f"taken {e.n:,}{TIMES} in the last {window}",
    ]
    if e.into_error:
        lines.append(
            f"failure rate {percent(e.rate)} of {e.out_of_source:,} transitions out of {e.source}"
        )
    return lines


def state_lines(s: StateHeat, window: str) -> list[str]:
    """Return a state's figures, one per line."""
    stalled = f"{s.stalled:,}{'+' if s.stalled_capped else ''}"
    return [
        s.state,
        f"{s.count:,} flows now · {s.errored:,} errored · {stalled} stalled",
        f"time in state (last {window}, {s.left:,} left it): p50 {duration(s.p50)}"
        f" · p95 {duration(s.p95)}",
    ]


def _describe(el: ET.Element, lines: list[str]) -> None:
    text = "\n".join(lines)
    el.set("data-heat", text)
    el.set("aria-label", "; ".join(lines))
    title = el.find("title")
    if title is None:
        title = ET.Element("title")
        el.insert(0, title)
    title.text = text


def compact(n: int) -> str:
    """Return ``n`` in at most four characters: 7, 42, 999, 1.2k, 12k, 120k, 1.2M."""
    if n < 1000:
        return str(n)
    for unit, size in (("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000)):
        if n < size * 1000:
            value = n / size
            return f"{value:.1f}{unit}" if value < 10 else f"{int(value)}{unit}"
    return f"{n // 1_000_000_000}G"


def overlay_heat(
    svg: str, edges: Sequence[EdgeHeat], states: Sequence[StateHeat], window: str
) -> str:
    """Return ``svg`` (a type diagram, counts overlaid or not) with the heat map on it."""
    doc = _Svg(svg)
    root_classes = doc.root.get("class", "").split()
    doc.root.set("class", " ".join([*root_classes, "flowstate-heat"]))
    top = max((e.n for e in edges if not e.into_error), default=0)
    for e in edges:
        g = doc.by_id.get(edge_dom_id(e.transition, e.source))
        if g is None:
            continue
        vol = volume_class(e.n, max(top, e.n))
        if e.n <= 0:
            colour, css = IDLE_COLOUR, "heat-idle"
        elif e.into_error:
            k = failure_class(e.rate or 0.0)
            colour, css = FAILURE_COLOURS[k - 1], f"heat-fail heat-f{k}"
        else:
            colour, css = VOLUME_COLOURS[vol - 1], f"heat-vol heat-v{vol}"
        doc.add_class(g.get("id", ""), *css.split())
        for shape in g.iter():
            if shape.tag == "path":
                shape.set("stroke", colour)
                shape.set("stroke-width", f"{WIDTHS[vol]:g}")
            elif shape.tag == "polygon":
                shape.set("stroke", colour)
                shape.set("fill", colour)
        texts = list(g.iter("text"))
        if texts and e.n > 0:
            # Into the room dot kept after the name (TIMES_PLACEHOLDER), as the path overlay
            # does: a longer suffix would be drawn over the neighbouring label. The failure
            # rate is in the colour, the tooltip and the figures table.
            texts[0].text = (texts[0].text or "").rstrip(TIMES_PLACEHOLDER[0])
            span = ET.SubElement(texts[0], "tspan", {"class": "heat-n"})
            span.text = f" {TIMES}{compact(e.n)}"
        docs = _unwrap_tooltips(g) if e.url is not None else []
        _describe(g, edge_lines(e, window) + docs)
        if e.url is not None:
            _wrap_in_link(g, e.url, edge_lines(e, window)[0])
        else:
            g.set("tabindex", "0")
            g.set("role", "img")
    for s in states:
        g = doc.by_id.get(state_dom_id(s.state))
        if g is None:
            continue
        if s.stalled:
            doc.add_class(g.get("id", ""), "has-stalled")
        _describe(g, state_lines(s, window))
        link = g.find(".//a")
        if link is not None:
            link.set("xlink:title", "\n".join(state_lines(s, window)))
            link.set("aria-label", "; ".join(state_lines(s, window)))
        else:
            g.set("tabindex", "0")
            g.set("role", "img")
    doc.dashed_edges_first()  # thick lines must not cross other edges' labels
    return doc.serialize()


def _unwrap_tooltips(g: ET.Element) -> list[str]:
    """Replace dot's tooltip anchors (``<g id="a_..."><a xlink:title>``) in ``g`` by their
    content, so the edge holds a single link; return their tooltip texts."""
    texts: list[str] = []
    for i, child in reversed(list(enumerate(g))):
        if child.tag == "g" and child.get("id", "").startswith("a_") and len(child) == 1:
            (anchor,) = child
            if anchor.tag != "a" or anchor.get("xlink:href"):
                continue
            if anchor.get("xlink:title"):
                texts.insert(0, anchor.get("xlink:title", ""))
            g.remove(child)
            for j, inner in enumerate(list(anchor)):
                g.insert(i + j, inner)
    return list(dict.fromkeys(texts))


def _wrap_in_link(g: ET.Element, url: str, label: str) -> None:
    """Move ``g``'s shapes into an ``<a>`` to ``url`` (focusable; opens the filtered list)."""
    children = [c for c in list(g) if c.tag != "title"]
    link = ET.SubElement(g, "a", {"xlink:href": url, "target": "_top", "class": "heat-link"})
    link.set("aria-label", g.get("aria-label", label))
    for child in children:
        g.remove(child)
        link.append(child)
