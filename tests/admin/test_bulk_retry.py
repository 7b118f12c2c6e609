"""Bulk retry: count first, then batches (each a transaction), grouped outcomes."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from flowstate_web.admin import bulk
from flowstate_web.admin.filters import ListFilter
from flowstate_web.models import flows

from .conftest import ADMIN, HX, csrf_token, errored_branchy, errored_simple
from .flows import BranchyFlow, SimpleRetryFlow

SIMPLE = f"{ADMIN}/types/AdminSimpleRetryFlow/bulk-retry"
BRANCHY = f"{ADMIN}/types/AdminBranchyFlow/bulk-retry"


def test_confirm_page_counts_first(admin: Flask, web: FlaskClient) -> None:
    for i in range(3):
        errored_simple(f"s{i}")
    SimpleRetryFlow.create(ref="fine")

    response = web.get(SIMPLE)

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<b>3</b> errored flows match" in html
    # The button promises no number: flows errored meanwhile are retried too.
    assert "Retry them now, without canary</button>" in html
    assert '<input type="hidden" name="errored" value="1">' in html
    assert all(f.state == "failed" for f in map(SimpleRetryFlow.get, range(1, 4)))


def test_confirm_page_applies_the_filter(admin: Flask, web: FlaskClient) -> None:
    a = errored_simple("a")
    errored_simple("b")
    html = web.get(f"{SIMPLE}?q={a.id}").get_data(as_text=True)
    assert "<b>1</b> errored flow matches" in html
    assert f'<input type="hidden" name="q" value="{a.id}">' in html


def test_confirm_page_count_under_a_date_range_stops_counting(
    admin: Flask, web: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowstate_web.admin import present, queries

    monkeypatch.setattr(queries, "COUNT_LIMIT", 2)
    monkeypatch.setattr(present, "COUNT_LIMIT", 2)
    for i in range(4):
        errored_simple(f"s{i}")
    seen: list[str] = []
    engine = admin.extensions["sqlalchemy"].engine
    listener = lambda *args: seen.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        html = web.get(f"{SIMPLE}?created_from=2000-01-01").get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert "More than <b>2</b> errored flows match" in html
    assert '<td class="fs-num">3+</td>' in html  # the first 3 read, all in "failed"
    assert any("LIMIT" in sql.upper() and "GROUP BY" in sql.upper() for sql in seen)


def test_bulk_retry_retries_every_match_and_reports(admin: Flask, web: FlaskClient) -> None:
    made = [errored_simple(f"s{i}").id for i in range(4)]
    untouched = SimpleRetryFlow.create(ref="fine")

    response = web.post(
        SIMPLE, data={"csrf_token": csrf_token(web), "errored": "1", "reason": "incident 42"}
    )

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Done" in html
    assert '<b class="fs-retried">4</b>' in html
    for flow_id in made:
        flow = SimpleRetryFlow.get(flow_id)
        assert flow.state == "new"
        entry = flow.history()[-1]
        assert (entry.actor, entry.reason, entry.meta) == (
            "alice",
            "incident 42",
            {"admin": "bulk_retry"},
        )
    assert SimpleRetryFlow.get(untouched.id).seq == 0


def test_batches_are_separate_transactions_and_requests_continue(
    make_admin: Callable[..., Flask],
) -> None:
    app = make_admin(FLOWSTATE_BULK_BATCH_SIZE=2, FLOWSTATE_BULK_REQUEST_SECONDS=0)
    with app.app_context():
        for i in range(5):
            errored_simple(f"b{i}")
        web = app.test_client()
        engine = app.extensions["sqlalchemy"].engine
        commits: list[int] = []
        event.listen(engine, "commit", lambda conn: commits.append(1))
        token = csrf_token(web)
        data: dict[str, str] = {"csrf_token": token, "errored": "1"}
        requests = 0
        while True:
            html = web.post(SIMPLE, data=data, headers=HX).get_data(as_text=True)
            requests += 1
            found = re.search(r'name="progress" value="([^"]+)"', html)
            if not found:
                break
            data = {"csrf_token": token, "errored": "1", "progress": found.group(1)}
            assert requests < 10
        assert requests == 3  # 2 + 2 + 1, one batch per request with no time budget
        assert '<b class="fs-retried">5</b>' in html
        assert len(commits) >= 3
        assert {f.state for f in map(SimpleRetryFlow.get, range(1, 6))} == {"new"}


def test_states_with_several_retries_need_a_choice(admin: Flask, web: FlaskClient) -> None:
    a = errored_branchy("a")
    stuck = BranchyFlow.create(ref="st")
    stuck.start()
    stuck.get_stuck()
    token = csrf_token(web)

    html = web.post(BRANCHY, data={"csrf_token": token}).get_data(as_text=True)
    assert "state &#39;broken&#39; has several; none was chosen" in html
    assert "state &#39;stuck&#39; declares no retry transition" in html
    assert BranchyFlow.get(a.id).state == "broken"

    chosen = {"csrf_token": token, "via:broken": "retry_work"}
    html = web.post(BRANCHY, data=chosen).get_data(as_text=True)
    assert '<b class="fs-retried">1</b>' in html
    assert BranchyFlow.get(a.id).state == "working"


def test_failures_are_grouped_and_rolled_back_alone(admin: Flask, web: FlaskClient) -> None:
    booms = [errored_branchy("boom").id for _ in range(2)]
    fine = errored_branchy("fine")
    data = {"csrf_token": csrf_token(web), "via:broken": "explode"}

    html = web.post(BRANCHY, data=data).get_data(as_text=True)

    assert '<b class="fs-failed">2</b>' in html
    assert (
        '<td class="fs-num">2</td><td>explode: RuntimeError: explode failed for boom</td>' in html
    )
    assert BranchyFlow.get(fine.id).state == "done"
    assert all(BranchyFlow.get(i).state == "broken" for i in booms)


def test_a_flow_changed_meanwhile_is_skipped_with_its_reason(admin: Flask) -> None:
    flow = errored_simple("stale")
    db = admin.extensions["sqlalchemy"]
    row = db.session.execute(select(flows).where(flows.c.id == flow.id)).one()
    db.session.commit()
    SimpleRetryFlow.get(flow.id).run("again")  # another operator was faster
    progress = bulk.Progress()

    bulk.retry_one(db.session(), SimpleRetryFlow(row), {}, "alice", None, progress)

    assert progress.retried == 0
    assert progress.skipped == {"state changed meanwhile (now 'new')": 1}


def test_guard_refusal_is_skipped(admin: Flask, web: FlaskClient) -> None:
    errored_branchy("no-restart")
    data = {"csrf_token": csrf_token(web), "via:broken": "restart"}
    html = web.post(BRANCHY, data=data).get_data(as_text=True)
    assert "guard of &#39;restart&#39; refused" in html


def test_tampered_progress_token_is_400(admin: Flask, web: FlaskClient) -> None:
    errored_simple("t")
    token = bulk.dump(bulk.Progress(last_id=0)) + "x"
    response = web.post(SIMPLE, data={"csrf_token": csrf_token(web), "progress": token})
    assert response.status_code == 400
    assert SimpleRetryFlow.get(1).state == "failed"


@pytest.mark.parametrize("via", ["finish", "nope"])
def test_choice_must_be_a_retry_of_that_state(admin: Flask, web: FlaskClient, via: str) -> None:
    response = web.post(BRANCHY, data={"csrf_token": csrf_token(web), "via:broken": via})
    assert response.status_code == 400


def test_bulk_needs_csrf_and_post(admin: Flask, web: FlaskClient) -> None:
    errored_simple("c")
    csrf_token(web)
    assert web.post(SIMPLE, data={"errored": "1"}).status_code == 400
    assert web.put(SIMPLE).status_code == 405
    assert SimpleRetryFlow.get(1).state == "failed"


def test_read_only_refuses_bulk(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(FLOWSTATE_READ_ONLY=True)
    with app.app_context():
        errored_simple("ro")
        web = app.test_client()
        assert web.get(SIMPLE).status_code == 403
        token = csrf_token(web)
        assert web.post(SIMPLE, data={"csrf_token": token}).status_code == 403


def test_malformed_filter_is_400(admin: Flask, web: FlaskClient) -> None:
    assert web.get(f"{SIMPLE}?created_from=nope").status_code == 400
    response = web.post(SIMPLE, data={"csrf_token": csrf_token(web), "before": "x"})
    assert response.status_code == 400


def test_reasons_are_grouped_without_flow_ids() -> None:
    progress = bulk.Progress()
    progress.note(progress.failed, "X #12: bad")
    progress.note(progress.failed, "X #13: bad")
    assert progress.failed == {"X #…: bad": 2}
    assert ListFilter().for_bulk().errored is True
