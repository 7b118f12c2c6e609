"""The timeout sweep: run each state's ``on_timeout`` on its stalled flows, in batches.

A worker or ``flask flowstate sweep`` calls it periodically. Several sweepers at once never
run the same flow twice: rows are locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and the
flow is checked again under the lock by :func:`flowstate_web.timeouts.fail_stalled`, which
fails each one. What "stalled" means is in :mod:`flowstate_web.timeouts`; its public names
for the sweep (``sweep``, ``sweep_all``, ``SweepReport``, ...) are re-exported there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from ._executor import now as utcnow
from ._tx import AnySession, resolve_session
from .errors import CallbackError, FlowNotFoundError, GuardFailedError, InvalidTransitionError
from .models import flows
from .timeouts import NotStalledError, _own, fail_stalled

if TYPE_CHECKING:
    from .flow import Flow

# The sweep's log lines keep the logger they always had, so logging settings still apply.
log = logging.getLogger("flowstate_web.timeouts")

#: The actor recorded in the history when the sweep fails a stalled flow.
SWEEP_ACTOR: Final = "flowstate timeout sweep"
#: Default number of flows one :func:`sweep` call fails at most (one transaction).
SWEEP_LIMIT: Final = 500
#: At most this many failures are described in a :class:`SweepReport` (all are counted).
MAX_FAILURES_SHOWN: Final = 100


@dataclass(frozen=True, slots=True)
class SweepFailure:
    """A stalled flow whose ``on_timeout`` transition raised: rolled back, left in its state."""

    flow_type: str
    flow_id: int
    state: str
    transition: str
    #: ``"ExceptionType: message"`` (cut at 500 characters).
    error: str

    def __str__(self) -> str:
        """One line, control characters escaped (a NUL or a newline in an exception's text
        must not split a line, or make ``grep`` call the output binary)."""
        return (
            f"{self.flow_type} #{self.flow_id} in state {self.state!r}:"
            f" {self.transition} raised {_one_line(self.error)}"
        )


def _one_line(text: str) -> str:
    """Return ``text`` with every unprintable character escaped as in a Python literal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(slots=True)
class SweepReport:
    """What a sweep did: flows failed by their timeout, flows whose timeout action raised."""

    #: Flows moved into their error state by ``on_timeout``.
    timed_out: int = 0
    #: Stalled rows looked at (timed out, left alone, or raising).
    seen: int = 0
    #: Flows whose ``on_timeout`` transition raised (each rolled back alone).
    failed: int = 0
    #: The first :data:`MAX_FAILURES_SHOWN` of them, described.
    failures: list[SweepFailure] = field(default_factory=list)
    #: Per ``(type, state)``: ``(state_entered_at, id)`` of the last row looked at, so the
    #: next batch of the same run starts after it (past flows that keep raising).
    cursor: dict[tuple[str, str], tuple[datetime, int]] = field(default_factory=dict)

    def add(self, other: SweepReport) -> None:
        """Add the figures of ``other`` (a later batch of the same run) to this report."""
        self.timed_out += other.timed_out
        self.seen += other.seen
        self.failed += other.failed
        room = MAX_FAILURES_SHOWN - len(self.failures)
        self.failures.extend(other.failures[: max(room, 0)])
        self.cursor.update(other.cursor)


def sweep(
    session: AnySession | None = None, now: datetime | None = None, limit: int = SWEEP_LIMIT
) -> int:
    """Run each timed state's ``on_timeout`` on its stalled flows; return how many failed.

    At most ``limit`` flows, oldest stall first per state, in one transaction (or in yours,
    if you began one); each flow in a savepoint, so one whose transition raises is rolled
    back alone and logged. Rows are taken with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
    concurrent sweepers share the work; every flow is checked again under its lock, so a
    flow that moved on meanwhile is left alone. Call it until it returns less than ``limit``,
    or call :func:`sweep_all`, which also goes on past flows whose transition raises and
    reports them.
    """
    return sweep_batch(session, now, limit).timed_out


def sweep_all(
    session: AnySession | None = None, now: datetime | None = None, limit: int = SWEEP_LIMIT
) -> SweepReport:
    """Sweep in batches of ``limit`` flows until every stalled flow was looked at once.

    Each batch is one :func:`sweep_batch` (one transaction), starting after the last row the
    previous batch looked at in each state, so flows whose ``on_timeout`` raises do not hold
    the sweep back: they are counted and described in the report (``failed``,
    ``failures``), and the sweep carries on with the rest. ``now`` defaults to the time of
    each batch.
    """
    report = SweepReport()
    while True:
        batch = sweep_batch(session, now, limit, after=report.cursor)
        report.add(batch)
        if batch.seen < limit:
            return report


def sweep_batch(
    session: AnySession | None = None,
    now: datetime | None = None,
    limit: int = SWEEP_LIMIT,
    *,
    after: Mapping[tuple[str, str], tuple[datetime, int]] | None = None,
) -> SweepReport:
    """Look at up to ``limit`` stalled flows of states with ``on_timeout`` (one transaction).

    As :func:`sweep`, but return a :class:`SweepReport`; with ``after`` (a previous
    report's ``cursor``) only rows after the cursor of their ``(type, state)`` are taken.
    """
    from .registry import flow_types

    sess = resolve_session(session)
    moment = now or utcnow()
    postgres = sess.get_bind().dialect.name == "postgresql"
    report = SweepReport()

    def work() -> None:
        for cls in flow_types().values():
            for spec in cls.graph().timed_states:
                if spec.on_timeout is None or spec.timeout is None or report.seen >= limit:
                    continue
                q = (
                    select(flows)
                    .where(
                        flows.c.type == cls.type_name,
                        flows.c.state == spec.name,
                        flows.c.state_entered_at < moment - spec.timeout,
                    )
                    .order_by(flows.c.state_entered_at, flows.c.id)
                    .limit(limit - report.seen)
                )
                start = (after or {}).get((cls.type_name, spec.name))
                if start is not None:
                    q = q.where(
                        or_(
                            flows.c.state_entered_at > start[0],
                            and_(flows.c.state_entered_at == start[0], flows.c.id > start[1]),
                        )
                    )
                if postgres:
                    q = q.with_for_update(skip_locked=True)
                for row in sess.execute(q).all():
                    report.seen += 1
                    report.cursor[(cls.type_name, spec.name)] = (row.state_entered_at, row.id)
                    _sweep_one(sess, cls(row, sess), spec.on_timeout, moment, report)

    try:
        _own(sess, work)
    except CallbackError as exc:  # the sweep committed; only after-commit callbacks failed
        log.warning("flowstate sweep: %s", exc)
    return report


def _sweep_one(sess: Session, flow: Flow, name: str, moment: datetime, report: SweepReport) -> None:
    state = flow.state
    try:
        with sess.begin_nested():
            fail_stalled(
                flow,
                name,
                actor=SWEEP_ACTOR,
                now=moment,
                meta={"timeout": {"state": state, "transition": name}},
            )
    except (NotStalledError, InvalidTransitionError, GuardFailedError, FlowNotFoundError) as exc:
        log.info("flowstate sweep: left alone: %s", exc)
        return
    except Exception as exc:
        log.exception("flowstate sweep: %s of %s #%s raised", name, flow.type_name, flow.id)
        report.failed += 1
        if len(report.failures) < MAX_FAILURES_SHOWN:
            error = f"{type(exc).__name__}: {exc}"
            report.failures.append(SweepFailure(flow.type_name, flow.id, state, name, error[:500]))
        return
    report.timed_out += 1
