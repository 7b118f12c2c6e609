"""Hand-off rows as an operator sees them: a flow's rows, overdue counts, re-dispatch.

The write side (rows written with the transition, sent after commit) is
:mod:`flowstate_web.outbox`, which re-exports these names: ``flowstate_web.outbox`` stays
the documented way in (``docs/handoffs.md``), and the admin's hand-off widget
(:mod:`flowstate_web.admin.handoffs`) uses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ._tx import AnySession, resolve_session
from .errors import FlowNotFoundError, FlowStateError, PayloadValidationError
from .models import outbox, transitions
from .outbox import _insert, _storable
from .records import utc, utc_or_none

if TYPE_CHECKING:
    from .flow import Flow

#: Sent rows shown per flow next to the unsent ones.
RECENT_SENT = 10
#: Per-type counts of overdue rows stop at this many (the admin shows "10000+").
COUNT_CAP = 10_000


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


class AlreadyRedispatched(FlowStateError):
    """The flow was re-dispatched at or after ``unless_since`` (see :func:`redispatch`)."""


def redispatch(
    flow: Flow,
    *,
    actor: str | None,
    reason: str | None = None,
    unless_since: datetime | None = None,
) -> list[HandoffEntry]:
    """Send the hand-off of the transition that entered ``flow``'s state again.

    ``unless_since``: refuse (:class:`AlreadyRedispatched`) when the flow was already
    re-dispatched at or after this moment, checked under the row lock -- what makes a bulk
    re-dispatch submitted twice (a reload, a second tab) re-send nothing twice.

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
        if (
            unless_since is not None
            and sess.execute(
                select(outbox.c.id)
                .where(
                    outbox.c.flow_id == flow.id,
                    outbox.c.kind == "redispatch",
                    outbox.c.created_at >= unless_since,
                )
                .limit(1)
            ).first()
        ):
            raise AlreadyRedispatched(
                f"{cls.type_name} #{flow.id}: re-dispatched already by this bulk run"
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
