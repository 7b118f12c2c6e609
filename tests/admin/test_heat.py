"""The type page's heat map: figures from the rollup, window selector, legend, links."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient

from flowstate_web import rollup

from .conftest import ADMIN, count_queries, errored_branchy
from .flows import BranchyFlow

PAGE = f"{ADMIN}/types/AdminBranchyFlow"


def seed() -> None:
    for i in range(3):
        errored_branchy(f"e{i}")
    for i in range(5):
        flow = BranchyFlow.create(ref=f"ok{i}")
        flow.start()
        flow.finish()
    rollup.run()


def test_type_page_shows_the_heat_map(admin: Flask, web: FlaskClient) -> None:
    seed()
    html = web.get(PAGE).get_data(as_text=True)
    assert 'id="flowstate-heat"' in html
    assert "flowstate/heat.js" in html and "flowstate/heat.css" in html
    assert 'class="fs-heat-current" aria-current="true">24h<' in html
    for window in ("1h", "7d"):
        assert f'href="{PAGE}?window={window}#flowstate-heat"' in html
    # Figures: 3 of the 8 transitions out of "working" went to "broken".
    assert "failure rate 38% of 8 transitions out of working" in html
    assert 'data-heat="start: new → working&#10;taken 8\u00d7 in the last 24 h"' in html
    assert f'xlink:href="{PAGE}?state=broken&amp;errored=1"' in html
    assert "Edges into an error state: failure rate out of their source" in html
    assert 'fill="#7f2704"' in html  # the legend's darkest failure swatch


def test_window_choice_and_unknown_window(admin: Flask, web: FlaskClient) -> None:
    seed()
    week = web.get(f"{PAGE}?window=7d").get_data(as_text=True)
    assert 'class="fs-heat-current" aria-current="true">7d<' in week
    assert "in the last 7 days" in week
    assert web.get(f"{PAGE}?window=%00").status_code == 400  # the filters refuse NUL
    odd = web.get(f"{PAGE}?window=nope")
    assert odd.status_code == 200
    assert 'aria-current="true">24h<' in odd.get_data(as_text=True)


def test_polled_diagram_keeps_heat_and_window(
    make_admin: Callable[..., Flask],
) -> None:
    app = make_admin(FLOWSTATE_POLL_SECONDS=5)
    with app.app_context():
        seed()
    html = app.test_client().get(f"{PAGE}/diagram?window=1h").get_data(as_text=True)
    assert "flowstate-heat" in html and "in the last hour" in html


def test_three_rollup_statements_per_page(admin: Flask, web: FlaskClient) -> None:
    seed()
    with count_queries(admin) as seen:
        assert web.get(PAGE).status_code == 200
    assert len([s for s in seen if "flowstate_rollup" in s]) == 3
    assert not any("flowstate_transitions" in s for s in seen)


def test_heat_map_can_be_turned_off(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(FLOWSTATE_HEATMAP=False)
    html = app.test_client().get(PAGE).get_data(as_text=True)
    assert "flowstate-heat" not in html


def test_says_when_the_rollup_never_ran_or_stopped(admin: Flask, web: FlaskClient) -> None:
    errored_branchy("x")
    html = web.get(PAGE).get_data(as_text=True)
    assert "the history rollup has never run" in html
    rollup.run()
    html = web.get(PAGE).get_data(as_text=True)
    assert "Rolled up at" in html and "never run" not in html
    rollup.run(now=datetime.now(UTC) - timedelta(hours=1))
    html = web.get(PAGE).get_data(as_text=True)
    assert "these figures stop there" in html
