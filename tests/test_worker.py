"""``flowstate-web worker``: the demo's jobs and the outbox relay in separate processes.

The test process is the admin side (the standalone app in demo mode, which only hands jobs
off); one or two ``flowstate-web worker --demo`` processes run them: SQLite with huey's
SQLite queue, PostgreSQL with huey on Redis.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from flowstate_web.app import create_app, db
from flowstate_web.demo.orders_flow import OrderFulfilmentFlow
from flowstate_web.demo.seed import start_new
from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow
from flowstate_web.models import outbox

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("FLOWSTATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
DEADLINE = 60.0


@pytest.fixture
def demo_config(empty_db_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Return the environment both sides share: database, queue, a fast and reliable demo."""
    config = {
        "FLOWSTATE_INSTANCE_PATH": str(tmp_path / "instance"),
        "FLOWSTATE_DEMO_FAILURE_RATE": "0",
        "FLOWSTATE_DEMO_LATENCY": "0",
        "FLOWSTATE_DEMO_BACKORDER_RATE": "0",
        "FLOWSTATE_DEMO_RESTOCK_SECONDS": "0",
        "FLOWSTATE_DEMO_DELIVERY_SECONDS": "0",
        "FLOWSTATE_OUTBOX_RELAY_DELAY": "0",
    }
    redis_name = None
    if empty_db_url.startswith("postgresql"):
        import redis

        try:
            redis.Redis.from_url(REDIS_URL).ping()
        except Exception as exc:
            if os.environ.get("CI"):
                pytest.fail(f"Redis at {REDIS_URL} unreachable: {exc}")
            pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")
        redis_name = f"flowstate-worker-test-{uuid.uuid4().hex[:8]}"
        config |= {
            "FLOWSTATE_DATABASE_URL": empty_db_url,
            "FLOWSTATE_DEMO_REDIS_URL": REDIS_URL,
            "FLOWSTATE_DEMO_QUEUE_NAME": redis_name,
        }
    else:
        config["FLOWSTATE_DEMO_QUEUE_PATH"] = str(tmp_path / "queue.db")
    yield config
    if redis_name:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"*{redis_name}*"):
            client.delete(key)
        client.close()


@pytest.fixture
def admin(demo_config: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """Return the demo app of the admin side (it migrates; it runs no consumer)."""
    for key in list(os.environ):
        if key.startswith("FLOWSTATE_") or key in {"DATABASE_URL", "SECRET_KEY"}:
            monkeypatch.delenv(key)
    for key, value in demo_config.items():
        monkeypatch.setenv(key, value)
    app = create_app({"TESTING": True, "FLOWSTATE_PUBLIC": True, "FLOWSTATE_DEMO": True})
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


outputs: dict[int, str] = {}


def start_worker(stack: ExitStack, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowstate_web", "worker", "--demo", "--relay-interval", "0.2"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                outputs[proc.pid] = proc.communicate(timeout=20)[0]
            except subprocess.TimeoutExpired:
                proc.kill()
                outputs[proc.pid] = proc.communicate()[0]

    stack.callback(stop)
    return proc


def wait_for(check: Callable[[], Any], what: str, procs: list[subprocess.Popen[str]]) -> None:
    end = time.monotonic() + DEADLINE
    while not check():
        for p in procs:
            if p.poll() is not None:
                out, _ = p.communicate()
                raise AssertionError(f"a worker exited ({p.returncode}) before {what}:\n{out}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {DEADLINE}s waiting for {what}")
        time.sleep(0.05)  # polling interval, not synchronisation


def test_workers_in_separate_processes_run_the_demo(
    admin: Flask, demo_config: dict[str, str]
) -> None:
    rng = random.Random(9)
    with ExitStack() as stack:
        workers = [start_worker(stack, demo_config) for _ in range(2)]
        with admin.app_context():
            made = [start_new(cls, rng) for cls in (SyncThirdPartyApiFlow, OrderFulfilmentFlow) * 3]
            # A hand-off whose send is lost (no queue here): the workers' relay sends it.
            ext = admin.extensions["flowstate"]
            held, ext.queue = ext.queue, None
            try:
                lost = start_new(SyncThirdPartyApiFlow, rng)
            finally:
                ext.queue = held
            assert (
                db.session.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
                ).scalar_one()
                == 1
            )
            db.session.rollback()

        final = {SyncThirdPartyApiFlow: "completed", OrderFulfilmentFlow: "delivered"}

        def all_final() -> bool:
            with admin.app_context():
                return all(
                    type(f).get(f.id).state == final[type(f)]  # type: ignore[index]
                    for f in [*made, lost]
                )

        wait_for(all_final, "every flow final", workers)
        for p in workers:
            assert p.poll() is None
    for p in workers:
        assert p.returncode == 0, outputs[p.pid]  # stopped cleanly by SIGTERM
        assert f"worker {p.pid}: 2 thread(s)" in outputs[p.pid]
    with admin.app_context():
        unsent = select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        assert db.session.execute(unsent).scalar_one() == 0
