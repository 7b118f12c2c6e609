"""Canary bulk runs: stored progress, canary wait, rate limit, auto-stop, stop; dry run."""

from __future__ import annotations

import re
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from flowstate_web._executor import now
from flowstate_web.admin import bulk, bulk_runs
from flowstate_web.admin.filters import ListFilter
from flowstate_web.models import bulk_runs as runs_table
from flowstate_web.models import transitions

from .conftest import ADMIN, HX, csrf_token, errored_branchy, errored_simple
from .flows import BranchyFlow, SimpleRetryFlow

SIMPLE = f"{ADMIN}/types/AdminSimpleRetryFlow"


def session(app: Flask):  # type: ignore[no-untyped-def]
    return app.extensions["sqlalchemy"].session()


def start(app: Flask, **kw: object) -> bulk_runs.Run:
    options = {"chosen": {}, "actor": "alice", "reason": "upstream fixed"} | kw
    return bulk_runs.start(session(app), SimpleRetryFlow, ListFilter(), **options)  # type: ignore[arg-type]


def advance(app: Flask, run: bulk_runs.Run, moment: object = None) -> bulk_runs.Run:
    return bulk_runs.advance(session(app), run.id, batch_size=500, moment=moment)  # type: ignore[arg-type]


def test_canary_then_wait_then_the_rest(admin: Flask) -> None:
    made = [errored_simple(f"s{i}").id for i in range(8)]
    run = start(admin, canary=3, wait_seconds=600, rate=0)

    run = advance(admin, run)
    assert run.status == "waiting"
    assert run.canary_ids == made[:3]
    assert run.retried == 3
    assert [SimpleRetryFlow.get(i).state for i in made] == ["new"] * 3 + ["failed"] * 5

    # The canary has not left its next state yet and the wait is long: nothing moves.
    run = advance(admin, run)
    assert run.status == "waiting" and run.retried == 3

    # Two succeed, one fails again: 1 of 3 is under the 50% threshold.
    SimpleRetryFlow.get(made[0]).succeed()
    SimpleRetryFlow.get(made[1]).succeed()
    SimpleRetryFlow.get(made[2]).fail()
    run = advance(admin, run)
    assert run.status == "running"
    assert (run.settled, run.refailed) == (3, 1)

    run = advance(admin, run)
    assert run.retried == 8
    assert run.cursor == made[-1]
    assert all(SimpleRetryFlow.get(i).state == "new" for i in made[3:])
    # Each history row names the run, the actor and the reason.
    entry = SimpleRetryFlow.get(made[5]).history()[-1]
    assert entry.meta == {"admin": "bulk_run", "run": run.id}
    assert (entry.actor, entry.reason) == ("alice", "upstream fixed")

    for i in made[3:]:
        SimpleRetryFlow.get(i).succeed()
    run = advance(admin, run)
    assert run.status == "done"
    assert (run.settled, run.refailed) == (8, 1)


def test_canary_refailing_stops_the_run(admin: Flask) -> None:
    made = [errored_simple(f"s{i}").id for i in range(6)]
    run = start(admin, canary=2, wait_seconds=600, rate=0, threshold=0.5)
    run = advance(admin, run)
    for i in made[:2]:
        SimpleRetryFlow.get(i).fail()

    run = advance(admin, run)

    assert run.status == "stopped"
    assert run.stop_reason == "canary: 2 of 2 retried flows failed again (100% > 50%)"
    assert advance(admin, run).retried == 2
    assert [SimpleRetryFlow.get(i).state for i in made[2:]] == ["failed"] * 4


def test_canary_wait_ends_at_the_time_limit(admin: Flask) -> None:
    made = [errored_simple(f"s{i}").id for i in range(3)]
    run = start(admin, canary=2, wait_seconds=30, rate=0)
    run = advance(admin, run)
    assert run.status == "waiting"
    assert advance(admin, run, now() + timedelta(seconds=10)).status == "waiting"

    run = advance(admin, run, now() + timedelta(seconds=31))

    assert run.status == "running"
    assert (run.settled, run.refailed, len(run.pending)) == (2, 0, 0)
    assert SimpleRetryFlow.get(made[2]).state == "failed"


def test_running_stops_when_refails_pass_the_threshold(admin: Flask) -> None:
    made = [errored_simple(f"s{i}").id for i in range(5)]
    run = start(admin, canary=1, wait_seconds=600, rate=0, threshold=0.5)
    run = advance(admin, run)
    SimpleRetryFlow.get(made[0]).succeed()
    run = advance(admin, run)
    assert run.status == "running"
    run = advance(admin, run)  # the other 4 retried
    assert run.retried == 5
    for i in made[1:4]:
        SimpleRetryFlow.get(i).fail()
    run = advance(admin, run)  # settles 3 refails of 4 watched: 3/4 > 50%
    run = advance(admin, run)
    assert run.status == "stopped"
    assert run.stop_reason == "3 of 4 retried flows failed again (75% > 50%)"


def test_rate_limit_spreads_the_retries(admin: Flask) -> None:
    made = [errored_simple(f"s{i}").id for i in range(12)]
    run = start(admin, canary=1, wait_seconds=0, rate=2)
    t0 = now()
    run = advance(admin, run, t0)  # canary
    run = advance(admin, run, t0)  # wait 0 s: running from t0
    assert run.status == "running"
    assert advance(admin, run, t0).retried == 1  # no time passed: nothing allowed
    run = advance(admin, run, t0 + timedelta(seconds=2))
    assert run.retried == 1 + 4
    run = advance(admin, run, t0 + timedelta(seconds=2.4))
    assert run.retried == 5
    run = advance(admin, run, t0 + timedelta(seconds=3))
    assert run.retried == 7
    assert sum(SimpleRetryFlow.get(i).state == "new" for i in made) == 7


def test_stop_pause_resume(admin: Flask) -> None:
    for i in range(3):
        errored_simple(f"s{i}")
    run = start(admin, canary=1, wait_seconds=0, rate=0)
    s = session(admin)
    assert bulk_runs.control(s, run.id, "pause", "bob").status == "paused"
    assert advance(admin, run).retried == 0
    assert bulk_runs.control(s, run.id, "resume", "bob").status == "canary"
    run = advance(admin, run)
    assert run.status == "waiting"
    bulk_runs.control(s, run.id, "pause", "bob")
    assert bulk_runs.control(s, run.id, "resume", "bob").status == "waiting"
    assert advance(admin, run).status == "running"
    bulk_runs.control(s, run.id, "pause", "bob")
    assert bulk_runs.control(s, run.id, "resume", "bob").status == "running"
    run = bulk_runs.control(s, run.id, "stop", "bob")
    assert (run.status, run.stop_reason) == ("stopped", "stopped by bob")
    assert advance(admin, run).retried == 1


def test_pages_start_show_advance_stop(admin: Flask, web: FlaskClient) -> None:
    made = [errored_simple(f"s{i}").id for i in range(3)]
    token = csrf_token(web)
    form = {"csrf_token": token, "errored": "1", "canary": "2", "wait": "0", "rate": "0"}
    response = web.post(f"{SIMPLE}/bulk-runs", data=form)
    assert response.status_code == 303
    location = response.headers["Location"]
    run_id = int(location.rsplit("/", 1)[1])
    assert SimpleRetryFlow.get(made[0]).state == "failed"  # starting writes no flow

    html = web.get(location).get_data(as_text=True)
    assert "canary</span>" in html
    assert f'hx-post="{location}/advance"' in html

    hx = HX | {"X-CSRFToken": token}
    html = web.post(f"{location}/advance", headers=hx).get_data(as_text=True)
    assert '<b class="fs-retried">2</b>' in html
    assert "waiting</span>" in html
    assert html.lstrip().startswith(f'<section id="fs-bulk-run-{run_id}"')

    listing = web.get(f"{SIMPLE}/bulk-runs").get_data(as_text=True)
    assert f">#{run_id}</a>" in listing and "waiting</span>" in listing

    html = web.post(f"{location}/stop", headers=hx).get_data(as_text=True)
    assert "stopped by alice" in html
    assert "hx-trigger" not in html  # a finished run stops polling
    assert web.post(f"{location}/stop", headers=hx).status_code == 400


def test_run_routes_refuse_bad_input(admin: Flask, web: FlaskClient) -> None:
    errored_simple("a")
    token = csrf_token(web)
    assert web.post(f"{SIMPLE}/bulk-runs", data={"canary": "2"}).status_code == 400  # no CSRF
    for field, value in [("canary", "0"), ("canary", "x"), ("rate", "nan"), ("threshold", "0")]:
        data = {"csrf_token": token, field: value}
        assert web.post(f"{SIMPLE}/bulk-runs", data=data).status_code == 400, field
    assert web.get(f"{SIMPLE}/bulk-runs/99").status_code == 404
    assert web.get(f"{ADMIN}/types/AdminBranchyFlow/bulk-runs/1").status_code == 404
    assert web.get(f"{SIMPLE}/bulk-runs/1/stop").status_code == 405
    assert session(admin).execute(select(func.count()).select_from(runs_table)).scalar() == 0


def test_read_only_admin_shows_runs_and_refuses_to_start_them(make_admin) -> None:  # type: ignore[no-untyped-def]
    ro = make_admin(FLOWSTATE_READ_ONLY=True).test_client()
    app = make_admin()
    with app.app_context():
        errored_simple("a")
        run = start(app, canary=1)
    html = ro.get(f"{SIMPLE}/bulk-runs/{run.id}").get_data(as_text=True)
    assert f'hx-get="{ADMIN}/types/AdminSimpleRetryFlow/bulk-runs/{run.id}"' in html
    assert "/advance" not in html and ">Stop<" not in html
    token = csrf_token(ro)
    data = {"csrf_token": token}
    assert ro.post(f"{SIMPLE}/bulk-runs/{run.id}/advance", data=data).status_code == 403
    assert ro.post(f"{SIMPLE}/bulk-runs", data=data).status_code == 403


def test_dry_run_counts_what_each_retry_would_accept(admin: Flask, web: FlaskClient) -> None:
    for ref in ("ok1", "no-restart", "ok2", "no-restart"):
        errored_branchy(ref)
    f = ListFilter().for_bulk()
    before = session(admin).execute(select(func.count()).select_from(transitions)).scalar()

    dry = bulk.dry_run(session(admin), BranchyFlow, f, {"broken": "restart"})

    assert dry.accepted("broken", "restart") == (2, 4)
    assert dry.accepted("broken", "retry_work") == (4, 4)
    assert (dry.would_retry, dry.would_skip) == (2, 2)
    assert [s.reason for s in dry.sample] == ["guard allow_restart returned False"] * 2
    after = session(admin).execute(select(func.count()).select_from(transitions)).scalar()
    assert before == after  # nothing written

    html = web.get(f"{ADMIN}/types/AdminBranchyFlow/bulk-retry?via:broken=restart").get_data(
        as_text=True
    )
    assert "<code>restart</code>: <b>2</b> of 4" in html
    assert "guards evaluated on all 4 matching flows" in html
    assert html.count("guard allow_restart returned False") == 2


def test_dry_run_is_bounded(admin: Flask) -> None:
    for i in range(5):
        errored_simple(f"s{i}")
    dry = bulk.dry_run(session(admin), SimpleRetryFlow, ListFilter().for_bulk(), {}, limit=3)
    assert (dry.looked, dry.capped, dry.accepted("failed", "again")) == (3, True, (3, 3))


def test_require_reason(make_admin) -> None:  # type: ignore[no-untyped-def]
    app = make_admin(FLOWSTATE_REQUIRE_REASON=True)
    web = app.test_client()
    with app.app_context():
        flow = errored_simple("a")
    token = csrf_token(web)
    url = f"{SIMPLE}/{flow.id}/retry"
    response = web.post(url, data={"csrf_token": token, "transition": "again", "reason": " "})
    assert response.status_code == 400
    assert "reason: required (FLOWSTATE_REQUIRE_REASON is set)" in response.get_data(as_text=True)
    for path in ("bulk-retry", "bulk-runs", "bulk-fail"):
        assert web.post(f"{SIMPLE}/{path}", data={"csrf_token": token}).status_code == 400, path
    html = web.get(f"{SIMPLE}/{flow.id}").get_data(as_text=True)
    assert re.search(r'name="reason"[^>]*placeholder="reason \(required\)"[^>]*required', html)
    ok = web.post(url, data={"csrf_token": token, "transition": "again", "reason": "fixed"})
    assert ok.status_code in (200, 303)
    with app.app_context():
        assert SimpleRetryFlow.get(flow.id).history()[-1].reason == "fixed"
