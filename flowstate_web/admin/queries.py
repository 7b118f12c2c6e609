"""Every SQL statement the admin runs: counts, the keyset list, filters, artefact counts.

A page runs a fixed number of statements whatever the number of rows it shows (tested in
``tests/admin/test_queries.py``), and none of them reads a number of rows that grows with
the table: counts come from the trigger-kept counters (:mod:`flowstate_web.counters`),
other totals stop at :data:`COUNT_LIMIT`. Values only ever reach SQL as bound parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Row,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from .. import counters, timeouts
from .._executor import now as utcnow
from ..models import artefacts, flows
from ..models import state_counts as state_counts_table
from ..records import utc
from ..registry import find_flow_type
from .filters import ListFilter, PropSearch
from .stored import FLOW_COLUMNS


@dataclass(frozen=True, slots=True)
class StateCount:
    """How many flows of one type are in one state (and how many of them are errored)."""

    type: str
    state: str
    total: int
    errored: int


@dataclass(frozen=True, slots=True)
class OldestErrored:
    """The flow of a type that has been errored the longest."""

    flow_id: int
    state: str
    since: datetime


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the instance list, newest first, with the cursors around it."""

    rows: Sequence[Row[Any]]
    older: int | None  # ``before=`` cursor of the next (older) page
    newer: int | None  # ``after=`` cursor of the previous (newer) page
    #: Set when a search only looked at the newest this many flows (SQLite, no props index).
    scan_limit: int | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    """Counts per (type, state), and whether they were read from the counters."""

    cells: list[StateCount]
    #: ``True`` when computed by scanning the flows (the counters are not installed).
    scanned: bool

    def errored_types(self) -> list[str]:
        """Return the types with at least one errored flow, sorted."""
        return sorted({c.type for c in self.cells if c.errored})


@dataclass(frozen=True, slots=True)
class Matching:
    """How many flows match a filter: exact, or at least ``n`` when ``capped``."""

    n: int
    capped: bool = False


#: A filtered count that the counters cannot answer stops at this many rows.
COUNT_LIMIT: Final = 1_000
#: On SQLite (no index on props) a search reads at most the newest this many flows that
#: match the other filters; PostgreSQL uses the GIN index on ``props`` instead.
SQLITE_SEARCH_LIMIT: Final = 50_000


def state_counts(session: Session, type_name: str | None = None) -> Counts:
    """Return counts per (type, state), errored apart: one small GROUP BY.

    Read from the counter table when its triggers are installed, else by scanning the flows.
    """
    if counters.ready(session):
        q = select(
            state_counts_table.c.type,
            state_counts_table.c.state,
            func.sum(state_counts_table.c.n),
            func.sum(state_counts_table.c.errored),
        )
        if type_name is not None:
            q = q.where(state_counts_table.c.type == type_name)
        q = q.group_by(state_counts_table.c.type, state_counts_table.c.state)
        found = [
            StateCount(type=t, state=s, total=int(n), errored=int(e))
            for t, s, n, e in session.execute(q)
            if n or e
        ]
        return Counts(sorted(found, key=lambda c: (c.type, c.state)), scanned=False)
    return Counts(_scan_counts(session, type_name), scanned=True)


def _scan_counts(session: Session, type_name: str | None) -> list[StateCount]:
    q = select(flows.c.type, flows.c.state, flows.c.errored, func.count().label("n"))
    if type_name is not None:
        q = q.where(flows.c.type == type_name)
    q = q.group_by(flows.c.type, flows.c.state, flows.c.errored)
    merged: dict[tuple[str, str], list[int]] = {}
    for type_, state, errored, n in session.execute(q):
        slot = merged.setdefault((type_, state), [0, 0])
        slot[0] += n
        if errored:
            slot[1] += n
    return [
        StateCount(type=t, state=s, total=total, errored=err)
        for (t, s), (total, err) in sorted(merged.items())
    ]


def oldest_errored(session: Session, types: Sequence[str]) -> dict[str, OldestErrored]:
    """Return, per type of ``types``, the errored flow that entered its state first.

    One statement: per type, a ``LIMIT 1`` on the (type, errored, state_entered_at) index,
    glued with UNION ALL. No statement when ``types`` is empty.
    """
    if not types:
        return {}
    firsts = [
        select(flows.c.type, flows.c.id, flows.c.state, flows.c.state_entered_at)
        .where(flows.c.type == t, flows.c.errored.is_(True))
        .order_by(flows.c.state_entered_at, flows.c.id)
        .limit(1)
        .subquery()
        for t in types
    ]
    q = union_all(*(select(sub) for sub in firsts)) if len(firsts) > 1 else select(firsts[0])
    return {
        t: OldestErrored(flow_id=i, state=s, since=utc(at)) for t, i, s, at in session.execute(q)
    }


def counted_by_state(f: ListFilter) -> bool:
    """Return whether the counters can tell how many flows match ``f`` (state/errored only)."""
    dates = (f.created_from, f.created_to, f.updated_from, f.updated_to)
    return not f.q and f.stalled is None and all(d is None for d in dates)


def matching(
    session: Session,
    type_name: str,
    f: ListFilter,
    counts: Mapping[str, int],
    errored: Mapping[str, int],
    floor: int | None = None,
) -> Matching:
    """Return how many flows of ``type_name`` match ``f``.

    From ``counts``/``errored`` (no statement) when only states and errored narrow the
    list; otherwise counted, but at most :data:`COUNT_LIMIT` rows are read.
    ``floor``: see :func:`search_floor`.
    """
    if counted_by_state(f):
        states = f.states or tuple(counts)
        if f.errored is None:
            return Matching(sum(counts.get(s, 0) for s in states))
        if f.errored:
            return Matching(sum(errored.get(s, 0) for s in states))
        return Matching(sum(counts.get(s, 0) - errored.get(s, 0) for s in states))
    capped = (
        select(literal(1))
        .select_from(flows)
        .where(*conditions(session, type_name, f, floor))
        .limit(COUNT_LIMIT + 1)
        .subquery()
    )
    n = session.execute(select(func.count()).select_from(capped)).scalar_one()
    if n > COUNT_LIMIT:
        return Matching(COUNT_LIMIT, capped=True)
    return Matching(n)


def conditions(
    session: Session, type_name: str, f: ListFilter, floor: int | None = None
) -> list[ColumnElement[bool]]:
    """Return the WHERE conditions of ``f`` on flows of ``type_name`` (no cursor).

    :param floor: a prop search only looks at flows with an id from here on (a flow id
        searched for is still found below it); see :func:`search_floor`.
    """
    where = _filters(type_name, f)
    found: list[ColumnElement[bool]] = []
    if f.flow_id is not None:
        found.append(flows.c.id == f.flow_id)
    props = [f.prop] if f.prop is not None else list(f.anywhere)
    if props:
        by_prop = or_(*(_prop_matches(session, p) for p in props))
        found.append(by_prop if floor is None else and_(flows.c.id >= floor, by_prop))
    if found:
        where.append(or_(*found))
    elif f.q:
        where.append(false())  # a bare value no prop of this type can hold
    return where


def _filters(type_name: str, f: ListFilter) -> list[ColumnElement[bool]]:
    """Return the conditions of ``f`` except its search."""
    where: list[ColumnElement[bool]] = [flows.c.type == type_name]
    if f.states:
        where.append(flows.c.state.in_(f.states))
    if f.errored is not None:
        where.append(flows.c.errored.is_(f.errored))
    if f.created_from is not None:
        where.append(flows.c.created_at >= f.created_from)
    if f.created_to is not None:
        where.append(flows.c.created_at <= f.created_to)
    if f.updated_from is not None:
        where.append(flows.c.updated_at >= f.updated_from)
    if f.updated_to is not None:
        where.append(flows.c.updated_at <= f.updated_to)
    if f.stalled is not None:
        where.append(_stalled(type_name, f))
    return where


def _stalled(type_name: str, f: ListFilter) -> ColumnElement[bool]:
    cls = find_flow_type(type_name)
    found = false() if cls is None else timeouts.stalled_condition(cls, states=f.states)
    return found if f.stalled else not_(found)


def search_floor(session: Session, type_name: str, f: ListFilter) -> int | None:
    """Return the lowest id a prop search of ``f`` looks at, or ``None`` for all of them.

    Only on SQLite, which cannot index JSON props: the id of the
    :data:`SQLITE_SEARCH_LIMIT`-th newest flow matching the other filters, so a search
    reads a bounded number of rows (``None`` when fewer flows match). PostgreSQL searches
    through the GIN index on ``props`` and is never capped.
    """
    if not (f.prop or f.anywhere) or session.get_bind().dialect.name == "postgresql":
        return None
    q = (
        select(flows.c.id)
        .where(*_filters(type_name, f))
        .order_by(flows.c.id.desc())
        .offset(SQLITE_SEARCH_LIMIT - 1)
        .limit(1)
    )
    floor: int | None = session.execute(q).scalar_one_or_none()
    return floor


def _prop_matches(session: Session, prop: PropSearch) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        # JSONB containment compares typed JSON values (1 == 1.0, "1" != 1) and never
        # casts the value, so a row holding an unexpected type cannot make the query fail.
        # It is answered by the GIN index ix_flowstate_flows_props (jsonb_path_ops); a
        # bare value ORs one containment per prop, which PostgreSQL runs as a BitmapOr.
        return cast(flows.c.props, JSONB).contains({prop.name: prop.value})
    element = flows.c.props[prop.name]
    typed: ColumnElement[Any]
    if prop.kind is str:
        typed = element.as_string()
    elif prop.kind is bool:
        typed = element.as_boolean()
    elif prop.kind is int:
        typed = element.as_integer()
    else:
        typed = element.as_float()
    # SQLite's JSON functions raise on malformed text (a row written before the boundary,
    # or NaN): such a row simply does not match instead of failing the page.
    return case((func.json_valid(flows.c.props) == 1, typed), else_=None) == prop.value


def order_column(f: ListFilter) -> Any:
    """Return the timestamp a date-range list is ordered by (``None``: by id).

    A created (else updated) range lists by that timestamp, newest first, so the
    (type, created_at) / (type, updated_at) index starts at the window instead of walking
    the primary key down to it.
    """
    if f.created_from is not None or f.created_to is not None:
        return flows.c.created_at
    if f.updated_from is not None or f.updated_to is not None:
        return flows.c.updated_at
    return None


def list_page(
    session: Session, type_name: str, f: ListFilter, size: int, floor: int | None = None
) -> Page:
    """Return one page of flows matching ``f``, by keyset (never OFFSET), newest first.

    The keyset is the id, or (timestamp, id) under a date range (:func:`order_column`);
    cursors are flow ids either way, the cursor flow's timestamp is read by its id.
    """
    # Props as stored text (decoded by the page): a row the driver cannot decode stays listed.
    q = select(*FLOW_COLUMNS).where(and_(*conditions(session, type_name, f, floor)))
    q = q.limit(size + 1)
    limit = SQLITE_SEARCH_LIMIT if floor is not None else None
    col = order_column(f)
    key: Any = flows.c.id if col is None else tuple_(col, flows.c.id)
    order = [flows.c.id] if col is None else [col, flows.c.id]

    def cursor(flow_id: int) -> Any:
        if col is None:
            return flow_id
        at = session.execute(select(col).where(flows.c.id == flow_id)).scalar_one_or_none()
        # A cursor flow deleted meanwhile: continue from its id alone.
        return flow_id if at is None else tuple_(literal(at, col.type), literal(flow_id))

    def past(value: Any, older: bool) -> ColumnElement[bool]:
        if col is not None and not isinstance(value, int):
            cmp: ColumnElement[bool] = key < value if older else key > value
        else:
            cmp = flows.c.id < value if older else flows.c.id > value
        return cmp

    if f.after is not None:
        asc = q.where(past(cursor(f.after), older=False)).order_by(*(c.asc() for c in order))
        rows = list(session.execute(asc))
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        return Page(
            rows=rows,
            older=rows[-1].id if rows else f.after + 1,
            newer=rows[0].id if rows and more_newer else None,
            scan_limit=limit,
        )
    if f.before is not None:
        q = q.where(past(cursor(f.before), older=True))
    rows = list(session.execute(q.order_by(*(c.desc() for c in order))))
    more_older = len(rows) > size
    rows = rows[:size]
    return Page(
        rows=rows,
        older=rows[-1].id if rows and more_older else None,
        newer=(rows[0].id if rows else f.before - 1) if f.before is not None else None,
        scan_limit=limit,
    )


def artefact_counts(session: Session, flow_ids: Sequence[int]) -> dict[int, int]:
    """Return the number of artefact versions of each flow in ``flow_ids`` (one query)."""
    if not flow_ids:
        return {}
    q = (
        select(artefacts.c.flow_id, func.count())
        .where(artefacts.c.flow_id.in_(flow_ids))
        .group_by(artefacts.c.flow_id)
    )
    return {flow_id: n for flow_id, n in session.execute(q)}


def errored_by_state(session: Session, type_name: str, f: ListFilter) -> dict[str, int]:
    """Return how many errored flows match ``f``, per state (the bulk retry's preview).

    From the counters when only states narrow the list (exact); else counted from the
    flows, reading at most :data:`COUNT_LIMIT` + 1 rows: a total above :data:`COUNT_LIMIT`
    means "more than that".
    """
    if counted_by_state(f) and counters.ready(session):
        c = state_counts_table.c
        q = select(c.state, func.sum(c.errored)).where(c.type == type_name)
        if f.states:
            q = q.where(c.state.in_(f.states))
        found = session.execute(q.group_by(c.state))
        return {state: int(n) for state, n in found if n}
    where = conditions(session, type_name, f.for_bulk())
    first = select(flows.c.state).where(*where).limit(COUNT_LIMIT + 1).subquery()
    q = select(first.c.state, func.count()).group_by(first.c.state)
    return {state: n for state, n in session.execute(q)}


def errored_batch(
    session: Session, type_name: str, f: ListFilter, after_id: int, size: int
) -> list[Row[Any]]:
    """Return the next ``size`` errored flows matching ``f`` with an id above ``after_id``.

    Their props are stored text: build flows with :func:`.stored.to_flow`.
    """
    q = (
        select(*FLOW_COLUMNS)  # props as text: one unreadable row must not stop the batch
        .where(*conditions(session, type_name, f.for_bulk()), flows.c.id > after_id)
        .order_by(flows.c.id)
        .limit(size)
    )
    return list(session.execute(q))


def stalled_counts(
    session: Session, cells: Sequence[StateCount], now: datetime | None = None
) -> dict[tuple[str, str], Matching]:
    """Return ``{(type, state): stalled flows}`` for the timed states among ``cells``.

    One statement: per (type, state) with a timeout and flows in it, a count of at most
    :data:`COUNT_LIMIT` + 1 entries of the (type, state, state_entered_at) index, glued
    with UNION ALL. No statement when no state of ``cells`` can hold stalled flows.
    """
    moment = now or utcnow()
    branches = []
    for c in cells:
        cls = find_flow_type(c.type)
        spec = cls.graph().state(c.state) if cls is not None else None
        if spec is None or spec.timeout is None or c.total - c.errored <= 0:
            continue
        capped = (
            select(literal(1))
            .select_from(flows)
            .where(
                flows.c.type == c.type,
                flows.c.state == c.state,
                flows.c.state_entered_at < moment - spec.timeout,
            )
            .limit(COUNT_LIMIT + 1)
            .subquery()
        )
        branches.append(select(literal(c.type), literal(c.state), func.count()).select_from(capped))
    if not branches:
        return {}
    q = union_all(*branches) if len(branches) > 1 else branches[0]
    found: dict[tuple[str, str], Matching] = {}
    for type_, state, n in session.execute(q):
        if n:
            found[(type_, state)] = (
                Matching(COUNT_LIMIT, capped=True) if n > COUNT_LIMIT else Matching(n)
            )
    return found


def stalled_batch(
    session: Session, type_name: str, f: ListFilter, after_id: int, size: int
) -> list[Row[Any]]:
    """Return the next ``size`` stalled flows matching ``f`` with an id above ``after_id``."""
    return _stalled_rows(session, type_name, f.for_bulk_fail(), after=after_id, size=size)


def stalled_page(session: Session, type_name: str, f: ListFilter, size: int) -> Page:
    """Return one page of *stalled* flows matching ``f``: :func:`list_page` for ``stalled=1``.

    An OR of "state = s AND state_entered_at < cutoff(s)" over the timed states is not
    an index range, so each timed state gets its own keyset branch (glued with UNION ALL),
    where the planner picks per state between the (type, state, id) index and the
    (type, state, state_entered_at) range: few or many stalled flows, no table walk.
    """
    if f.after is not None:
        rows = _stalled_rows(session, type_name, f, after=f.after, size=size + 1)
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        return Page(
            rows=rows,
            older=rows[-1].id if rows else f.after + 1,
            newer=rows[0].id if rows and more_newer else None,
        )
    rows = _stalled_rows(session, type_name, f, before=f.before, size=size + 1)
    more_older = len(rows) > size
    rows = rows[:size]
    return Page(
        rows=rows,
        older=rows[-1].id if rows and more_older else None,
        newer=(rows[0].id if rows else f.before - 1) if f.before is not None else None,
    )


def _stalled_rows(
    session: Session,
    type_name: str,
    f: ListFilter,
    *,
    size: int,
    before: int | None = None,
    after: int | None = None,
) -> list[Row[Any]]:
    """Return ``size`` stalled flows matching ``f``: ids descending below ``before``, or
    ascending above ``after`` when it is given."""
    cls = find_flow_type(type_name)
    if cls is None:
        return []
    moment = utcnow()
    rest = conditions(session, type_name, replace(f, stalled=None, states=()))
    ascending = after is not None
    branches = []
    for spec in cls.graph().timed_states:
        if spec.timeout is None or (f.states and spec.name not in f.states):
            continue
        q = select(*FLOW_COLUMNS).where(
            *rest,
            flows.c.state == spec.name,
            flows.c.state_entered_at < moment - spec.timeout,
        )
        if after is not None:
            q = q.where(flows.c.id > after)
        elif before is not None:
            q = q.where(flows.c.id < before)
        order = flows.c.id.asc() if ascending else flows.c.id.desc()
        branches.append(q.order_by(order).limit(size).subquery())
    if not branches:
        return []
    glued = union_all(*(select(b) for b in branches)).subquery()
    order = glued.c.id.asc() if ascending else glued.c.id.desc()
    return list(session.execute(select(glued).order_by(order).limit(size)))


def stalled_matching(f: ListFilter, stalled: Mapping[str, Matching]) -> Matching | None:
    """Return how many flows match ``f`` from the per-state stalled counts, when they tell.

    They tell for ``stalled=1`` narrowed by states only (``errored=1`` then matches none);
    ``None`` otherwise (count with :func:`matching`).
    """
    if f.stalled is not True or not counted_by_state(replace(f, stalled=None)):
        return None
    if f.errored:
        return Matching(0)
    found = [m for state, m in stalled.items() if not f.states or state in f.states]
    n = sum(m.n for m in found)
    capped = any(m.capped for m in found)
    return Matching(n, capped=capped)


def stalled_by_state(
    session: Session, type_name: str, counts: Mapping[str, int], errored: Mapping[str, int]
) -> dict[str, Matching]:
    """Return ``{state: stalled flows}`` of one type (at most one statement, see above)."""
    cells = [StateCount(type_name, s, n, errored.get(s, 0)) for s, n in counts.items()]
    return {state: m for (_, state), m in stalled_counts(session, cells).items()}
