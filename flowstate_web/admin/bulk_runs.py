"""Canary bulk retries: retry a few flows, watch them, then the rest at a rate limit.

A run is a row of ``flowstate_bulk_runs`` (so it survives a page reload and every operator
sees it) moved forward one bounded step at a time by :func:`advance`: a poll of the admin's
run page or ``flask flowstate bulk-retry`` calls it; nothing runs in the background. Each
step locks the run row (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two operators watching
the same run never advance it twice), then in one transaction:

* ``canary``: retries the first ``canary_size`` matching errored flows, then ``waiting``;
* ``waiting``: until every canary flow left the state its retry put it in, or
  ``wait_seconds`` passed; then stops if more than ``threshold`` of them failed again
  (are errored), else ``running``;
* ``running``: retries as many flows as the rate allows since the last step (at most one
  batch), and stops by itself when the refail share of the flows watched so far passes the
  threshold; ``done`` when no matching flow is left and none is being watched.

"Failed again" is read from the flows table: a retried flow is watched (``pending``, at most
:data:`MAX_PENDING`) until its ``seq`` moves past the retry's (it left its next state; a
refail if it is errored then) or ``wait_seconds`` pass (settled, not a refail).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from .._executor import now
from .._tx import caller_owns
from ..errors import CallbackError, FlowStateError
from ..models import bulk_runs, flows
from ..records import utc
from . import bulk, filters, queries, stored

if TYPE_CHECKING:
    from ..flow import Flow

ACTIVE: Final = ("canary", "waiting", "running")
STATUSES: Final = (*ACTIVE, "paused", "stopped", "done")
#: Retried flows watched at once; a run retries no more until some settle.
MAX_PENDING: Final = 2000
MAX_CANARY: Final = 200
#: ``meta["admin"]`` of the history rows a run writes.
META: Final = "bulk_run"


class RunError(FlowStateError):
    """A bulk run cannot be started or changed (bad settings, unknown run, finished run)."""


@dataclass(slots=True)
class Run:
    """One bulk run, as stored (see :class:`flowstate_web.models.BulkRunRow`)."""

    id: int
    type: str
    filter: dict[str, Any]
    transition: dict[str, str]
    actor: str
    reason: str | None
    status: str
    canary_size: int
    wait_seconds: float
    rate: float
    threshold: float
    canary_ids: list[int]
    pending: list[Any]
    retried: int
    skipped: int
    failed: int
    refailed: int
    settled: int
    reasons: dict[str, Any]
    cursor: int
    wait_until: datetime | None
    budget_at: datetime | None
    created_at: datetime
    updated_at: datetime
    stop_reason: str | None
    #: Another request held the run's lock: this read did not advance it.
    busy: bool = field(default=False, compare=False)

    @classmethod
    def from_mapping(cls, m: RowMapping) -> Run:
        """Build a run from a ``flowstate_bulk_runs`` row."""
        values = {f.name: m[f.name] for f in fields(cls) if f.name != "busy"}
        for key in ("wait_until", "budget_at", "created_at", "updated_at"):
            if values[key] is not None:
                values[key] = utc(values[key])
        return cls(**values)

    @property
    def active(self) -> bool:
        """Return whether the run still has work to do (canary, waiting or running)."""
        return self.status in ACTIVE

    @property
    def refail_rate(self) -> float | None:
        """Return refailed / settled so far (``None`` before any retried flow settled)."""
        return self.refailed / self.settled if self.settled else None

    @property
    def canary_pending(self) -> int:
        """Return how many canary flows are still in the state their retry put them in."""
        canary = set(self.canary_ids)
        return sum(1 for p in self.pending if p[0] in canary)

    def progress(self) -> bulk.Progress:
        """Return the grouped reasons as a :class:`~.bulk.Progress` (to note more)."""
        r = self.reasons
        return bulk.Progress(
            retried=self.retried,
            skipped=dict(r.get("skipped", {})),
            failed=dict(r.get("failed", {})),
            warnings=dict(r.get("warnings", {})),
        )


def list_filter(run: Run, cls: type[Flow]) -> filters.ListFilter:
    """Return the stored filter, parsed as the list would (always errored flows)."""
    args: MultiDict[str, str] = MultiDict()
    for key, value in run.filter.items():
        for v in value if isinstance(value, list) else [value]:
            args.add(key, str(v))
    return filters.parse(args, cls).for_bulk()


def _values(run: Run) -> dict[str, Any]:
    return {f.name: getattr(run, f.name) for f in fields(run) if f.name not in ("id", "busy")}


def start(
    session: Session,
    cls: type[Flow],
    f: filters.ListFilter,
    *,
    chosen: Mapping[str, str],
    actor: str,
    reason: str | None,
    canary: int = 10,
    wait_seconds: float = 60.0,
    rate: float = 5.0,
    threshold: float = 0.5,
) -> Run:
    """Store a new run (status ``canary``) and commit; :func:`advance` then drives it.

    :raises RunError: a setting is out of range (names it).
    """
    if not 1 <= canary <= MAX_CANARY:
        raise RunError(f"canary: between 1 and {MAX_CANARY} flows, got {canary}")
    if not 0 <= wait_seconds <= 86400:
        raise RunError(f"wait: between 0 and 86400 seconds, got {wait_seconds}")
    if not 0 <= rate <= 10000:
        raise RunError(f"rate: between 0 (no limit) and 10000 flows/s, got {rate}")
    if not 0 < threshold <= 1:
        raise RunError(f"threshold: a share above 0 and at most 1, got {threshold}")
    moment = now()
    values: dict[str, Any] = {
        "type": cls.type_name,
        "filter": f.for_bulk().query(),
        "transition": dict(chosen),
        "actor": actor,
        "reason": reason,
        "status": "canary",
        "canary_size": canary,
        "wait_seconds": float(wait_seconds),
        "rate": float(rate),
        "threshold": float(threshold),
        "canary_ids": [],
        "pending": [],
        "retried": 0,
        "skipped": 0,
        "failed": 0,
        "refailed": 0,
        "settled": 0,
        "reasons": {},
        "cursor": 0,
        "wait_until": None,
        "budget_at": None,
        "created_at": moment,
        "updated_at": moment,
        "stop_reason": None,
    }
    if session.in_transaction() and not caller_owns(session):
        session.commit()
    with session.begin():
        run_id = session.execute(
            insert(bulk_runs).values(values).returning(bulk_runs.c.id)
        ).scalar_one()
    return get(session, int(run_id))


def get(session: Session, run_id: int) -> Run:
    """Return run ``run_id``.

    :raises RunError: there is no such run.
    """
    row = session.execute(select(bulk_runs).where(bulk_runs.c.id == run_id)).first()
    if row is None:
        raise RunError(f"no bulk run #{run_id}")
    return Run.from_mapping(row._mapping)


def runs_of(session: Session, type_name: str, limit: int = 50) -> list[Run]:
    """Return the latest ``limit`` runs of a flow type, newest first (one index range)."""
    q = (
        select(bulk_runs)
        .where(bulk_runs.c.type == type_name)
        .order_by(bulk_runs.c.id.desc())
        .limit(limit)
    )
    return [Run.from_mapping(r._mapping) for r in session.execute(q)]


def canary_flows(session: Session, run: Run) -> list[tuple[int, str, bool]]:
    """Return ``(id, state, errored)`` of the run's canary flows (at most ``MAX_CANARY``)."""
    if not run.canary_ids:
        return []
    q = (
        select(flows.c.id, flows.c.state, flows.c.errored)
        .where(flows.c.id.in_(run.canary_ids))
        .order_by(flows.c.id)
    )
    return [(i, s, bool(e)) for i, s, e in session.execute(q)]


def control(session: Session, run_id: int, action: str, actor: str) -> Run:
    """Stop, pause or resume a run (under its lock) and commit.

    :raises RunError: unknown action, or the run is already finished.
    """
    if action not in ("stop", "pause", "resume"):
        raise RunError(f"action: expected stop, pause or resume, got {action[:40]!r}")
    if session.in_transaction() and not caller_owns(session):
        session.commit()
    with session.begin():
        run = _locked(session, run_id, wait=True)
        assert run is not None
        if run.status in ("stopped", "done"):
            raise RunError(f"bulk run #{run.id} of {run.type} is already {run.status}")
        moment = now()
        if action == "stop":
            run.status, run.stop_reason = "stopped", f"stopped by {actor}"
        elif action == "pause" and run.active:
            run.status, run.stop_reason = "paused", f"paused by {actor}"
        elif action == "resume" and run.status == "paused":
            # Resume where it was: budget_at is set on entering "running", wait_until on
            # entering "waiting".
            if run.wait_until is None:
                run.status = "canary"
            elif run.budget_at is None:
                run.status = "waiting"
            else:
                run.status, run.budget_at = "running", moment
            run.stop_reason = None
        run.updated_at = moment
        _write(session, run)
    return run


def _locked(session: Session, run_id: int, *, wait: bool) -> Run | None:
    q = select(bulk_runs).where(bulk_runs.c.id == run_id)
    row = session.execute(q.with_for_update(skip_locked=not wait)).first()
    if row is None:
        if wait or session.execute(q).first() is None:
            raise RunError(f"no bulk run #{run_id}")
        return None
    return Run.from_mapping(row._mapping)


def _write(session: Session, run: Run) -> None:
    session.execute(update(bulk_runs).where(bulk_runs.c.id == run.id).values(_values(run)))


def advance(
    session: Session, run_id: int, *, batch_size: int, moment: datetime | None = None
) -> Run:
    """Move run ``run_id`` one bounded step forward (see the module docstring) and commit.

    Returns the run as it is now; ``busy`` when another request was advancing it.

    :raises RunError: no such run, or its flow type is not defined in this process.
    """
    from ..registry import find_flow_type

    if caller_owns(session):
        raise RuntimeError("a bulk run commits step by step: call it outside a transaction")
    if session.in_transaction():
        session.commit()
    warnings: list[str] = []
    try:
        with session.begin():
            run = _locked(session, run_id, wait=False)
            if run is None:
                busy = get(session, run_id)
                busy.busy = True
                return busy
            if not run.active:
                return run
            cls = find_flow_type(run.type)
            if cls is None:
                raise RunError(f"bulk run #{run.id}: flow type {run.type!r} is not defined")
            _step(session, cls, run, moment or now(), batch_size)
            _write(session, run)
    except CallbackError as exc:  # after the step committed
        warnings = [f"{where}: {type(error).__name__}: {error}" for where, error in exc.failures]
    if warnings:
        with session.begin():
            run = _locked(session, run_id, wait=True)
            assert run is not None
            progress = run.progress()
            for w in warnings:
                progress.note(progress.warnings, w)
            run.reasons = {**run.reasons, "warnings": progress.warnings}
            _write(session, run)
    return get(session, run_id)


def _step(session: Session, cls: type[Flow], run: Run, moment: datetime, batch_size: int) -> None:
    _settle(session, run, moment)
    if run.status == "canary":
        need = run.canary_size - len(run.canary_ids)
        exhausted = _retry(session, cls, run, moment, min(need, batch_size), canary=True)
        if len(run.canary_ids) >= run.canary_size or exhausted:
            run.status = "waiting"
            run.wait_until = moment + timedelta(seconds=run.wait_seconds)
    elif run.status == "waiting":
        timed_out = run.wait_until is None or moment >= run.wait_until
        if run.canary_pending and not timed_out:
            pass
        else:
            if timed_out:
                _settle(session, run, moment, give_up=set(run.canary_ids))
            n, bad = len(run.canary_ids), _canary_refailed(session, run)
            if n and bad / n > run.threshold:
                run.status = "stopped"
                run.stop_reason = (
                    f"canary: {bad} of {n} retried flows failed again"
                    f" ({bad / n:.0%} > {run.threshold:.0%})"
                )
            else:
                run.status, run.budget_at = "running", moment
    elif run.status == "running":
        rate = run.refail_rate
        if rate is not None and run.settled >= run.canary_size and rate > run.threshold:
            run.status = "stopped"
            run.stop_reason = (
                f"{run.refailed} of {run.settled} retried flows failed again"
                f" ({rate:.0%} > {run.threshold:.0%})"
            )
            return
        allowed = min(batch_size, MAX_PENDING - len(run.pending))
        if run.rate > 0:
            budget_at = run.budget_at or moment
            budget_at = max(budget_at, moment - timedelta(seconds=batch_size / run.rate))
            allowed = min(allowed, int((moment - budget_at).total_seconds() * run.rate))
            run.budget_at = budget_at + timedelta(seconds=max(allowed, 0) / run.rate)
        if allowed < 1:
            return
        exhausted = _retry(session, cls, run, moment, allowed, canary=False)
        if exhausted and not run.pending:
            run.status = "done"
    run.updated_at = moment


def _retry(
    session: Session, cls: type[Flow], run: Run, moment: datetime, size: int, *, canary: bool
) -> bool:
    """Retry up to ``size`` matching flows after the cursor; return whether none is left."""
    f = list_filter(run, cls)
    rows = queries.errored_batch(session, run.type, f, run.cursor, size)
    progress = run.progress()
    for row in rows:
        entry = bulk.retry_one(
            session,
            stored.to_flow(cls, row, session),
            run.transition,
            run.actor,
            run.reason,
            progress,
            meta={"admin": META, "run": run.id},
        )
        if entry is not None:
            run.pending.append([entry.flow_id, entry.seq, moment.isoformat()])
            if canary:
                run.canary_ids.append(entry.flow_id)
    if rows:
        run.cursor = int(rows[-1].id)
    run.retried = progress.retried
    run.skipped = sum(progress.skipped.values())
    run.failed = sum(progress.failed.values())
    run.reasons = {"skipped": progress.skipped, "failed": progress.failed}
    if progress.warnings:
        run.reasons["warnings"] = progress.warnings
    return len(rows) < size


def _settle(session: Session, run: Run, moment: datetime, give_up: set[int] | None = None) -> None:
    """Count watched flows that left their next state (refails apart) or waited too long."""
    if not run.pending:
        return
    ids = [p[0] for p in run.pending]
    q = select(flows.c.id, flows.c.seq, flows.c.errored).where(flows.c.id.in_(ids))
    now_rows = {i: (seq, bool(errored)) for i, seq, errored in session.execute(q)}
    keep: list[Any] = []
    limit = timedelta(seconds=run.wait_seconds)
    for flow_id, seq, retried_at in run.pending:
        found = now_rows.get(flow_id)
        if found is None:  # deleted meanwhile
            run.settled += 1
        elif found[0] > seq:
            run.settled += 1
            run.refailed += found[1]
        elif moment - datetime.fromisoformat(retried_at) >= limit or (
            give_up is not None and flow_id in give_up
        ):
            run.settled += 1
        else:
            keep.append([flow_id, seq, retried_at])
    run.pending = keep


def _canary_refailed(session: Session, run: Run) -> int:
    return sum(1 for _, _, errored in canary_flows(session, run) if errored)


def drive(
    session: Session,
    run_id: int,
    *,
    batch_size: int,
    poll: float = 1.0,
    on_step: Any = None,
    timeout: float | None = None,
) -> Run:
    """Advance run ``run_id`` until it stops, pauses or is done (the CLI's loop).

    Sleeps ``poll`` seconds between steps: the rate limit and the canary's wait are
    measured in wall-clock time. ``on_step(run)`` is called after each step.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = advance(session, run_id, batch_size=batch_size)
        if on_step is not None:
            on_step(run)
        if not run.active:
            return run
        if deadline is not None and time.monotonic() >= deadline:
            return run
        time.sleep(poll)
