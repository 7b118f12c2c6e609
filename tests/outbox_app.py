"""A host app with a flow that hands work off, for the outbox tests and their real workers.

Imported by the tests (in-process) and, configured by environment variables, by the queue
consumers they start in separate processes::

    OUTBOX_TEST_DB_URL=... OUTBOX_TEST_QUEUE=huey-sqlite OUTBOX_TEST_HUEY_PATH=... \
        huey_consumer tests.outbox_app.huey
    OUTBOX_TEST_DB_URL=... OUTBOX_TEST_QUEUE=celery OUTBOX_TEST_REDIS_URL=... \
        celery -A tests.outbox_app:celery worker
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flowstate_web import Artefact, Flow, FlowState, State, transition
from flowstate_web.outbox import enqueue
from flowstate_web.queues import JobRegistry, Queue


class Shipment(Flow, type_name="tests.Shipment"):
    """Queued by a transition that hands a job off; the job starts and finishes it."""

    new = State(initial=True)
    queued = State()
    working = State()
    failed = State(error=True)
    done = State(final=True)

    delivery = Artefact(dict[str, Any])

    @transition(source=new, target=queued, enqueue="ship")
    def hand_off(self) -> None:
        """Hand the shipping job to the queue."""

    @transition(source=new, target=queued)
    def queue_with(self, note: str, explode: bool = False) -> None:
        """Hand the job off with arguments, from inside the method."""
        enqueue("ship", note=note)
        if explode:
            raise RuntimeError("the method failed after enqueue()")

    @transition(source=queued, target=working)
    def start(self) -> None:
        """The job claims the work (a second delivery fails here)."""

    @transition(source=working, target=done, persists=delivery)
    def finish(self, delivery: dict[str, Any]) -> dict[str, Any]:
        """Keep who delivered it."""
        return delivery

    @transition(source=working, target=failed)
    def fail(self) -> None:
        """Record a failure."""

    @transition(source=failed, target=queued, retry=True, enqueue="ship")
    def requeue(self) -> None:
        """Hand the job off again."""


JOBS = JobRegistry()


@JOBS.job("ship")
def ship(flow_id: int, *, dispatch_id: str, note: str | None = None) -> None:
    """Start, do the work, finish: the start transition makes a duplicate delivery a no-op."""
    flow = Shipment.get(flow_id)
    flow.start()
    flow.finish({"dispatch_id": dispatch_id, "pid": os.getpid(), "note": note})


def create_host_app(db_url: str, queue: Queue | None = None, **config: Any) -> Flask:
    """Return a host app on ``db_url`` whose hand-offs go to ``queue``."""
    app = Flask("outbox_test_host")
    app.config.update(
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=db_url,
        FLOWSTATE_ADMIN=False,
        **config,
    )
    db = SQLAlchemy(app)
    FlowState(app, db=db, queue=queue)
    return app


def _from_env() -> tuple[Flask | None, Any, Any]:
    url = os.environ.get("OUTBOX_TEST_DB_URL")
    kind = os.environ.get("OUTBOX_TEST_QUEUE", "")
    if not url:
        return None, None, None
    if kind.startswith("huey"):
        from huey import RedisHuey, SqliteHuey

        from flowstate_web.queues.huey import HueyQueue

        name = os.environ.get("OUTBOX_TEST_QUEUE_NAME", "outbox-test")
        h = (
            RedisHuey(name, url=os.environ["OUTBOX_TEST_REDIS_URL"], results=False)
            if kind == "huey-redis"
            else SqliteHuey(name, filename=os.environ["OUTBOX_TEST_HUEY_PATH"], results=False)
        )
        return create_host_app(url, HueyQueue(h, JOBS, relay=False)), h, None
    if kind == "celery":
        from celery import Celery

        from flowstate_web.queues.celery import CeleryQueue

        broker = os.environ["OUTBOX_TEST_REDIS_URL"]
        c = Celery("outbox_test", broker=broker)
        c.conf.task_default_queue = os.environ.get("OUTBOX_TEST_QUEUE_NAME", "outbox-test")
        c.conf.broker_connection_retry_on_startup = True
        return create_host_app(url, CeleryQueue(c, JOBS)), None, c
    raise RuntimeError(f"OUTBOX_TEST_QUEUE: unknown queue {kind!r}")


app, huey, celery = _from_env()
