"""What a worker process runs besides its queue's consumer: the periodic work.

:func:`run_periodic` is the one place for work that must happen on a timer in every
deployment: today the outbox relay. Queue adapters call it from their own scheduler
(huey's periodic task), ``flowstate-web worker`` and ``flask flowstate relay --loop`` call
it from :class:`PeriodicThread` / :func:`periodic_loop`. Every piece is safe to run in
several processes at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flask import Flask

log = logging.getLogger("flowstate_web.worker")


#: Flows the timeout sweep fails per transaction.
SWEEP_BATCH = 500
#: History rows the rollup reads per transaction.
ROLLUP_BATCH = 10_000


def periodic_work() -> list[tuple[str, Callable[[], object]]]:
    """Return the periodic jobs, by name, to run inside an app context."""
    from . import rollup
    from .relay import relay_app
    from .sweeper import sweep_all as sweep_report

    def sweep_all() -> int:
        """Fail every flow past a state timeout that declares ``on_timeout`` (in batches).

        A flow whose ``on_timeout`` raises is logged (with its traceback) and passed over.
        """
        return sweep_report(limit=SWEEP_BATCH).timed_out

    def rollup_all() -> int:
        """Roll every new history row up for the heat map and the metrics."""
        total = 0
        while (n := rollup.run(limit=ROLLUP_BATCH)) == ROLLUP_BATCH:
            total += n
        return total + n

    return [
        ("outbox relay", relay_app),
        ("timeout sweep", sweep_all),
        ("history rollup", rollup_all),
    ]


def run_periodic(app: Flask) -> None:
    """Run each piece of periodic work once in ``app``'s context; log failures, never raise."""
    for name, fn in periodic_work():
        try:
            with app.app_context():
                fn()
        except Exception:
            log.exception("periodic %s failed; trying again next round", name)


def periodic_loop(app: Flask, interval: float, stop: threading.Event | None = None) -> None:
    """Run :func:`run_periodic` every ``interval`` seconds until ``stop`` is set."""
    stop = stop or threading.Event()
    while True:
        run_periodic(app)
        if stop.wait(interval):
            return


class PeriodicThread:
    """:func:`periodic_loop` in a daemon thread of this process."""

    def __init__(self, app: Flask, interval: float) -> None:
        self.app = app
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop (the first round runs at once)."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=periodic_loop,
            args=(self.app, self.interval, self._stop),
            name="flowstate-periodic",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop after its current round."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
