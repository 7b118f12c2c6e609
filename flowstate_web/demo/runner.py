"""Run the whole demo in one process: seed, job queue consumer, and a trickle of new flows."""

from __future__ import annotations

import logging
import random
import threading
from types import TracebackType

from flask import Flask

from .seed import DEMO_FLOWS, is_seeded, seed, start_new
from .simulated_api import ApiError
from .tasks import DemoQueue, install

log = logging.getLogger("flowstate_web.demo")


class _OneLineApiErrors(logging.Filter):
    """Log the simulated API's (expected) failures in one line, not with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ApiError):
            record.msg = f"{record.getMessage()} {type(exc).__name__}: {exc} (recorded on the flow)"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_api_errors() -> None:
    """Log the simulated API's failures in one line in this process (a demo worker)."""
    logging.getLogger("huey").addFilter(_OneLineApiErrors())


class DemoRunner:
    """Seed the database, start an in-process huey consumer and the trickle; stop them again.

    The consumer is for the one-command demo; ``flowstate-web worker`` runs the same jobs in
    separate processes (the hand-offs go through the outbox either way).

    Config: ``FLOWSTATE_DEMO_SEED`` (flows per state, default 2; seeding is skipped when
    demo flows exist already), ``FLOWSTATE_DEMO_TRICKLE_SECONDS`` (a new flow every so many
    seconds, default 3; 0 turns it off), ``FLOWSTATE_DEMO_WORKERS`` (default 2).
    """

    def __init__(
        self, app: Flask, queue: DemoQueue | None = None, *, consumer: bool = True
    ) -> None:
        self.app = app
        self.consumer = consumer
        self.queue = queue if queue is not None else install(app)
        self._stop = threading.Event()
        self._trickle: threading.Thread | None = None
        self._rng = random.Random()
        self._quiet = _OneLineApiErrors()

    def start(self) -> None:
        """Seed (once), start the consumer and the trickle."""
        cfg = self.app.config
        per_state = int(cfg.get("FLOWSTATE_DEMO_SEED", 2))
        with self.app.app_context():
            if per_state > 0 and not is_seeded():
                made = seed(per_state, rng=self._rng)
                log.info("demo: seeded %d flows", sum(made.values()))
        logging.getLogger("huey").addFilter(self._quiet)
        if self.consumer:
            self.queue.start(workers=int(cfg.get("FLOWSTATE_DEMO_WORKERS", 2)))
        interval = float(cfg.get("FLOWSTATE_DEMO_TRICKLE_SECONDS", 3))
        if interval > 0:
            self._stop.clear()
            self._trickle = threading.Thread(
                target=self._run_trickle,
                args=(interval,),
                name="flowstate-demo-trickle",
                daemon=True,
            )
            self._trickle.start()

    def _run_trickle(self, interval: float) -> None:
        n = 0
        while not self._stop.wait(interval):
            cls = DEMO_FLOWS[n % len(DEMO_FLOWS)]
            n += 1
            try:
                with self.app.app_context():
                    start_new(cls, self._rng)
            except Exception:
                log.exception("demo: could not start a new %s", cls.type_name)

    def stop(self) -> None:
        """Stop the trickle, then the consumer (running jobs finish)."""
        self._stop.set()
        if self._trickle is not None:
            self._trickle.join(timeout=10)
            self._trickle = None
        self.queue.stop()
        logging.getLogger("huey").removeFilter(self._quiet)

    def __enter__(self) -> DemoRunner:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
