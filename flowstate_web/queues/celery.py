"""The Celery adapter: each registered job becomes a Celery task of the same name.

``CeleryQueue(celery)`` sends hand-offs with ``send_task`` (the sender needs no task code);
``celery -A yourapp.celery worker`` runs them inside the Flask app the queue was bound to.
Tasks acknowledge late and are re-queued if their worker dies (``acks_late``,
``reject_on_worker_lost``), so a killed worker does not lose a job it was holding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import Handoff, JobRegistry
from . import jobs as default_jobs

if TYPE_CHECKING:
    from celery import Celery
    from flask import Flask


class CeleryQueue:
    """Send hand-offs to the Celery app ``celery``; run registered ``jobs`` in its workers.

    :param delays: seconds to hold a job back, by job name (``countdown``).
    :param queue: the Celery queue to route hand-offs to (default: Celery's default).
    """

    def __init__(
        self,
        celery: Celery,
        jobs: JobRegistry | None = None,
        *,
        delays: Mapping[str, float] | None = None,
        queue: str | None = None,
    ) -> None:
        self.celery = celery
        self.jobs = jobs if jobs is not None else default_jobs
        self.delays = dict(delays or {})
        self.queue = queue
        self.app: Flask | None = None
        self._tasks: dict[str, Any] = {}

    def bind(self, app: Flask) -> None:
        """Run jobs in ``app``'s context; register a task for every job known now."""
        self.app = app
        self.register()

    def register(self) -> None:
        """Register a Celery task for each job in the registry."""
        for spec in self.jobs:
            if spec.name in self._tasks:
                continue
            self._tasks[spec.name] = self._make_task(spec.name, spec.retries, spec.retry_delay)

    def _make_task(self, name: str, retries: int, retry_delay: float) -> Any:
        jobs, adapter = self.jobs, self

        def run(task: Any, flow_id: int, dispatch_id: str, args: Mapping[str, Any]) -> None:
            try:
                jobs.run(adapter.app, name, flow_id, dispatch_id, args)
            except Exception as exc:
                if task.request.retries < retries:
                    raise task.retry(exc=exc, countdown=retry_delay) from exc
                raise

        run.__name__ = name.replace(".", "_")
        return self.celery.task(
            name=name,
            bind=True,
            acks_late=True,
            reject_on_worker_lost=True,
            max_retries=retries,
        )(run)

    def send(self, handoff: Handoff) -> None:
        """Send ``handoff`` to the broker (held back by ``delays[job]`` seconds, if set)."""
        delay = self.delays.get(handoff.job, 0.0)
        self.celery.send_task(
            handoff.job,
            args=(handoff.flow_id, handoff.dispatch_id, dict(handoff.args)),
            countdown=delay if delay > 0 else None,
            queue=self.queue,
        )
