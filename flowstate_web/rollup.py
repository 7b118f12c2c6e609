"""Roll the history up into small per-period tables, in the background, for the heat map.

The transition's own transaction writes nothing here (the hot path gains no statement).
:func:`run` reads the history rows added since its last run (keyset on
``flowstate_transitions.id``) and adds them to:

- ``flowstate_rollup_edges``: times each edge ``(type, transition, from, to)`` was taken,
  per actor kind (``admin`` / ``cli`` from the history's ``meta``, else ``code``);
- ``flowstate_rollup_dwell``: how long flows stayed in ``from_state`` before leaving it
  (since the flow's previous history row, or its creation for the first one), as counts in
  the fixed log-scale bins :data:`BOUNDS`, so p50/p95 of any window come from a few rows.

Each is kept at four grains, so every window reads a few dozen periods at most: 5-minute
periods (kept 2 h; the 1 h window reads at most 13), hourly (kept 26 h; the 24 h window reads
at most 25), daily (kept ``retention``, 8 days by default; the 7 d window reads at most 8,
i.e. whole UTC days, up to one day more than 7) and grain 0, one all-time row per key that is
never pruned (the monotonic totals the Prometheus counters need). A window covers the periods
that overlap it, so it can reach one period further back than its length.

**What is guaranteed.** Every history row is counted at most once: the cursor row is
locked first (an ``UPDATE``, which is a row lock on PostgreSQL and the write lock on SQLite),
so two rollups run one after the other and the second reads the first's mark. A history row
is counted exactly once if it commits within ``gap_timeout`` (1 hour) of a higher id being
rolled up: on PostgreSQL ids are taken at insert time and a transaction may commit a lower
id after a higher one was seen, so ids skipped by a run are kept as *gaps* and looked up
again by the next runs until they appear or time out (a rolled-back insert leaves a gap
that never fills). At most :data:`MAX_GAPS` gaps are kept. SQLite has a single writer and
never leaves such gaps.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Row, Table, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ._tx import AnySession, caller_owns, resolve_session
from .models import flows, rollup_cursor, rollup_dwell, rollup_edges, transitions

#: Grains (period length in seconds); 0 is the all-time row of each key.
FINE: Final = 300
HOURLY: Final = 3600
DAILY: Final = 86_400
ALL_TIME: Final = 0
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: 5-minute periods serve the 1 h window, hourly ones the 24 h window; daily periods are
#: kept ``retention`` (the 7 d window).
FINE_KEEP: Final = timedelta(hours=2)
HOURLY_KEEP: Final = timedelta(hours=26)
DEFAULT_RETENTION: Final = timedelta(days=8)
GAP_TIMEOUT: Final = timedelta(hours=1)
MAX_GAPS: Final = 10_000

#: Upper bounds (seconds) of the time-in-state bins: 0.1 s times powers of sqrt(2), up to
#: about 34 days; one more bin holds everything longer. A value read back from a bin is its
#: geometric middle, within 19% of any value in the bin.
BOUNDS: Final[tuple[float, ...]] = tuple(0.1 * math.sqrt(2) ** i for i in range(52))

#: Windows the admin offers: name -> (length, grain read).
WINDOWS: Final[dict[str, tuple[timedelta, int]]] = {
    "1h": (timedelta(hours=1), FINE),
    "24h": (timedelta(hours=24), HOURLY),
    "7d": (timedelta(days=7), DAILY),
}


def bin_of(seconds: float) -> int:
    """Return the index of the bin holding ``seconds`` (``len(BOUNDS)`` if beyond the last)."""
    if seconds <= BOUNDS[0]:
        return 0
    i = math.ceil(math.log(seconds / BOUNDS[0], math.sqrt(2)) - 1e-9)
    return min(max(i, 0), len(BOUNDS))


def bin_value(i: int) -> float:
    """Return the value (seconds) a bin stands for: its geometric middle."""
    if i <= 0:
        return BOUNDS[0] / 2
    if i >= len(BOUNDS):
        return BOUNDS[-1]
    return math.sqrt(BOUNDS[i - 1] * BOUNDS[i])


def percentile(bins: Mapping[int, int], q: float) -> float | None:
    """Return the ``q`` quantile (0..1) of a histogram ``{bin: count}``, or None if empty."""
    total = sum(bins.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i in sorted(bins):
        seen += bins[i]
        if seen >= rank:
            return bin_value(i)
    return bin_value(max(bins))  # pragma: no cover - the loop always returns


def actor_kind(meta: Any) -> str:
    """Return who ran a transition, from its history ``meta``: admin, cli or code."""
    if isinstance(meta, dict):
        if "admin" in meta:
            return "admin"
        if "cli" in meta:
            return "cli"
    return "code"


def floor(moment: datetime, grain: int) -> datetime:
    """Return the start of the ``grain``-second period holding ``moment`` (EPOCH for 0)."""
    if grain == ALL_TIME:
        return EPOCH
    ts = int(as_utc(moment).timestamp())
    return datetime.fromtimestamp(ts - ts % grain, UTC)


def as_utc(moment: datetime) -> datetime:
    """Return ``moment`` aware (SQLite returns naive UTC datetimes)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- writing ----------------------------------------------------------------------------


#: History kinds: only declared transitions are edges; saves do not change the state.
TRANSITION: Final = "transition"
UPDATE: Final = "update"


def _history_query() -> Any:
    t = transitions
    prev = transitions.alias("prev")
    # When the flow entered ``from_state``: the latest earlier row that changed the state
    # (a props-only ``save()`` row, kind "update", does not), found walking the unique
    # (flow_id, seq) index backwards from this row: usually one probe.
    entered = (
        select(prev.c.created_at)
        .where(prev.c.flow_id == t.c.flow_id, prev.c.seq < t.c.seq, prev.c.kind != UPDATE)
        .order_by(prev.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    return select(
        t.c.id,
        flows.c.type,
        t.c.kind,
        t.c.name,
        t.c.from_state,
        t.c.to_state,
        t.c.seq,
        t.c.created_at,
        t.c.meta,
        entered.label("prev_at"),
        flows.c.created_at.label("flow_created_at"),
    ).select_from(t.join(flows, flows.c.id == t.c.flow_id))


class _Sums:
    """What one run adds, keyed like the tables' primary keys."""

    def __init__(self) -> None:
        self.edges: dict[tuple[Any, ...], int] = defaultdict(int)
        self.dwell: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0, 0.0])

    def add(self, row: Row[Any]) -> None:
        if row.kind != TRANSITION:
            return  # a props-only save or an operator's remap is no edge of the graph
        at = as_utc(row.created_at)
        since = row.prev_at if row.prev_at is not None else row.flow_created_at
        kind = actor_kind(row.meta)
        for grain in (FINE, HOURLY, DAILY, ALL_TIME):
            period = floor(at, grain)
            key = (row.type, grain, period, row.name, row.from_state, row.to_state, kind)
            self.edges[key] += 1
            if since is not None:
                seconds = max((at - as_utc(since)).total_seconds(), 0.0)
                cell = self.dwell[(row.type, grain, period, row.from_state, bin_of(seconds))]
                cell[0] += 1
                cell[1] += seconds


def _insert(session: Session, table: Table) -> Any:
    """Return the dialect's INSERT of ``table`` (it has ON CONFLICT on both backends)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the rollup does not support {name}")  # pragma: no cover


def _upsert(
    session: Session, table: Table, keys: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    if not rows:
        return
    stmt = _insert(session, table)
    adds = [c for c in rows[0] if c not in keys]
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={c: table.c[c] + stmt.excluded[c] for c in adds},
    )
    session.execute(stmt, rows)


def _write(session: Session, sums: _Sums) -> None:
    edge_keys = ("type", "grain", "period", "name", "from_state", "to_state", "actor_kind")
    dwell_keys = ("type", "grain", "period", "state", "bin")
    _upsert(
        session,
        rollup_edges,
        edge_keys,
        [{**dict(zip(edge_keys, k, strict=True)), "n": n} for k, n in sorted(sums.edges.items())],
    )
    _upsert(
        session,
        rollup_dwell,
        dwell_keys,
        [
            {**dict(zip(dwell_keys, k, strict=True)), "n": int(v[0]), "seconds": v[1]}
            for k, v in sorted(sums.dwell.items())
        ],
    )


def _lock_cursor(session: Session, moment: datetime) -> tuple[int, list[list[Any]]]:
    cursor = _insert(session, rollup_cursor).values(id=1, last_id=0, gaps=[])
    session.execute(cursor.on_conflict_do_nothing())
    # The UPDATE takes the row lock (PostgreSQL) / write lock (SQLite) before the mark is
    # read, so a concurrent rollup waits here and then reads the mark this one leaves.
    session.execute(update(rollup_cursor).where(rollup_cursor.c.id == 1).values(updated_at=moment))
    row = session.execute(
        select(rollup_cursor.c.last_id, rollup_cursor.c.gaps)
        .where(rollup_cursor.c.id == 1)
        .with_for_update()
    ).one()
    return int(row.last_id), [list(g) for g in (row.gaps or [])]


def run(
    session: AnySession | None = None,
    *,
    limit: int = 10_000,
    now: datetime | None = None,
    retention: timedelta = DEFAULT_RETENTION,
    gap_timeout: timedelta = GAP_TIMEOUT,
) -> int:
    """Roll up at most ``limit`` new history rows (plus late ones); return how many.

    Joins the transaction you began, else commits its own. Also deletes periods older than
    their retention. Call it periodically (``flask flowstate rollup``, or a worker loop)
    until it returns less than ``limit``.
    """
    sess = resolve_session(session)
    moment = now or datetime.now(UTC)
    owned = not caller_owns(sess)
    try:
        n = _run(sess, limit, moment, retention, gap_timeout)
    except BaseException:
        if owned:
            sess.rollback()
        raise
    if owned:
        sess.commit()
    return n


def _run(
    sess: Session, limit: int, moment: datetime, retention: timedelta, gap_timeout: timedelta
) -> int:
    last_id, gaps = _lock_cursor(sess, moment)
    sums = _Sums()
    done = 0
    # Late rows: ids skipped by earlier runs that have committed since.
    if gaps:
        wanted = {int(g[0]) for g in gaps}
        found: set[int] = set()
        ids = sorted(wanted)
        for i in range(0, len(ids), 1000):
            for row in sess.execute(
                _history_query().where(transitions.c.id.in_(ids[i : i + 1000]))
            ):
                sums.add(row)
                found.add(int(row.id))
        done += len(found)
        expire = moment.timestamp() - gap_timeout.total_seconds()
        gaps = [g for g in gaps if int(g[0]) not in found and float(g[1]) >= expire]
    rows = sess.execute(
        _history_query().where(transitions.c.id > last_id).order_by(transitions.c.id).limit(limit)
    ).all()
    seen_at = moment.timestamp()
    expected = last_id + 1
    for row in rows:
        sums.add(row)
        gaps.extend([i, seen_at] for i in range(expected, min(row.id, expected + MAX_GAPS)))
        expected = row.id + 1
    done += len(rows)
    if len(gaps) > MAX_GAPS:
        gaps = gaps[-MAX_GAPS:]
    _write(sess, sums)
    sess.execute(
        update(rollup_cursor)
        .where(rollup_cursor.c.id == 1)
        .values(last_id=max(last_id, expected - 1), gaps=gaps)
    )
    prune(sess, moment, retention)
    return done


def prune(session: Session, now: datetime, retention: timedelta = DEFAULT_RETENTION) -> None:
    """Delete periods past their retention (all-time rows are kept)."""
    for table in (rollup_edges, rollup_dwell):
        session.execute(
            delete(table).where(
                or_(
                    and_(table.c.grain == FINE, table.c.period < now - FINE_KEEP),
                    and_(table.c.grain == HOURLY, table.c.period < now - HOURLY_KEEP),
                    and_(table.c.grain == DAILY, table.c.period < now - retention),
                )
            )
        )


# -- reading ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EdgeFigures:
    """An edge's figures over a window."""

    name: str
    from_state: str
    to_state: str
    n: int


@dataclass(frozen=True, slots=True)
class Window:
    """Figures of one flow type over one window, read from the rollup (two statements)."""

    name: str
    since: datetime
    edges: list[EdgeFigures]
    #: ``{state: {bin: count}}`` of the time spent in each state before leaving it.
    dwell: dict[str, dict[int, int]]

    def out_of(self, state: str) -> int:
        """Return how many transitions left ``state`` in the window."""
        return sum(e.n for e in self.edges if e.from_state == state)

    def p(self, state: str, q: float) -> float | None:
        """Return the ``q`` quantile of time spent in ``state`` (seconds), if any left it."""
        return percentile(self.dwell.get(state, {}), q)


def window(session: Session, type_name: str, name: str, now: datetime | None = None) -> Window:
    """Return the figures of ``type_name`` over window ``name`` (a key of :data:`WINDOWS`).

    Reads the periods that overlap the window (so up to one period more than its length):
    at most 13, 25 or 8 periods per edge and per (state, bin), whatever the history's size.
    """
    length, grain = WINDOWS[name]
    since = floor((now or datetime.now(UTC)) - length, grain)
    e = rollup_edges
    edges = [
        EdgeFigures(r.name, r.from_state, r.to_state, int(r.n))
        for r in session.execute(
            select(e.c.name, e.c.from_state, e.c.to_state, func.sum(e.c.n).label("n"))
            .where(e.c.type == type_name, e.c.grain == grain, e.c.period >= since)
            .group_by(e.c.name, e.c.from_state, e.c.to_state)
        )
    ]
    d = rollup_dwell
    dwell: dict[str, dict[int, int]] = defaultdict(dict)
    for r in session.execute(
        select(d.c.state, d.c.bin, func.sum(d.c.n).label("n"))
        .where(d.c.type == type_name, d.c.grain == grain, d.c.period >= since)
        .group_by(d.c.state, d.c.bin)
    ):
        dwell[r.state][int(r.bin)] = int(r.n)
    return Window(name, since, edges, dict(dwell))


def last_run(session: Session) -> datetime | None:
    """Return when the rollup last ran (None if never): one primary-key read."""
    at = session.execute(
        select(rollup_cursor.c.updated_at).where(rollup_cursor.c.id == 1)
    ).scalar_one_or_none()
    return as_utc(at) if at is not None else None


def totals(session: Session) -> tuple[list[Any], list[Any]]:
    """Return the all-time rows: ``(edges, dwell)`` (two statements, no history read)."""
    e, d = rollup_edges, rollup_dwell
    edges = session.execute(
        select(e.c.type, e.c.name, e.c.from_state, e.c.to_state, e.c.actor_kind, e.c.n).where(
            e.c.grain == ALL_TIME
        )
    ).all()
    dwell = session.execute(
        select(d.c.type, d.c.state, d.c.bin, d.c.n, d.c.seconds).where(d.c.grain == ALL_TIME)
    ).all()
    return list(edges), list(dwell)
