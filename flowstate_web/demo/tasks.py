"""The demo's jobs, handed off durably (``enqueue=``) to a real huey queue (SQLite or Redis).

Each job follows the README pattern: check the flow is where this hand-off left it (a
duplicate or late delivery finds it moved on and stops), move it to "in progress" (the
claim: of two concurrent deliveries only one gets past it), call the (simulated) third
party, then finish, persisting what came back. On an exception it runs the ``fail...``
transition from inside ``except`` (so the engine records the error) and, at most
``RETRIES`` times in a row, the declared retry transition as the job queue, whose hand-off
runs the job again; then it re-raises, so the queue logs the failure.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, current_app
from huey import RedisHuey, SqliteHuey
from huey.api import Huey
from huey.consumer import Consumer

from flowstate_web.flow import Flow
from flowstate_web.queues import JobRegistry
from flowstate_web.queues.huey import HueyQueue

from .orders_flow import OrderFulfilmentFlow, no_answer, payment_attempt
from .simulated_api import PaymentDeclined, SimulatedApi
from .sync_flow import SyncThirdPartyApiFlow

log = logging.getLogger("flowstate_web.demo")

AUTO_RETRY_ACTOR = "job queue"
RETRIES = 2


def _api() -> SimulatedApi:
    return SimulatedApi.from_config(current_app.config)


def _at(flow: Flow, state: str, dispatch_id: str) -> bool:
    """Return whether ``flow`` is still in ``state``; a delivery that finds it moved on stops."""
    if flow.state == state:
        return True
    log.info("%r: nothing to do for hand-off %s (expected state %r)", flow, dispatch_id, state)
    return False


def _auto_retry(flow: Flow, retry: str) -> None:
    """Run ``retry`` as the job queue unless it already did ``RETRIES`` times in a row.

    The count restarts at an operator's retry, so a Retry click gets a fresh budget.
    """
    streak = 0
    for h in reversed(flow.history()):
        if h.name == retry:
            if h.actor != AUTO_RETRY_ACTOR:
                break
            streak += 1
    if streak < RETRIES:
        flow.run(retry, actor=AUTO_RETRY_ACTOR, reason="automatic retry of a failed job")


# -- SyncThirdPartyApiFlow ------------------------------------------------------------------


def fetch_third_party(flow_id: int, *, dispatch_id: str) -> None:
    """Call the third-party API and persist its response."""
    flow = SyncThirdPartyApiFlow.get(flow_id, lock=True)
    if not _at(flow, "picked", dispatch_id):
        return
    flow.start_third_party_api_request()
    try:
        result = _api().fetch_record(flow.third_party_id)
    except Exception:
        flow.fail_third_party_api_request()
        _auto_retry(flow, "retry_fetch")
        raise
    flow.finish_third_party_api_request(result)


def save_local_record(flow_id: int, *, dispatch_id: str) -> None:
    """Save the fetched response as our own record."""
    flow = SyncThirdPartyApiFlow.get(flow_id, lock=True)
    if not _at(flow, "fetched_third_party_api", dispatch_id):
        return
    flow.start_record_save()
    try:
        _api().save_record(flow.my_record_id, flow.third_party_api_response.latest() or {})
    except Exception:
        flow.fail_record_save()
        _auto_retry(flow, "retry_save")
        raise
    flow.finish_record_save()


def complete_flow(flow_id: int, *, dispatch_id: str) -> None:
    """Complete a saved flow (the gem's after-commit step, handed off durably)."""
    flow = SyncThirdPartyApiFlow.get(flow_id, lock=True)
    if _at(flow, "saved_my_record", dispatch_id):
        flow.complete()


# -- OrderFulfilmentFlow --------------------------------------------------------------------


def authorise_payment(flow_id: int, *, dispatch_id: str) -> None:
    """Ask the payment provider to authorise the order's amount; keep its answer either way."""
    flow = OrderFulfilmentFlow.get(flow_id, lock=True)
    if not _at(flow, "pending", dispatch_id):
        return
    flow.start_payment()  # the claim: commits, so no lock is held over the call
    attempt = payment_attempt(flow)
    try:
        receipt = _api().authorise_payment(flow.order_ref, flow.amount_cents, attempt=attempt)
    except Exception as exc:
        flow.decline_payment(decline_response(flow, attempt, exc))
        _auto_retry(flow, "retry_payment")
        raise
    flow.authorise_payment(receipt)


def decline_response(flow: OrderFulfilmentFlow, attempt: int, exc: Exception) -> dict[str, Any]:
    """Return what to keep of a failed authorisation: the provider's decline, if it sent one."""
    if isinstance(exc, PaymentDeclined):
        return exc.response
    return no_answer(flow, attempt, f"{type(exc).__name__}: {exc}")


def pick_order(flow_id: int, *, dispatch_id: str) -> None:
    """Pick the goods; wait for stock if the shelf is empty, else ship."""
    flow = OrderFulfilmentFlow.get(flow_id, lock=True)
    if not _at(flow, "payment_authorised", dispatch_id):
        return
    flow.start_picking()
    if not _api().in_stock(flow.sku, flow.quantity):
        flow.mark_backordered()
        return
    _ship(flow)


def restock_order(flow_id: int, *, dispatch_id: str) -> None:
    """Stock has arrived for a backordered order."""
    flow = OrderFulfilmentFlow.get(flow_id, lock=True)
    if _at(flow, "backordered", dispatch_id):
        flow.restock()


def ship_order(flow_id: int, *, dispatch_id: str) -> None:
    """Buy a shipping label and ship."""
    flow = OrderFulfilmentFlow.get(flow_id, lock=True)
    if _at(flow, "picking", dispatch_id):
        _ship(flow)


def _ship(flow: OrderFulfilmentFlow) -> None:
    """Claim the label (``picking`` -> ``buying_label``), buy it from the carrier, ship."""
    flow.start_label()  # the claim: commits, so no lock is held over the call
    try:
        label = _api().create_shipping_label(flow.order_ref, flow.sku, flow.quantity)
    except Exception:
        flow.fail_label()
        _auto_retry(flow, "retry_label")
        raise
    flow.ship(label)


def deliver_order(flow_id: int, *, dispatch_id: str) -> None:
    """The carrier delivered the parcel."""
    flow = OrderFulfilmentFlow.get(flow_id, lock=True)
    if _at(flow, "shipped", dispatch_id):
        flow.deliver()


#: Every job by the name the flows hand off (``enqueue=``).
JOBS: dict[str, Callable[..., None]] = {
    f.__name__: f
    for f in (
        fetch_third_party,
        save_local_record,
        complete_flow,
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


def install(app: Flask) -> DemoQueue:
    """Make the demo queue ``app``'s hand-off queue (once); return it."""
    existing = app.extensions.get("flowstate_demo_queue")
    if isinstance(existing, DemoQueue):
        return existing
    q = DemoQueue(app)
    app.extensions["flowstate"].use_queue(q.queue, app)
    app.extensions["flowstate_demo_queue"] = q
    return q


def make_huey(config: Mapping[str, Any], instance_path: str) -> Huey:
    """Return a ``RedisHuey`` if ``FLOWSTATE_DEMO_REDIS_URL`` is set, else a ``SqliteHuey``.

    The SQLite queue lives in ``FLOWSTATE_DEMO_QUEUE_PATH`` (default: the instance folder);
    on Redis, ``FLOWSTATE_DEMO_QUEUE_NAME`` (default ``flowstate-demo``) names its keys.
    """
    url = config.get("FLOWSTATE_DEMO_REDIS_URL")
    if url:
        name = str(config.get("FLOWSTATE_DEMO_QUEUE_NAME") or "flowstate-demo")
        return RedisHuey(name, url=url, results=False)
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
    """The demo's huey, the :class:`HueyQueue` its flows hand off to, an in-process consumer.

    :func:`install` makes it the app's queue; ``flowstate-web worker`` runs the same jobs in
    separate processes on the same storage.
    """

    def __init__(self, app: Flask, huey: Huey | None = None) -> None:
        self.app = app
        self.huey = huey if huey is not None else make_huey(app.config, app.instance_path)
        self.jobs = JobRegistry()
        for name, fn in JOBS.items():
            self.jobs.add(fn, name=name)
        delays = {
            job: float(app.config.get(key, default)) for job, (key, default) in DELAYS.items()
        }
        self.queue = HueyQueue(self.huey, self.jobs, delays=delays)
        self._consumer: Any = None
        self._thread: threading.Thread | None = None

    def start(self, workers: int = 2) -> None:
        """Start a thread-worker consumer in a background thread of this process."""
        if self._thread is not None:
            raise RuntimeError("the demo queue's consumer is already running")
        self._consumer = _EmbeddedConsumer(
            self.huey,
            workers=workers,
            worker_type="thread",
            periodic=True,  # the outbox relay (huey's periodic task, once a minute)
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
