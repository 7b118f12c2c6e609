"""Stalled flows in the admin: counts, the filter, the flow page, "fail it" one and bulk."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.test import TestResponse

from flowstate_web.admin import bulk, bulk_fail
from flowstate_web.admin.filters import ListFilter
from flowstate_web.models import flows
from tests.timed_flows import TimedFlow

from .conftest import ADMIN, HX, count_queries, csrf_token

TYPE = f"{ADMIN}/types/tests.TimedFlow"


def entered_ago(app: Flask, flow_id: int, ago: timedelta) -> None:
    """Rewrite when the flow entered its state (no sleeping)."""
    db = app.extensions["sqlalchemy"]
    db.session.execute(
        update(flows).where(flows.c.id == flow_id).values(state_entered_at=datetime.now(UTC) - ago)
    )
    db.session.commit()


def stalled_fetch(app: Flask, ref: str = "r", ago: timedelta = timedelta(minutes=25)) -> TimedFlow:
    flow = TimedFlow.create(ref=ref)
    flow.start()
    entered_ago(app, flow.id, ago)
    return TimedFlow.get(flow.id)


def post_fail(
    web: FlaskClient, flow_id: int, transition: str = "fail_fetch", *, htmx: bool = True, **f: str
) -> TestResponse:
    data = {"transition": transition, "csrf_token": csrf_token(web), **f}
    return web.post(f"{TYPE}/{flow_id}/fail", data=data, headers=HX if htmx else {})


def test_overview_shows_stalled_next_to_errored(admin: Flask, web: FlaskClient) -> None:
    for i in range(3):
        stalled_fetch(admin, f"s{i}")
    TimedFlow.create(ref="young").start()  # fetching, but not for long
    html = web.get(ADMIN + "/").get_data(as_text=True)
    assert (
        '<th scope="col" class="fs-num" title="in a state longer than its timeout">Stalled' in html
    )
    link = f'<a class="fs-badge fs-badge-stalled" href="{TYPE}?stalled=1">3</a>'
    assert link in html
    assert "(3 stalled)" in html  # on the fetching chip


def test_type_page_counts_and_filters_stalled(admin: Flask, web: FlaskClient) -> None:
    stalled = [stalled_fetch(admin, f"s{i}").id for i in range(2)]
    young = TimedFlow.create(ref="young")
    young.start()
    queued_old = TimedFlow.create(ref="queued-old")
    entered_ago(admin, queued_old.id, timedelta(hours=2))
    parked = TimedFlow.create(ref="parked")
    parked.start()
    parked.park()
    entered_ago(admin, parked.id, timedelta(days=3))

    page = web.get(TYPE).get_data(as_text=True)
    assert '<b class="fs-stalled-count">3</b> stalled' in page
    assert 'name="stalled" value="1"' in page
    assert "Fail all stalled flows matching this filter" in page

    listed = web.get(f"{TYPE}?stalled=1", headers=HX).get_data(as_text=True)
    for flow_id in [*stalled, queued_old.id]:
        assert f'id="flow-{flow_id}"' in listed
    assert f'id="flow-{young.id}"' not in listed and f'id="flow-{parked.id}"' not in listed
    assert '<b class="fs-match-count">3</b> match the filter' in listed
    assert listed.count('class="fs-badge fs-badge-stalled"') == 3

    only_fetching = web.get(f"{TYPE}?stalled=1&state=fetching", headers=HX).get_data(as_text=True)
    assert f'id="flow-{queued_old.id}"' not in only_fetching
    not_stalled = web.get(f"{TYPE}?stalled=0", headers=HX).get_data(as_text=True)
    assert f'id="flow-{young.id}"' in not_stalled and f'id="flow-{stalled[0]}"' not in not_stalled
    assert ListFilter(stalled=True).query() == {"stalled": "1"}  # bookmarkable


def test_bad_stalled_flag_is_400(admin: Flask, web: FlaskClient) -> None:
    response = web.get(f"{TYPE}?stalled=maybe")
    assert response.status_code == 400
    assert "stalled: expected 1 or 0" in response.get_data(as_text=True)


def test_stalled_counts_stop_at_the_limit(
    admin: Flask, web: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowstate_web.admin import queries

    monkeypatch.setattr(queries, "COUNT_LIMIT", 2)
    for i in range(3):
        stalled_fetch(admin, f"s{i}")
    assert '<b class="fs-stalled-count">2+</b> stalled' in web.get(TYPE).get_data(as_text=True)


def test_statements_stay_constant_with_stalled_flows(make_admin: Callable[..., Flask]) -> None:
    def seen(n: int) -> tuple[int, int]:
        app = make_admin()
        with app.app_context():
            for i in range(n):
                stalled_fetch(app, f"s{i}")
                TimedFlow.create(ref=f"q{i}")
        web = app.test_client()
        sizes = []
        for path in ("/", "/types/tests.TimedFlow", "/types/tests.TimedFlow?stalled=1"):
            web.get(ADMIN + path)
            with count_queries(app) as statements:
                assert web.get(ADMIN + path, headers=HX).status_code == 200
            sizes.append(len(statements))
        return sizes[0], sizes[1] + 100 * sizes[2]

    assert seen(2) == seen(30)


def test_flow_page_says_since_when_and_what_it_waits_for(admin: Flask, web: FlaskClient) -> None:
    flow = stalled_fetch(admin, ago=timedelta(minutes=25, seconds=5))
    html = web.get(f"{TYPE}/{flow.id}").get_data(as_text=True)
    assert "Stalled since" in html
    assert "for <b>25m 0" in html and "timeout <b>10m</b>" in html
    assert 'Entered by <code class="fs-transition">start</code>' in html
    assert "<code>enqueue_fetch</code>" in html and "at most once" in html
    assert "Fail it: fail_fetch" in html and "Fail it: cancel" in html

    young = TimedFlow.create(ref="young")
    young.start()
    html = web.get(f"{TYPE}/{young.id}").get_data(as_text=True)
    assert "Stalled since" not in html and "Fail it" not in html
    assert "(timeout 10m: stalled in 9m" in html


def test_a_save_after_entering_does_not_hide_what_entered(admin: Flask, web: FlaskClient) -> None:
    flow = stalled_fetch(admin)
    flow.ref = "edited"
    flow.save(actor="ops@example.com")  # a history row of kind update, same state
    html = web.get(f"{TYPE}/{flow.id}").get_data(as_text=True)
    assert 'Entered by <code class="fs-transition">start</code>' in html
    assert "<code>enqueue_fetch</code>" in html
    assert 'Entered by <code class="fs-transition">save</code>' not in html


def test_fail_it_returns_the_panel_and_is_audited(admin: Flask, web: FlaskClient) -> None:
    flow = stalled_fetch(admin)
    response = post_fail(web, flow.id, reason="API down since 9:00")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith(f'<section id="flow-{flow.id}"')
    assert "Failed with fail_fetch: fetching → failed." in html
    assert "Retry: retry_fetch" in html  # the usual retry applies now
    last = TimedFlow.get(flow.id).history()[-1]
    assert (last.name, last.actor, last.reason) == ("fail_fetch", "alice", "API down since 9:00")
    assert last.meta == {"admin": "fail_stalled"}
    assert last.error_type == "flowstate_web.timeouts.FlowTimedOutError"


def test_fail_it_from_a_row_returns_the_row(admin: Flask, web: FlaskClient) -> None:
    flow = stalled_fetch(admin)
    html = post_fail(web, flow.id, "cancel", widget="row").get_data(as_text=True)
    assert html.lstrip().startswith(f'<tr id="flow-{flow.id}"')
    assert "cancelled" in html
    assert TimedFlow.get(flow.id).state == "cancelled"


def test_fail_it_on_a_flow_that_is_not_stalled_is_409(admin: Flask, web: FlaskClient) -> None:
    flow = TimedFlow.create(ref="young")
    flow.start()
    response = post_fail(web, flow.id)
    assert response.status_code == 409
    assert "is not stalled: its timeout passes in" in response.get_data(as_text=True)
    assert TimedFlow.get(flow.id).state == "fetching"


@pytest.mark.parametrize("name", ["finish", "retry_fetch", "", "nope"])
def test_only_transitions_into_an_error_state(admin: Flask, web: FlaskClient, name: str) -> None:
    flow = stalled_fetch(admin)
    response = post_fail(web, flow.id, name)
    assert response.status_code == 400
    assert TimedFlow.get(flow.id).state == "fetching"


def test_fail_it_needs_post_and_csrf(admin: Flask, web: FlaskClient) -> None:
    flow = stalled_fetch(admin)
    assert web.get(f"{TYPE}/{flow.id}/fail").status_code == 405
    csrf_token(web)
    response = web.post(f"{TYPE}/{flow.id}/fail", data={"transition": "fail_fetch"})
    assert response.status_code == 400
    assert TimedFlow.get(flow.id).state == "fetching"


def test_read_only_hides_and_refuses_fail_it(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(FLOWSTATE_READ_ONLY=True)
    with app.app_context():
        flow = stalled_fetch(app)
        web = app.test_client()
        html = web.get(f"{TYPE}/{flow.id}").get_data(as_text=True)
        assert "Stalled since" in html and "Fail it" not in html
        assert "Fail all stalled" not in web.get(TYPE).get_data(as_text=True)
        assert post_fail(web, flow.id).status_code == 403
        assert web.get(f"{TYPE}/bulk-fail").status_code == 403
        assert TimedFlow.get(flow.id).state == "fetching"


def test_non_htmx_fail_redirects_back(admin: Flask, web: FlaskClient) -> None:
    flow = stalled_fetch(admin)
    response = post_fail(web, flow.id, htmx=False, back=f"{TYPE}?stalled=1")
    assert response.status_code == 303
    assert response.headers["Location"] == f"{TYPE}?stalled=1"
    assert "Failed with fail_fetch" in web.get(f"{TYPE}?stalled=1").get_data(as_text=True)


# -- bulk ----------------------------------------------------------------------------------


def test_bulk_fail_confirm_counts_per_state(admin: Flask, web: FlaskClient) -> None:
    for i in range(2):
        stalled_fetch(admin, f"s{i}")
    queued = TimedFlow.create(ref="q")
    entered_ago(admin, queued.id, timedelta(hours=3))
    html = web.get(f"{TYPE}/bulk-fail").get_data(as_text=True)
    assert "<b>3</b> stalled flows" in html
    assert '<select name="via:fetching"' in html  # two ways into an error state
    assert "<code>cancel</code> → cancelled" in html  # queued: only one
    assert '<input type="hidden" name="stalled" value="1">' in html


def test_bulk_fail_fails_the_stalled_flows_in_batches(
    make_admin: Callable[..., Flask],
) -> None:
    app = make_admin(FLOWSTATE_BULK_BATCH_SIZE=2, FLOWSTATE_BULK_REQUEST_SECONDS=0)
    with app.app_context():
        made = [stalled_fetch(app, f"s{i}").id for i in range(5)]
        young = TimedFlow.create(ref="young")
        young.start()
        web = app.test_client()
        data = {
            "csrf_token": csrf_token(web),
            "stalled": "1",
            "via:fetching": "fail_fetch",
            "reason": "incident 7",
        }
        first = web.post(f"{TYPE}/bulk-fail", data=data, headers=HX).get_data(as_text=True)
        assert "Working…" in first and '<b class="fs-retried">2</b>' in first
        token = first.split('name="progress" value="')[1].split('"')[0]
        rounds = 1
        html = first
        while "Done" not in html:
            html = web.post(
                f"{TYPE}/bulk-fail", data=data | {"progress": token}, headers=HX
            ).get_data(as_text=True)
            if "Done" not in html:
                token = html.split('name="progress" value="')[1].split('"')[0]
            rounds += 1
        assert '<b class="fs-retried">5</b>' in html
        assert rounds == 3
        for flow_id in made:
            last = TimedFlow.get(flow_id).history()[-1]
            assert (last.name, last.actor, last.reason) == ("fail_fetch", "alice", "incident 7")
            assert last.meta == {"admin": "bulk_fail_stalled"}
        assert TimedFlow.get(young.id).state == "fetching"


def test_bulk_fail_leaves_flows_that_moved_on(admin: Flask) -> None:
    a = stalled_fetch(admin, "a")
    b = stalled_fetch(admin, "b")
    TimedFlow.get(b.id).finish()  # moved on: no longer matched, left alone
    db = admin.extensions["sqlalchemy"]
    progress = bulk_fail.run(
        db.session(),
        TimedFlow,
        ListFilter(stalled=True),
        bulk.Progress(),
        chosen={"fetching": "fail_fetch"},
        actor="bob",
        reason=None,
        batch_size=10,
        seconds=5,
    )
    assert progress.retried == 1 and progress.done
    assert TimedFlow.get(a.id).state == "failed"
    assert TimedFlow.get(b.id).state == "done"


def test_several_choices_without_a_choice_are_skipped(admin: Flask) -> None:
    stalled_fetch(admin, "a")
    db = admin.extensions["sqlalchemy"]
    progress = bulk_fail.run(
        db.session(),
        TimedFlow,
        ListFilter(stalled=True),
        bulk.Progress(),
        chosen={},
        actor="bob",
        reason=None,
        batch_size=10,
        seconds=5,
    )
    assert progress.retried == 0
    assert progress.skipped == {"state 'fetching' has several; none was chosen": 1}


def test_bulk_fail_refuses_a_retry_token_and_bad_choices(admin: Flask, web: FlaskClient) -> None:
    token = bulk.dump(bulk.Progress(last_id=5))  # a bulk *retry* token
    data = {"csrf_token": csrf_token(web), "progress": token}
    assert web.post(f"{TYPE}/bulk-fail", data=data).status_code == 400
    bad = {"csrf_token": csrf_token(web), "via:fetching": "finish"}
    assert web.post(f"{TYPE}/bulk-fail", data=bad).status_code == 400


def test_live_refresh_notices_a_flow_that_stalls(admin: Flask, web: FlaskClient) -> None:
    flow = TimedFlow.create(ref="watched")
    flow.start()
    poll = f"{TYPE}/{flow.id}?seq={flow.seq}"
    assert web.get(poll, headers=HX).status_code == 204  # nothing new
    entered_ago(admin, flow.id, timedelta(minutes=11))  # same seq, but now stalled
    response = web.get(poll, headers=HX)
    assert response.status_code == 200
    assert "Stalled since" in response.get_data(as_text=True)
    assert web.get(poll + "&stalled=1", headers=HX).status_code == 204


def test_stalled_list_pages_by_keyset_across_states(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(FLOWSTATE_PAGE_SIZE=4)
    with app.app_context():
        stalled: list[int] = []
        for i in range(5):
            stalled.append(stalled_fetch(app, f"f{i}").id)
            queued = TimedFlow.create(ref=f"q{i}")
            entered_ago(app, queued.id, timedelta(hours=2))
            stalled.append(queued.id)
            TimedFlow.create(ref=f"young{i}")  # queued, not stalled
        web = app.test_client()
        seen: list[int] = []
        path = f"{TYPE}?stalled=1"
        pages = 0
        while path:
            html = web.get(path, headers=HX).get_data(as_text=True)
            seen += [int(m) for m in re.findall(r'<tr id="flow-(\d+)"', html)]
            older = re.search(r'href="([^"]+)" rel="next"', html)
            path = older.group(1).replace("&amp;", "&") if older else ""
            pages += 1
        assert seen == sorted(stalled, reverse=True)
        assert pages == 3
        # And back: the newer page of the last one is the middle one.
        last = web.get(f"{TYPE}?stalled=1&before={seen[7]}", headers=HX).get_data(as_text=True)
        newer = re.search(r'href="([^"]+)" rel="prev"', last)
        assert newer is not None
        middle = web.get(newer.group(1).replace("&amp;", "&"), headers=HX).get_data(as_text=True)
        assert [int(m) for m in re.findall(r'<tr id="flow-(\d+)"', middle)] == seen[4:8]
        assert '<b class="fs-match-count">10</b> match the filter' in middle


def test_bulk_fail_submitted_twice_fails_each_flow_once(
    make_admin: Callable[..., Flask],
) -> None:
    """A reload of the first POST (same run key from the confirm page) changes nothing more."""
    app = make_admin(FLOWSTATE_BULK_BATCH_SIZE=10, FLOWSTATE_BULK_REQUEST_SECONDS=0)
    with app.app_context():
        made = [stalled_fetch(app, f"s{i}").id for i in range(3)]
        web = app.test_client()
        confirm = web.get(f"{TYPE}/bulk-fail?stalled=1").get_data(as_text=True)
        start = confirm.split('name="progress" value="')[1].split('"')[0]
        data = {
            "csrf_token": csrf_token(web),
            "stalled": "1",
            "via:fetching": "fail_fetch",
            "progress": start,
        }
        first = web.post(f"{TYPE}/bulk-fail", data=data, headers=HX).get_data(as_text=True)
        assert "Done" in first and '<b class="fs-retried">3</b>' in first
        again = web.post(f"{TYPE}/bulk-fail", data=data, headers=HX).get_data(as_text=True)
        assert '<b class="fs-retried">0</b>' in again  # nothing failed twice
        for flow_id in made:
            assert [h.name for h in TimedFlow.get(flow_id).history()].count("fail_fetch") == 1
