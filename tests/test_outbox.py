"""The transactional outbox: written with the transition, sent after commit, relayed after a crash.

The queue here is a real huey queue (SQLite storage in tmp_path) read back with
``huey.pending()``; the consumers that run the jobs are in ``test_queues.py``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from huey import SqliteHuey
from sqlalchemy import create_engine, select, update

from flowstate_web import FlowStateError, PayloadValidationError
from flowstate_web._executor import now
from flowstate_web.models import metadata, outbox
from flowstate_web.outbox import (
    enqueue,
    pending_handoffs,
    redispatch,
    relay,
    relay_app,
    unsent_counts,
)
from flowstate_web.queues.huey import HueyQueue
from tests.outbox_app import JOBS, Shipment, create_host_app

ROOT = Path(__file__).resolve().parent.parent


def make_host(db_url: str, tmp_path: Path, *, queue: bool = True, delay: float = 30.0) -> Any:
    h = SqliteHuey("outbox-test", filename=str(tmp_path / "queue.db"), results=False)
    q = HueyQueue(h, JOBS, relay=False) if queue else None
    app = create_host_app(db_url, q, FLOWSTATE_OUTBOX_RELAY_DELAY=delay)
    with app.app_context():
        db = app.extensions["sqlalchemy"]
        metadata.drop_all(db.engine)
        metadata.create_all(db.engine)
    return app, h


@pytest.fixture
def host(db_url: str, tmp_path: Path) -> Iterator[tuple[Flask, SqliteHuey]]:
    app, h = make_host(db_url, tmp_path)
    with app.app_context():
        yield app, h
        db = app.extensions["sqlalchemy"]
        db.session.remove()
        metadata.drop_all(db.engine)
        db.engine.dispose()


def rows(app: Flask) -> list[Any]:
    db = app.extensions["sqlalchemy"]
    with db.engine.connect() as conn:
        return list(conn.execute(select(outbox).order_by(outbox.c.id)))


def messages(h: SqliteHuey) -> list[tuple[str, tuple[Any, ...]]]:
    return [(t.name, t.args) for t in h.pending()]


def test_declared_handoff_is_written_and_sent_after_commit(host: Any) -> None:
    app, h = host
    flow = Shipment.create()
    entry = flow.hand_off()

    [row] = rows(app)
    assert (row.job, row.kind, row.flow_id) == ("ship", "transition", flow.id)
    assert row.transition_id == entry.id
    assert row.sent_at is not None and row.attempts == 1 and row.last_error is None
    assert messages(h) == [("ship", (flow.id, row.dispatch_id, {}))]
    assert Shipment.graph().transition("hand_off").enqueue == ("ship",)  # type: ignore[union-attr]
    assert Shipment.graph().handoff_into("queued") == ("ship",)


def test_enqueue_in_the_method_passes_args(host: Any) -> None:
    app, h = host
    flow = Shipment.create()
    flow.queue_with("fragile")
    [row] = rows(app)
    assert row.args == {"note": "fragile"}
    assert messages(h) == [("ship", (flow.id, row.dispatch_id, {"note": "fragile"}))]


def test_a_failed_transition_writes_and_sends_nothing(host: Any) -> None:
    app, h = host
    flow = Shipment.create()
    with pytest.raises(RuntimeError, match="after enqueue"):
        flow.queue_with("x", explode=True)
    assert rows(app) == []
    assert messages(h) == []
    flow.hand_off()  # a stale enqueue() of the failed call does not leak into the next one
    assert [r.args for r in rows(app)] == [{}]


def test_a_rolled_back_caller_transaction_writes_and_sends_nothing(host: Any) -> None:
    app, h = host
    db = app.extensions["sqlalchemy"]
    flow = Shipment.create()
    db.session.commit()

    def callers_work() -> None:
        with db.session.begin():
            flow.hand_off()
            raise LookupError("the caller's own work failed")

    with pytest.raises(LookupError):
        callers_work()
    assert rows(app) == []
    assert messages(h) == []
    assert Shipment.get(flow.id).state == "new"


def test_inside_a_caller_transaction_the_send_waits_for_the_outer_commit(host: Any) -> None:
    app, h = host
    db = app.extensions["sqlalchemy"]
    flow = Shipment.create()
    db.session.commit()
    with db.session.begin():
        flow.hand_off()
        assert messages(h) == []
    assert len(messages(h)) == 1


def test_enqueue_outside_a_transition_is_refused() -> None:
    with pytest.raises(FlowStateError, match="inside a transition"):
        enqueue("ship")


def test_without_a_queue_rows_wait_for_the_relay(db_url: str, tmp_path: Path) -> None:
    app, h = make_host(db_url, tmp_path, queue=False, delay=0.0)
    try:
        with app.app_context():
            flows = [Shipment.create() for _ in range(3)]
            for f in flows:
                f.hand_off()
            assert [r.sent_at for r in rows(app)] == [None] * 3
            assert unsent_counts() == {"tests.Shipment": 3}
            with pytest.raises(FlowStateError, match="needs a queue"):
                relay_app()
            db = app.extensions["sqlalchemy"]
            n = relay(db.engine, HueyQueue(h, JOBS, relay=False), delay=0.0)
            assert n == 3
            assert unsent_counts() == {}
            assert sorted(a[0] for _, a in messages(h)) == sorted(f.id for f in flows)
            assert all(r.sent_at is not None for r in rows(app))
    finally:
        with app.app_context():
            db = app.extensions["sqlalchemy"]
            db.session.remove()
            metadata.drop_all(db.engine)
            db.engine.dispose()


def test_unsent_counts_only_count_rows_past_the_delay(host: Any) -> None:
    app, _ = host
    db = app.extensions["sqlalchemy"]
    flow = Shipment.create()
    flow.hand_off()
    with db.engine.begin() as conn:
        conn.execute(update(outbox).values(sent_at=None))  # as if the send was lost
    assert unsent_counts() == {}  # younger than the 30 s delay
    assert unsent_counts(now=now() + timedelta(seconds=31)) == {"tests.Shipment": 1}
    assert unsent_counts(now=now() + timedelta(seconds=31), cap=0) == {}


def test_a_send_that_fails_is_recorded_and_retried_by_the_relay(host: Any) -> None:
    app, h = host
    db = app.extensions["sqlalchemy"]

    class Down:
        def bind(self, app: Flask) -> None:
            pass

        def send(self, handoff: Any) -> None:
            raise ConnectionError("queue unreachable\x00\ud800")

    app.extensions["flowstate"].queue = Down()
    flow = Shipment.create()
    flow.hand_off()  # committed although the send failed
    [row] = rows(app)
    # What the database cannot hold (NUL, a lone surrogate) is replaced, on both databases.
    assert row.sent_at is None and row.last_error == "ConnectionError: queue unreachable\ufffd?"
    assert Shipment.get(flow.id).state == "queued"
    with db.engine.begin() as conn:
        conn.execute(update(outbox).values(available_at=now() - timedelta(seconds=1)))
    assert relay(db.engine, HueyQueue(h, JOBS, relay=False)) == 1
    [row] = rows(app)
    assert row.sent_at is not None and row.attempts == 2


def test_redispatch_resends_the_handoff_that_entered_the_state(host: Any) -> None:
    _, h = host
    flow = Shipment.create()
    with pytest.raises(FlowStateError, match=r"tests.Shipment #\d+: .*'new' was its initial state"):
        redispatch(flow, actor="ops", reason="stuck")
    flow.queue_with("fragile")
    before = (flow.state, flow.seq, len(flow.history()))
    [again] = redispatch(flow, actor="ops", reason="worker died")
    assert (again.kind, again.job, again.args, again.actor, again.reason) == (
        "redispatch",
        "ship",
        {"note": "fragile"},
        "ops",
        "worker died",
    )
    assert again.sent_at is None  # as written; sent after the commit:
    assert pending_handoffs(flow.id)[0].sent_at is not None
    fresh = Shipment.get(flow.id)
    assert (fresh.state, fresh.seq, len(fresh.history())) == before
    ids = [args[1] for _, args in messages(h)]
    assert len(ids) == 2 and len(set(ids)) == 2
    listed = pending_handoffs(flow.id)
    assert [e.kind for e in listed] == ["redispatch", "transition"]


def test_redispatch_refuses_what_a_database_cannot_store(host: Any) -> None:
    flow = Shipment.create()
    flow.hand_off()
    for actor, reason in (("ops\x00", None), ("ops", "lone \udc80 surrogate")):
        with pytest.raises(PayloadValidationError, match=r"tests.Shipment #\d+: (actor|reason)"):
            redispatch(flow, actor=actor, reason=reason)
    with pytest.raises(PayloadValidationError, match="actor is over 200 characters"):
        redispatch(flow, actor="x" * 201)
    assert len(pending_handoffs(flow.id)) == 1


def test_redispatch_refuses_a_state_entered_without_handoff(host: Any) -> None:
    flow = Shipment.create()
    flow.hand_off()
    flow.start()
    with pytest.raises(FlowStateError, match="'working' was entered by 'start'"):
        redispatch(flow, actor="ops")


def test_deleting_a_flow_deletes_its_outbox_rows(host: Any) -> None:
    from flowstate_web._executor import delete_flows

    app, _ = host
    flow = Shipment.create()
    flow.hand_off()
    assert delete_flows(None, [flow.id]) == 1
    assert rows(app) == []


CRASH = """
import os, signal, sys
from huey import SqliteHuey
from flowstate_web.queues.huey import HueyQueue
from tests.outbox_app import JOBS, Shipment, create_host_app

class Dies(HueyQueue):
    def send(self, handoff):
        if sys.argv[3] == "after-send":
            super().send(handoff)
        os.kill(os.getpid(), signal.SIGKILL)

h = SqliteHuey("outbox-test", filename=sys.argv[2], results=False)
app = create_host_app(sys.argv[1], Dies(h, JOBS, relay=False))
with app.app_context():
    flow = Shipment.create()
    print(flow.id, flush=True)
    flow.hand_off()
print("not reached", flush=True)
"""


@pytest.mark.parametrize("when", ["before-send", "after-send"])
def test_relay_resends_after_a_crash_between_commit_and_mark(
    db_url: str, tmp_path: Path, when: str
) -> None:
    """A real process SIGKILLed after its commit: the relay sends what it did not mark sent."""
    app, h = make_host(db_url, tmp_path)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CRASH, db_url, str(tmp_path / "queue.db"), when],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        flow_id = int(proc.stdout.split()[0])
        assert "not reached" not in proc.stdout
        with app.app_context():
            assert Shipment.get(flow_id).state == "queued"  # the transition committed
            [row] = rows(app)
            assert row.sent_at is None
            sent_before = messages(h)
            assert len(sent_before) == (1 if when == "after-send" else 0)
            assert unsent_counts(now=now() + timedelta(seconds=31)) == {"tests.Shipment": 1}
            db = app.extensions["sqlalchemy"]
            assert relay(db.engine, HueyQueue(h, JOBS, relay=False)) == 0  # not due yet
            with db.engine.begin() as conn:
                conn.execute(update(outbox).values(available_at=now()))
            assert relay(db.engine, HueyQueue(h, JOBS, relay=False)) == 1
            sent = messages(h)
            # At-least-once: a duplicate after "after-send", with the same dispatch id.
            assert [a for _, a in sent] == [(flow_id, row.dispatch_id, {})] * (len(sent_before) + 1)
            assert rows(app)[0].sent_at is not None
    finally:
        with app.app_context():
            db = app.extensions["sqlalchemy"]
            db.session.remove()
            metadata.drop_all(db.engine)
            db.engine.dispose()


def test_concurrent_relays_send_each_row_once(db_url: str, tmp_path: Path) -> None:
    """Four relays on four connections at once: every row sent exactly once."""
    app, h = make_host(db_url, tmp_path, queue=False, delay=0.0)
    try:
        with app.app_context():
            for _ in range(60):
                Shipment.create().hand_off()
            db = app.extensions["sqlalchemy"]
            url = db.engine.url
        engines = [create_engine(url) for _ in range(4)]
        sent: list[tuple[Any, ...]] = []
        lock = threading.Lock()

        class Recording(HueyQueue):
            def send(self, handoff: Any) -> None:
                super().send(handoff)
                with lock:
                    sent.append((handoff.dispatch_id,))

        barrier = threading.Barrier(4)
        counts: list[int] = []

        def run(engine: Any) -> None:
            barrier.wait()
            n = relay(engine, Recording(h, JOBS, relay=False), delay=0.0, batch_size=5)
            with lock:
                counts.append(n)

        threads = [threading.Thread(target=run, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for e in engines:
            e.dispose()
        assert sum(counts) == 60
        assert len(sent) == 60 and len(set(sent)) == 60
        assert len(messages(h)) == 60
        with app.app_context():
            assert all(r.sent_at is not None and r.attempts == 1 for r in rows(app))
    finally:
        with app.app_context():
            db = app.extensions["sqlalchemy"]
            db.session.remove()
            metadata.drop_all(db.engine)
            db.engine.dispose()


def test_handoff_outside_a_transition_commits_with_create_and_can_be_redispatched(
    host: Any,
) -> None:
    from flowstate_web.outbox import can_redispatch, handoff

    app, h = host
    db = app.extensions["sqlalchemy"]
    db.session.commit()

    def create_and_fail() -> None:
        with db.session.begin():
            rolled_back = Shipment.create()
            handoff(rolled_back, "ship", note="x")
            raise LookupError("rolled back: neither the flow nor its hand-off exists")

    with pytest.raises(LookupError):
        create_and_fail()
    assert rows(app) == [] and messages(h) == []
    with db.session.begin():
        flow = Shipment.create()
        handoff(flow, "ship", note="first")
    [row] = rows(app)
    assert (row.kind, row.transition_id, row.args) == ("handoff", None, {"note": "first"})
    assert messages(h) == [("ship", (flow.id, row.dispatch_id, {"note": "first"}))]
    assert can_redispatch(flow) and can_redispatch(flow, pending_handoffs(flow.id))
    [again] = redispatch(flow, actor="ops", reason="lost")
    assert (again.kind, again.args) == ("redispatch", {"note": "first"})
    assert len(messages(h)) == 2


def test_relay_cli_and_the_huey_periodic_task_send_overdue_rows(
    db_url: str, tmp_path: Path
) -> None:
    from flowstate_web.queues.huey import RELAY_TASK

    app, h = make_host(db_url, tmp_path, queue=False, delay=0.0)
    try:
        with app.app_context():
            Shipment.create().hand_off()
            Shipment.create().hand_off()
            ext = app.extensions["flowstate"]
            result = app.test_cli_runner().invoke(args=["flowstate", "relay"])
            assert result.exit_code != 0 and "needs a queue" in str(result.exception)
            queue = HueyQueue(h, JOBS)  # relay=True: huey's periodic task runs the relay
            ext.use_queue(queue, app)
            result = app.test_cli_runner().invoke(args=["flowstate", "relay"])
            assert result.exit_code == 0, result.output
            assert "re-sent 2 hand-off(s)" in result.output
            Shipment.create().hand_off()  # sent at once now; make it look lost:
            db = app.extensions["sqlalchemy"]
            with db.engine.begin() as conn:
                conn.execute(update(outbox).where(outbox.c.id == 3).values(sent_at=None))
            due = h.read_periodic(datetime.now())  # what the consumer's scheduler would run
            h.execute(next(t for t in due if t.name == RELAY_TASK))
            assert all(r.sent_at is not None for r in rows(app))
            assert len(messages(h)) == 4  # two relayed by the CLI, one sent, one relayed again
    finally:
        with app.app_context():
            db = app.extensions["sqlalchemy"]
            db.session.remove()
            metadata.drop_all(db.engine)
            db.engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_relay_skips_rows_another_sender_holds(db_url: str, tmp_path: Path) -> None:
    """PostgreSQL: rows locked by another sender are skipped at once, not waited for."""
    app, h = make_host(db_url, tmp_path, queue=False, delay=0.0)
    try:
        with app.app_context():
            for _ in range(4):
                Shipment.create().hand_off()
            db = app.extensions["sqlalchemy"]
            ids = [r.id for r in rows(app)]
            with db.engine.connect() as holder:
                holder.execute(
                    select(outbox.c.id).where(outbox.c.id.in_(ids[:2])).with_for_update()
                )
                other = create_engine(
                    db.engine.url, connect_args={"options": "-c lock_timeout=2000"}
                )
                try:
                    assert relay(other, HueyQueue(h, JOBS, relay=False), delay=0.0) == 2
                finally:
                    other.dispose()
                holder.rollback()
            assert [r.sent_at is not None for r in rows(app)] == [False, False, True, True]
            assert relay(db.engine, HueyQueue(h, JOBS, relay=False), delay=0.0) == 2
    finally:
        with app.app_context():
            db = app.extensions["sqlalchemy"]
            db.session.remove()
            metadata.drop_all(db.engine)
            db.engine.dispose()
