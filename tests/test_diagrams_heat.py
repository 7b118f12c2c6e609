"""The heat overlay: colours by volume and failure rate, figures, links, focusability."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest

from flowstate_web.diagrams import build_dot, edge_dom_id, render_svg, state_dom_id
from flowstate_web.diagrams.dot import TIMES
from flowstate_web.diagrams.heat import (
    FAILURE_COLOURS,
    IDLE_COLOUR,
    VOLUME_COLOURS,
    EdgeHeat,
    StateHeat,
    failure_class,
    overlay_heat,
    volume_class,
    volume_ranges,
)
from tests.flows import Order

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"


@pytest.fixture
def heated() -> dict[str, ET.Element]:
    svg = render_svg(build_dot(Order.graph(), state_url=lambda s: f"/t?state={s}")).svg
    assert svg is not None
    out = overlay_heat(
        svg,
        [
            EdgeHeat("pay", "new", "paid", 90, out_of_source=100),
            EdgeHeat("ship", "paid", "shipped", 3, out_of_source=3),
            EdgeHeat("finish", "shipped", "done", 0),
            EdgeHeat(
                "fail", "new", "failed", 10, into_error=True, rate=0.1, out_of_source=100,
                url="/t?state=failed&errored=1",
            ),
        ],
        [StateHeat("new", 7, 0, 2, False, 12.0, 600.0, 100), StateHeat("failed", 3, 3)],
        "24 h",
    )  # fmt: skip
    root = ET.fromstring(out)
    assert root.get("class", "").endswith("flowstate-heat")
    return {g.get("id", ""): g for g in root.iter(f"{SVG}g")}


def stroke(g: ET.Element) -> tuple[str | None, float]:
    path = next(g.iter(f"{SVG}path"))
    return path.get("stroke"), float(path.get("stroke-width", "1"))


def test_volume_colours_and_widths(heated: dict[str, ET.Element]) -> None:
    pay, ship = heated[edge_dom_id("pay", "new")], heated[edge_dom_id("ship", "paid")]
    assert stroke(pay) == (VOLUME_COLOURS[4], pytest.approx(5.4))
    colour, width = stroke(ship)
    assert colour in VOLUME_COLOURS[:4]
    assert width < 5.4
    assert "heat-vol" in pay.get("class", "")
    polygon = next(pay.iter(f"{SVG}polygon"))
    assert polygon.get("fill") == VOLUME_COLOURS[4]
    assert stroke(heated[edge_dom_id("finish", "shipped")])[0] == IDLE_COLOUR


def test_error_edge_coloured_by_failure_rate_and_linked(heated: dict[str, ET.Element]) -> None:
    fail = heated[edge_dom_id("fail", "new")]
    assert stroke(fail)[0] == FAILURE_COLOURS[failure_class(0.1) - 1]
    assert "heat-fail" in fail.get("class", "")
    link = next(fail.iter(f"{SVG}a"))
    assert link.get(f"{XLINK}href") == "/t?state=failed&errored=1"
    title = fail.find(f"{SVG}title")
    assert title is not None and "failure rate 10%" in (title.text or "")
    assert "of 100 transitions out of new" in fail.get("data-heat", "")
    assert any((t.text or "") == f" {TIMES}10" for t in fail.iter(f"{SVG}tspan"))


def test_counts_are_compact_to_fit_the_room_dot_kept() -> None:
    from flowstate_web.diagrams.heat import compact

    assert [compact(n) for n in (7, 999, 1000, 1234, 12_345, 999_999, 1_200_000)] == [
        "7",
        "999",
        "1.0k",
        "1.2k",
        "12k",
        "999k",
        "1.2M",
    ]
    assert all(len(compact(n)) <= 4 for n in (1, 10**3 - 1, 10**4, 10**5 + 7, 10**8, 10**11))


def test_figures_on_hover_and_focus(heated: dict[str, ET.Element]) -> None:
    pay = heated[edge_dom_id("pay", "new")]
    assert pay.get("tabindex") == "0"  # not a link: focusable by itself
    assert "taken 90\u00d7 in the last 24 h" in pay.get("aria-label", "")
    new = heated[state_dom_id("new")]
    figures = new.get("data-heat", "")
    assert "7 flows now · 0 errored · 2 stalled" in figures
    assert "p50 12 s · p95 10.0 min" in figures
    assert "has-stalled" in new.get("class", "")
    link = next(new.iter(f"{SVG}a"))  # the state's own link to its filtered list
    assert link.get(f"{XLINK}href") == "/t?state=new"
    assert "p95 10.0 min" in (link.get(f"{XLINK}title") or "")


def test_classes_and_legend_ranges() -> None:
    assert volume_class(0, 10) == 0
    assert volume_class(10, 10) == 5
    assert volume_class(1, 1000) == 1
    assert [failure_class(r) for r in (0, 0.01, 0.02, 0.07, 0.2, 0.9)] == [1, 1, 2, 3, 4, 5]
    ranges = volume_ranges(1000)
    assert ranges[0][0] == 1 and ranges[-1][1] == 1000
    for lo, hi in ranges:
        assert volume_class(lo, 1000) == volume_class(hi, 1000)
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))
    assert volume_ranges(0) == []


def test_hostile_names_stay_escaped() -> None:
    svg = render_svg(build_dot(Order.graph())).svg
    assert svg is not None
    out = overlay_heat(
        svg,
        [EdgeHeat("pay", "new", "paid", 1, url='/x?a=1&b="<script>')],
        [StateHeat("new", 1)],
        "<b>hour</b>",
    )
    root = ET.fromstring(out)  # still well-formed XML
    assert "<script>" not in out and "<b>" not in out
    g = {g.get("id"): g for g in root.iter(f"{SVG}g")}[edge_dom_id("pay", "new")]
    assert next(g.iter(f"{SVG}a")).get(f"{XLINK}href") == '/x?a=1&b="<script>'


def test_dashed_retry_edges_are_painted_first_under_every_label() -> None:
    """SVG paints in document order: a long retry curve written after another edge would be
    painted over that edge's label (it took the "k" off "x1.2k" in the demo)."""
    svg = render_svg(build_dot(Order.graph())).svg
    assert svg is not None

    def order(doc: str) -> list[bool]:
        """Per edge group in document order: whether it is dashed."""
        root = ET.fromstring(doc)
        return [
            any(p.get("stroke-dasharray") for p in g.iter(f"{SVG}path"))
            for g in root.iter(f"{SVG}g")
            if "edge" in g.get("class", "").split()
        ]

    before = order(svg)
    assert True in before and False in before  # Order's retry edge is dashed
    assert before != sorted(before, reverse=True)  # and dot writes it after a solid one
    after = order(overlay_heat(svg, [EdgeHeat("pay", "new", "paid", 1200)], [], "24 h"))
    assert sorted(after) == sorted(before)  # the same edges, none lost
    assert after == sorted(after, reverse=True)  # every dashed edge before every solid one
