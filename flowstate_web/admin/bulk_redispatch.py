"""Bulk "re-dispatch": every stalled flow matching a filter, in batches, like bulk fail.

Same loop as :mod:`.bulk_fail` (:func:`.bulk_fail.run_batches`: time-boxed requests, a
signed progress token with its own salt, keyset on the id, one transaction per batch, a
savepoint per flow), where ``retried`` of :class:`~.bulk.Progress` counts the flows
re-dispatched. Each flow goes through :func:`flowstate_web.outbox.redispatch` (row lock,
new outbox rows of kind ``redispatch`` with actor and reason, state unchanged); a flow no
longer stalled on its locked, fresh row, or whose state was entered without a hand-off, is
skipped with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from sqlalchemy.orm import Session

from .. import outbox, timeouts
from ..errors import FlowNotFoundError, FlowStateError
from ..handoffs import AlreadyRedispatched
from .bulk import Progress
from .bulk_fail import run_batches
from .filters import ListFilter

if TYPE_CHECKING:
    from ..flow import Flow

#: Progress tokens of bulk re-dispatch are not accepted by bulk fail or retry, and the reverse.
SALT: Final = "flowstate.bulk-redispatch"


class _NotStalled(Exception):
    """Rolls the flow's savepoint back: it was re-read and is no longer stalled."""


def handoffs(cls: type[Flow], state: str) -> tuple[str, ...]:
    """Return the jobs the declared transitions into ``state`` hand off (what is re-sent).

    Empty for a state no transition with ``enqueue`` enters; in the initial state, what code
    handed off with :func:`flowstate_web.outbox.handoff` is re-sent instead, per flow.
    """
    return cls.graph().handoff_into(state)


def run(
    session: Session,
    cls: type[Flow],
    f: ListFilter,
    progress: Progress,
    *,
    actor: str,
    reason: str | None,
    batch_size: int,
    seconds: float,
) -> Progress:
    """Re-dispatch batches of matching stalled flows until none is left or time is up."""

    def one(flow: Flow) -> None:
        _redispatch_one(session, flow, actor, reason, progress)

    return run_batches(
        session,
        cls,
        f,
        progress,
        one,
        batch_size=batch_size,
        seconds=seconds,
        what="bulk re-dispatch",
    )


def _redispatch_one(
    session: Session, flow: Flow, actor: str, reason: str | None, progress: Progress
) -> None:
    try:
        with session.begin_nested():
            # Locks and re-reads the row; refuses a flow this same run re-dispatched already.
            outbox.redispatch(flow, actor=actor, reason=reason, unless_since=progress.started_at)
            if not timeouts.is_stalled(flow):
                raise _NotStalled
    except (_NotStalled, FlowStateError) as exc:
        if isinstance(exc, FlowNotFoundError):
            progress.note(progress.skipped, "deleted meanwhile")
        elif isinstance(exc, AlreadyRedispatched):  # this run was submitted twice
            progress.note(progress.skipped, "re-dispatched already by this bulk run")
        elif not timeouts.is_stalled(flow):
            progress.note(progress.skipped, "no longer stalled")
        elif flow.seq == 0:
            progress.note(
                progress.skipped, f"state {flow.state!r} (initial): nothing was handed off"
            )
        else:
            progress.note(
                progress.skipped,
                f"state {flow.state!r} was entered by a transition that hands no job to the queue",
            )
    except Exception as exc:
        # Writing the outbox rows failed: rolled back to the savepoint, keep going.
        progress.note(progress.failed, f"{type(exc).__name__}: {exc}")
    else:
        progress.retried += 1
