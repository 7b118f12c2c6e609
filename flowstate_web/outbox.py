"""Durable job hand-off: the transactional outbox, its sender and its relay.

The rule, in one sentence: **a hand-off (``enqueue=`` on a transition, or :func:`enqueue`
inside its method) is a row written in the transition's own transaction, sent to the queue
after the outermost commit and then marked sent; a relay re-sends every row still unsent
``FLOWSTATE_OUTBOX_RELAY_DELAY`` seconds later.** Delivery is at-least-once: a job may run
twice, and receives a ``dispatch_id`` that is the same on every re-send so it can tell.

Two senders never send the same row at once: a sender first claims its rows
(``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, the database write lock on SQLite),
sends them, marks them sent and commits; a sender that dies before its commit leaves the
rows unsent for the relay. See ``docs/handoffs.md``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from . import _fastpath
from ._tx import AnySession, defer_until_commit, resolve_session
from .errors import FlowNotFoundError, FlowStateError, PayloadValidationError
from .models import outbox, transitions
from .queues import Handoff, Queue
from .records import utc, utc_or_none

if TYPE_CHECKING:
    from .declare import Transition
    from .flow import Flow

log = logging.getLogger("flowstate_web.outbox")

#: Seconds a row may stay unsent before the relay re-sends it.
DEFAULT_RELAY_DELAY = 30.0
#: Sent rows shown per flow next to the unsent ones.
RECENT_SENT = 10
#: Per-type counts of overdue rows stop at this many (the admin shows "10000+").
COUNT_CAP = 10_000
MAX_ERROR = 2000

#: A transition method's :func:`enqueue` calls: (job, args).
Calls = list[tuple[str, dict[str, Any]]]
_collecting: ContextVar[Calls | None] = ContextVar("flowstate_outbox_collecting", default=None)


# -- inside a transition --------------------------------------------------------------------


def enqueue(job: str, /, **args: Any) -> None:
    """Hand ``job`` to the queue when the running transition commits (call it in its method).

    ``args`` (JSON values) reach the job as keyword arguments, next to ``flow_id`` and
    ``dispatch_id``. Nothing is sent if the transition fails or its transaction rolls back.

    :raises FlowStateError: called outside a transition method.
    :raises PayloadValidationError: ``args`` is not JSON.
    """
    calls = _collecting.get()
    if calls is None:
        raise FlowStateError(
            f"enqueue({job!r}) only works inside a transition method; declare"
            " @transition(..., enqueue=...) or call it from the method's body"
        )
    if not isinstance(job, str) or not job or len(job) > 200 or _storable(job) != job:
        raise PayloadValidationError(
            f"enqueue: a job name is 1..200 characters, no NUL or lone surrogate; got {job!r}"
        )
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PayloadValidationError(f"enqueue({job!r}): args are not JSON: {exc}") from None
    calls.append((job, dict(args)))


def run_method(
    flow: Flow, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[Any, Calls]:
    """Run transition method ``fn`` on ``flow``; return its value and its :func:`enqueue` calls."""
    calls: Calls = []
    token = _collecting.set(calls)
    try:
        return fn(flow, *args, **kwargs), calls
    finally:
        _collecting.reset(token)


def write(
    sess: Session,
    flow: Flow,
    t: Transition[Any, Any, Any],
    tid: int,
    ts: datetime,
    extra: Calls,
) -> None:
    """Write the hand-offs of transition ``t`` (history row ``tid``) in the current transaction.

    ``extra``: the method's own :func:`enqueue` calls. Called by the executor after the
    history row; schedules the send for after the commit.
    """
    if not t.enqueue and not extra:
        return
    cls = type(flow)
    if cls.destroy_on_complete and t.target in cls.final_states:
        raise FlowStateError(
            f"{cls.type_name} #{flow.id}: {t.name!r} ({flow.state} -> {t.target}) hands off a"
            " job, but the flow is deleted on completion: move the hand-off to an earlier"
            " transition"
        )
    jobs: Calls = [(name, {}) for name in t.enqueue] + extra
    _insert(sess, flow, tid, jobs, ts, kind="transition", actor=None, reason=None)


def _insert(
    sess: Session,
    flow: Flow,
    tid: int | None,
    jobs: Sequence[tuple[str, Mapping[str, Any]]],
    ts: datetime,
    *,
    kind: str,
    actor: str | None,
    reason: str | None,
) -> list[str]:
    queue, delay = _config()
    ids = [uuid.uuid4().hex for _ in jobs]
    db = _fastpath.on(sess)  # the transition's own statements' path (usually one row)
    for row in [
        {
            "flow_id": flow.id,
            "flow_type": type(flow).type_name,
            "transition_id": tid,
            "kind": kind,
            "job": job,
            "args": dict(args),
            "dispatch_id": did,
            "created_at": ts,
            "available_at": ts + delay,
            "sent_at": None,
            "attempts": 0,
            "actor": actor,
            "reason": reason,
        }
        for (job, args), did in zip(jobs, ids, strict=True)
    ]:
        db.insert(outbox, row)
    if queue is not None:
        bind = sess.get_bind()
        label = f"{type(flow).type_name} #{flow.id} -> outbox ({', '.join(j for j, _ in jobs)})"
        defer_until_commit(sess, label, lambda: _send_committed(bind, queue, ids, delay))
    return ids


def _config() -> tuple[Queue | None, timedelta]:
    from flask import current_app, has_app_context

    if not has_app_context():
        return None, timedelta(seconds=DEFAULT_RELAY_DELAY)
    ext = current_app.extensions.get("flowstate")
    delay = float(current_app.config.get("FLOWSTATE_OUTBOX_RELAY_DELAY", DEFAULT_RELAY_DELAY))
    return getattr(ext, "queue", None), timedelta(seconds=delay)


def _send_committed(bind: Any, queue: Queue, dispatch_ids: list[str], delay: timedelta) -> None:
    """Send freshly committed rows; on any failure leave them to the relay (never raise)."""
    try:
        where = outbox.c.dispatch_id.in_(dispatch_ids)
        send_rows(bind, queue, where, limit=len(dispatch_ids), retry_after=delay)
    except Exception:
        log.exception("outbox: could not send %s now; the relay will", ", ".join(dispatch_ids))


def handoff(flow: Flow, job: str, /, **args: Any) -> str:
    """Hand ``job`` off for ``flow`` outside a transition (e.g. right after ``create``).

    The row is written in your transaction if you began one (so ``create`` and the hand-off
    commit together), else in its own; returns its dispatch id.
    """
    from ._executor import _own, now

    sess = resolve_session(flow._session)
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PayloadValidationError(f"handoff({job!r}): args are not JSON: {exc}") from None
    return _own(
        sess,
        lambda: _insert(
            sess, flow, None, [(job, args)], now(), kind="handoff", actor=None, reason=None
        )[0],
    )


# -- sending ---------------------------------------------------------------------------------


def send_rows(
    bind: Engine | Any,
    queue: Queue,
    where: ColumnElement[bool],
    *,
    limit: int = 100,
    now: datetime | None = None,
    retry_after: timedelta = timedelta(seconds=DEFAULT_RELAY_DELAY),
) -> int:
    """Claim up to ``limit`` unsent rows matching ``where``, send them, mark them sent.

    One transaction on its own connection of ``bind``: rows another sender holds are
    skipped (PostgreSQL) or waited for (SQLite's single writer), so no row is sent twice by
    two live senders. A row whose send raised stays unsent, with the error, until
    ``retry_after``. Returns how many rows were sent.
    """
    from ._executor import now as utcnow

    ts = now or utcnow()
    picked = (
        select(outbox.c.id)
        .where(outbox.c.sent_at.is_(None), where)
        .order_by(outbox.c.available_at, outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claim = (
        update(outbox)
        .where(outbox.c.id.in_(picked.scalar_subquery()), outbox.c.sent_at.is_(None))
        .values(attempts=outbox.c.attempts + 1)
        .returning(
            outbox.c.id,
            outbox.c.flow_id,
            outbox.c.flow_type,
            outbox.c.job,
            outbox.c.args,
            outbox.c.dispatch_id,
        )
    )
    with bind.begin() as conn:
        rows = conn.execute(claim).all()
        sent: list[int] = []
        for row in sorted(rows, key=lambda r: int(r.id)):
            handoff = Handoff(row.job, row.flow_id, row.flow_type, row.dispatch_id, row.args or {})
            try:
                queue.send(handoff)
            except Exception as exc:
                log.warning("outbox: sending %s failed: %s", _describe(handoff), exc)
                conn.execute(
                    update(outbox)
                    .where(outbox.c.id == row.id)
                    .values(
                        last_error=_storable(f"{type(exc).__name__}: {exc}"[:MAX_ERROR]),
                        available_at=ts + retry_after,
                    )
                )
            else:
                sent.append(row.id)
        if sent:
            conn.execute(update(outbox).where(outbox.c.id.in_(sent)).values(sent_at=ts))
    return len(sent)


def _storable(text: str) -> str:
    """Return ``text`` with what a database cannot hold (NUL, lone surrogates) replaced."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _describe(h: Handoff) -> str:
    return f"{h.job} for {h.flow_type} #{h.flow_id} [{h.dispatch_id}]"


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


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandoffEntry:
    """One outbox row, read-only."""

    id: int
    flow_id: int
    flow_type: str
    transition_id: int | None
    kind: str
    job: str
    args: dict[str, Any]
    dispatch_id: str
    created_at: datetime
    available_at: datetime
    sent_at: datetime | None
    attempts: int
    last_error: str | None
    actor: str | None
    reason: str | None

    @property
    def sent(self) -> bool:
        """Return whether the queue accepted it."""
        return self.sent_at is not None

    def overdue(self, now: datetime) -> bool:
        """Return whether it is unsent past the relay delay (the relay will re-send it)."""
        return self.sent_at is None and self.available_at <= now


def _entry(m: Mapping[Any, Any]) -> HandoffEntry:
    return HandoffEntry(
        id=m["id"],
        flow_id=m["flow_id"],
        flow_type=m["flow_type"],
        transition_id=m["transition_id"],
        kind=m["kind"],
        job=m["job"],
        args=dict(m["args"] or {}),
        dispatch_id=m["dispatch_id"],
        created_at=utc(m["created_at"]),
        available_at=utc(m["available_at"]),
        sent_at=utc_or_none(m["sent_at"]),
        attempts=m["attempts"],
        last_error=m["last_error"],
        actor=m["actor"],
        reason=m["reason"],
    )


def pending_handoffs(
    flow_id: int, session: AnySession | None = None, *, recent: int = RECENT_SENT
) -> list[HandoffEntry]:
    """Return the unsent hand-offs of flow ``flow_id`` and its latest sent ones, newest first."""
    sess = resolve_session(session)
    base = select(outbox).where(outbox.c.flow_id == flow_id)
    unsent = sess.execute(base.where(outbox.c.sent_at.is_(None)).order_by(outbox.c.id.desc()))
    sent = sess.execute(
        base.where(outbox.c.sent_at.is_not(None)).order_by(outbox.c.id.desc()).limit(recent)
    )
    rows = [_entry(m) for m in [*unsent.mappings(), *sent.mappings()]]
    return sorted(rows, key=lambda e: e.id, reverse=True)


def unsent_counts(
    session: AnySession | None = None, *, now: datetime | None = None, cap: int = COUNT_CAP
) -> dict[str, int]:
    """Return, per flow type, how many hand-offs are unsent past the relay delay.

    Reads at most ``cap`` rows from the partial index of unsent rows, so it stays cheap
    however many flows exist; a count equal to ``cap`` means "at least".
    """
    from ._executor import now as utcnow

    sess = resolve_session(session)
    overdue = (
        select(outbox.c.flow_type)
        .where(outbox.c.sent_at.is_(None), outbox.c.available_at <= (now or utcnow()))
        .limit(cap)
        .subquery()
    )
    q = select(overdue.c.flow_type, func.count()).group_by(overdue.c.flow_type)
    return {str(t): int(n) for t, n in sess.execute(q).all()}


# -- operator action -------------------------------------------------------------------------


def redispatch(flow: Flow, *, actor: str | None, reason: str | None = None) -> list[HandoffEntry]:
    """Send the hand-off of the transition that entered ``flow``'s state again.

    The flow's state and history do not change; the new outbox rows (``kind``
    ``redispatch``, with ``actor`` and ``reason``) are the audit record, shown on the admin's
    flow page. They get new dispatch ids: the job's own start transition is what makes a
    duplicate harmless. Runs as its own transaction unless the caller began one.

    In the initial state, what code handed off with :func:`handoff` is sent again.

    :raises FlowStateError: the flow is final, or its state was entered without a hand-off.
    """
    from . import _fastpath
    from ._executor import _own, now

    sess = resolve_session(flow._session)
    cls = type(flow)
    if actor is not None and len(actor) > 200:
        raise PayloadValidationError(f"{cls.type_name} #{flow.id}: actor is over 200 characters")
    for field, value in (("actor", actor), ("reason", reason)):
        if value is not None and _storable(value) != value:
            raise PayloadValidationError(
                f"{cls.type_name} #{flow.id}: {field} holds a NUL character or a lone surrogate"
            )

    def work() -> list[HandoffEntry]:
        row = _fastpath.on(sess).lock(flow.id)
        if row is None or row["type"] != cls.type_name:
            raise FlowNotFoundError(cls.type_name, flow.id)
        flow._load(row)
        if flow.state in cls.final_states:
            raise FlowStateError(
                f"{cls.type_name} #{flow.id}: nothing to re-dispatch, {flow.state!r} is final"
            )
        entered = sess.execute(
            select(transitions.c.id, transitions.c.name).where(
                transitions.c.flow_id == flow.id, transitions.c.seq == flow.seq
            )
        ).first()
        jobs = _entering_jobs(sess, cls, entered, flow.id)
        if not jobs:
            how = "was its initial state" if entered is None else f"was entered by {entered.name!r}"
            raise FlowStateError(
                f"{cls.type_name} #{flow.id}: nothing to re-dispatch: {flow.state!r} {how},"
                " which hands no job to the queue"
            )
        tid = None if entered is None else entered.id
        ids = _insert(sess, flow, tid, jobs, now(), kind="redispatch", actor=actor, reason=reason)
        sess.flush()
        found = sess.execute(select(outbox).where(outbox.c.dispatch_id.in_(ids))).mappings()
        return [_entry(m) for m in found]

    return _own(sess, work)


def _entering_jobs(
    sess: Session, cls: type[Flow], entered: Any, flow_id: int
) -> list[tuple[str, dict[str, Any]]]:
    """Return the jobs handed off on entering the current state (by transition or code)."""
    if entered is None:  # still in its initial state: what code handed off after create
        q = select(outbox.c.job, outbox.c.args).where(
            outbox.c.flow_id == flow_id, outbox.c.kind == "handoff"
        )
        return [(r.job, dict(r.args or {})) for r in sess.execute(q.order_by(outbox.c.id))]
    written = sess.execute(
        select(outbox.c.job, outbox.c.args)
        .where(outbox.c.transition_id == entered.id, outbox.c.kind == "transition")
        .order_by(outbox.c.id)
    ).all()
    if written:
        return [(r.job, dict(r.args or {})) for r in written]
    spec = cls.graph().transition(entered.name)
    return [(name, {}) for name in (spec.enqueue if spec else ())]


def can_redispatch(flow: Flow, entries: Sequence[HandoffEntry] | None = None) -> bool:
    """Return whether :func:`redispatch` has something to send for ``flow`` now.

    ``entries`` (from :func:`pending_handoffs`) saves a query when the caller has them.
    """
    if flow.state in type(flow).final_states:
        return False
    sess = resolve_session(flow._session)
    if flow.seq == 0:
        if entries is not None:
            return any(e.kind == "handoff" for e in entries)
        return bool(_entering_jobs(sess, type(flow), None, flow.id))
    entered = sess.execute(
        select(transitions.c.id, transitions.c.name).where(
            transitions.c.flow_id == flow.id, transitions.c.seq == flow.seq
        )
    ).first()
    if entered is None:
        return False
    if entries is None:
        return bool(_entering_jobs(sess, type(flow), entered, flow.id))
    if any(e.transition_id == entered.id and e.kind == "transition" for e in entries):
        return True
    spec = type(flow).graph().transition(entered.name)
    return bool(spec and spec.enqueue)
