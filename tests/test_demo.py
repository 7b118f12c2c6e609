"""The live demo: its jobs handed off to a real huey queue and its consumer, and its seeder."""

from __future__ import annotations

import logging
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from flowstate_web import Flow
from flowstate_web.app import create_app, db
from flowstate_web.demo import tasks as demo_tasks
from flowstate_web.demo.orders_flow import OrderFulfilmentFlow
from flowstate_web.demo.runner import DemoRunner
from flowstate_web.demo.seed import DEMO_FLOWS, new_props, paths, seed, start_new, transient_states
from flowstate_web.demo.simulated_api import ApiError, PaymentDeclined, SimulatedApi
from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow
from flowstate_web.demo.tasks import (
    AUTO_RETRY_ACTOR,
    JOBS,
    DemoQueue,
    decline_response,
    install,
)
from flowstate_web.models import flows, outbox
from flowstate_web.queues import JobRegistry
from flowstate_web.timeouts import fail_stalled

DEADLINE = 30.0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FLOWSTATE_") or key in {"DATABASE_URL", "SECRET_KEY"}:
            monkeypatch.delenv(key)


@pytest.fixture
def demo_app(tmp_path: Path) -> Iterator[Flask]:
    """Return the standalone app in demo mode: no latency, no backorders, no job delays."""
    app = create_app(
        {
            "TESTING": True,
            "FLOWSTATE_INSTANCE_PATH": str(tmp_path / "instance"),
            "FLOWSTATE_PUBLIC": True,
            "FLOWSTATE_DEMO": True,
            "FLOWSTATE_DEMO_QUEUE_PATH": str(tmp_path / "queue.db"),
            "FLOWSTATE_DEMO_FAILURE_RATE": 0.0,
            "FLOWSTATE_DEMO_LATENCY": 0.0,
            "FLOWSTATE_DEMO_BACKORDER_RATE": 0.0,
            "FLOWSTATE_DEMO_RETRY_DELAY": 0.0,
            "FLOWSTATE_DEMO_RESTOCK_SECONDS": 0.0,
            "FLOWSTATE_DEMO_DELIVERY_SECONDS": 0.0,
        }
    )
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def queue(demo_app: Flask) -> Iterator[DemoQueue]:
    """The app's demo queue (a real SqliteHuey) with its thread consumer running in-process."""
    q = install(demo_app)
    assert demo_app.extensions["flowstate"].queue is q.queue
    assert not q.huey.immediate
    q.start(workers=2)
    try:
        yield q
    finally:
        q.stop()
    assert not q.running


def wait_for(check: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Poll ``check`` (in a fresh app-context read) until it returns something truthy."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}")
        time.sleep(0.05)  # polling interval, not synchronisation


def fresh(app: Flask, cls: type[Flow], flow_id: int) -> Flow:
    with app.app_context():
        flow = cls.get(flow_id)
        flow.history()  # load now, while the session is open
        return flow


def state_of(app: Flask, cls: type[Flow], flow_id: int) -> str:
    return fresh(app, cls, flow_id).state


def test_sync_flow_completes_through_the_queue(demo_app: Flask, queue: DemoQueue) -> None:
    with demo_app.app_context():
        flow = start_new(SyncThirdPartyApiFlow, random.Random(1))
    wait_for(lambda: state_of(demo_app, SyncThirdPartyApiFlow, flow.id) == "completed", "completed")
    with demo_app.app_context():
        done = SyncThirdPartyApiFlow.get(flow.id)
        assert [h.name for h in done.history()] == [
            "pick",
            "start_third_party_api_request",
            "finish_third_party_api_request",
            "start_record_save",
            "finish_record_save",
            "complete",
        ]
        response = done.third_party_api_response.latest()
        assert response is not None
        assert response["id"] == done.third_party_id


def test_order_flow_is_delivered_through_the_queue(demo_app: Flask, queue: DemoQueue) -> None:
    with demo_app.app_context():
        flow = start_new(OrderFulfilmentFlow, random.Random(2))
    wait_for(lambda: state_of(demo_app, OrderFulfilmentFlow, flow.id) == "delivered", "delivered")
    with demo_app.app_context():
        done = OrderFulfilmentFlow.get(flow.id)
        label = done.shipping_label.latest()
        assert label is not None
        assert label["order_ref"] == done.order_ref
        receipt = done.payment_receipt.latest()
        assert receipt is not None
        assert receipt["amount_cents"] == done.amount_cents


def test_order_flow_waits_for_stock_then_ships(demo_app: Flask, queue: DemoQueue) -> None:
    demo_app.config["FLOWSTATE_DEMO_BACKORDER_RATE"] = 1.0
    with demo_app.app_context():
        flow = start_new(OrderFulfilmentFlow, random.Random(3))
    wait_for(lambda: state_of(demo_app, OrderFulfilmentFlow, flow.id) == "delivered", "delivered")
    with demo_app.app_context():
        names = [h.name for h in OrderFulfilmentFlow.get(flow.id).history()]
    assert names[names.index("mark_backordered") + 1] == "restock"


def test_failing_api_errors_for_good_then_an_operator_retry_completes(
    demo_app: Flask, queue: DemoQueue
) -> None:
    demo_app.config["FLOWSTATE_DEMO_FAILURE_RATE"] = 1.0
    with demo_app.app_context():
        flow = start_new(SyncThirdPartyApiFlow, random.Random(4))

    def failed_for_good() -> Flow | None:
        f = fresh(demo_app, SyncThirdPartyApiFlow, flow.id)
        with demo_app.app_context():
            fails = [h for h in f.history() if h.name == "fail_third_party_api_request"]
        return f if len(fails) == 3 and f.errored else None  # the first try + 2 retries

    errored = wait_for(failed_for_good, "three failed attempts")
    assert errored.state == "failed_to_fetch_third_party_api"
    assert errored.last_error_type == "flowstate_web.demo.simulated_api.ApiError"
    assert errored.last_error_message
    with demo_app.app_context():
        history = SyncThirdPartyApiFlow.get(flow.id).history()
    automatic = [h for h in history if h.name == "retry_fetch"]
    assert [h.actor for h in automatic] == [AUTO_RETRY_ACTOR, AUTO_RETRY_ACTOR]
    assert all(h.error_traceback for h in history if h.name == "fail_third_party_api_request")

    wait_for(lambda: queue.huey.pending_count() + queue.huey.scheduled_count() == 0, "idle")
    assert state_of(demo_app, SyncThirdPartyApiFlow, flow.id) == "failed_to_fetch_third_party_api"

    demo_app.config["FLOWSTATE_DEMO_FAILURE_RATE"] = 0.0
    with demo_app.app_context():
        SyncThirdPartyApiFlow.get(flow.id).retry(actor="operator")
    wait_for(lambda: state_of(demo_app, SyncThirdPartyApiFlow, flow.id) == "completed", "completed")
    with demo_app.app_context():
        history = SyncThirdPartyApiFlow.get(flow.id).history()
    assert [h.actor for h in history if h.name == "retry_fetch"][-1] == "operator"


def test_declined_payment_is_retried_by_an_operator(demo_app: Flask, queue: DemoQueue) -> None:
    demo_app.config["FLOWSTATE_DEMO_FAILURE_RATE"] = 1.0
    with demo_app.app_context():
        flow = start_new(OrderFulfilmentFlow, random.Random(5))

    def declined_thrice() -> bool:
        with demo_app.app_context():
            history = OrderFulfilmentFlow.get(flow.id).history()
        return sum(h.name == "decline_payment" for h in history) == 3

    wait_for(declined_thrice, "three declined payments")
    wait_for(lambda: queue.huey.pending_count() + queue.huey.scheduled_count() == 0, "idle")
    demo_app.config["FLOWSTATE_DEMO_FAILURE_RATE"] = 0.0
    with demo_app.app_context():
        OrderFulfilmentFlow.get(flow.id).retry(actor="operator")
    wait_for(lambda: state_of(demo_app, OrderFulfilmentFlow, flow.id) == "delivered", "delivered")
    # Every answer of the payment provider was kept: three declines, then the authorisation.
    with demo_app.app_context():
        receipts = [v.payload for v in OrderFulfilmentFlow.get(flow.id).payment_receipt.versions()]
    assert [(r["status"], r["attempt"]) for r in receipts] == [
        ("declined", 1),
        ("declined", 2),
        ("declined", 3),
        ("authorised", 4),
    ]
    assert all(r["decline_code"] and r["message"] for r in receipts[:3])
    assert "decline_code" not in receipts[3] and receipts[3]["authorisation"].startswith("AUTH-")


def test_seeder_makes_every_reachable_state_by_transitions(demo_app: Flask) -> None:
    huey = install(demo_app).huey
    with demo_app.app_context():
        made = seed(per_state=1, rng=random.Random(6))
        for cls in DEMO_FLOWS:
            graph = cls.graph()
            seeded = {state for (type_name, state) in made if type_name == cls.type_name}
            assert seeded == set(graph.state_names) - transient_states(graph), cls.type_name
            for state in graph.error_states:
                [row] = db.session.execute(
                    cls.select().where(flows.c.state == state).limit(1)
                ).all()
                errored = cls(row)
                raised = "PaymentDeclined" if state == "payment_declined" else "ApiError"
                assert errored.last_error_type == f"flowstate_web.demo.simulated_api.{raised}"
                assert errored.retry_transitions()
                assert len(errored.history()) == len(paths(graph)[state])
        # Seeded flows are snapshots: nothing was sent, nothing waits in the outbox.
        assert db.session.execute(select(func.count()).select_from(outbox)).scalar() == 0
    assert huey.pending_count() + huey.scheduled_count() == 0
    assert transient_states(SyncThirdPartyApiFlow.graph()) == set()
    assert transient_states(OrderFulfilmentFlow.graph()) == set()


def test_runner_seeds_once_trickles_and_stops_cleanly(demo_app: Flask) -> None:
    demo_app.config.update(FLOWSTATE_DEMO_SEED=1, FLOWSTATE_DEMO_TRICKLE_SECONDS=0.2)

    def count() -> int:
        with demo_app.app_context():
            return int(db.session.execute(select(func.count()).select_from(flows)).scalar_one())

    def completed_live() -> bool:
        with demo_app.app_context():
            q = select(func.count()).select_from(flows).where(flows.c.completed_at.is_not(None))
            return int(db.session.execute(q).scalar_one()) > seeded_completed

    runner = DemoRunner(demo_app)
    with runner:
        seeded = count()
        with demo_app.app_context():
            q = select(func.count()).select_from(flows).where(flows.c.completed_at.is_not(None))
            seeded_completed = int(db.session.execute(q).scalar_one())
        assert seeded >= 15
        wait_for(lambda: count() > seeded, "a trickled flow")
        wait_for(completed_live, "a trickled flow to complete")
        assert runner.queue.running
    assert not runner.queue.running
    with DemoRunner(demo_app) as again:  # already seeded: only the trickle adds flows
        before = count()
        assert before < 2 * seeded
        again.stop()


def test_simulated_api_rates() -> None:
    never = SimulatedApi(failure_rate=0.0, latency=0.0, backorder_rate=0.0)
    always = SimulatedApi(failure_rate=1.0, latency=0.0, backorder_rate=1.0)
    assert never.fetch_record("x")["id"] == "x"
    assert never.in_stock("SKU", 1)
    assert not always.in_stock("SKU", 1)
    with pytest.raises(ApiError):
        always.create_shipping_label("ORD-1", "SKU", 1)
    with pytest.raises(PaymentDeclined) as declined:
        always.authorise_payment("ORD-1", 1299, attempt=2)
    assert declined.value.response["status"] == "declined"
    assert declined.value.response["attempt"] == 2
    assert declined.value.response["decline_code"] in str(declined.value)
    receipt = never.authorise_payment("ORD-1", 1299, attempt=3)
    assert (receipt["status"], receipt["attempt"], receipt["amount_cents"]) == (
        "authorised",
        3,
        1299,
    )
    assert receipt["risk"]["checks"] == ["cvc", "avs", "3ds"]  # a retried card goes through 3DS
    assert SimulatedApi.from_config({"FLOWSTATE_DEMO_FAILURE_RATE": 7}).failure_rate == 1.0
    assert SimulatedApi.from_config({}).failure_rate == 0.3


def test_a_payment_call_that_got_no_answer_is_kept_as_such(demo_app: Flask) -> None:
    with demo_app.app_context():
        order = OrderFulfilmentFlow.create(**new_props(OrderFulfilmentFlow, random.Random(9)))
        kept = decline_response(order, 2, TimeoutError("no answer within 5s"))
    assert kept["status"] == "no_answer"
    assert (kept["attempt"], kept["order_ref"]) == (2, order.order_ref)
    assert kept["error"] == "TimeoutError: no answer within 5s"
    declined = PaymentDeclined("declined", {"status": "declined"})
    assert decline_response(order, 1, declined) is declined.response


def test_new_props_are_valid_for_each_demo_flow(demo_app: Flask) -> None:
    rng = random.Random(7)
    with demo_app.app_context():
        for cls in DEMO_FLOWS:
            assert cls.create(**new_props(cls, rng)).state == cls.initial_state


def test_an_operators_retry_click_continues_through_the_queue(
    demo_app: Flask, queue: DemoQueue
) -> None:
    demo_app.config["FLOWSTATE_DEMO_FAILURE_RATE"] = 1.0
    with demo_app.app_context():
        flow = start_new(SyncThirdPartyApiFlow, random.Random(8))

    def failed_for_good() -> bool:
        with demo_app.app_context():
            history = SyncThirdPartyApiFlow.get(flow.id).history()
        return sum(h.name == "fail_third_party_api_request" for h in history) == 3

    wait_for(failed_for_good, "three failed attempts")
    wait_for(lambda: queue.huey.pending_count() + queue.huey.scheduled_count() == 0, "idle")
    demo_app.config["FLOWSTATE_DEMO_FAILURE_RATE"] = 0.0

    client = demo_app.test_client()
    page = client.get(f"/flows/types/SyncThirdPartyApiFlow/{flow.id}")
    assert page.status_code == 200
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert token, "no CSRF token on the flow page"
    clicked = client.post(
        f"/flows/types/SyncThirdPartyApiFlow/{flow.id}/retry",
        data={"csrf_token": token.group(1), "transition": "retry_fetch"},
    )
    assert clicked.status_code < 400, clicked.text
    wait_for(lambda: state_of(demo_app, SyncThirdPartyApiFlow, flow.id) == "completed", "completed")
    with demo_app.app_context():
        history = SyncThirdPartyApiFlow.get(flow.id).history()
    operator = [h for h in history if h.name == "retry_fetch" and h.actor != AUTO_RETRY_ACTOR]
    assert len(operator) == 1


REDIS_URL = os.environ.get("FLOWSTATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture
def redis_app(tmp_path: Path) -> Iterator[Flask]:
    """Return the demo app with its queue on Redis (a database of its own, emptied)."""
    redis = pytest.importorskip("redis", reason="the redis extra is not installed")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} unreachable: {exc} (CI requires Redis)")
        pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")
    client.flushdb()
    app = create_app(
        {
            "TESTING": True,
            "FLOWSTATE_INSTANCE_PATH": str(tmp_path / "instance"),
            "FLOWSTATE_PUBLIC": True,
            "FLOWSTATE_DEMO": True,
            "FLOWSTATE_DEMO_REDIS_URL": REDIS_URL,
            "FLOWSTATE_DEMO_FAILURE_RATE": 0.0,
            "FLOWSTATE_DEMO_LATENCY": 0.0,
            "FLOWSTATE_DEMO_RETRY_DELAY": 0.0,
        }
    )
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    client.flushdb()
    client.close()


def test_sync_flow_completes_through_a_redis_queue(redis_app: Flask) -> None:
    q = install(redis_app)
    assert type(q.huey).__name__ == "RedisHuey"
    q.start(workers=2)
    try:
        with redis_app.app_context():
            flow = start_new(SyncThirdPartyApiFlow, random.Random(2))
        wait_for(
            lambda: state_of(redis_app, SyncThirdPartyApiFlow, flow.id) == "completed",
            "completed via Redis",
        )
    finally:
        q.stop()


def test_the_demo_logs_simulated_failures_in_one_line_with_their_class() -> None:
    from flowstate_web.demo.runner import _OneLineApiErrors

    try:
        raise PaymentDeclined("declined ORD-1 (attempt 1): do_not_honour", {})
    except PaymentDeclined:
        record = logging.LogRecord(
            "huey", logging.ERROR, __file__, 1, "Unhandled exception in task %s.", ("t1",), None
        )
        record.exc_info = sys.exc_info()
    assert _OneLineApiErrors().filter(record)
    assert record.exc_info is None
    assert record.getMessage() == (
        "Unhandled exception in task t1. PaymentDeclined: declined ORD-1 (attempt 1):"
        " do_not_honour (recorded on the flow)"
    )


# -- duplicate deliveries: the claim comes before the call ----------------------------------


class GatedApi:
    """The simulated API, counting calls to ``method``; the first such call waits for a go."""

    def __init__(self, method: str) -> None:
        self.api = SimulatedApi(failure_rate=0.0, latency=0.0, backorder_rate=0.0)
        self.method = method
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.api, name)
        if name != self.method:
            return real

        def gated(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls += 1
                first = self.calls == 1
            if first:
                self.entered.set()
                assert self.release.wait(DEADLINE), "the test never released the first call"
            return real(*args, **kwargs)

        return gated


@pytest.fixture
def db_demo_app(empty_db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The demo app (no queue consumer) on an empty SQLite file or PostgreSQL database."""
    app = create_app(
        {
            "TESTING": True,
            "FLOWSTATE_INSTANCE_PATH": str(tmp_path / "instance"),
            "FLOWSTATE_DATABASE_URL": empty_db_url,
            "FLOWSTATE_PUBLIC": True,
            "FLOWSTATE_DEMO": True,
            "FLOWSTATE_DEMO_QUEUE_PATH": str(tmp_path / "queue.db"),
        }
    )
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def deliver_twice(app: Flask, job: str, flow_id: int, api: GatedApi) -> None:
    """Deliver hand-off ``job`` twice, the second while the first is inside the API call.

    Each delivery runs as a queue task does (:meth:`JobRegistry.run`), with the same
    dispatch id, so this is one hand-off delivered twice by an at-least-once queue.
    """
    registry = JobRegistry()
    registry.add(JOBS[job], name=job)
    errors: list[BaseException] = []

    def first() -> None:
        try:
            registry.run(app, job, flow_id, "dispatch-1", {})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=first)
    worker.start()
    try:
        assert api.entered.wait(DEADLINE), "the first delivery never called the API"
        registry.run(app, job, flow_id, "dispatch-1", {})  # the duplicate, meanwhile
    finally:
        api.release.set()
        worker.join(DEADLINE)
    assert not worker.is_alive()
    assert errors == []


def test_a_duplicate_payment_hand_off_authorises_once(
    db_demo_app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    api = GatedApi("authorise_payment")
    monkeypatch.setattr(demo_tasks, "_api", lambda: api)
    with db_demo_app.app_context():
        order = OrderFulfilmentFlow.create(**new_props(OrderFulfilmentFlow, random.Random(11)))
    with caplog.at_level(logging.INFO, logger="flowstate_web"):
        deliver_twice(db_demo_app, "authorise_payment", order.id, api)
    assert api.calls == 1
    assert "nothing to do for hand-off dispatch-1 (expected state 'pending')" in caplog.text
    with db_demo_app.app_context():
        done = OrderFulfilmentFlow.get(order.id)
        assert done.state == "payment_authorised"
        assert [h.name for h in done.history()] == ["start_payment", "authorise_payment"]
        [receipt] = done.payment_receipt.versions()
        assert receipt.payload["status"] == "authorised"


def test_a_duplicate_label_hand_off_buys_one_label(
    db_demo_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = GatedApi("create_shipping_label")
    monkeypatch.setattr(demo_tasks, "_api", lambda: api)
    with db_demo_app.app_context():
        order = OrderFulfilmentFlow.create(**new_props(OrderFulfilmentFlow, random.Random(12)))
        order.start_payment()
        order.authorise_payment({"status": "authorised"})
        order.start_picking()
    deliver_twice(db_demo_app, "ship_order", order.id, api)
    assert api.calls == 1
    with db_demo_app.app_context():
        done = OrderFulfilmentFlow.get(order.id)
        assert done.state == "shipped"
        assert [h.name for h in done.history()][-2:] == ["start_label", "ship"]
        assert len(done.shipping_label.versions()) == 1


def test_a_payment_or_label_call_that_never_returns_is_failed_by_the_timeout(
    demo_app: Flask,
) -> None:
    later = datetime.now(UTC) + timedelta(minutes=3)
    with demo_app.app_context():
        order = OrderFulfilmentFlow.create(**new_props(OrderFulfilmentFlow, random.Random(13)))
        order.start_payment()
        fail_stalled(order, now=later)
        assert order.state == "payment_declined"
        receipt = order.payment_receipt.latest()
        assert receipt is not None
        assert (receipt["status"], receipt["attempt"]) == ("no_answer", 1)
        order.retry_payment()
        order.start_payment()
        order.authorise_payment({"status": "authorised"})
        order.start_picking()
        order.start_label()
        fail_stalled(order, now=later)
        assert order.state == "label_failed"
        assert order.last_error_type == "flowstate_web.timeouts.FlowTimedOutError"
