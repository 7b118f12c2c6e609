"""The demo's jobs, run by a real huey queue (SQLite in the instance folder, or Redis).

Each job follows the README pattern: move the flow to "in progress", call the (simulated)
third party, then finish, persisting what came back; on an exception run the ``fail...``
transition from inside ``except`` (so the engine records the error) and re-raise, so huey
retries the job (``retries=2``). A retried job first takes the flow's declared retry
transition out of the error state, then carries on itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from flask import Flask, current_app
from huey import RedisHuey, SqliteHuey
from huey.api import Huey
from huey.consumer import Consumer

from flowstate_web.errors import FlowNotFoundError, InvalidTransitionError
from flowstate_web.flow import Flow

from .orders_flow import OrderFulfilmentFlow
from .simulated_api import SimulatedApi
from .sync_flow import SyncThirdPartyApiFlow

log = logging.getLogger("flowstate_web.demo")

AUTO_RETRY_ACTOR = "job queue"
RETRIES = 2
RETRY_DELAY = 1.0

#: Flow ids whose follow-up job the current job is carrying out itself (see ``_ready``).
_continuing: ContextVar[frozenset[int]] = ContextVar(
    "flowstate_demo_continuing", default=frozenset()
)


@contextlib.contextmanager
def _continue_here(flow_id: int) -> Iterator[None]:
    token = _continuing.set(_continuing.get() | {flow_id})
    try:
        yield
    finally:
        _continuing.reset(token)


def _api() -> SimulatedApi:
    return SimulatedApi.from_config(current_app.config)


def _ready(flow: Flow, ready: str, retry: str) -> bool:
    """Bring ``flow`` to ``ready`` (taking ``retry`` out of its error state); say if it got there.

    A huey retry finds the flow in the error state its previous attempt recorded. It runs the
    declared retry transition, whose after-commit callback would enqueue this same work again;
    this job does the work itself, so that enqueue is dropped.
    """
    if flow.state != ready and any(t.name == retry for t in flow.retry_transitions()):
        with _continue_here(flow.id):
            flow.run(retry, actor=AUTO_RETRY_ACTOR, reason="automatic retry of a failed job")
    if flow.state != ready:
        log.info("%r: nothing to do (expected state %r)", flow, ready)
        return False
    return True


# -- SyncThirdPartyApiFlow ------------------------------------------------------------------


def fetch_third_party(flow_id: int) -> None:
    """Call the third-party API and persist its response."""
    flow = SyncThirdPartyApiFlow.get(flow_id)
    if not _ready(flow, "picked", "retry_fetch"):
        return
    flow.start_third_party_api_request()
    try:
        result = _api().fetch_record(flow.third_party_id)
    except Exception:
        flow.fail_third_party_api_request()
        raise
    flow.finish_third_party_api_request(result)


def save_local_record(flow_id: int) -> None:
    """Save the fetched response as our own record."""
    flow = SyncThirdPartyApiFlow.get(flow_id)
    if not _ready(flow, "fetched_third_party_api", "retry_save"):
        return
    flow.start_record_save()
    try:
        _api().save_record(flow.my_record_id, flow.third_party_api_response.latest() or {})
    except Exception:
        flow.fail_record_save()
        raise
    flow.finish_record_save()


# -- OrderFulfilmentFlow --------------------------------------------------------------------


def authorise_payment(flow_id: int) -> None:
    """Ask the payment provider to authorise the order's amount."""
    flow = OrderFulfilmentFlow.get(flow_id)
    if not _ready(flow, "pending", "retry_payment"):
        return
    try:
        receipt = _api().authorise_payment(flow.order_ref, flow.amount_cents)
    except Exception:
        flow.decline_payment()
        raise
    flow.authorise_payment(receipt)


def pick_order(flow_id: int) -> None:
    """Pick the goods; wait for stock if the shelf is empty, else ship."""
    flow = OrderFulfilmentFlow.get(flow_id)
    if flow.state == "payment_authorised":
        flow.start_picking()
        if not _api().in_stock(flow.sku, flow.quantity):
            flow.mark_backordered()
            return
    _ship(flow)


def restock_order(flow_id: int) -> None:
    """Stock has arrived for a backordered order."""
    flow = OrderFulfilmentFlow.get(flow_id)
    if flow.state == "backordered":
        flow.restock()


def ship_order(flow_id: int) -> None:
    """Buy a shipping label and ship."""
    _ship(OrderFulfilmentFlow.get(flow_id))


def _ship(flow: OrderFulfilmentFlow) -> None:
    if not _ready(flow, "picking", "retry_label"):
        return
    try:
        label = _api().create_shipping_label(flow.order_ref, flow.sku, flow.quantity)
    except Exception:
        flow.fail_label()
        raise
    flow.ship(label)


def deliver_order(flow_id: int) -> None:
    """The carrier delivered the parcel."""
    flow = OrderFulfilmentFlow.get(flow_id)
    if flow.state == "shipped":
        flow.deliver()


#: Every job by the name the flows' callbacks enqueue.
JOBS: dict[str, Callable[[int], None]] = {
    f.__name__: f
    for f in (
        fetch_third_party,
        save_local_record,
        authorise_payment,
        pick_order,
        restock_order,
        ship_order,
        deliver_order,
    )
}

#: Config keys that delay a job (seconds), so "backordered" and "shipped" stay visible.
DELAYS = {
    "restock_order": ("FLOWSTATE_DEMO_RESTOCK_SECONDS", 8.0),
    "deliver_order": ("FLOWSTATE_DEMO_DELIVERY_SECONDS", 4.0),
}


def make_huey(config: Mapping[str, Any], instance_path: str) -> Huey:
    """Return a ``RedisHuey`` if ``FLOWSTATE_DEMO_REDIS_URL`` is set, else a ``SqliteHuey``.

    The SQLite queue lives in ``FLOWSTATE_DEMO_QUEUE_PATH`` (default: the instance folder).
    """
    url = config.get("FLOWSTATE_DEMO_REDIS_URL")
    if url:
        return RedisHuey("flowstate-demo", url=url, results=False)
    path = config.get("FLOWSTATE_DEMO_QUEUE_PATH") or os.path.join(instance_path, "demo-queue.db")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return SqliteHuey("flowstate-demo", filename=path, results=False)


class _EmbeddedConsumer(Consumer):  # type: ignore[misc]
    """A consumer that lives inside another program: that program owns the signals.

    ``start()`` runs once, in the caller's thread, so the workers exist (and ``stop()`` can
    join them) before ``run()`` -- the health-check loop -- starts in the background.
    """

    _started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            super().start()

    def _set_signal_handlers(self) -> None:
        pass


class DemoQueue:
    """The demo's huey instance, its tasks, and an in-process thread-worker consumer."""

    def __init__(self, app: Flask, huey: Huey | None = None) -> None:
        self.app = app
        self.huey = huey if huey is not None else make_huey(app.config, app.instance_path)
        retry_delay = float(app.config.get("FLOWSTATE_DEMO_RETRY_DELAY", RETRY_DELAY))
        self._tasks = {
            name: self.huey.task(retries=RETRIES, retry_delay=retry_delay, name=name)(
                self._in_app(name, fn)
            )
            for name, fn in JOBS.items()
        }
        self._delays = {
            job: float(app.config.get(key, default)) for job, (key, default) in DELAYS.items()
        }
        self._consumer: Any = None
        self._thread: threading.Thread | None = None

    def _in_app(self, name: str, fn: Callable[[int], None]) -> Callable[[int], None]:
        app = self.app

        def job(flow_id: int) -> None:
            with app.app_context():
                try:
                    fn(flow_id)
                except (InvalidTransitionError, FlowNotFoundError) as exc:
                    # Someone else (an operator, a duplicate job) moved the flow on: not a
                    # failure worth retrying.
                    log.info("job %s(%s) skipped: %s", name, flow_id, exc)

        job.__name__ = name
        return job

    def enqueue(self, job: str, flow_id: int) -> None:
        """Queue ``job`` for ``flow_id`` (the flows' after-commit callbacks call this)."""
        if flow_id in _continuing.get():
            return
        try:
            task = self._tasks[job]
        except KeyError:
            raise LookupError(f"demo queue: no job {job!r} (known: {', '.join(JOBS)})") from None
        delay = self._delays.get(job, 0.0)
        if delay > 0:
            task.schedule(args=(flow_id,), delay=delay)
        else:
            task(flow_id)

    def start(self, workers: int = 2) -> None:
        """Start a thread-worker consumer in a background thread of this process."""
        if self._thread is not None:
            raise RuntimeError("the demo queue's consumer is already running")
        self._consumer = _EmbeddedConsumer(
            self.huey,
            workers=workers,
            worker_type="thread",
            periodic=False,
            max_delay=0.5,
            shutdown_timeout=10,
        )
        self._consumer.start()
        self._thread = threading.Thread(
            target=self._consumer.run, name="flowstate-demo-consumer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the consumer, letting running jobs finish (up to 10 s)."""
        if self._thread is None:
            return
        self._consumer.stop(graceful=True)
        self._thread.join(timeout=15)
        self._thread = None
        self._consumer = None

    @property
    def running(self) -> bool:
        """Return whether the consumer thread is alive."""
        return self._thread is not None and self._thread.is_alive()
