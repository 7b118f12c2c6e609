"""The huey adapter: each registered job becomes a huey task of the same name.

``HueyQueue(huey)`` sends hand-offs; any process that runs huey's consumer on the same
storage (``huey_consumer yourapp.huey``, or ``flowstate-web worker``) runs them, inside the
Flask app the queue was bound to. With ``relay=True`` (the default) the consumer's
scheduler also runs the outbox relay once a minute (huey's periodic tasks are per minute).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import Handoff, JobRegistry, JobSpec
from . import jobs as default_jobs

if TYPE_CHECKING:
    from flask import Flask
    from huey.api import Huey

log = logging.getLogger("flowstate_web.queues")

RELAY_TASK = "flowstate.relay"

#: Tasks by job name, per huey instance: huey refuses a second task of one name, so every
#: ``HueyQueue`` on one huey shares them, and they run through the queue built last.
_TASKS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_CURRENT: weakref.WeakKeyDictionary[Any, HueyQueue] = weakref.WeakKeyDictionary()


class HueyQueue:
    """Send hand-offs to ``huey``; run registered jobs from ``jobs`` in its consumer.

    :param delays: seconds to hold a job back, by job name (``task.schedule(delay=...)``).
    :param relay: register the periodic ``flowstate.relay`` task (runs the outbox relay and
        the other periodic work in consumers started with periodic tasks on).
    """

    def __init__(
        self,
        huey: Huey,
        jobs: JobRegistry | None = None,
        *,
        delays: Mapping[str, float] | None = None,
        relay: bool = True,
    ) -> None:
        self.huey = huey
        self.jobs = jobs if jobs is not None else default_jobs
        self.delays = dict(delays or {})
        self.app: Flask | None = None
        self._tasks = _TASKS.setdefault(huey, {})
        self._relay = relay
        _CURRENT[huey] = self

    def bind(self, app: Flask) -> None:
        """Run jobs in ``app``'s context; register a task for every job known now."""
        self.app = app
        self.register()

    def register(self) -> None:
        """Register a huey task for each job in the registry (a consumer needs them all)."""
        for spec in self.jobs:
            self._task(spec.name)
        if self._relay and RELAY_TASK not in self._tasks:
            huey = self.huey

            def relay() -> None:
                from ..worker import run_periodic

                app = _CURRENT[huey].app
                if app is not None:
                    run_periodic(app)

            self._tasks[RELAY_TASK] = huey.periodic_task(_every_minute, name=RELAY_TASK)(relay)

    def _task(self, name: str) -> Any:
        task = self._tasks.get(name)
        if task is None:
            spec = self.jobs.get(name) if name in self.jobs else JobSpec(name, _unknown)
            huey = self.huey

            def run(flow_id: int, dispatch_id: str, args: Mapping[str, Any]) -> None:
                queue = _CURRENT[huey]
                queue.jobs.run(queue.app, name, flow_id, dispatch_id, args)

            task = self.huey.task(name=name, retries=spec.retries, retry_delay=spec.retry_delay)(
                run
            )
            self._tasks[name] = task
        return task

    def send(self, handoff: Handoff) -> None:
        """Enqueue ``handoff`` (held back by ``delays[job]`` seconds, if set)."""
        task = self._task(handoff.job)
        args = (handoff.flow_id, handoff.dispatch_id, dict(handoff.args))
        delay = self.delays.get(handoff.job, 0.0)
        if delay > 0:
            task.schedule(args=args, delay=delay)
        else:
            task(*args)


def _every_minute(dt: Any) -> bool:
    return True


def _unknown(flow_id: int, **kwargs: Any) -> None:  # pragma: no cover - never registered
    raise LookupError("unknown job")


def huey_from_config(config: Mapping[str, Any], instance_path: str, name: str) -> Huey:
    """Return a ``RedisHuey`` if ``FLOWSTATE_REDIS_URL`` is set, else a ``SqliteHuey``.

    The SQLite queue lives in ``FLOWSTATE_QUEUE_PATH`` (default: ``<name>-queue.db`` in the
    instance folder), so the web process and separate workers on one machine share it.
    """
    from huey import RedisHuey, SqliteHuey

    url = config.get("FLOWSTATE_REDIS_URL")
    if url:
        return RedisHuey(name, url=url, results=False)
    path = config.get("FLOWSTATE_QUEUE_PATH") or os.path.join(instance_path, f"{name}-queue.db")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return SqliteHuey(name, filename=path, results=False)
