"""Where the demo flows send their jobs: a swappable ``enqueue`` so tests and queues plug in."""

from __future__ import annotations

from collections.abc import Callable

Enqueue = Callable[[str, int], None]


def _unset(job: str, flow_id: int) -> None:
    raise RuntimeError(
        f"no job queue configured for {job}({flow_id}); call flowstate_web.demo.jobs.use(...)"
    )


_enqueue: Enqueue = _unset


def use(enqueue: Enqueue) -> Enqueue:
    """Send jobs to ``enqueue(job_name, flow_id)`` from now on; return the previous sender."""
    global _enqueue
    previous, _enqueue = _enqueue, enqueue
    return previous


def enqueue(job: str, flow_id: int) -> None:
    """Enqueue ``job`` for flow ``flow_id`` (called from after-commit callbacks only)."""
    _enqueue(job, flow_id)
