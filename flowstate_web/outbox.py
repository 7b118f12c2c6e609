"""Durable job hand-off: the transactional outbox and its sender.

The rule, in one sentence: **a hand-off (``enqueue=`` on a transition, or :func:`enqueue`
inside its method) is a row written in the transition's own transaction, sent to the queue
after the outermost commit and then marked sent; a relay re-sends every row still unsent
``FLOWSTATE_OUTBOX_RELAY_DELAY`` seconds later.** Delivery is at-least-once: a job may run
twice, and receives a ``dispatch_id`` that is the same on every re-send so it can tell.

Two senders never send the same row at once: a sender first claims its rows
(``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, the database write lock on SQLite),
sends them, marks them sent and commits; a sender that dies before its commit leaves the
rows unsent for the relay. See ``docs/handoffs.md``.

The relay is :mod:`flowstate_web.relay`; reading rows and re-dispatch are
:mod:`flowstate_web.handoffs`. Their public names are re-exported here.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from . import _fastpath
from ._tx import defer_until_commit, resolve_session
from .errors import FlowStateError, PayloadValidationError
from .models import outbox
from .queues import Handoff, Queue

if TYPE_CHECKING:
    from .declare import Transition
    from .flow import Flow

log = logging.getLogger("flowstate_web.outbox")

#: Seconds a row may stay unsent before the relay re-sends it.
DEFAULT_RELAY_DELAY = 30.0
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


# The relay and the operator's side are modules of their own; their public names stay
# importable from here. Imported last: they import this module's names, all defined by now.
from .handoffs import COUNT_CAP as COUNT_CAP  # noqa: E402
from .handoffs import RECENT_SENT as RECENT_SENT  # noqa: E402
from .handoffs import HandoffEntry as HandoffEntry  # noqa: E402
from .handoffs import can_redispatch as can_redispatch  # noqa: E402
from .handoffs import pending_handoffs as pending_handoffs  # noqa: E402
from .handoffs import redispatch as redispatch  # noqa: E402
from .handoffs import unsent_counts as unsent_counts  # noqa: E402
from .relay import relay as relay  # noqa: E402
from .relay import relay_app as relay_app  # noqa: E402
