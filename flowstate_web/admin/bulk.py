"""Bulk retry: every errored flow matching a filter, in batches, each batch a transaction.

One POST works through batches of ``FLOWSTATE_BULK_BATCH_SIZE`` flows (keyset on the id,
ascending) until ``FLOWSTATE_BULK_REQUEST_SECONDS`` have passed, then returns its progress
and a signed cursor; the page continues with the next POST (htmx does it by itself, a
button does it without JavaScript). No request and no transaction is ever unbounded.
Each flow is retried through the engine inside a savepoint, so one failing flow rolls back
alone and a flow whose state changed meanwhile is skipped (the engine's lock + from-state
check), counted with its reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import Row
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest

from .._tx import caller_owns
from ..errors import CallbackError, FlowNotFoundError, GuardFailedError, InvalidTransitionError
from . import queries, stored
from .filters import ListFilter

if TYPE_CHECKING:
    from ..flow import Flow
    from ..records import HistoryEntry

#: At most this many distinct reasons are kept per outcome; the rest are counted as "other".
MAX_REASONS: Final = 40
_IDS = re.compile(r"#\d+")


@dataclass(slots=True)
class Progress:
    """Where a bulk retry is, and what it did so far (carried between requests, signed)."""

    last_id: int = 0
    retried: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    #: Retried (committed) flows whose after-commit callbacks then failed.
    warnings: dict[str, int] = field(default_factory=dict)
    done: bool = False
    #: When the operator opened the confirm page (epoch seconds): the run's key. The
    #: confirm form carries it in the first token, so the same run submitted again (a
    #: reload, a second tab) is recognised; ``None`` for tokens made before it existed.
    started: float | None = None

    @property
    def started_at(self) -> datetime | None:
        """Return :attr:`started` as an aware UTC datetime."""
        return None if self.started is None else datetime.fromtimestamp(self.started, UTC)

    @property
    def total(self) -> int:
        """Return how many flows were looked at."""
        return self.retried + sum(self.skipped.values()) + sum(self.failed.values())

    def note(self, outcome: dict[str, int], reason: str, n: int = 1) -> None:
        """Count ``n`` flows under ``reason`` (flow ids removed so reasons group)."""
        key = _IDS.sub("#…", reason)[:240]
        if key not in outcome and len(outcome) >= MAX_REASONS:
            key = "other reasons"
        outcome[key] = outcome.get(key, 0) + n


def _serializer(salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key or "", salt=salt)


def dump(progress: Progress, salt: str = "flowstate.bulk-retry") -> str:
    """Return ``progress`` as a signed token for the next request."""
    data = [
        progress.last_id,
        progress.retried,
        progress.skipped,
        progress.failed,
        progress.warnings,
        progress.started,
    ]
    return str(_serializer(salt).dumps(data))


def start_token(salt: str = "flowstate.bulk-retry") -> str:
    """Return the first token of a new run, for the confirm form (see ``Progress.started``)."""
    return dump(Progress(started=time.time()), salt)


#: What each salt's tokens are for, to name it in an error.
_WHAT: Final = {
    "flowstate.bulk-retry": "bulk retry",
    "flowstate.bulk-fail": "bulk fail",
    "flowstate.bulk-redispatch": "bulk re-dispatch",
}


def load(token: str | None, salt: str = "flowstate.bulk-retry") -> Progress:
    """Return the progress in ``token`` (a fresh one when empty).

    :raises BadRequest: the token was altered or is malformed.
    """
    if not token:
        return Progress()
    try:
        data = _serializer(salt).loads(token)
        last_id, retried, skipped, failed, warnings = data[:5]
        started = data[5] if len(data) > 5 else None
        return Progress(
            last_id=int(last_id),
            retried=int(retried),
            skipped=dict(skipped),
            failed=dict(failed),
            warnings=dict(warnings),
            started=None if started is None else float(started),
        )
    except (BadSignature, ValueError, TypeError, IndexError, KeyError):
        what = _WHAT.get(salt, "bulk action")
        raise BadRequest(f"{what}: the progress token is invalid; start again") from None


def choose(cls: type[Flow], form: Mapping[str, str]) -> dict[str, str]:
    """Return ``{error state: retry transition}`` from the ``via:<state>`` form fields.

    :raises BadRequest: a field names no retry transition leaving its state.
    """
    graph = cls.graph()
    chosen: dict[str, str] = {}
    for key, name in form.items():
        if not key.startswith("via:") or not name:
            continue
        state = key.removeprefix("via:")
        if name not in {t.name for t in graph.retry_transitions_from(state)}:
            raise BadRequest(f"{name[:80]!r} is not a retry transition from {state[:80]!r}")
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
    """Retry batches of matching errored flows until none is left or ``seconds`` are spent."""

    def batch(after_id: int, size: int) -> Sequence[Row[Any]]:
        return queries.errored_batch(session, cls.type_name, f, after_id, size)

    def one(flow: Flow) -> None:
        retry_one(session, flow, chosen, actor, reason, progress)

    return run_batches(
        session,
        cls,
        batch,
        progress,
        one,
        batch_size=batch_size,
        seconds=seconds,
        what="bulk retry",
    )


def run_batches(
    session: Session,
    cls: type[Flow],
    batch: Callable[[int, int], Sequence[Row[Any]]],
    progress: Progress,
    one: Callable[[Flow], None],
    *,
    batch_size: int,
    seconds: float,
    what: str,
) -> Progress:
    """Call ``one`` on each flow of ``batch(after_id, size)`` until none is left or time is up.

    The one loop of every bulk action (retry, fail, re-dispatch). Each batch is one
    transaction (``one`` takes its own savepoint per flow and records the outcome in
    ``progress``); ``progress.last_id`` moves on after each batch (keyset), so a later
    request resumes where this one stopped. Rows hold props as stored text
    (:func:`.stored.to_flow`).
    """
    if caller_owns(session):
        raise RuntimeError(f"{what} commits batch by batch: call it outside a transaction")
    if session.in_transaction():
        session.commit()  # end the request's autobegun reads, as a single engine call would
    deadline = time.monotonic() + seconds
    while True:
        try:
            with session.begin():
                rows = batch(progress.last_id, batch_size)
                for row in rows:
                    one(stored.to_flow(cls, row, session))
        except CallbackError as exc:  # raised after the batch committed
            for where, error in exc.failures:
                progress.note(progress.warnings, f"{where}: {type(error).__name__}: {error}")
        if not rows:
            progress.done = True
            return progress
        progress.last_id = rows[-1].id
        if len(rows) < batch_size:
            progress.done = True
            return progress
        if time.monotonic() >= deadline:
            return progress


def pick(flow: Flow, chosen: Mapping[str, str]) -> tuple[str | None, str]:
    """Return the retry transition bulk retry runs for ``flow``, or ``None`` and why not."""
    options = [t.name for t in flow.retry_transitions()]
    name = chosen.get(flow.state)
    if name is None and len(options) == 1:
        name = options[0]
    if name is None:
        why = "declares no retry transition" if not options else "has several; none was chosen"
        return None, f"state {flow.state!r} {why}"
    return name, ""


def retry_one(
    session: Session,
    flow: Flow,
    chosen: Mapping[str, str],
    actor: str,
    reason: str | None,
    progress: Progress,
    meta: Mapping[str, Any] | None = None,
) -> HistoryEntry | None:
    """Retry ``flow`` in a savepoint; return its history entry, or ``None`` (noted why)."""
    name, why = pick(flow, chosen)
    if name is None:
        progress.note(progress.skipped, why)
        return None
    try:
        with session.begin_nested():
            entry = flow.run(
                name, actor=actor, reason=reason, meta=dict(meta or {"admin": "bulk_retry"})
            )
    except InvalidTransitionError as exc:
        progress.note(progress.skipped, f"state changed meanwhile (now {exc.current!r})")
    except GuardFailedError as exc:
        progress.note(progress.skipped, f"guard of {exc.transition!r} refused")
    except FlowNotFoundError:
        progress.note(progress.skipped, "deleted meanwhile")
    except Exception as exc:
        # A retry transition's own code failed: rolled back to the savepoint, keep going.
        progress.note(progress.failed, f"{name}: {type(exc).__name__}: {exc}")
    else:
        progress.retried += 1
        return entry
    return None


@dataclass(frozen=True, slots=True)
class Skip:
    """A flow the dry run says would be skipped, and why."""

    flow_id: int
    state: str
    transition: str | None
    reason: str


@dataclass(slots=True)
class DryRun:
    """What a bulk retry would do now, on the first ``looked`` matching flows (no writes)."""

    limit: int
    looked: int = 0
    #: ``{(state, transition): [accepted, evaluated]}`` for every retry transition.
    accepts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: Flows the retry would run / skip with the current choice of transitions.
    would_retry: int = 0
    would_skip: int = 0
    sample: list[Skip] = field(default_factory=list)

    @property
    def capped(self) -> bool:
        """Return whether more flows match than were evaluated."""
        return self.looked >= self.limit

    def accepted(self, state: str, transition: str) -> tuple[int, int]:
        """Return (accepted, evaluated) of ``transition`` on the flows in ``state``."""
        hit = self.accepts.get((state, transition), [0, 0])
        return hit[0], hit[1]


def dry_run(
    session: Session,
    cls: type[Flow],
    f: ListFilter,
    chosen: Mapping[str, str],
    *,
    limit: int = 200,
    sample: int = 10,
) -> DryRun:
    """Evaluate source state and guard of each retry transition on the first ``limit`` flows.

    Writes nothing (:meth:`Flow.why_not` on the rows as read); at most ``limit`` guard
    evaluations per retry transition, never one per matching flow of a large table.
    """
    result = DryRun(limit=limit)
    rows = queries.errored_batch(session, cls.type_name, f, 0, limit)
    result.looked = len(rows)
    for row in rows:
        flow = stored.to_flow(cls, row, session)
        why_by_name: dict[str, str | None] = {}
        for t in flow.retry_transitions():
            why = why_by_name[t.name] = flow.why_not(t.name)
            hit = result.accepts.setdefault((flow.state, t.name), [0, 0])
            hit[0] += why is None
            hit[1] += 1
        name, why_none = pick(flow, chosen)
        if name is None and len(why_by_name) > 1:
            continue  # depends on the transition the operator picks for this state
        reason = why_none if name is None else why_by_name.get(name)
        if reason is None:
            result.would_retry += 1
            continue
        result.would_skip += 1
        if len(result.sample) < sample:
            result.sample.append(Skip(flow.id, flow.state, name, reason))
    return result
