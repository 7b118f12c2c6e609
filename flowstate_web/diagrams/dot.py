"""Build the DOT text of a flow type's state diagram from its :class:`FlowGraph`.

The output is deterministic (same graph and options, same bytes). Every node and edge gets
a stable SVG ``id`` and ``class`` so CSS and :mod:`.overlay` can find them after rendering.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import graphviz
from graphviz.quoting import attr_list, quote

from ..graph import FlowGraph, StateSpec, TransitionSpec

Style = Mapping[str, str]
Styles = Mapping[str, Style]
Traversed = Mapping[tuple[str, str, str], int]

_FONT: Final = "Helvetica,Arial,sans-serif"
#: Figure spaces: an invisible second line in every state's label, reserving room that
#: :func:`~flowstate_web.diagrams.overlay.overlay_counts` fills in without re-running dot.
COUNT_PLACEHOLDER: Final = "\u2007" * 14
#: The same for an error state, whose line also gets the errored count ("N · N errored"), so
#: a narrow error node at the graph's edge does not push that line out of the picture.
ERROR_COUNT_PLACEHOLDER: Final = "\u2007" * 22
#: Figure spaces after every transition name, reserving room for the times sign and count that
#: :func:`~flowstate_web.diagrams.overlay.overlay_instance` writes there, so a repeated
#: transition's label is never drawn over its neighbour's.
TIMES_PLACEHOLDER: Final = "\u2007" * 4

DEFAULT_STYLES: Final[Styles] = MappingProxyType(
    {
        "graph": {"rankdir": "TB", "bgcolor": "transparent", "nodesep": "0.35",
                  "ranksep": "0.45", "fontname": _FONT},
        "default": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff",
                    "color": "#546e7a", "fontcolor": "#263238", "fontname": _FONT,
                    "fontsize": "12", "penwidth": "1.2", "margin": "0.15,0.06"},
        "edge": {"color": "#78909c", "fontcolor": "#37474f", "fontname": _FONT,
                 "fontsize": "10", "arrowsize": "0.7"},
        "initial_marker": {"shape": "point", "width": "0.14", "color": "#263238",
                           "fillcolor": "#263238"},
        "initial": {"penwidth": "2"},
        "error": {"color": "#c62828", "fillcolor": "#fdecea", "fontcolor": "#b71c1c"},
        "final": {"peripheries": "2"},
        "dead_end": {"color": "#ef6c00", "style": "dashed"},
        "retry": {"style": "dashed", "color": "#8e24aa", "fontcolor": "#6a1b9a"},
        "current": {"color": "#1565c0", "fillcolor": "#e3f2fd", "penwidth": "3"},
        "visited": {"color": "#1565c0", "penwidth": "2"},
    }
)  # fmt: skip
"""Plain-data styles, one dict of Graphviz attributes per role; pass a modified copy to
:func:`build_dot` to restyle. ``style`` values are combined (``rounded,filled,dashed``)."""

_TOKEN_SAFE = re.compile(r"[A-Za-z0-9_]")
# An odd run of backslashes before a quote or at the end cannot be written as a DOT id:
# dot's lexer keeps ``\\`` pairs and only ``\"`` is an escape.
_UNWRITABLE = re.compile(r'(?<!\\)((?:\\\\)*\\)(?="|$)')


def dom_token(name: str) -> str:
    """Return ``name`` made safe for an HTML id: ``[A-Za-z0-9_]`` kept, others ``.hex.``.

    The encoding is injective and never produces ``-``, so ``edge-<t>-<s>`` is unambiguous.
    """
    return "".join(c if _TOKEN_SAFE.match(c) else f".{ord(c):x}." for c in name)


def state_dom_id(state: str) -> str:
    """Return the SVG id of the node of ``state``."""
    return f"state-{dom_token(state)}"


def edge_dom_id(transition: str, source: str) -> str:
    """Return the SVG id of the edge of ``transition`` leaving ``source``."""
    return f"edge-{dom_token(transition)}-{dom_token(source)}"


#: Appended with a count to an edge taken more than once: the multiplication sign.
TIMES: Final = "\u00d7"
INITIAL_MARKER_ID: Final = "initial-marker"
INITIAL_EDGE_ID: Final = "edge-initial"


def _text(s: str) -> str:
    # escString: a literal backslash is ``\\``; dot decodes HTML entities in labels, so a
    # literal ``&`` must be ``&amp;`` or a name like ``a&amp;b`` would render as ``a&b``.
    s = s.replace("\\", "\\\\").replace("&", "&amp;").replace("\r\n", "\n")
    return s.replace("\n", "\\n")


def label(*lines: str) -> str:
    """Return a DOT label showing ``lines`` literally (never as an HTML-like label)."""
    out: str = graphviz.nohtml("\\n".join(_text(line) for line in lines))
    return out


def _url(url: str) -> str:
    # dot copies URL verbatim into the SVG's xlink:href, so XML-escape it here.
    out: str = graphviz.nohtml(html.escape(url, quote=True).replace("\\", "\\\\"))
    return out


def merge_styles(styles: Styles, *roles: str) -> dict[str, str]:
    """Return the attributes of ``roles`` applied in order; ``style`` lists are combined."""
    out: dict[str, str] = {}
    for role in roles:
        for key, value in styles.get(role, {}).items():
            if key == "style" and out.get("style"):
                parts = out["style"].split(",") + [p for p in value.split(",") if p]
                value = ",".join(dict.fromkeys(p.strip() for p in parts))
            out[key] = value
    return out


def _node_ids(graph: FlowGraph) -> dict[str, str]:
    """Map each state to its DOT node id: its name, spelled so SVG titles show it exactly.

    dot copies an entity-like ``&...;`` of an id into the SVG ``<title>`` unescaped, so
    ``&`` is written ``&amp;``; an unspellable backslash run gets one more backslash.
    """
    ids: dict[str, str] = {}
    used: set[str] = set()
    for spec in graph.states:
        candidate = _UNWRITABLE.sub(lambda m: m.group(1) + "\\", spec.name.replace("&", "&amp;"))
        while candidate in used or (candidate != spec.name and candidate in graph.state_names):
            candidate += "_"
        ids[spec.name] = candidate
        used.add(candidate)
    return ids


def _state_roles(spec: StateSpec, dead_ends: tuple[str, ...]) -> list[str]:
    roles = ["default"]
    roles += [r for r, on in (("initial", spec.initial), ("error", spec.error),
                              ("final", spec.final)) if on]  # fmt: skip
    if spec.name in dead_ends:
        roles.append("dead_end")
    return roles


def _edge_label(t: TransitionSpec, times: int, reserve: bool) -> str:
    if times >= 2:
        lines = [f"{t.name} {TIMES}{times}"]
    else:
        lines = [t.name + (TIMES_PLACEHOLDER if reserve else "")]
    if t.guard:
        lines.append(f"[{t.guard}]")
    if t.persists:
        lines.append(f"⤓ {t.persists}")
    return label(*lines)


def build_digraph(
    graph: FlowGraph,
    *,
    state_url: Callable[[str], str] | None = None,
    styles: Styles = DEFAULT_STYLES,
    reserve_count_line: bool = True,
    current: str | None = None,
    traversed: Traversed | None = None,
) -> Any:
    """Return a :class:`graphviz.Digraph` of ``graph``; see :func:`build_dot`."""
    ids = _node_ids(graph)
    marker = "__initial__"
    while marker in ids.values():
        marker += "_"
    edge_counts: dict[tuple[str, str], int] = {}
    visited: set[str] = set()
    for (t_name, src, dst), n in (traversed or {}).items():
        edge_counts[t_name, src] = edge_counts.get((t_name, src), 0) + int(n)
        visited.update((src, dst))
    if current is not None:
        visited.add(current)
    g = graphviz.Digraph(
        name=graphviz.nohtml(_UNWRITABLE.sub("", graph.name) or "flow"),
        graph_attr={**styles.get("graph", {}), "id": f"flow-{dom_token(graph.name)}",
                    "class": "flowstate-flow"},
        node_attr=dict(styles.get("default", {})),
        edge_attr=dict(styles.get("edge", {})),
    )  # fmt: skip
    g.node(marker, label="", id=INITIAL_MARKER_ID, **{"class": "initial-marker"},
           **styles.get("initial_marker", {}))  # fmt: skip
    dead_ends = graph.dead_ends()
    for spec in graph.states:
        roles = _state_roles(spec, dead_ends)
        if spec.name in visited:
            roles.append("visited")
        if spec.name == current:
            roles.append("current")
        classes = ["state"] + [f"state-{r.replace('_', '-')}" for r in roles[1:]]
        node_defaults = styles.get("default", {})
        attrs = {k: v for k, v in merge_styles(styles, *roles).items()
                 if node_defaults.get(k) != v}  # fmt: skip
        attrs.update({"id": state_dom_id(spec.name), "class": " ".join(classes)})
        if state_url is not None:
            attrs.update({"URL": _url(state_url(spec.name)), "target": "_top",
                          "tooltip": label(spec.name)})  # fmt: skip
        reserved = ERROR_COUNT_PLACEHOLDER if spec.error else COUNT_PLACEHOLDER
        lines = (spec.name, reserved) if reserve_count_line else (spec.name,)
        g.node(graphviz.nohtml(ids[spec.name]), label=label(*lines), **attrs)
    # Edges are written with the package's quoting rather than Digraph.edge(), which would
    # read a ``:`` in a state name as a port separator.
    initial_attrs = {"id": INITIAL_EDGE_ID, "class": "initial-edge"}
    if current is not None:
        initial_attrs |= merge_styles(styles, "visited")
    g.body.append(_edge_stmt(marker, ids.get(graph.initial, graph.initial), initial_attrs))
    for t in graph.transitions:
        for src in t.sources:
            times = edge_counts.get((t.name, src), 0)
            roles = ["retry"] if t.retry else []
            roles += ["visited"] if times else []
            attrs = merge_styles(styles, *roles)
            edge_class = "transition" + "".join(f" {r}" for r in roles)
            attrs.update({"id": edge_dom_id(t.name, src), "class": edge_class,
                          "label": _edge_label(t, times, reserve_count_line)})  # fmt: skip
            if t.doc:
                attrs["tooltip"] = label(t.doc)
            g.body.append(_edge_stmt(ids.get(src, src), ids.get(t.target, t.target), attrs))
    return g


def _edge_stmt(tail: str, head: str, attrs: Mapping[str, str]) -> str:
    a = attr_list(attributes={k: graphviz.nohtml(v) for k, v in attrs.items()})
    return f"\t{quote(graphviz.nohtml(tail))} -> {quote(graphviz.nohtml(head))}{a}\n"


def build_dot(
    graph: FlowGraph,
    *,
    state_url: Callable[[str], str] | None = None,
    styles: Styles = DEFAULT_STYLES,
    reserve_count_line: bool = True,
    current: str | None = None,
    traversed: Traversed | None = None,
) -> str:
    """Return the DOT source of ``graph``'s state diagram.

    :param state_url: maps a state name to the URL its node links to (``target=_top``).
    :param styles: Graphviz attributes per role, see :data:`DEFAULT_STYLES`.
    :param reserve_count_line: add the invisible second label line that
        :func:`~flowstate_web.diagrams.overlay.overlay_counts` writes counts into, and
        the invisible room after each transition name for the instance overlay's count.
    :param current: bake an instance's current state into the DOT (static exports; pages
        use :func:`~flowstate_web.diagrams.overlay.overlay_instance` on the cached SVG).
    :param traversed: ``{(transition, from_state, to_state): times}`` to bake in likewise.
    """
    source: str = build_digraph(
        graph,
        state_url=state_url,
        styles=styles,
        reserve_count_line=reserve_count_line,
        current=current,
        traversed=traversed,
    ).source
    return source
