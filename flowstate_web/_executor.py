"""Where a transition is executed: lock, re-read, check, guard, validate, write, commit.

Every write the engine makes to flows goes through this module, under the transaction
rule stated in :mod:`flowstate_web._tx`. The statements themselves come from
:mod:`flowstate_web._fastpath`: on sqlite3 and psycopg they run on the driver connection of
the Session's transaction, elsewhere through ``Session.execute``; either way the Session
begins, commits and rolls back the transaction.
"""

from __future__ import annotations

import sys
import traceback
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction

from . import _fastpath, _values
from ._tx import AnySession, caller_owns, defer_until_commit, resolve_session
from .errors import (
    FlowNotFoundError,
    GuardFailedError,
    InvalidTransitionError,
    PayloadValidationError,
)
from .models import artefacts, flows, transitions
from .records import HistoryEntry

if TYPE_CHECKING:
    from .declare import Transition
    from .flow import Flow

FlowT = TypeVar("FlowT", bound="Flow")
T = TypeVar("T")

#: Bounds on what an error state records, so one huge exception cannot bloat the history.
MAX_ERROR_MESSAGE = 2000
MAX_TRACEBACK = 8000


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Who ran a transition and why (recorded in its history row)."""

    actor: str | None = None
    reason: str | None = None
    error: BaseException | None = None
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
    clean = _check_props(cls, props)
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


def _check_props(cls: type[Flow], props: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(props) - set(cls.prop_fields))
    if unknown:
        raise PayloadValidationError(
            f"{cls.type_name}: unknown prop(s) {', '.join(unknown)}"
            f" (declared: {', '.join(cls.prop_fields) or 'none'})"
        )
    clean: dict[str, Any] = {}
    for name, prop in cls.prop_fields.items():
        if name not in props:
            if prop.required:
                raise PayloadValidationError(f"{cls.type_name}: prop {name!r} is missing")
            clean[name] = prop.default
            continue
        value = props[name]
        if value is None:
            raise PayloadValidationError(f"{cls.type_name}: prop {name!r} is None")
        clean[name] = _values.check(
            value, prop.runtime_type, what=f"{cls.type_name}: prop {name!r}"
        )
    return clean


def read(
    sess: Session, flow_id: int, type_name: str | None = None, *, lock: bool = False
) -> Mapping[str, Any] | None:
    """Return flow ``flow_id``'s row (only if of ``type_name``, when given), or ``None``.

    Looked up by primary key alone; the type is checked here, as the lock step does.
    ``lock``: read it with the transition's row lock, held until the transaction ends.
    """
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
    """Run transition ``t`` on ``flow`` atomically; see the module docstring for the steps."""
    sess = resolve_session(flow._session)
    cls = type(flow)
    error = info.error
    if error is None and t.target in cls.error_states:
        error = sys.exception()  # called from an ``except`` block: record why it failed

    def work() -> HistoryEntry:
        db = _fastpath.on(sess)
        if not _still_held(sess, flow):  # else read by get(lock=True) in this transaction
            row = db.lock(flow.id)  # locked until the transaction ends, and fresh
            if row is None or row["type"] != cls.type_name:
                raise FlowNotFoundError(cls.type_name, flow.id)
            flow._load(row)
        if flow.state not in t.sources:
            raise InvalidTransitionError(
                cls.type_name, flow.id, t.name, flow.state, t.sources, t.target
            )
        if t.guard is not None:
            ok = getattr(flow, t.guard)() if isinstance(t.guard, str) else t.guard(flow)
            if not ok:
                raise GuardFailedError(cls.type_name, flow.id, t.name, flow.state, t.target)
        value = t.fn(flow, *args, **kwargs)
        if t.persists is not None:
            value = _values.check(
                value,
                cls.artefact_fields[t.persists].runtime_type,
                what=f"{cls.type_name} #{flow.id}: artefact {t.persists!r} of {t.name!r}",
            )
        elif value is not None:
            raise PayloadValidationError(
                f"{cls.type_name}.{t.name} returned a value but persists no artefact"
            )
        return _write(sess, db, flow, t, value, info, error)

    return _own(sess, work)


def _write(
    sess: Session,
    db: _fastpath.Statements,
    flow: Flow,
    t: Transition[Any, Any, Any],
    value: Any,
    info: RunInfo,
    error: BaseException | None,
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
        err_type = f"{type(error).__module__}.{type(error).__qualname__}".removeprefix("builtins.")
        err_msg = str(error)[:MAX_ERROR_MESSAGE]
        err_tb = "".join(traceback.format_exception(error))[-MAX_TRACEBACK:]
    try:
        tid = db.insert_transition(
            {
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
            },
        )
    except IntegrityError as exc:
        # Only reachable if the row lock was bypassed: the unique (flow_id, seq) still holds.
        raise InvalidTransitionError(
            cls.type_name, flow.id, t.name, from_state, t.sources, target
        ) from exc
    values: dict[str, Any] = {
        "state": target,
        "seq": seq,
        "errored": entering_error,
        "updated_at": ts,
        "state_entered_at": ts,
    }
    if entering_error:
        values |= {
            "last_errored_at": ts,
            "last_error_type": err_type,
            "last_error_message": err_msg,
        }
    if target in cls.final_states:
        values["completed_at"] = ts
    db.update_flow({**values, "flow_id": flow.id})
    if persists is not None:
        db.insert_artefact(
            {
                "flow_id": flow.id,
                "transition_id": tid,
                "name": persists,
                "payload": value,
                "created_at": ts,
            },
        )
    if cls.destroy_on_complete and target in cls.final_states:
        delete_rows(sess, [flow.id])
    _apply(flow, values)
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
    )


def _apply(flow: Flow, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if key != "errored":  # derived from the state on the object
            setattr(flow, key, value)


def delete_rows(sess: Session, ids: Iterable[int]) -> int:
    """Delete flows ``ids`` with their history and artefacts (no reliance on FK cascades)."""
    ids = list(ids)
    if not ids:
        return 0
    sess.execute(delete(artefacts).where(artefacts.c.flow_id.in_(ids)))
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

    Returns how many flows were deleted.
    """
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
