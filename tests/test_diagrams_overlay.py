"""Live overlays written into the cached SVG: type counts and one instance's path."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from flowstate_web.diagrams import (
    build_dot,
    clear_cache,
    diagram_view,
    edge_dom_id,
    overlay_counts,
    overlay_instance,
    render_svg,
    rendering,
    state_dom_id,
)
from flowstate_web.diagrams._samples import readme_example_graph
from flowstate_web.graph import FlowGraph, StateSpec, TransitionSpec

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


@pytest.fixture
def base_svg() -> str:
    svg = render_svg(build_dot(readme_example_graph(), state_url=lambda s: f"/f?state={s}")).svg
    assert svg is not None
    return svg


def index(svg: str) -> dict[str, ET.Element]:
    return {g.get("id", ""): g for g in ET.fromstring(svg).iter(f"{SVG}g")}


def classes(el: ET.Element) -> set[str]:
    return set(el.get("class", "").split())


def spans(el: ET.Element) -> dict[str, str]:
    return {s.get("class", ""): s.text or "" for s in el.iter(f"{SVG}tspan")}


def test_counts_go_on_the_reserved_line(base_svg: str) -> None:
    out = overlay_counts(
        base_svg,
        counts={"picked": 12, "failed_to_fetch_third_party_api": 3, "gone_state": 5},
        errored={"failed_to_fetch_third_party_api": 3},
    )
    nodes = index(out)
    picked = nodes[state_dom_id("picked")]
    assert {"state", "has-instances"} <= classes(picked)
    assert "has-errored" not in classes(picked)
    texts = list(picked.iter(f"{SVG}text"))
    assert texts[0].text == "picked"
    assert len(texts) == 2
    assert spans(texts[1]) == {"count": "12"}
    failed = nodes[state_dom_id("failed_to_fetch_third_party_api")]
    assert {"has-instances", "has-errored", "state-error"} <= classes(failed)
    assert spans(failed) == {"count": "3", "errored-count": " · 3 errored"}
    pending = nodes[state_dom_id("pending")]
    assert "has-instances" not in classes(pending)
    assert spans(pending) == {}
    # Still inline-able: namespaces declared, xlink prefix kept, links intact.
    assert out.startswith("<svg")
    assert "xlink:href=" in out
    assert "ns0:" not in out
    href = next(picked.iter(f"{SVG}a")).get(f"{XLINK}href")
    assert href == "/f?state=picked"


def test_counts_are_escaped_and_ints() -> None:
    name = '<b>"x" & y</b>'
    graph = FlowGraph(
        "E", (StateSpec(name, initial=True), StateSpec("z", final=True)),
        (TransitionSpec("t", (name,), "z"),),
    )  # fmt: skip
    svg = render_svg(build_dot(graph, reserve_count_line=False)).svg
    assert svg is not None
    out = overlay_counts(svg, {name: 7}, {name: 2})
    node = index(out)[state_dom_id(name)]
    texts = list(node.iter(f"{SVG}text"))
    assert len(texts) == 1
    assert texts[0].text == name
    assert spans(node) == {"count": " 7", "errored-count": " · 2 errored"}
    assert "<b>" not in out


def history() -> dict[tuple[str, str, str], int]:
    """A path with a fetch that failed twice and was retried, now saving the record."""
    return {
        ("pick", "pending", "picked"): 1,
        ("start_third_party_api_request", "picked", "fetching_third_party_api"): 3,
        ("fail_third_party_api_request", "fetching_third_party_api",
         "failed_to_fetch_third_party_api"): 2,
        ("retry_fetch", "failed_to_fetch_third_party_api", "picked"): 2,
        ("finish_third_party_api_request", "fetching_third_party_api",
         "fetched_third_party_api"): 1,
        ("start_record_save", "fetched_third_party_api", "saving_my_record"): 1,
    }  # fmt: skip


def test_instance_path(base_svg: str) -> None:
    out = overlay_instance(base_svg, current="saving_my_record", traversed=history())
    nodes = index(out)
    current = nodes[state_dom_id("saving_my_record")]
    assert {"current", "visited"} <= classes(current)
    visited_states = {
        "pending", "picked", "fetching_third_party_api", "failed_to_fetch_third_party_api",
        "fetched_third_party_api", "saving_my_record",
    }  # fmt: skip
    for state in readme_example_graph().state_names:
        assert ("visited" in classes(nodes[state_dom_id(state)])) == (state in visited_states)
        assert ("current" in classes(nodes[state_dom_id(state)])) == (state == "saving_my_record")
    visited_edges = {edge_dom_id(t, src): n for (t, src, _), n in history().items()}
    for t in readme_example_graph().transitions:
        edge = nodes[edge_dom_id(t.name, t.sources[0])]
        times = visited_edges.get(edge.get("id", ""), 0)
        assert ("visited" in classes(edge)) == (times > 0)
        first_line = next(edge.iter(f"{SVG}text"))
        assert first_line.text == t.name
        assert spans(first_line) == ({"times": f" \u00d7{times}"} if times > 1 else {})
    assert "visited" in classes(nodes["edge-initial"])


def test_overlays_on_page_views_spawn_no_dot(
    base_svg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def no_spawn(
        cmd: list[str], source: bytes, timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        calls.append(cmd)
        raise AssertionError("dot was spawned for a cached diagram")

    monkeypatch.setattr(rendering, "_run_dot", no_spawn)
    for n in range(5):  # live polling refreshes
        view = diagram_view(
            readme_example_graph(),
            state_url=lambda s: f"/f?state={s}",
            counts={"picked": n},
            errored={"picked": 1},
        )
        assert view.svg is not None
        assert f">{n}</tspan>" in view.svg
    view = diagram_view(
        readme_example_graph(),
        state_url=lambda s: f"/f?state={s}",
        current="saving_my_record",
        traversed=history(),
    )
    assert view.svg is not None
    assert 'class="node state visited current"' in view.svg
    assert calls == []


def test_overlay_ignores_unknown_edges_and_states(base_svg: str) -> None:
    out = overlay_instance(base_svg, current="no_longer_declared", traversed={("old", "x", "y"): 4})
    assert "current" not in out
    assert "visited" not in out.replace('"edge initial-edge visited"', "")
