"""Remap: move flows out of a state their class no longer declares into a declared one.

Rows keep the state they were written with; after a state is renamed or removed in code they
are "orphaned" (:func:`flowstate_web.registry.row_problem`): no transition leaves them. A
remap moves them, in batches (each its own transaction, rows taken with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL), recording in each flow's history a row of kind ``"remap"``
(``seq`` + 1, ``name`` ``"remap"``, ``from_state`` the old state, ``to_state`` the new,
actor and reason). ``errored``, ``state_entered_at``, ``completed_at`` and
``last_errored_at`` follow the target state; the per-state counters follow by their
triggers. It is not a transition: no guard, no body, no callback runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from ._executor import now
from ._tx import AnySession, caller_owns, resolve_session
from .errors import FlowStateError
from .models import flows, transitions
from .registry import find_flow_type

if TYPE_CHECKING:
    from .flow import Flow

#: ``kind`` and ``name`` of the history rows a remap writes.
KIND: Final = "remap"
BATCH: Final = 500


class RemapError(FlowStateError):
    """A remap was refused: unknown type, a declared source state, an undeclared target."""


@dataclass(frozen=True, slots=True)
class Remap:
    """A checked remap of ``type_name`` flows from ``source`` to ``target``."""

    cls: type[Flow]
    source: str
    target: str

    @property
    def type_name(self) -> str:
        """Return the flow type's name."""
        return self.cls.type_name


def plan(type_name: str, source: str, target: str) -> Remap:
    """Return the remap of ``type_name`` flows from ``source`` to ``target``, checked.

    :raises RemapError: the type is not defined here, ``source`` is declared (move those
        flows with a transition), or ``target`` is not declared.
    """
    cls = find_flow_type(type_name)
    if cls is None:
        raise RemapError(
            f"flow type {type_name!r} is not defined in this process: define it (or give the"
            " renamed class this type_name) before remapping its states"
        )
    if source in cls.states:
        raise RemapError(
            f"{type_name}: state {source!r} is declared; only flows in an undeclared state"
            " are remapped (run a transition to move the others)"
        )
    if target not in cls.states:
        declared = ", ".join(repr(s) for s in cls.states)
        raise RemapError(
            f"{type_name}: target state {target!r} is not declared (declared: {declared})"
        )
    return Remap(cls, source, target)


def count(remap: Remap, session: AnySession | None = None) -> int:
    """Return how many flows the remap would move now (a range of the type/state index)."""
    sess = resolve_session(session)
    q = (
        select(func.count())
        .select_from(flows)
        .where(flows.c.type == remap.type_name, flows.c.state == remap.source)
    )
    return int(sess.execute(q).scalar_one())


def run_batch(
    remap: Remap,
    *,
    actor: str,
    reason: str | None,
    session: AnySession | None = None,
    batch_size: int = BATCH,
) -> int:
    """Move up to ``batch_size`` flows in one transaction (committed); return how many."""
    sess = resolve_session(session)
    if caller_owns(sess):
        raise RuntimeError("a remap commits batch by batch: call it outside a transaction")
    if sess.in_transaction():
        sess.commit()
    graph = remap.cls.graph()
    spec = graph.state(remap.target)
    errored = remap.target in remap.cls.error_states
    final = spec is not None and spec.final
    with sess.begin():
        q = (
            select(flows.c.id, flows.c.seq)
            .where(flows.c.type == remap.type_name, flows.c.state == remap.source)
            .order_by(flows.c.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        rows = sess.execute(q).all()
        if not rows:
            return 0
        moment = now()
        changes: dict[str, Any] = {
            "state": remap.target,
            "errored": errored,
            "seq": bindparam("b_seq"),
            "state_entered_at": moment,
            "updated_at": moment,
            "completed_at": moment if final else None,
        }
        if errored:
            changes["last_errored_at"] = moment
        stmt = (
            update(flows)
            .where(flows.c.id == bindparam("b_id"), flows.c.state == remap.source)
            .values(changes)
        )
        sess.connection().execute(stmt, [{"b_id": i, "b_seq": seq + 1} for i, seq in rows])
        sess.execute(
            insert(transitions),
            [
                {
                    "flow_id": i,
                    "seq": seq + 1,
                    "name": KIND,
                    "kind": KIND,
                    "from_state": remap.source,
                    "to_state": remap.target,
                    "created_at": moment,
                    "actor": actor,
                    "reason": reason,
                    "meta": {"remap": {"from": remap.source, "to": remap.target}},
                }
                for i, seq in rows
            ],
        )
    return len(rows)


def run(
    remap: Remap,
    *,
    actor: str,
    reason: str | None,
    session: AnySession | None = None,
    batch_size: int = BATCH,
    seconds: float | None = None,
) -> tuple[int, bool]:
    """Move flows batch by batch until none is left (or ``seconds`` pass).

    Returns ``(moved, done)``; ``done`` is false when time ran out first.
    """
    sess: Session = resolve_session(session)
    deadline = None if seconds is None else time.monotonic() + seconds
    moved = 0
    while True:
        n = run_batch(remap, actor=actor, reason=reason, session=sess, batch_size=batch_size)
        moved += n
        if n < batch_size:
            return moved, True
        if deadline is not None and time.monotonic() >= deadline:
            return moved, False
