"""The outbox relay: re-send every hand-off still unsent past its ``available_at``.

A row is normally sent right after its transaction commits (:mod:`flowstate_web.outbox`);
the relay is the safety net for sends that were lost (the process died, the queue was
down). It claims rows through :func:`flowstate_web.outbox.send_rows` (``SELECT ... FOR
UPDATE SKIP LOCKED`` on PostgreSQL), so several relays never send the same row at once.
A worker (:mod:`flowstate_web.worker`) or ``flask flowstate relay`` runs it periodically.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from .errors import FlowStateError
from .models import outbox
from .outbox import DEFAULT_RELAY_DELAY, send_rows
from .queues import Queue

# The relay's log lines keep the logger they always had, so logging settings still apply.
log = logging.getLogger("flowstate_web.outbox")


def relay(
    bind: Engine | Any,
    queue: Queue,
    *,
    delay: float = DEFAULT_RELAY_DELAY,
    batch_size: int = 100,
    max_batches: int = 50,
) -> int:
    """Re-send every row still unsent past its ``available_at``; return how many were sent.

    Safe to run in several processes at once (see :func:`send_rows`).
    """
    from ._executor import now as utcnow

    total = 0
    for _ in range(max_batches):
        ts = utcnow()
        n = send_rows(
            bind,
            queue,
            outbox.c.available_at <= ts,
            limit=batch_size,
            now=ts,
            retry_after=timedelta(seconds=delay),
        )
        total += n
        if n < batch_size:
            break
    if total:
        log.info("outbox relay: re-sent %d hand-off(s)", total)
    return total


def relay_app() -> int:
    """Run :func:`relay` with the current Flask app's database, queue and delay."""
    from flask import current_app

    ext = current_app.extensions["flowstate"]
    if ext.queue is None:
        raise FlowStateError(
            "the outbox relay needs a queue: FlowState(app, db=db, queue=HueyQueue(huey))"
        )
    delay = float(current_app.config.get("FLOWSTATE_OUTBOX_RELAY_DELAY", DEFAULT_RELAY_DELAY))
    return relay(ext.db.engine, ext.queue, delay=delay)
