"""Transactions: which session, who commits, and callbacks that wait for the outermost commit.

The rule, in one sentence: **a flow operation joins the transaction you began
(``session.begin()`` or ``begin_nested()``) and commits nothing; otherwise it is its own
transaction, committing on success and rolling back on failure — and after-transition
callbacks run once, after the outermost commit, never after a rollback.**
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, SessionTransactionOrigin, scoped_session

from .errors import CallbackError, FlowStateError

log = logging.getLogger("flowstate_web")

AnySession = Session | scoped_session[Any]

_PENDING = "flowstate.pending"
_COMMITTED = "flowstate.committed"
_UNDO = "flowstate.undo"


def resolve_session(session: AnySession | None) -> Session:
    """Return ``session`` (unwrapped if scoped), or the Flask app's ``db.session``."""
    if session is not None:
        return session() if isinstance(session, scoped_session) else session
    from flask import current_app, has_app_context

    if not has_app_context():
        raise FlowStateError(
            "no session given and no Flask app context: pass session= or push an app context"
        )
    ext = current_app.extensions.get("flowstate")
    if ext is None:
        raise FlowStateError(
            "FlowState is not initialised on this app: call FlowState(app, db=db) first"
        )
    return ext.db.session()  # type: ignore[no-any-return]


def caller_owns(session: Session) -> bool:
    """Return whether the caller began the transaction (so the engine must not commit)."""
    if session.get_nested_transaction() is not None:
        return True
    root = session.get_transaction()
    return root is not None and root.origin is not SessionTransactionOrigin.AUTOBEGIN


def _innermost(session: Session) -> SessionTransaction:
    trans = session.get_nested_transaction() or session.get_transaction()
    if trans is None:  # pragma: no cover - callers always hold a transaction here
        raise FlowStateError("after_commit callbacks need an active transaction")
    return trans


def defer_until_commit(session: Session, label: str, fn: Callable[[], None]) -> None:
    """Run ``fn`` once after the outermost commit of the current transaction.

    If the transaction (or the savepoint it was registered in) rolls back, ``fn`` never runs.
    """
    real = session
    pending: dict[SessionTransaction, list[tuple[str, Callable[[], None]]]]
    pending = real.info.setdefault(_PENDING, weakref.WeakKeyDictionary())
    pending.setdefault(_innermost(real), []).append((label, fn))


def on_rollback(session: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` if the current transaction (or the savepoint it is in) rolls back.

    For the caller's own transaction: a flow instance shows what a transition wrote in it,
    and must show the stored row again when that transaction is rolled back or closed.
    Several hooks run newest first; a committed savepoint hands its hooks to its parent.
    """
    undo: dict[SessionTransaction, list[Callable[[], None]]]
    undo = session.info.setdefault(_UNDO, weakref.WeakKeyDictionary())
    undo.setdefault(_innermost(session), []).append(fn)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if _PENDING not in session.info and _UNDO not in session.info:
        return
    committing = session.get_nested_transaction() or session.get_transaction()
    if committing is not None:
        session.info.setdefault(_COMMITTED, weakref.WeakSet()).add(committing)


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, trans: SessionTransaction) -> None:
    _undo_on_rollback(session, trans)
    pending = session.info.get(_PENDING)
    if not pending:
        return
    if trans.parent is not None and not trans.nested:
        return  # an internal subtransaction (e.g. a flush): not a boundary we care about
    entries = pending.pop(trans, None)
    committed = trans in session.info.get(_COMMITTED, ())
    if not entries or not committed:
        return  # rolled back or closed: its callbacks are dropped
    if trans.parent is not None:
        pending.setdefault(trans.parent, []).extend(entries)  # released savepoint
        return
    _run(entries)


def _undo_on_rollback(session: Session, trans: SessionTransaction) -> None:
    undo = session.info.get(_UNDO)
    if not undo or (trans.parent is not None and not trans.nested):
        return
    hooks = undo.pop(trans, None)
    if not hooks:
        return
    if trans in session.info.get(_COMMITTED, ()):
        if trans.parent is not None:
            undo.setdefault(trans.parent, []).extend(hooks)  # released savepoint
        return
    for fn in reversed(hooks):
        fn()


def _run(entries: list[tuple[str, Callable[[], None]]]) -> None:
    failures: list[tuple[str, BaseException]] = []
    for label, fn in entries:
        try:
            fn()
        except Exception as exc:
            log.exception("flowstate: after-commit callback %s failed", label)
            failures.append((label, exc))
    if failures:
        raise CallbackError(failures)
