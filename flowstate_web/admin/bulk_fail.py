"""Bulk "fail it": every stalled flow matching a filter, in batches, each batch a transaction.

Works exactly like bulk retry (:mod:`.bulk`: time-boxed requests, a signed progress token,
keyset on the id, a savepoint per flow) and reuses its :class:`~.bulk.Progress`, where
``retried`` counts the flows failed. Each flow goes through
:func:`flowstate_web.timeouts.fail_stalled`, so a flow that moved on or is no longer
stalled by the time its batch runs is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Row
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest

from .. import timeouts
from ..errors import FlowNotFoundError, GuardFailedError, InvalidTransitionError
from . import bulk, queries
from .bulk import Progress
from .filters import ListFilter

if TYPE_CHECKING:
    from ..flow import Flow

#: Progress tokens of bulk fail are not accepted by bulk retry, and the reverse.
SALT: Final = "flowstate.bulk-fail"
META: Final = "bulk_fail_stalled"


def choose(cls: type[Flow], form: Mapping[str, str]) -> dict[str, str]:
    """Return ``{state: fail transition}`` from the ``via:<state>`` form fields.

    :raises BadRequest: a field names no transition from its state into an error state.
    """
    chosen: dict[str, str] = {}
    for key, name in form.items():
        if not key.startswith("via:") or not name:
            continue
        state = key.removeprefix("via:")
        if name not in {t.name for t in timeouts.fail_transitions(cls, state)}:
            raise BadRequest(
                f"{name[:80]!r} is not a transition from {state[:80]!r} into an error state"
            )
        chosen[state] = name
    return chosen


def run(
    session: Session,
    cls: type[Flow],
    f: ListFilter,
    progress: Progress,
    *,
    chosen: Mapping[str, str],
    actor: str,
    reason: str | None,
    batch_size: int,
    seconds: float,
) -> Progress:
    """Fail batches of matching stalled flows until none is left or ``seconds`` are spent."""

    def one(flow: Flow) -> None:
        _fail_one(session, flow, chosen, actor, reason, progress)

    return run_batches(
        session, cls, f, progress, one, batch_size=batch_size, seconds=seconds, what="bulk fail"
    )


def run_batches(
    session: Session,
    cls: type[Flow],
    f: ListFilter,
    progress: Progress,
    one: Callable[[Flow], None],
    *,
    batch_size: int,
    seconds: float,
    what: str,
) -> Progress:
    """Call ``one`` on batches of matching stalled flows (see :func:`.bulk.run_batches`)."""

    def batch(after_id: int, size: int) -> Sequence[Row[Any]]:
        return queries.stalled_batch(session, cls.type_name, f, after_id, size)

    return bulk.run_batches(
        session, cls, batch, progress, one, batch_size=batch_size, seconds=seconds, what=what
    )


def _fail_one(
    session: Session,
    flow: Flow,
    chosen: Mapping[str, str],
    actor: str,
    reason: str | None,
    progress: Progress,
) -> None:
    options = [t.name for t in timeouts.fail_transitions(type(flow), flow.state)]
    name = chosen.get(flow.state)
    if name is None and len(options) == 1:
        name = options[0]
    if name is None:
        why = "declares no transition into an error state" if not options else "has several"
        progress.note(progress.skipped, f"state {flow.state!r} {why}; none was chosen")
        return
    try:
        with session.begin_nested():
            timeouts.fail_stalled(flow, name, actor=actor, reason=reason, meta={"admin": META})
    except timeouts.NotStalledError:
        progress.note(progress.skipped, "no longer stalled")
    except InvalidTransitionError as exc:
        progress.note(progress.skipped, f"state changed meanwhile (now {exc.current!r})")
    except GuardFailedError as exc:
        progress.note(progress.skipped, f"guard of {exc.transition!r} refused")
    except FlowNotFoundError:
        progress.note(progress.skipped, "deleted meanwhile")
    except Exception as exc:
        # The transition's own code failed: rolled back to the savepoint, keep going.
        progress.note(progress.failed, f"{name}: {type(exc).__name__}: {exc}")
    else:
        progress.retried += 1
