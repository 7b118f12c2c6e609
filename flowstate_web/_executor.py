"""Where a transition is executed: lock, re-read, check, guard, validate, write, commit.

Prop edits staged on the instance (``flow.x = ...``, checked when assigned) are written by
the next transition in its transaction, with old -> new in its history row, or by
:func:`save` alone (a history row of kind ``"update"``); on any failure they are dropped.

Every write the engine makes to flows goes through this module, under the transaction
rule stated in :mod:`flowstate_web._tx`. The statements themselves come from
:mod:`flowstate_web._fastpath`: on sqlite3 and psycopg they run on the driver connection of
the Session's transaction, elsewhere through ``Session.execute``; either way the Session
begins, commits and rolls back the transaction.
"""

from __future__ import annotations

import enum
import inspect
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction

from . import _fastpath, _values
from . import outbox as _outbox
from ._props import check_props, merged_props
from ._tx import AnySession, caller_owns, defer_until_commit, on_rollback, resolve_session
from ._values import MAX_ERROR_MESSAGE as MAX_ERROR_MESSAGE
from ._values import MAX_TRACEBACK as MAX_TRACEBACK
from .errors import (
    ConcurrentTransitionError,
    FlowNotFoundError,
    GuardFailedError,
    InvalidTransitionError,
    PayloadValidationError,
)
from .models import artefacts, flows, outbox, transitions
from .records import HistoryEntry

if TYPE_CHECKING:
    from .declare import Transition
    from .flow import Flow

FlowT = TypeVar("FlowT", bound="Flow")
T = TypeVar("T")

#: The name and kind of the history row ``flow.save()`` writes (``save`` is reserved by
#: ``Flow``, so no transition can be called that).
SAVE_NAME: Final = "save"
UPDATE_KIND: Final = "update"


class Implicit(enum.Enum):
    """The default of ``error=``: record the exception being handled, if unambiguous."""

    ERROR = "the exception being handled where the transition is run"


IMPLICIT: Final = Implicit.ERROR

#: Modules whose frames are the engine's own, skipped to find who ran a transition.
_ENGINE_MODULES: Final = frozenset({__name__, "flowstate_web.declare", "flowstate_web.flow"})


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Who ran a transition and why (recorded in its history row)."""

    actor: str | None = None
    reason: str | None = None
    error: BaseException | Implicit | None = IMPLICIT
    meta: dict[str, Any] | None = None


_NO_INFO = RunInfo()


def now() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


def _own(session: Session, work: Callable[[], T]) -> T:
    """Run ``work`` as its own transaction unless the caller began one."""
    if caller_owns(session):
        return work()
    try:
        result = work()
    except BaseException:
        session.rollback()
        raise
    session.commit()
    return result


def create(cls: type[FlowT], props: Mapping[str, Any], session: AnySession | None) -> FlowT:
    """Insert a new flow of ``cls`` in its initial state after checking ``props``."""
    clean = check_props(cls, props, where=cls.type_name)
    sess = resolve_session(session)

    def work() -> FlowT:
        ts = now()
        row = _fastpath.on(sess).insert_flow(
            {
                "type": cls.type_name,
                "state": cls.initial_state,
                "errored": cls.initial_state in cls.error_states,
                "seq": 0,
                "props": clean,
                "created_at": ts,
                "updated_at": ts,
                "state_entered_at": ts,
            },
        )
        return cls(row, session)

    return _own(sess, work)


#: Flow ids are 64-bit: a larger one names no flow (and must not reach the driver, which
#: raises ``OverflowError`` on SQLite and aborts the transaction on PostgreSQL).
MAX_FLOW_ID: Final = 2**63 - 1


def read(
    sess: Session, flow_id: int, type_name: str | None = None, *, lock: bool = False
) -> Mapping[str, Any] | None:
    """Return flow ``flow_id``'s row (only if of ``type_name``, when given), or ``None``.

    Looked up by primary key alone; the type is checked here, as the lock step does.
    ``lock``: read it with the transition's row lock, held until the transaction ends.
    """
    if isinstance(flow_id, int) and not -MAX_FLOW_ID - 1 <= flow_id <= MAX_FLOW_ID:
        return None
    db = _fastpath.on(sess)
    row = db.lock(flow_id) if lock else db.select_flow(flow_id)
    if row is None or (type_name is not None and row["type"] != type_name):
        return None
    return row


#: Flows read by ``get(lock=True)``, with the transaction holding their row lock.
_HELD: weakref.WeakKeyDictionary[Flow, weakref.ref[SessionTransaction]] = (
    weakref.WeakKeyDictionary()
)


def _innermost(sess: Session) -> SessionTransaction | None:
    return sess.get_nested_transaction() or sess.get_transaction()


def hold(sess: Session, flow: Flow) -> None:
    """Remember that ``flow`` was just read under its row lock in ``sess``'s transaction."""
    trans = _innermost(sess)
    if trans is not None:
        _HELD[flow] = weakref.ref(trans)


def _still_held(sess: Session, flow: Flow) -> bool:
    """Return (once) whether ``flow`` was read locked in the still-active current transaction."""
    held = _HELD.pop(flow, None)
    trans = None if held is None else held()
    return trans is not None and trans.is_active and trans is _innermost(sess)


def execute(
    flow: FlowT,
    t: Transition[Any, Any, Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    info: RunInfo = _NO_INFO,
) -> HistoryEntry:
    """Run transition ``t`` on ``flow`` atomically; see the module docstring for the steps.

    On any failure nothing is written, ``flow``'s staged prop edits are dropped and it shows
    the row as last read (no half-applied state in memory).
    """
    sess = resolve_session(flow._session)
    cls = type(flow)
    error = info.error
    if error is IMPLICIT:
        error = implicit_error() if t.target in cls.error_states else None
    read: list[Mapping[str, Any]] = []

    def work() -> HistoryEntry:
        if info is not _NO_INFO:  # refused inside: a lock taken by get(lock=True) is let go
            _check_info(info, f"{cls.type_name} #{flow.id}: {t.name!r}")
        db = _fastpath.on(sess)
        if not _still_held(sess, flow):  # else read by get(lock=True) in this transaction
            row = db.lock(flow.id)  # locked until the transaction ends, and fresh
            if row is None or row["type"] != cls.type_name:
                raise FlowNotFoundError(cls.type_name, flow.id)
            read.append(row)
            if row is not flow.__dict__.get("_flowstate_row"):  # else read unchanged by get
                flow._load(row)  # the committed row; this instance's staged edits stay on top
        if flow.state not in t.sources:
            raise InvalidTransitionError(
                cls.type_name, flow.id, t.name, flow.state, t.sources, t.target
            )
        if t.guard is not None and not guard_passes(flow, t):
            raise GuardFailedError(cls.type_name, flow.id, t.name, flow.state, t.target)
        value, handoffs = _outbox.run_method(flow, t.fn, args, kwargs)
        if t.persists is not None:
            value = _values.check(
                value,
                cls.artefact_fields[t.persists].runtime_type,
                what=f"{cls.type_name} #{flow.id}: artefact {t.persists!r} of {t.name!r}",
                max_bytes=_values.MAX_ARTEFACT_BYTES,
            )
        elif value is not None:
            raise PayloadValidationError(
                f"{cls.type_name}.{t.name} returned a value but persists no artefact"
            )
        return _write(sess, db, flow, t, value, info, error, handoffs)

    try:
        result = _own(sess, work)
    except BaseException:
        flow._discard(read[0] if read else None)
        raise
    _undo_with_callers_rollback(sess, flow, read)
    return result


def _undo_with_callers_rollback(sess: Session, flow: Flow, read: list[Mapping[str, Any]]) -> None:
    """In the caller's transaction: if it rolls back, ``flow`` shows the row read before."""
    if read and caller_owns(sess):
        before = read[0]
        on_rollback(sess, lambda: flow._discard(before))


def guard_passes(flow: Flow, t: Transition[Any, Any, Any]) -> bool:
    """Evaluate ``t``'s guard on ``flow`` as it is (true without a guard)."""
    guard = t.guard
    if guard is None:
        return True
    return bool(getattr(flow, guard)() if isinstance(guard, str) else guard(flow))


def implicit_error() -> BaseException | None:
    """Return the exception being handled, if it went through the frame running the transition.

    The rule: entering an error state records the exception the *calling function* is
    handling (``try: ... except: flow.fail()`` in one function). An exception handled
    further up the stack (the call sits in a helper called from someone's ``except``)
    is ambiguous and not recorded; pass ``error=`` there.
    """
    exc = sys.exception()
    if exc is None:
        return None
    frame = inspect.currentframe()
    try:
        caller = frame.f_back if frame is not None else None
        while caller is not None and caller.f_globals.get("__name__") in _ENGINE_MODULES:
            caller = caller.f_back
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame is caller:
                return exc
            tb = tb.tb_next
        return None
    finally:
        del frame, caller


def save(flow: Flow, info: RunInfo) -> HistoryEntry | None:
    """Write ``flow``'s staged prop edits under its row lock, with a history row of kind update.

    Returns ``None`` (writing nothing) when no staged value differs from the stored one.
    """
    if not flow._staged:
        return None
    sess = resolve_session(flow._session)
    cls = type(flow)
    read: list[Mapping[str, Any]] = []

    def work() -> HistoryEntry | None:
        db = _fastpath.on(sess)
        row = db.lock(flow.id)
        if row is None or row["type"] != cls.type_name:
            raise FlowNotFoundError(cls.type_name, flow.id)
        read.append(row)
        flow._load(row)
        props, changes = merged_props(flow)
        if changes is None:
            flow._discard(None)
            return None
        ts = now()
        seq = flow.seq + 1
        state = flow.state
        tid = _insert_history(
            db,
            flow,
            SAVE_NAME,
            (state,),
            {
                "flow_id": flow.id,
                "seq": seq,
                "name": SAVE_NAME,
                "from_state": state,
                "to_state": state,
                "created_at": ts,
                "actor": info.actor,
                "reason": info.reason,
                "meta": info.meta,
                "kind": UPDATE_KIND,
                "changes": changes,
            },
        )
        # Neither state nor errored change: the counter triggers do not fire.
        values = {"props": props, "seq": seq, "updated_at": ts}
        db.update_flow({**values, "flow_id": flow.id})
        _apply(flow, values)
        return HistoryEntry(
            id=tid,
            flow_id=flow.id,
            seq=seq,
            name=SAVE_NAME,
            from_state=state,
            to_state=state,
            created_at=ts,
            actor=info.actor,
            reason=info.reason,
            meta=info.meta,
            kind=UPDATE_KIND,
            changes=changes,
        )

    try:
        result = _own(sess, work)
    except BaseException:
        flow._discard(read[0] if read else None)
        raise
    if result is not None:
        _undo_with_callers_rollback(sess, flow, read)
    return result


def _insert_history(
    db: _fastpath.Statements,
    flow: Flow,
    name: str,
    sources: tuple[str, ...],
    values: Mapping[str, Any],
) -> int:
    try:
        return db.insert_transition(values)
    except IntegrityError as exc:
        if not _seq_taken(exc):
            raise
        raise _concurrent(flow, name, sources, values) from exc


#: How each database names a second history row for the same step of a flow.
_SEQ_TAKEN: Final = (
    "uq_flowstate_transitions_flow_id_seq",  # PostgreSQL: the unique constraint's name
    "Key (flow_id, seq)=",  # PostgreSQL's detail, whatever the constraint is called
    "flowstate_transitions.flow_id, flowstate_transitions.seq",  # SQLite: its columns
)


def _seq_taken(exc: IntegrityError) -> bool:
    """Return whether ``exc`` is the unique ``(flow_id, seq)`` of the history (and not, say,
    a foreign key: that is no concurrent transition and is raised as it is)."""
    text = str(exc.orig)
    return any(name in text for name in _SEQ_TAKEN)


def _concurrent(
    flow: Flow, name: str, sources: tuple[str, ...], history: Mapping[str, Any]
) -> ConcurrentTransitionError:
    # Only reachable if the row lock was bypassed: the unique (flow_id, seq) still holds.
    return ConcurrentTransitionError(
        flow.type_name,
        flow.id,
        name,
        history["from_state"],
        sources,
        history["to_state"],
        history["seq"],
    )


def _check_info(info: RunInfo, where: str) -> None:
    """Refuse an actor, reason or meta the engine cannot store, naming the field."""
    _values.check_text(info.actor, _values.MAX_ACTOR, what=f"{where}: actor")
    _values.check_text(info.reason, _values.MAX_REASON, what=f"{where}: reason")
    _values.check_meta(info.meta, what=f"{where}: meta")
    if (
        info.error is not None
        and info.error is not IMPLICIT
        and not isinstance(info.error, BaseException)
    ):
        raise PayloadValidationError(
            f"{where}: error must be an exception, got {type(info.error).__name__}"
        )


def _write(
    sess: Session,
    db: _fastpath.Statements,
    flow: Flow,
    t: Transition[Any, Any, Any],
    value: Any,
    info: RunInfo,
    error: BaseException | None,
    handoffs: _outbox.Calls,
) -> HistoryEntry:
    cls = type(flow)
    ts = now()
    seq = flow.seq + 1
    from_state = flow.state
    target = t.target
    persists = t.persists
    entering_error = target in cls.error_states
    err_type = err_msg = err_tb = None
    if entering_error and error is not None:
        # Repaired, never refused: recording a failure must not fail on the failure's text.
        err_type, err_msg, err_tb = _values.describe_error(error)
    history: dict[str, Any] = {
        "flow_id": flow.id,
        "seq": seq,
        "name": t.name,
        "from_state": from_state,
        "to_state": target,
        "created_at": ts,
        "actor": info.actor,
        "reason": info.reason,
        "error_type": err_type,
        "error_message": err_msg,
        "error_traceback": err_tb,
        "meta": info.meta,
    }
    values: dict[str, Any] = {
        "state": target,
        "seq": seq,
        "errored": entering_error,
        "updated_at": ts,
        "state_entered_at": ts,
    }
    changes = None
    if flow._staged:  # prop edits staged on this instance commit with the transition
        props, changes = merged_props(flow)
        if changes is not None:
            values["props"] = props
            history["changes"] = changes
    if entering_error:
        values |= {
            "last_errored_at": ts,
            "last_error_type": err_type,
            "last_error_message": err_msg,
        }
    if target in cls.final_states:
        values["completed_at"] = ts
    artefact = None
    if persists is not None:
        artefact = {"flow_id": flow.id, "name": persists, "payload": value, "created_at": ts}
    try:
        tid = db.write(history, {**values, "flow_id": flow.id}, artefact)
    except IntegrityError as exc:
        if not _seq_taken(exc):
            raise
        raise _concurrent(flow, t.name, t.sources, history) from exc
    _outbox.write(sess, flow, t, tid, ts, handoffs)  # hand-offs, in this transaction
    if cls.destroy_on_complete and target in cls.final_states:
        delete_rows(sess, [flow.id])
    _apply(flow, values)
    if flow._staged:
        flow._discard(None)  # all equal to the stored values: nothing to keep
    for cb in t.after:
        fn = getattr(flow, cb) if isinstance(cb, str) else (lambda cb=cb: cb(flow))
        defer_until_commit(sess, f"{cls.type_name}.{t.name} -> {getattr(fn, '__name__', cb)}", fn)
    return HistoryEntry(
        id=tid,
        flow_id=flow.id,
        seq=seq,
        name=t.name,
        from_state=from_state,
        to_state=target,
        created_at=ts,
        actor=info.actor,
        reason=info.reason,
        error_type=err_type,
        error_message=err_msg,
        error_traceback=err_tb,
        meta=info.meta,
        changes=changes,
    )


def _apply(flow: Flow, values: Mapping[str, Any]) -> None:
    """Show what was just written on ``flow`` (its staged edits are now stored)."""
    row = flow.__dict__
    row["_flowstate_row"] = None  # no longer shows a row as read
    for key, value in values.items():
        if key == "props":
            row["_props"] = value
            row["_staged"] = {}
        elif key != "errored":  # derived from the state on the object
            row[key] = value


def delete_rows(sess: Session, ids: Iterable[int]) -> int:
    """Delete flows ``ids`` with their history and artefacts (no reliance on FK cascades)."""
    ids = list(ids)
    if not ids:
        return 0
    sess.execute(delete(artefacts).where(artefacts.c.flow_id.in_(ids)))
    sess.execute(delete(outbox).where(outbox.c.flow_id.in_(ids)))
    sess.execute(delete(transitions).where(transitions.c.flow_id.in_(ids)))
    return sess.execute(delete(flows).where(flows.c.id.in_(ids))).rowcount  # type: ignore[attr-defined, no-any-return]


def delete_flows(session: AnySession | None, ids: Iterable[int]) -> int:
    """Delete flows ``ids`` with their history, as its own transaction unless inside yours."""
    sess = resolve_session(session)
    return _own(sess, lambda: delete_rows(sess, ids))


def prune_completed(
    older_than: datetime,
    *,
    flow_type: str | None = None,
    batch_size: int = 1000,
    session: AnySession | None = None,
) -> int:
    """Delete flows completed before ``older_than`` in batches, one transaction each.

    Returns how many flows were deleted. Raises :class:`PayloadValidationError` for a
    ``flow_type`` no flow can have (not a storable string of at most 200 characters) and
    :class:`ValueError` for an ``older_than`` that is not a datetime or a ``batch_size``
    below 1, before anything is deleted.
    """
    if not isinstance(older_than, datetime):
        raise ValueError(f"prune: older_than must be a datetime, got {type(older_than).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"prune: batch_size must be an integer >= 1, got {batch_size!r}")
    _values.check_text(flow_type, 200, what="prune: flow_type")
    sess = resolve_session(session)
    total = 0
    while True:
        q = select(flows.c.id).where(flows.c.completed_at < older_than)
        if flow_type is not None:
            q = q.where(flows.c.type == flow_type)
        ids = list(sess.execute(q.order_by(flows.c.completed_at).limit(batch_size)).scalars())
        if not ids:
            return total
        total += delete_rows(sess, ids)
        if not caller_owns(sess):
            sess.commit()
