"""Bulk re-dispatch of stalled flows: confirm page, batches resumed across requests, audit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from huey import SqliteHuey
from sqlalchemy import select, update

from flowstate_web import Flow, State, transition
from flowstate_web.admin import bulk, bulk_fail, bulk_redispatch
from flowstate_web.admin.filters import ListFilter
from flowstate_web.models import flows, outbox
from flowstate_web.queues import JobRegistry
from flowstate_web.queues.huey import HueyQueue

from .conftest import ADMIN, HX, csrf_token

TYPE = f"{ADMIN}/types/tests.TimedShipment"
JOBS = JobRegistry()


@JOBS.job("ship_timed")
def ship_timed(flow_id: int, *, dispatch_id: str) -> None:
    """Never run here: no consumer is started, the test reads the outbox."""


class TimedShipment(Flow, type_name="tests.TimedShipment", state_timeout=timedelta(hours=1)):
    """``queued`` is entered with a hand-off, ``waiting`` without one."""

    new = State(initial=True)
    queued = State(timeout=timedelta(minutes=10))
    waiting = State(timeout=timedelta(minutes=10))
    done = State(final=True)

    @transition(source=new, target=queued, enqueue="ship_timed")
    def hand_off(self) -> None:
        """Hand the job to the queue."""

    @transition(source=new, target=waiting)
    def wait(self) -> None:
        """Wait without a job."""

    @transition(source=[queued, waiting], target=done)
    def finish(self) -> None:
        """Done."""


def with_queue(app: Flask, tmp_path: Path) -> SqliteHuey:
    huey = SqliteHuey("bulk-redispatch", filename=str(tmp_path / "q.db"), results=False)
    app.extensions["flowstate"].use_queue(HueyQueue(huey, JOBS, relay=False), app)
    return huey


def stalled(app: Flask, how: str | None = "hand_off") -> TimedShipment:
    flow = TimedShipment.create()
    if how is not None:
        flow.run(how)
    db = app.extensions["sqlalchemy"]
    db.session.execute(
        update(flows)
        .where(flows.c.id == flow.id)
        .values(state_entered_at=datetime.now(UTC) - timedelta(hours=2))
    )
    db.session.commit()
    return TimedShipment.get(flow.id)


def redispatched(app: Flask) -> list[tuple[int, str | None, str | None]]:
    db = app.extensions["sqlalchemy"]
    q = select(outbox.c.flow_id, outbox.c.actor, outbox.c.reason).where(
        outbox.c.kind == "redispatch"
    )
    rows = db.session.execute(q.order_by(outbox.c.flow_id)).all()
    db.session.commit()
    return [(r.flow_id, r.actor, r.reason) for r in rows]


def test_confirm_page_counts_per_state_and_names_the_skipped(
    admin: Flask, web: FlaskClient, tmp_path: Path
) -> None:
    with_queue(admin, tmp_path)
    for _ in range(2):
        stalled(admin)
    stalled(admin, "wait")
    stalled(admin, None)
    page = web.get(f"{TYPE}?stalled=1").get_data(as_text=True)
    assert "Re-dispatch all stalled flows matching this filter" in page
    html = web.get(f"{TYPE}/bulk-redispatch?stalled=1").get_data(as_text=True)
    assert "<b>4</b> stalled flows" in html
    assert "<code>ship_timed</code>" in html
    assert "no transition into it hands a job to the queue: skipped" in html  # waiting
    assert "initial state: what the code handed off" in html  # new
    assert '<input type="hidden" name="stalled" value="1">' in html


def test_redispatches_each_stalled_flow_once_in_resumed_batches(
    make_admin: Callable[..., Flask], tmp_path: Path
) -> None:
    app = make_admin(FLOWSTATE_BULK_BATCH_SIZE=1, FLOWSTATE_BULK_REQUEST_SECONDS=0)
    with app.app_context():
        huey = with_queue(app, tmp_path)
        made = [stalled(app).id for _ in range(3)]
        no_handoff = stalled(app, "wait").id
        young = TimedShipment.create()
        young.hand_off()
        sent_before = huey.pending_count()
        web = app.test_client()
        data = {"csrf_token": csrf_token(web), "stalled": "1", "reason": "worker died"}
        html = web.post(f"{TYPE}/bulk-redispatch", data=data, headers=HX).get_data(as_text=True)
        rounds = 1
        while "Done" not in html:
            assert "Working…" in html
            token = html.split('name="progress" value="')[1].split('"')[0]
            html = web.post(
                f"{TYPE}/bulk-redispatch", data=data | {"progress": token}, headers=HX
            ).get_data(as_text=True)
            rounds += 1
        assert rounds >= 4  # one flow per request
        assert '<b class="fs-retried">3</b>' in html and '<b class="fs-skipped">1</b>' in html
        assert "&#39;waiting&#39; was entered by a transition that hands no job" in html
        assert redispatched(app) == [(i, "alice", "worker died") for i in made]
        assert huey.pending_count() == sent_before + 3
        for flow_id in [*made, no_handoff]:
            assert TimedShipment.get(flow_id).seq == 1  # no state change, no history row


def test_skips_flows_no_longer_stalled_and_initial_without_handoff(
    admin: Flask, tmp_path: Path
) -> None:
    with_queue(admin, tmp_path)
    a = stalled(admin)
    b = stalled(admin)
    initial = stalled(admin, None)
    db = admin.extensions["sqlalchemy"]
    # b's state was re-entered a moment ago: not stalled, so not listed, left alone.
    db.session.execute(
        update(flows).where(flows.c.id == b.id).values(state_entered_at=datetime.now(UTC))
    )
    db.session.commit()
    progress = bulk.Progress()
    progress = bulk_redispatch.run(
        db.session(),
        TimedShipment,
        ListFilter(stalled=True),
        progress,
        actor="bob",
        reason=None,
        batch_size=10,
        seconds=5,
    )
    assert progress.done and progress.retried == 1
    assert progress.skipped == {"state 'new' (initial): nothing was handed off": 1}
    assert [r[0] for r in redispatched(admin)] == [a.id]
    assert TimedShipment.get(initial.id).state == "new"


def test_a_flow_that_stops_being_stalled_in_its_batch_is_skipped(
    admin: Flask, tmp_path: Path
) -> None:
    with_queue(admin, tmp_path)
    a = stalled(admin)
    db = admin.extensions["sqlalchemy"]
    progress = bulk.Progress()
    read = TimedShipment.get(a.id)  # read as stalled (as the batch's list was) ...
    # ... then its state is re-entered before the row is locked.
    db.session.execute(
        update(flows).where(flows.c.id == a.id).values(state_entered_at=datetime.now(UTC))
    )
    db.session.commit()
    session = db.session()
    with session.begin():
        bulk_redispatch._redispatch_one(session, read, "bob", None, progress)
    assert progress.retried == 0 and progress.skipped == {"no longer stalled": 1}
    assert redispatched(admin) == []


def test_csrf_read_only_and_require_reason(
    make_admin: Callable[..., Flask], admin: Flask, web: FlaskClient, tmp_path: Path
) -> None:
    with_queue(admin, tmp_path)
    stalled(admin)
    assert web.post(f"{TYPE}/bulk-redispatch", data={"stalled": "1"}).status_code in (400, 403)
    retry_token = bulk.dump(bulk.Progress(last_id=5))  # a bulk retry token is refused
    data = {"csrf_token": csrf_token(web), "progress": retry_token}
    assert web.post(f"{TYPE}/bulk-redispatch", data=data).status_code == 400
    fail_token = bulk.dump(bulk.Progress(last_id=5), salt=bulk_fail.SALT)
    data = {"csrf_token": csrf_token(web), "progress": fail_token}
    assert web.post(f"{TYPE}/bulk-redispatch", data=data).status_code == 400
    assert redispatched(admin) == []

    ro = make_admin(FLOWSTATE_READ_ONLY=True)
    ro_web = ro.test_client()
    with ro.app_context():
        stalled(ro)
        assert "Fail all stalled" not in ro_web.get(f"{TYPE}?stalled=1").get_data(as_text=True)
    assert ro_web.get(f"{TYPE}/bulk-redispatch").status_code == 403
    data = {"csrf_token": csrf_token(ro_web), "stalled": "1"}
    assert ro_web.post(f"{TYPE}/bulk-redispatch", data=data).status_code == 403
    page = ro_web.get(f"{TYPE}?stalled=1").get_data(as_text=True)
    assert "Re-dispatch all stalled" not in page

    strict = make_admin(FLOWSTATE_REQUIRE_REASON=True)
    strict_web = strict.test_client()
    with strict.app_context():
        stalled(strict)
    data = {"csrf_token": csrf_token(strict_web), "stalled": "1", "reason": " "}
    response = strict_web.post(f"{TYPE}/bulk-redispatch", data=data)
    assert response.status_code == 400
    assert "FLOWSTATE_REQUIRE_REASON" in response.get_data(as_text=True)
    confirm = strict_web.get(f"{TYPE}/bulk-redispatch").get_data(as_text=True)
    assert 'placeholder="required" required' in confirm
    assert redispatched(admin) == []


def _tokens(html: str) -> list[str]:
    return [part.split('"')[0] for part in html.split('name="progress" value="')[1:]]


def test_the_same_run_submitted_twice_re_dispatches_nothing_twice(
    make_admin: Callable[..., Flask], tmp_path: Path
) -> None:
    """A reload of the first POST, or of a step mid-run, or a second tab: a no-op per flow."""
    app = make_admin(FLOWSTATE_BULK_BATCH_SIZE=1, FLOWSTATE_BULK_REQUEST_SECONDS=0)
    with app.app_context():
        with_queue(app, tmp_path)
        made = [stalled(app).id for _ in range(3)]
        web = app.test_client()
        confirm = web.get(f"{TYPE}/bulk-redispatch?stalled=1").get_data(as_text=True)
        (start,) = _tokens(confirm)  # the run's key, from the confirm page
        data = {"csrf_token": csrf_token(web), "stalled": "1", "reason": "worker died"}
        first = web.post(f"{TYPE}/bulk-redispatch", data=data | {"progress": start}, headers=HX)
        steps = [start, *_tokens(first.get_data(as_text=True))]
        assert [r[0] for r in redispatched(app)] == made[:1]  # by id, one flow per request
        # The browser resends the first POST (a reload): the same flow is not sent again.
        again = web.post(f"{TYPE}/bulk-redispatch", data=data | {"progress": start}, headers=HX)
        assert "re-dispatched already by this bulk run" in again.get_data(as_text=True)
        assert [r[0] for r in redispatched(app)] == made[:1]
        # The run goes on from the last step; a step replayed mid-run sends nothing twice.
        html = web.post(
            f"{TYPE}/bulk-redispatch", data=data | {"progress": steps[-1]}, headers=HX
        ).get_data(as_text=True)
        web.post(f"{TYPE}/bulk-redispatch", data=data | {"progress": steps[-1]}, headers=HX)
        while "Done" not in html:
            html = web.post(
                f"{TYPE}/bulk-redispatch", data=data | {"progress": _tokens(html)[0]}, headers=HX
            ).get_data(as_text=True)
        assert sorted(r[0] for r in redispatched(app)) == sorted(made)  # each exactly once
        # A new run (a new confirm page) re-dispatches them again, as asked.
        (fresh,) = _tokens(web.get(f"{TYPE}/bulk-redispatch?stalled=1").get_data(as_text=True))
        web.post(f"{TYPE}/bulk-redispatch", data=data | {"progress": fresh}, headers=HX)
        assert len(redispatched(app)) == 4


def test_a_bad_token_names_the_action(admin: Flask, web: FlaskClient, tmp_path: Path) -> None:
    with_queue(admin, tmp_path)
    data = {"csrf_token": csrf_token(web), "stalled": "1", "progress": "tampered"}
    response = web.post(f"{TYPE}/bulk-redispatch", data=data)
    assert response.status_code == 400
    assert "bulk re-dispatch: the progress token is invalid" in response.get_data(as_text=True)
