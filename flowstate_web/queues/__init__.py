"""Job queues the outbox hands work to: the message, the adapter protocol, the job registry.

A job is a plain function ``fn(flow_id, *, dispatch_id, **args)`` registered by name
(:func:`job`); the adapters (:mod:`.huey`, :mod:`.celery`) turn each registered job into a
task of their queue and run it inside the Flask app's context. Importing this package
imports neither huey nor Celery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from ..errors import FlowNotFoundError, FlowStateError, InvalidTransitionError

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("flowstate_web.queues")

JobFn = Callable[..., None]
J = TypeVar("J", bound=JobFn)


@dataclass(frozen=True, slots=True)
class Handoff:
    """One job hand-off, as the outbox sends it to a queue."""

    job: str
    flow_id: int
    flow_type: str
    #: The same on every re-send of this hand-off: jobs use it to be idempotent.
    dispatch_id: str
    args: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Queue(Protocol):
    """What the outbox needs from a job queue."""

    def bind(self, app: Flask) -> None:
        """Remember ``app``: jobs run inside its app context (called by ``FlowState``)."""

    def send(self, handoff: Handoff) -> None:
        """Put ``handoff`` on the queue; raise if it could not be queued."""


class UnknownJobError(FlowStateError, LookupError):
    """A hand-off names a job that no module registered."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A registered job and how its queue should run it."""

    name: str
    fn: JobFn
    #: How often the queue re-runs the job after it raised (huey ``retries``, Celery
    #: ``max_retries``).
    retries: int = 0
    retry_delay: float = 0.0


class JobRegistry:
    """Jobs by name; the adapters build their queue's tasks from one of these."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobSpec] = {}

    def job(
        self, name: str | None = None, *, retries: int = 0, retry_delay: float = 0.0
    ) -> Callable[[J], J]:
        """Register the decorated ``fn(flow_id, *, dispatch_id, **args)`` as job ``name``.

        :param name: the name transitions use in ``enqueue=`` (default: the function's name).
        :param retries: re-runs by the queue after an exception.
        :param retry_delay: seconds between those re-runs.
        """

        def register(fn: J) -> J:
            self.add(fn, name=name, retries=retries, retry_delay=retry_delay)
            return fn

        return register

    def add(
        self, fn: JobFn, *, name: str | None = None, retries: int = 0, retry_delay: float = 0.0
    ) -> JobSpec:
        """Register ``fn`` as a job (see :meth:`job`); re-registering a name replaces it."""
        spec = JobSpec(name or fn.__name__, fn, retries, retry_delay)
        self._jobs[spec.name] = spec
        return spec

    def get(self, name: str) -> JobSpec:
        """Return job ``name``.

        :raises UnknownJobError: no job of that name is registered.
        """
        try:
            return self._jobs[name]
        except KeyError:
            known = ", ".join(sorted(self._jobs)) or "none"
            raise UnknownJobError(
                f"no job {name!r} is registered (known: {known}); import the module that"
                " defines it in the worker"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __iter__(self) -> Iterator[JobSpec]:
        return iter(list(self._jobs.values()))

    def run(
        self,
        app: Flask | None,
        name: str,
        flow_id: int,
        dispatch_id: str,
        args: Mapping[str, Any],
    ) -> None:
        """Run job ``name`` for ``flow_id`` inside ``app``'s context (what a queue task does).

        A job that raises :class:`InvalidTransitionError` or :class:`FlowNotFoundError`
        found its flow moved on (a duplicate delivery, an operator) or gone: it is logged and
        not retried. Any other exception propagates, so the queue's retries apply.
        """
        spec = self.get(name)
        if app is None:
            raise FlowStateError(f"job {name!r}: the queue is not bound to a Flask app")
        with app.app_context():
            try:
                spec.fn(flow_id, dispatch_id=dispatch_id, **args)
            except (InvalidTransitionError, FlowNotFoundError) as exc:
                log.info("job %s(%s) [%s] skipped: %s", name, flow_id, dispatch_id, exc)


#: The default registry: jobs declared with :func:`job` land here.
jobs = JobRegistry()


def job(name: str | None = None, *, retries: int = 0, retry_delay: float = 0.0) -> Callable[[J], J]:
    """Register a job in the default registry (see :meth:`JobRegistry.job`)."""
    return jobs.job(name, retries=retries, retry_delay=retry_delay)


__all__ = ["Handoff", "JobRegistry", "JobSpec", "Queue", "UnknownJobError", "job", "jobs"]
