"""Rendered diagrams stay legible: no label drawn over another, none cut at the edge.

Checked on the real ``dot`` output with both overlays at their widest (large counts on
every state, every transition taken many times), for every demo flow type and a 50-state
stress graph. Text widths are estimated from font metrics (:mod:`tests.svg_boxes`).
"""

from __future__ import annotations

import pytest

from flowstate_web.demo.orders_flow import OrderFulfilmentFlow
from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow
from flowstate_web.diagrams import build_dot, overlay_counts, overlay_instance, render_svg
from flowstate_web.diagrams._samples import large_graph
from flowstate_web.graph import FlowGraph

from .svg_boxes import problems, text_boxes

GRAPHS = {
    "SyncThirdPartyApiFlow": SyncThirdPartyApiFlow.graph,
    "OrderFulfilmentFlow": OrderFulfilmentFlow.graph,
    "LargeFlow": large_graph,
}


def rendered(graph: FlowGraph) -> str:
    svg = render_svg(build_dot(graph, state_url=lambda s: f"/flows/x?state={s}")).svg
    assert svg is not None
    return svg


@pytest.mark.parametrize("name", GRAPHS)
def test_type_diagram_with_large_counts_has_no_overlap(name: str) -> None:
    graph = GRAPHS[name]()
    counts = {s.name: 987_654 if i % 2 else 99_999 for i, s in enumerate(graph.states)}
    errored = {s.name: counts[s.name] for s in graph.states if s.error}
    svg = overlay_counts(rendered(graph), counts, errored)
    assert len(text_boxes(svg)[0]) > len(graph.states)
    assert problems(svg) == []


@pytest.mark.parametrize("name", GRAPHS)
def test_instance_diagram_with_repeated_transitions_has_no_overlap(name: str) -> None:
    graph = GRAPHS[name]()
    traversed = {(t.name, src, t.target): 47 for t in graph.transitions for src in t.sources}
    svg = overlay_instance(rendered(graph), current=graph.initial, traversed=traversed)
    assert "\u00d747" in svg
    assert problems(svg) == []


def test_the_check_sees_an_overlap() -> None:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 50">'
        '<g transform="translate(4 46)">'
        '<text x="50" y="-20" font-size="10" text-anchor="middle">decline_payment</text>'
        '<text x="70" y="-20" font-size="10" text-anchor="middle">retry_payment</text>'
        '<text x="190" y="-5" font-size="10" text-anchor="middle">cut</text></g></svg>'
    )
    assert problems(svg) == [
        "'decline_payment' overlaps 'retry_payment'",
        "'cut' outside the viewBox (187.3,33.2)-(200.7,43.2)",
    ]


@pytest.mark.parametrize("name", GRAPHS)
def test_heat_map_with_large_figures_has_no_overlap(name: str) -> None:
    from flowstate_web.diagrams.heat import EdgeHeat, StateHeat, overlay_heat

    graph = GRAPHS[name]()
    errors = set(graph.error_states)
    edges = [
        EdgeHeat(t.name, src, t.target, 123_456, t.target in errors, 0.31, 400_000)
        for t in graph.transitions
        for src in t.sources
    ]
    states = [StateHeat(s.name, 987_654, 987_654 if s.error else 0) for s in graph.states]
    counts = {s.name: 987_654 for s in graph.states}
    errored = {s.name: 987_654 for s in graph.states if s.error}
    svg = overlay_heat(overlay_counts(rendered(graph), counts, errored), edges, states, "24h")
    assert "\u00d7123k" in svg
    assert problems(svg) == []
