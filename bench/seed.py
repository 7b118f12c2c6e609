"""Bulk-seed flows for benchmarks and by hand: a million flows in minutes, set-based SQL only.

Each seeded flow looks like one the engine made: it sits in a declared state of its type,
its history is the shortest path of declared (non-retry) transitions from the initial state
to that state (``seq`` 1..n, unique per flow), transitions that persist an artefact have an
artefact row pointing at them, a flow that passed through an error state keeps
``last_error_*``, and a final one has ``completed_at``. States are spread by a fixed share:
``--errored`` (default 5 %) split over the error states, ``--final`` (default 80 %) mostly
on each type's first final state, the rest over the in-progress states.

Nothing goes row by row through Python: a small plan (type, state, hash bucket) and the
paths are put in temporary tables, then each batch is one ``INSERT ... SELECT`` over
``generate_series`` (PostgreSQL) or a recursive CTE (SQLite) per table; the state counters'
triggers are off meanwhile and the counters rebuilt at the end. Flow ids are
``max(id) + g``; the flow's bucket is ``(g * 7919 + 13) % 10007``, a permutation of the
residues, so every state's flows are spread evenly over the id range (errored flows are
not all at the end). SQLite is written with ``synchronous=OFF``; ``ANALYZE`` runs last
(``VACUUM ANALYZE`` on PostgreSQL, as autovacuum would).

    .venv/bin/python bench/seed.py sqlite:///instance/big.db --flows 1000000 --reset
    .venv/bin/python bench/seed.py postgresql+psycopg://postgres@127.0.0.1:5432/flows -n 100000
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
)

from flowstate_web import Flow, counters
from flowstate_web.graph import FlowGraph, TransitionSpec
from flowstate_web.models import flows, metadata

#: Hash buckets: ``(g * MULTIPLIER + 13) % BUCKETS`` visits every bucket once per BUCKETS ids.
BUCKETS = 10007
MULTIPLIER = 7919
#: Seconds between two transitions of one seeded flow.
STEP_SECONDS = 5
DEFAULT_TYPES = (
    "flowstate_web.demo.sync_flow:SyncThirdPartyApiFlow",
    "flowstate_web.demo.orders_flow:OrderFulfilmentFlow",
)
SEED_ERROR_TYPE = "TimeoutError"
SEED_ERROR_MESSAGE = "upstream timed out after 30s (seeded)"
SEED_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "jobs.py", line 12, in run\n'
    "    response = api.fetch(flow.third_party_id)\n"
    f"{SEED_ERROR_TYPE}: {SEED_ERROR_MESSAGE}\n"
)

_plan_md = MetaData()
PLAN = Table(
    "_seed_plan",
    _plan_md,
    Column("id", Integer, primary_key=True),
    Column("type", String(200)),
    Column("state", String(200)),
    Column("lo", Integer),
    Column("hi", Integer),
    Column("errored", Boolean),
    Column("final", Boolean),
    Column("nsteps", Integer),
    Column("err_step", Integer),
    Column("err_type", String(200)),
    Column("err_msg", Text),
    prefixes=["TEMPORARY"],
)
STEPS = Table(
    "_seed_steps",
    _plan_md,
    Column("plan_id", Integer),
    Column("seq", Integer),
    Column("name", String(200)),
    Column("from_state", String(200)),
    Column("to_state", String(200)),
    Column("err_type", String(200)),
    Column("err_msg", Text),
    Column("err_tb", Text),
    Column("artefact", String(200)),
    prefixes=["TEMPORARY"],
)


@dataclass(frozen=True, slots=True)
class PlanRow:
    """The flows of one (type, state): their hash buckets and their path of transitions."""

    id: int
    type: str
    state: str
    lo: int
    hi: int
    errored: bool
    final: bool
    initial: str
    path: tuple[TransitionSpec, ...]
    error_states: frozenset[str]

    @property
    def err_step(self) -> int | None:
        """Return the seq of the last step into an error state (None if it never errored)."""
        hits = [i for i, t in enumerate(self.path, 1) if t.target in self.error_states]
        return hits[-1] if hits else None


def load_types(specs: Sequence[str]) -> list[type[Flow]]:
    """Import ``module:Class`` flow types."""
    found: list[type[Flow]] = []
    for spec in specs:
        module, _, name = spec.partition(":")
        cls = getattr(importlib.import_module(module), name)
        if not (isinstance(cls, type) and issubclass(cls, Flow)):
            raise SystemExit(f"{spec} is not a Flow subclass")
        found.append(cls)
    return found


def shortest_paths(graph: FlowGraph) -> dict[str, tuple[TransitionSpec, ...]]:
    """Return the shortest path of non-retry transitions from the initial state to each state."""
    found: dict[str, tuple[TransitionSpec, ...]] = {graph.initial: ()}
    todo = deque([graph.initial])
    while todo:
        state = todo.popleft()
        for t in graph.transitions_from(state):
            if not t.retry and t.target not in found:
                found[t.target] = (*found[state], t)
                todo.append(t.target)
    return found


def shares(cls: type[Flow], errored: float, final: float) -> dict[str, float]:
    """Return each reachable state's share of ``cls``'s flows (summing to 1)."""
    paths = shortest_paths(cls.graph())
    reachable = [s for s in cls.states if s in paths]  # declared order: finals[0] is usual
    errs = [s for s in reachable if s in cls.error_states]
    finals = [s for s in reachable if s in cls.final_states]
    others = [s for s in reachable if s not in cls.error_states and s not in cls.final_states]
    out: dict[str, float] = {}
    for s in errs:
        out[s] = errored / len(errs)
    if finals:
        # Most flows finish the usual way; the other final states (cancelled...) share 10 %.
        out[finals[0]] = final * (0.9 if len(finals) > 1 else 1.0)
        for s in finals[1:]:
            out[s] = final * 0.1 / (len(finals) - 1)
    rest = 1.0 - sum(out.values())
    for s in others:
        out[s] = rest / len(others)
    return out


def build_plan(types: Sequence[type[Flow]], errored: float, final: float) -> list[PlanRow]:
    """Split the BUCKETS hash buckets over (type, state) by the shares, types equally."""
    weights: list[tuple[type[Flow], str, float]] = []
    for cls in types:
        for state, share in shares(cls, errored, final).items():
            weights.append((cls, state, share / len(types)))
    plan: list[PlanRow] = []
    lo, acc = 0, 0.0
    for i, (cls, state, w) in enumerate(weights):
        acc += w
        hi = BUCKETS - 1 if i == len(weights) - 1 else max(lo, round(acc * BUCKETS) - 1)
        path = shortest_paths(cls.graph())[state]
        plan.append(
            PlanRow(
                id=i + 1,
                type=cls.type_name,
                state=state,
                lo=lo,
                hi=hi,
                errored=state in cls.error_states,
                final=state in cls.final_states,
                initial=cls.initial_state,
                path=path,
                error_states=cls.error_states,
            )
        )
        lo = hi + 1
    return plan


def _props_sql(types: Sequence[type[Flow]], dialect: str) -> tuple[str, dict[str, Any]]:
    """Return a SQL expression building each type's props from ``s.g``, and its parameters."""
    build = "jsonb_build_object" if dialect == "postgresql" else "json_object"
    params: dict[str, Any] = {}
    whens: list[str] = []
    for i, cls in enumerate(types):
        params[f"type_{i}"] = cls.type_name
        parts: list[str] = []
        for name, prop in cls.prop_fields.items():
            kind = prop.runtime_type
            if kind is str:
                value = f"'{name}-' || s.g"
            elif kind is bool:
                value = (
                    "(s.g % 2 = 0)"
                    if dialect == "postgresql"
                    else "json(iif(s.g % 2, 'false', 'true'))"
                )
            elif kind is int:
                value = "(s.g % 997 + 1)"
            elif kind is float:
                value = "(s.g % 997 + 0.5)"
            else:
                continue  # structured props are optional in the demo types
            parts.append(f"'{name}', {value}")
        whens.append(f"WHEN :type_{i} THEN {build}({', '.join(parts)})")
    return f"CASE p.type {' '.join(whens)} END", params


def _ts(dialect: str, offset_sql: str) -> str:
    """Return the SQL of the timestamp ``:base + s.g * :gap + offset`` seconds (UTC)."""
    seconds = f"(:base + s.g * :gap + {offset_sql})"
    if dialect == "postgresql":
        return f"to_timestamp({seconds})"
    # SQLAlchemy's SQLite DateTime format; read back as UTC by the engine.
    return f"(strftime('%Y-%m-%d %H:%M:%S', {seconds}, 'unixepoch') || '.000000')"


def _series(dialect: str) -> tuple[str, str]:
    """Return (WITH prefix, FROM item) producing ``s.g`` for g in ``:a .. :b``."""
    if dialect == "postgresql":
        return "", "generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) AS s(g)"
    return "WITH RECURSIVE s(g) AS (SELECT :a UNION ALL SELECT g + 1 FROM s WHERE g < :b) ", "s"


def seed(
    engine: Engine,
    n: int,
    *,
    types: Sequence[type[Flow]] | None = None,
    errored: float = 0.05,
    final: float = 0.80,
    batch: int = 250_000,
    days: float = 90.0,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[tuple[str, str], int]:
    """Append ``n`` flows (with history and artefacts) to the database of ``engine``.

    Creates the engine's tables if missing. Returns the number of flows per (type, state)
    in the whole table afterwards.
    """
    types = list(types or load_types(DEFAULT_TYPES))
    dialect = engine.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise SystemExit(f"unsupported database {dialect}")
    metadata.create_all(engine)
    plan = build_plan(types, errored, final)
    props_sql, props_params = _props_sql(types, dialect)
    with_, from_ = _series(dialect)
    bucket = f"((s.g * {MULTIPLIER} + 13) % {BUCKETS})"
    flows_sql = text(
        f"{with_}INSERT INTO flowstate_flows (id, type, state, errored, seq, props, created_at,"
        " updated_at, state_entered_at, last_errored_at, completed_at, last_error_type,"
        " last_error_message)"
        f" SELECT :id0 + s.g, p.type, p.state, p.errored, p.nsteps, {props_sql},"
        f" {_ts(dialect, '0')}, {_ts(dialect, f'p.nsteps * {STEP_SECONDS}')},"
        f" {_ts(dialect, f'p.nsteps * {STEP_SECONDS}')},"
        f" CASE WHEN p.err_step IS NOT NULL THEN {_ts(dialect, f'p.err_step * {STEP_SECONDS}')}"
        " END,"
        f" CASE WHEN p.final THEN {_ts(dialect, f'p.nsteps * {STEP_SECONDS}')} END,"
        " p.err_type, p.err_msg"
        f" FROM {from_} JOIN _seed_plan p ON {bucket} BETWEEN p.lo AND p.hi ORDER BY s.g"
    )
    transitions_sql = text(
        f"{with_}INSERT INTO flowstate_transitions (flow_id, seq, name, from_state, to_state,"
        " created_at, actor, reason, error_type, error_message, error_traceback, meta)"
        f" SELECT :id0 + s.g, t.seq, t.name, t.from_state, t.to_state,"
        f" {_ts(dialect, f't.seq * {STEP_SECONDS}')}, NULL, NULL, t.err_type, t.err_msg,"
        " t.err_tb, NULL"
        f" FROM {from_} JOIN _seed_plan p ON {bucket} BETWEEN p.lo AND p.hi"
        " JOIN _seed_steps t ON t.plan_id = p.id ORDER BY s.g, t.seq"
    )
    payload = (
        "jsonb_build_object('id', tr.flow_id, 'status', 200, 'source', 'seed',"
        " 'body', 'lorem ipsum dolor sit amet')"
        if dialect == "postgresql"
        else "json_object('id', tr.flow_id, 'status', 200, 'source', 'seed',"
        " 'body', 'lorem ipsum dolor sit amet')"
    )
    artefacts_sql = text(
        "INSERT INTO flowstate_artefacts (flow_id, transition_id, name, payload, created_at)"
        f" SELECT tr.flow_id, tr.id, t.artefact, {payload}, tr.created_at"
        " FROM flowstate_transitions tr"
        " JOIN flowstate_flows f ON f.id = tr.flow_id"
        " JOIN _seed_plan p ON p.type = f.type AND p.state = f.state"
        " JOIN _seed_steps t ON t.plan_id = p.id AND t.seq = tr.seq"
        " WHERE tr.flow_id > :id0 AND tr.flow_id <= :id1 AND t.artefact IS NOT NULL"
    )
    start = datetime.now(UTC) - timedelta(days=days)
    params = {
        **props_params,
        "base": start.timestamp(),
        "gap": days * 86400 / max(n, 1),
    }
    with engine.connect() as conn:
        _prepare(conn, dialect, plan)
        # The state counters' triggers would fire for every seeded row (SQLite) or batch;
        # seeding without them and counting once at the end is twice as fast on SQLite.
        recount = counters.installed(conn)
        if recount:
            counters.uninstall(conn)
            conn.commit()
        id0 = conn.execute(select(func.coalesce(func.max(flows.c.id), 0))).scalar_one()
        done = 0
        t0 = time.perf_counter()
        while done < n:
            a, b = done + 1, min(done + batch, n)
            bounds = {"a": a, "b": b, "id0": id0}
            conn.execute(flows_sql, {**params, **bounds})
            conn.execute(transitions_sql, {**params, **bounds})
            if dialect == "postgresql":
                # Fresh rows have no statistics yet; without them the artefact join below
                # picks nested loops over the whole history (minutes instead of seconds).
                conn.execute(text("ANALYZE flowstate_flows, flowstate_transitions"))
            conn.execute(artefacts_sql, {"id0": id0 + a - 1, "id1": id0 + b})
            conn.commit()
            done = b
            log(f"  {done:>10,} / {n:,} flows  ({time.perf_counter() - t0:.1f}s)")
        if dialect == "postgresql":
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('flowstate_flows', 'id'),"
                    " (SELECT max(id) FROM flowstate_flows))"
                )
            )
            conn.commit()
        if recount:
            counters.install(conn)  # triggers back on, counters rebuilt from the flows
            conn.commit()
        _analyze(conn, dialect)
        counts = conn.execute(
            select(flows.c.type, flows.c.state, func.count()).group_by(flows.c.type, flows.c.state)
        )
        return {(t, s): c for t, s, c in counts}


def _prepare(conn: Connection, dialect: str, plan: Sequence[PlanRow]) -> None:
    """Create and fill the temporary plan tables on ``conn``'s connection."""
    if dialect == "postgresql":
        conn.execute(text("SET synchronous_commit = off"))
    else:
        conn.exec_driver_sql("PRAGMA synchronous=OFF")
        conn.exec_driver_sql("PRAGMA cache_size=-262144")  # 256 MiB
        conn.exec_driver_sql("PRAGMA temp_store=MEMORY")
    _plan_md.drop_all(conn)
    _plan_md.create_all(conn)
    conn.execute(
        PLAN.insert(),
        [
            {
                "id": p.id,
                "type": p.type,
                "state": p.state,
                "lo": p.lo,
                "hi": p.hi,
                "errored": p.errored,
                "final": p.final,
                "nsteps": len(p.path),
                "err_step": p.err_step,
                "err_type": SEED_ERROR_TYPE if p.err_step else None,
                "err_msg": SEED_ERROR_MESSAGE if p.err_step else None,
            }
            for p in plan
        ],
    )
    steps = [
        {
            "plan_id": p.id,
            "seq": i,
            "name": t.name,
            "from_state": p.path[i - 2].target if i > 1 else p.initial,
            "to_state": t.target,
            "err_type": SEED_ERROR_TYPE if t.target in p.error_states else None,
            "err_msg": SEED_ERROR_MESSAGE if t.target in p.error_states else None,
            "err_tb": SEED_TRACEBACK if t.target in p.error_states else None,
            "artefact": t.persists,
        }
        for p in plan
        for i, t in enumerate(p.path, 1)
    ]
    if steps:
        conn.execute(STEPS.insert(), steps)
    if dialect == "postgresql":
        conn.execute(text("ANALYZE _seed_plan, _seed_steps"))  # autovacuum skips temp tables
    conn.commit()


def _analyze(conn: Connection, dialect: str) -> None:
    """Gather statistics; on PostgreSQL also VACUUM, as autovacuum would have by now.

    Without the visibility map a fresh table can never use index-only scans, which a
    production table (autovacuumed) does.
    """
    conn.commit()
    if dialect == "postgresql":
        vacuum = conn.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        with vacuum:
            vacuum.execute(
                text(
                    "VACUUM ANALYZE flowstate_flows, flowstate_transitions,"
                    " flowstate_artefacts, flowstate_state_counts"
                )
            )
    else:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def make_engine(url: str) -> Engine:
    """Return an engine on ``url`` (SQLite connections get a busy timeout)."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA busy_timeout=5000")

    return engine


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="SQLAlchemy URL of the target database")
    parser.add_argument("-n", "--flows", type=int, default=1000, help="flows to add")
    parser.add_argument("--errored", type=float, default=0.05, help="share in error states")
    parser.add_argument("--final", type=float, default=0.80, help="share in final states")
    parser.add_argument("--batch", type=int, default=250_000, help="flows per transaction")
    parser.add_argument("--reset", action="store_true", help="drop and recreate the tables")
    parser.add_argument(
        "--type", action="append", dest="types", help="module:FlowClass (repeatable)"
    )
    args = parser.parse_args(argv)
    engine = make_engine(args.url)
    if args.reset:
        metadata.drop_all(engine)
    t0 = time.perf_counter()
    counts = seed(
        engine,
        args.flows,
        types=load_types(args.types or DEFAULT_TYPES),
        errored=args.errored,
        final=args.final,
        batch=args.batch,
        log=print,
    )
    print(f"seeded {args.flows:,} flows in {time.perf_counter() - t0:.1f}s")
    for (type_, state), count in sorted(counts.items()):
        print(f"  {type_:<28} {state:<34} {count:>10,}")
    engine.dispose()


if __name__ == "__main__":
    main()
