"""Put live data onto a cached SVG diagram by rewriting it, never by re-running ``dot``.

Both overlays find elements by the ids :mod:`.dot` gave them (``state-<name>``,
``edge-<transition>-<source>``), add CSS classes and write text through ElementTree, so
every value is escaped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Final

from .dot import INITIAL_EDGE_ID, TIMES, TIMES_PLACEHOLDER, edge_dom_id, state_dom_id

SVG_NS: Final = "http://www.w3.org/2000/svg"
XLINK_NS: Final = "http://www.w3.org/1999/xlink"


class _Svg:
    """A parsed diagram with its ``<g>`` elements indexed by id."""

    def __init__(self, svg: str) -> None:
        # The input is dot's own output for DOT we built; it has no DTD or entities.
        self.root = ET.fromstring(svg)  # noqa: S314
        # Work on plain names and declare the namespaces by hand on the way out: HTML only
        # understands the literal ``xlink:`` prefix, and ET.register_namespace is global.
        for el in self.root.iter():
            el.tag = el.tag.rpartition("}")[2]
            for key in [k for k in el.attrib if k.startswith("{")]:
                uri, _, local = key[1:].partition("}")
                el.attrib[f"xlink:{local}" if uri == XLINK_NS else local] = el.attrib.pop(key)
        self.by_id = {g.get("id", ""): g for g in self.root.iter("g")}

    def add_class(self, dom_id: str, *classes: str) -> ET.Element | None:
        el = self.by_id.get(dom_id)
        if el is not None:
            have = el.get("class", "").split()
            el.set("class", " ".join(have + [c for c in classes if c not in have]))
        return el

    def dashed_edges_first(self) -> None:
        """Draw dashed edges (retries, usually long curves back up the graph) first.

        SVG paints in document order, and dot writes each edge's label inside the edge's
        group: an edge written later is painted over an earlier edge's label where it
        crosses it (a thick heat-map line took the "k" off "x1.2k"). Drawn first, the long
        retry curves pass under every other label, whose halo then keeps it legible.
        """
        for parent in self.root.iter("g"):
            children = list(parent)
            edges = [c for c in children if c.tag == "g" and "edge" in c.get("class", "").split()]
            dashed = [g for g in edges if any(p.get("stroke-dasharray") for p in g.iter("path"))]
            if not dashed or len(dashed) == len(edges):
                continue
            first = children.index(edges[0])
            for g in dashed:
                parent.remove(g)
            for offset, g in enumerate(dashed):
                parent.insert(first + offset, g)

    def drop_reserved_room(self) -> None:
        """Remove the figure spaces dot kept after transition names (TIMES_PLACEHOLDER).

        The label stays where dot put it, now centred on the name; the times sign and count go into
        that room.
        """
        for g in self.by_id.values():
            if "edge" in g.get("class", "").split():
                texts = _texts(g)
                if texts and texts[0].text:
                    texts[0].text = texts[0].text.rstrip(TIMES_PLACEHOLDER[0])

    def serialize(self) -> str:
        self.root.set("xmlns", SVG_NS)
        self.root.set("xmlns:xlink", XLINK_NS)
        return ET.tostring(self.root, encoding="unicode")


def _texts(el: ET.Element) -> list[ET.Element]:
    return list(el.iter("text"))


def _tspan(parent: ET.Element, css_class: str, text: str) -> None:
    span = ET.SubElement(parent, "tspan", {"class": css_class})
    span.text = text


def overlay_counts(
    svg: str,
    counts: Mapping[str, int],
    errored: Mapping[str, int] | None = None,
) -> str:
    """Return ``svg`` with each state's instance count (and errored count) on its node.

    Nodes with instances get class ``has-instances``, those with errored instances
    ``has-errored``; the numbers go into the reserved second label line as
    ``<tspan class="count">`` and ``<tspan class="errored-count">``. States missing from
    the diagram are ignored (e.g. rows left in a state that was since removed).
    """
    errored = errored or {}
    doc = _Svg(svg)
    doc.drop_reserved_room()
    for state in sorted(set(counts) | set(errored)):
        n, e = int(counts.get(state, 0)), int(errored.get(state, 0))
        if n <= 0 and e <= 0:
            continue
        classes = (["has-instances"] if n > 0 else []) + (["has-errored"] if e > 0 else [])
        node = doc.add_class(state_dom_id(state), *classes)
        if node is None:
            continue
        texts = _texts(node)
        if not texts:
            continue
        line = texts[-1]
        if len(texts) > 1 and not (line.text or "").strip():
            line.text = None  # the reserved, blank second line
            prefix = ""
        else:  # built without a reserved line: append to the name
            prefix = " "
        _tspan(line, "count", f"{prefix}{n}")
        if e > 0:
            _tspan(line, "errored-count", f" · {e} errored")
    return doc.serialize()


def overlay_instance(
    svg: str,
    *,
    current: str | None,
    traversed: Mapping[tuple[str, str, str], int],
) -> str:
    """Return ``svg`` with one instance's path on it.

    :param current: the instance's state: its node gets class ``current``.
    :param traversed: ``{(transition, from_state, to_state): times}`` from its history.
        Those edges get class ``visited`` and, when taken more than once, a times sign and N
        (``<tspan class="times">``) after the transition name; their states get ``visited``.
    """
    doc = _Svg(svg)
    doc.drop_reserved_room()
    per_edge: dict[tuple[str, str], int] = {}
    states: set[str] = set() if current is None else {current}
    for (t_name, src, dst), times in traversed.items():
        per_edge[t_name, src] = per_edge.get((t_name, src), 0) + int(times)
        states.update((src, dst))
    _mark_states(doc, sorted(states), "visited")
    if current is not None:
        doc.add_class(state_dom_id(current), "current")
        doc.add_class(INITIAL_EDGE_ID, "visited")
    for (t_name, src), times in sorted(per_edge.items()):
        if times <= 0:
            continue
        edge = doc.add_class(edge_dom_id(t_name, src), "visited")
        texts = _texts(edge) if edge is not None else []
        if texts and times > 1:
            _tspan(texts[0], "times", f" {TIMES}{times}")
    return doc.serialize()


def _mark_states(doc: _Svg, states: Iterable[str], css_class: str) -> None:
    for state in states:
        doc.add_class(state_dom_id(state), css_class)
