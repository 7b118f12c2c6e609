"""DOT text of state diagrams: golden files, determinism, styles and escaping.

Regenerate the golden files after an intended change with::

    FLOWSTATE_REGEN_GOLDEN=1 .venv/bin/python -m pytest \\
        tests/test_diagrams_dot.py tests/test_diagrams_mermaid.py
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from flowstate_web.diagrams import (
    DEFAULT_STYLES,
    build_dot,
    clear_cache,
    dom_token,
    edge_dom_id,
    render_svg,
    state_dom_id,
)
from flowstate_web.diagrams._samples import large_graph, readme_example_graph
from flowstate_web.diagrams.dot import TIMES_PLACEHOLDER
from flowstate_web.graph import FlowGraph, StateSpec, TransitionSpec

GOLDEN = Path(__file__).parent / "golden"
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("FLOWSTATE_REGEN_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; see module docstring"


def state_url(state: str) -> str:
    return f"/admin/flows/SyncThirdPartyApiFlow?state={state}&page=1"


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def test_readme_dot_matches_golden() -> None:
    check_golden("readme_flow.dot", build_dot(readme_example_graph()))


def test_readme_dot_with_links_matches_golden() -> None:
    check_golden("readme_flow_links.dot", build_dot(readme_example_graph(), state_url=state_url))


def test_same_graph_gives_same_bytes() -> None:
    a, b = readme_example_graph(), readme_example_graph()
    assert a is not b
    assert build_dot(a, state_url=state_url) == build_dot(b, state_url=state_url)
    big = build_dot(large_graph())
    assert big == build_dot(large_graph())


def _node_line(dot: str, node: str) -> str:
    return next(line for line in dot.splitlines() if line.startswith(f"\t{node} ["))


def test_styles_by_role() -> None:
    dot = build_dot(readme_example_graph())
    error = _node_line(dot, "failed_to_fetch_third_party_api")
    assert 'color="#c62828"' in error
    assert 'class="state state-error"' in error
    assert "peripheries=2" in _node_line(dot, "completed")
    assert "state-final" in _node_line(dot, "completed")
    assert 'class="state state-initial"' in _node_line(dot, "pending")
    assert "shape=point" in _node_line(dot, "__initial__")
    assert re.search(r"__initial__ -> pending \[[^]]*id=\"edge-initial\"", dot)
    retry = next(line for line in dot.splitlines() if 'id="edge-retry_fetch-' in line)
    assert "style=dashed" in retry
    assert 'class="transition retry"' in retry
    room = TIMES_PLACEHOLDER  # reserved for the instance overlay
    assert f'label="start_record_save{room}\\n[has_response]"' in dot
    assert f'label="finish_third_party_api_request{room}\\n⤓ third_party_api_response"' in dot


def test_dead_end_is_flagged_and_styles_are_data() -> None:
    graph = FlowGraph(
        "Stuck",
        (StateSpec("a", initial=True), StateSpec("limbo"), StateSpec("done", final=True)),
        (TransitionSpec("go", ("a",), "limbo"), TransitionSpec("end", ("a",), "done")),
    )
    line = _node_line(build_dot(graph), "limbo")
    assert 'style="rounded,filled,dashed"' in line
    assert "state-dead-end" in line
    assert 'color="#ef6c00"' in line
    styles = {**DEFAULT_STYLES, "dead_end": {"color": "purple"}}
    assert "color=purple" in _node_line(build_dot(graph, styles=styles), "limbo")
    assert "state-dead-end" not in _node_line(build_dot(graph), "done")


def test_baked_in_instance_path_for_static_exports() -> None:
    traversed = {
        ("pick", "pending", "picked"): 1,
        ("start_third_party_api_request", "picked", "fetching_third_party_api"): 3,
    }
    dot = build_dot(readme_example_graph(), current="fetching_third_party_api", traversed=traversed)
    assert "state-current" in _node_line(dot, "fetching_third_party_api")
    assert "state-visited" in _node_line(dot, "pending")
    assert "state-visited" not in _node_line(dot, "completed")
    assert 'label="start_third_party_api_request \u00d73"' in dot
    # Taken once: no count, only the room reserved for one.
    assert f'id="edge-pick-pending" label="pick{TIMES_PLACEHOLDER}"' in dot
    plain = build_dot(readme_example_graph(), reserve_count_line=False, traversed=traversed)
    assert re.search(r'id="edge-pick-pending" label=pick[ \]]', plain)


def test_dom_tokens_are_injective_and_html_safe() -> None:
    names = ["a b", "a.20.b", "a_b", "a-b", "é", ".e9.", "A", "a"]
    tokens = [dom_token(n) for n in names]
    assert len(set(tokens)) == len(tokens)
    assert all(re.fullmatch(r"[A-Za-z0-9_.]+", t) for t in tokens)
    assert edge_dom_id("t-x", "y") != edge_dom_id("t", "x-y")
    assert state_dom_id("pending") == "state-pending"


WEIRD = [
    'say "hi"',
    "back\\slash",
    "with space",
    "<b>&amp; tags</b>",
    "café ☕",
    "a:b",
    "node",
    "ends\\\\",
]


def weird_graph() -> FlowGraph:
    states = (StateSpec("start", initial=True), *(StateSpec(n) for n in WEIRD[:-1]))
    states += (StateSpec(WEIRD[-1], final=True, error=True),)
    chain = ["start", *WEIRD]
    transitions = tuple(
        TransitionSpec(f'go "{i}" <&> ü\\', (chain[i],), chain[i + 1], guard="ok?<>", doc="d&<")
        for i in range(len(chain) - 1)
    )
    return FlowGraph('Weird "flow"', states, transitions)


def test_names_needing_escaping_render_and_round_trip() -> None:
    graph = weird_graph()
    rendered = render_svg(build_dot(graph, state_url=lambda s: f"/list?state={s}&x=<1>"))
    assert rendered.error is None
    assert rendered.svg is not None
    root = ET.fromstring(rendered.svg)
    nodes = {g.get("id"): g for g in root.iter(f"{SVG}g") if "node" in g.get("class", "")}
    for name in ["start", *WEIRD]:
        node = nodes[state_dom_id(name)]
        assert node.findtext(f"{SVG}title") == name
        texts = [t.text for t in node.iter(f"{SVG}text")]
        assert texts[0] == name
        href = next(node.iter(f"{SVG}a")).get(f"{XLINK}href")
        assert href == f"/list?state={name}&x=<1>"
    edges = [g for g in root.iter(f"{SVG}g") if "transition" in g.get("class", "")]
    assert len(edges) == len(graph.transitions)
    first = next(e for e in edges if e.get("id") == edge_dom_id(graph.transitions[0].name, "start"))
    texts = [(t.text or "").rstrip(TIMES_PLACEHOLDER) for t in first.iter(f"{SVG}text")]
    assert texts == ['go "0" <&> ü\\', "[ok?<>]"]
    # A colon is part of the name, not a port: the edge really joins "a:b" to "node".
    titles = {e.findtext(f"{SVG}title") for e in edges}
    assert "a:b->node" in titles


def test_unwritable_name_still_renders() -> None:
    # dot cannot spell an odd run of backslashes before a quote as a node id.
    graph = FlowGraph(
        "F",
        (StateSpec('odd\\"quote', initial=True), StateSpec("trail\\", final=True)),
        (TransitionSpec("t", ('odd\\"quote',), "trail\\"),),
    )
    rendered = render_svg(build_dot(graph))
    assert rendered.svg is not None, rendered.error
    root = ET.fromstring(rendered.svg)
    labels = {t.text for t in root.iter(f"{SVG}text")}
    assert {'odd\\"quote', "trail\\"} <= labels
    assert {state_dom_id('odd\\"quote'), state_dom_id("trail\\")} <= {
        g.get("id") for g in root.iter(f"{SVG}g")
    }
