"""Hand-offs through real queues to real workers in separate processes.

huey with SQLite storage (the embedded default) on SQLite; huey on Redis and Celery with a
Redis broker on PostgreSQL. The test process is the sender (a host app with the queue
configured); the worker is the queue's own consumer started on ``tests.outbox_app``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from flowstate_web.models import metadata, outbox
from flowstate_web.queues import Queue
from tests.outbox_app import JOBS, Shipment, create_host_app

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("FLOWSTATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
DEADLINE = 45.0


def redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} unreachable: {exc} (CI requires Redis)")
        pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")


def wait_for(check: Callable[[], Any], what: str, proc: subprocess.Popen[str]) -> Any:
    end = time.monotonic() + DEADLINE
    while True:
        result = check()
        if result:
            return result
        if proc.poll() is not None:
            out, _ = proc.communicate()
            raise AssertionError(f"the worker exited ({proc.returncode}) before {what}:\n{out}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {DEADLINE}s waiting for {what}")
        time.sleep(0.05)  # polling interval, not synchronisation


@contextmanager
def worker(cmd: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()


@contextmanager
def sender(db_url: str, queue: Queue) -> Iterator[Flask]:
    app = create_host_app(db_url, queue)
    with app.app_context():
        db = app.extensions["sqlalchemy"]
        metadata.drop_all(db.engine)
        metadata.create_all(db.engine)
        try:
            yield app
        finally:
            db.session.remove()
            metadata.drop_all(db.engine)
            db.engine.dispose()


def run_two_flows(app: Flask, proc: subprocess.Popen[str]) -> None:
    """Hand off two flows (one with args); the worker process finishes both."""
    db = app.extensions["sqlalchemy"]
    a = Shipment.create()
    a.hand_off()
    b = Shipment.create()
    b.queue_with("fragile")

    def done() -> bool:
        db.session.rollback()
        return all(Shipment.get(f.id).state == "done" for f in (a, b))

    wait_for(done, "both flows done", proc)
    sent = dict(db.session.execute(select(outbox.c.flow_id, outbox.c.dispatch_id)).all())
    for flow, note in ((a, None), (b, "fragile")):
        delivery = Shipment.get(flow.id).delivery.latest()
        assert delivery is not None
        assert delivery["pid"] not in (os.getpid(), None)  # ran in the worker process
        assert delivery["dispatch_id"] == sent[flow.id]
        assert delivery["note"] == note


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_huey_sqlite_consumer_runs_the_handoffs(db_url: str, tmp_path: Path) -> None:
    from huey import SqliteHuey

    from flowstate_web.queues.huey import HueyQueue

    path = str(tmp_path / "queue.db")
    huey = SqliteHuey("outbox-test", filename=path, results=False)
    env = {"OUTBOX_TEST_DB_URL": db_url, "OUTBOX_TEST_QUEUE": "huey-sqlite"}
    env["OUTBOX_TEST_HUEY_PATH"] = path
    cmd = [
        str(BIN / "huey_consumer"),
        "tests.outbox_app.huey",
        "-w",
        "2",
        "-k",
        "thread",
        "-d",
        "0.05",
    ]
    with (
        sender(db_url, HueyQueue(huey, JOBS, relay=False)) as app,
        worker(cmd, env) as proc,
    ):
        run_two_flows(app, proc)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_huey_redis_consumer_runs_the_handoffs(db_url: str) -> None:
    redis_or_skip()
    from huey import RedisHuey

    from flowstate_web.queues.huey import HueyQueue

    name = f"outbox-test-{uuid.uuid4().hex[:8]}"
    huey = RedisHuey(name, url=REDIS_URL, results=False)
    env = {"OUTBOX_TEST_DB_URL": db_url, "OUTBOX_TEST_QUEUE": "huey-redis"}
    env |= {"OUTBOX_TEST_REDIS_URL": REDIS_URL, "OUTBOX_TEST_QUEUE_NAME": name}
    cmd = [
        str(BIN / "huey_consumer"),
        "tests.outbox_app.huey",
        "-w",
        "2",
        "-k",
        "thread",
        "-d",
        "0.05",
    ]
    try:
        with (
            sender(db_url, HueyQueue(huey, JOBS, relay=False)) as app,
            worker(cmd, env) as proc,
        ):
            run_two_flows(app, proc)
    finally:
        huey.flush()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_celery_worker_runs_the_handoffs(db_url: str) -> None:
    redis_or_skip()
    from celery import Celery

    from flowstate_web.queues.celery import CeleryQueue

    name = f"outbox-test-{uuid.uuid4().hex[:8]}"
    celery = Celery("outbox_test", broker=REDIS_URL)
    celery.conf.task_default_queue = name
    celery.conf.broker_connection_retry_on_startup = True
    env = {"OUTBOX_TEST_DB_URL": db_url, "OUTBOX_TEST_QUEUE": "celery"}
    env |= {"OUTBOX_TEST_REDIS_URL": REDIS_URL, "OUTBOX_TEST_QUEUE_NAME": name}
    cmd = [
        str(BIN / "celery"),
        "-A",
        "tests.outbox_app:celery",
        "worker",
        "--pool=solo",
        "-Q",
        name,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=INFO",
    ]
    try:
        with sender(db_url, CeleryQueue(celery, JOBS)) as app, worker(cmd, env) as proc:
            run_two_flows(app, proc)
    finally:
        import redis

        redis.Redis.from_url(REDIS_URL).delete(name)
        celery.close()
