"""The flow instance page: state, error, props, timeline, artefacts, diagram, live refresh."""

from __future__ import annotations

import json
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from .conftest import ADMIN, HX, errored_branchy
from .flows import BranchyFlow, SimpleRetryFlow


def url(flow_id: int, type_name: str = "AdminBranchyFlow") -> str:
    return f"{ADMIN}/types/{type_name}/{flow_id}"


def test_shows_state_error_props_history_and_artefacts(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("detail-1", count=3)

    html = web.get(url(flow.id)).get_data(as_text=True)

    assert f'id="flow-{flow.id}"' in html
    assert '<span class="fs-state fs-state-error">broken</span>' in html
    assert "fs-badge-error" in html
    assert "ValueError" in html and "upstream said no for detail-1" in html
    assert '<details class="fs-traceback">' in html and "Traceback" in html
    assert "detail-1" in html and "count" in html
    # The timeline: both transitions, names, from -> to, time spent.
    assert '<code class="fs-transition">start</code>' in html
    assert '<code class="fs-transition">fail</code>' in html
    assert "stayed" in html and "in state for" in html
    # The artefact of ``start`` sits in its step, collapsible, pretty-printed.
    start_step = html[html.index('id="step-1"') :]
    assert '<details class="fs-artefact"' in start_step
    assert "&#34;started&#34;: true" in start_step or '"started": true' in start_step
    assert 'class="flowstate-diagram"' in html


def test_actor_and_reason_of_a_retry_are_in_the_timeline(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("who")
    flow.run("retry_work", actor="bob", reason="upstream is back")
    html = web.get(url(flow.id)).get_data(as_text=True)
    assert "by <b>bob</b>" in html
    assert "upstream is back" in html


def test_large_artefact_is_truncated_with_a_link_to_all(
    make_admin: Callable[..., Flask],
) -> None:
    app = make_admin(FLOWSTATE_ARTEFACT_PREVIEW_BYTES=200)
    with app.app_context():
        flow = BranchyFlow.create(ref="big")
        flow.start({"data": ["x" * 50 for _ in range(40)], "tail": "THE-END"})
        web = app.test_client()
        html = web.get(url(flow.id)).get_data(as_text=True)
        assert "Truncated at 200 B" in html
        assert "THE-END" not in html
        artefact_id = flow.latest_artefact("report").id  # type: ignore[union-attr]
        full = web.get(f"{url(flow.id)}/artefacts/{artefact_id}")
        assert full.status_code == 200
        assert "THE-END" in full.get_data(as_text=True)
        raw = web.get(f"{url(flow.id)}/artefacts/{artefact_id}.json")
        assert raw.mimetype == "application/json"
        assert json.loads(raw.data)["tail"] == "THE-END"


def test_artefact_of_another_flow_is_404(admin: Flask, web: FlaskClient) -> None:
    a = BranchyFlow.create(ref="a")
    a.start()
    b = BranchyFlow.create(ref="b")
    artefact_id = a.latest_artefact("report").id  # type: ignore[union-attr]
    assert web.get(f"{url(b.id)}/artefacts/{artefact_id}").status_code == 404
    assert web.get(f"{url(b.id)}/artefacts/{artefact_id}.json").status_code == 404
    assert web.get(f"{url(a.id)}/artefacts/999999").status_code == 404


def test_unknown_malformed_or_foreign_id_is_404(admin: Flask, web: FlaskClient) -> None:
    other = SimpleRetryFlow.create(ref="s")
    for path in (url(999999), url(0), f"{ADMIN}/types/AdminBranchyFlow/abc", url(other.id)):
        response = web.get(path)
        assert response.status_code == 404, path
        assert "fs-error-page" in response.get_data(as_text=True)


def test_live_refresh_answers_204_until_the_flow_changes(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("live")
    html = web.get(url(flow.id)).get_data(as_text=True)
    assert f'hx-get="{url(flow.id)}?seq={flow.seq}"' in html

    same = web.get(f"{url(flow.id)}?seq={flow.seq}", headers=HX)
    assert same.status_code == 204
    assert "HX-Request" in same.headers["Vary"]

    flow.run("retry_work")
    changed = web.get(f"{url(flow.id)}?seq={flow.seq - 1}", headers=HX)
    part = changed.get_data(as_text=True)
    assert changed.status_code == 200
    assert part.lstrip().startswith(f'<section id="flow-{flow.id}"')
    assert "<html" not in part
    assert f"seq={flow.seq}" in part


def test_paused_page_does_not_poll(admin: Flask, web: FlaskClient) -> None:
    flow = BranchyFlow.create(ref="p")
    html = web.get(url(flow.id) + "?live=0").get_data(as_text=True)
    assert "hx-trigger" not in html
    assert "paused" in html


def test_error_state_without_retry_says_so(admin: Flask, web: FlaskClient) -> None:
    flow = BranchyFlow.create(ref="st")
    flow.start()
    flow.get_stuck()
    html = web.get(url(flow.id)).get_data(as_text=True)
    assert "No retry transition is declared from this state." in html
    assert 'name="transition"' not in html  # no retry button (zoom buttons are fine)
