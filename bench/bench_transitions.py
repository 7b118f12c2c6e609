"""Transitions per second: the engine against the raw-driver floor, on SQLite and PostgreSQL.

The **floor** issues, through the bare driver (``sqlite3`` / ``psycopg``), the very SQL the
engine emits for one transition -- lock the flow row and read it, INSERT the history row
(RETURNING id), UPDATE the flow row, INSERT the artefact row if any -- in one transaction per
transition, then commits. The SQL text is captured from the engine itself at start-up (so the
two can never drift apart) and checked against the expected shape; the floor only binds
parameters (a timestamp, JSON for ``meta``/artefacts, the row's ``seq`` + 1).

The **engine** is ``flow.ping()`` / ``flow.pong()`` through a plain SQLAlchemy ``Session``
(``session=``) and through Flask-SQLAlchemy's ``db.session`` inside an app context.

Runners are interleaved in rotating order, ``--repeat`` times, and medians are reported;
the ratio column is the median over repetitions of engine/floor time per transition,
each pair measured back to back. ``--memory N`` runs N transitions through the engine on
SQLite and samples RSS and the number of live Python objects at intervals.

    .venv/bin/python bench/bench_transitions.py [--n 2000] [--repeat 5]
        [--backends sqlite,postgresql] [--memory 100000] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sqlite3
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Connection, Engine, bindparam, create_engine, event, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    apply_sqlite_pragmas,
    install_sqlite_pragmas,
    machine,
    markdown_table,
    median,
    postgres_database,
    rss_kib,
    sqlite_database,
)

from flowstate_web import Artefact, Flow, FlowState, State, _fastpath, transition
from flowstate_web.models import artefacts, flows, metadata, transitions

# -- the flows -------------------------------------------------------------------------------

#: The artefact of scenario (b): a small dict, as an API response summary would be.
PAYLOAD: dict[str, Any] = {"status": 200, "id": "tp-4711", "ok": True, "items": [1, 2, 3]}


class PingPong(Flow, type_name="bench_pingpong"):
    """Scenario (a): two states, two transitions, no artefact."""

    a = State(initial=True)
    b = State()

    @transition(source=a, target=b)
    def ping(self) -> None:
        pass

    @transition(source=b, target=a)
    def pong(self) -> None:
        pass


class WithArtefact(Flow, type_name="bench_artefact"):
    """Scenario (b): the same ping-pong, each transition persisting a small dict."""

    a = State(initial=True)
    b = State()
    result = Artefact(dict)

    @transition(source=a, target=b, persists=result)
    def ping(self) -> dict[str, Any]:
        return dict(PAYLOAD)

    @transition(source=b, target=a, persists=result)
    def pong(self) -> dict[str, Any]:
        return dict(PAYLOAD)


CALLBACKS = [0]


def _count(flow: Flow) -> None:
    CALLBACKS[0] += 1


class MemoryMix(Flow, type_name="bench_memory"):
    """The memory run: a transition with an after-commit callback, one with an artefact."""

    a = State(initial=True)
    b = State()
    result = Artefact(dict)

    @transition(source=a, target=b, after=_count)
    def ping(self) -> None:
        pass

    @transition(source=b, target=a, persists=result)
    def pong(self) -> dict[str, Any]:
        return dict(PAYLOAD)


SCENARIOS: dict[str, type[Flow]] = {"ping-pong": PingPong, "artefact": WithArtefact}


def engine_steps(flow: Any, n: int) -> None:
    """Run ``n`` transitions on ``flow``, alternating ping and pong."""
    for _ in range(n):
        if flow.state == "a":
            flow.ping()
        else:
            flow.pong()


# -- the SQL the engine emits ----------------------------------------------------------------


@dataclass
class EngineSQL:
    """The statements of one transition, as the engine sent them to the driver."""

    lock: str
    insert_history: str
    update_flow: str
    insert_artefact: str
    params: dict[str, Any] = field(default_factory=dict)


#: Column order the floor binds positionally on SQLite; checked against the captured SQL.
HISTORY_COLS = (
    "flow_id, seq, name, from_state, to_state, created_at, actor, reason,"
    " error_type, error_message, error_traceback, meta"
)
UPDATE_COLS = "state, errored, seq, updated_at, state_entered_at"
ARTEFACT_COLS = "flow_id, transition_id, name, payload, created_at"


def capture_sql(engine: Engine) -> EngineSQL:
    """Run one ping (no artefact) and one pong (artefact) and record the SQL they emitted."""
    seen: list[tuple[str, Any]] = []

    def listen(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: Any) -> None:
        seen.append((statement, params))

    with Session(engine) as s:
        flow = WithArtefact.create(session=s)
        event.listen(engine, "before_cursor_execute", listen)
        try:
            flow.ping()
        finally:
            event.remove(engine, "before_cursor_execute", listen)
    lock, ins, upd, art = (st for st, _ in seen)
    # A statement listener makes the engine run its statements through SQLAlchemy (so the
    # listener sees them); without one the engine sends the same SQL text, compiled once by
    # SQLAlchemy, straight to the driver (flowstate_web._fastpath). Check they are the same.
    with Session(engine) as s:
        WithArtefact.get(flow.id, session=s).pong()
    direct = {st.sql for st in _fastpath._COMPILED[engine.dialect]._statements.values()}
    if not {lock, ins, upd, art} <= direct:
        raise SystemExit("the engine's direct SQL differs from SQLAlchemy's:\n" + "\n".join(direct))
    if not (
        lock.startswith(("UPDATE flowstate_flows SET seq", "SELECT flowstate_flows.id"))
        and f"({HISTORY_COLS}) VALUES" in ins
        and "RETURNING" in ins
        and re.sub(r"=[^,]*?(,|\sWHERE)", r"\1", upd).startswith(
            f"UPDATE flowstate_flows SET {UPDATE_COLS} WHERE"
        )
        and f"({ARTEFACT_COLS}) VALUES" in art
    ):
        raise SystemExit(
            "the engine's SQL changed shape; update the floor:\n" + "\n".join(st for st, _ in seen)
        )
    return EngineSQL(lock, ins, upd, art, {st: p for st, p in seen})


# -- the floor: the same SQL through the raw driver ------------------------------------------

SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy's SQLite DATETIME binds a datetime


def sqlite_floor(conn: sqlite3.Connection, sql: EngineSQL, fid: int, n: int, art: bool) -> None:
    """Run ``n`` transitions on flow ``fid`` with ``sqlite3``, one transaction each."""
    lock, ins, upd, ins_art = sql.lock, sql.insert_history, sql.update_flow, sql.insert_artefact
    dumps = json.dumps
    for _ in range(n):
        row = conn.execute(lock, (fid,)).fetchone()
        state, seq = row[2], row[4] + 1
        name, target = ("ping", "b") if state == "a" else ("pong", "a")
        ts = datetime.now(UTC).strftime(SQLITE_TS)
        tid = conn.execute(
            ins, (fid, seq, name, state, target, ts, None, None, None, None, None, "null")
        ).fetchone()[0]
        conn.execute(upd, (target, 0, seq, ts, ts, fid))
        if art:
            conn.execute(ins_art, (fid, tid, "result", dumps(PAYLOAD), ts))
        conn.commit()


def pg_floor(conn: psycopg.Connection[Any], sql: EngineSQL, fid: int, n: int, art: bool) -> None:
    """Run ``n`` transitions on flow ``fid`` with ``psycopg``, one transaction each."""
    lock, ins, upd, ins_art = sql.lock, sql.insert_history, sql.update_flow, sql.insert_artefact
    (lock_key,) = sql.params[lock]
    (upd_key,) = set(sql.params[upd]) - set(UPDATE_COLS.split(", "))
    # Bind JSON the way the engine did (psycopg's Json or Jsonb, whichever the column uses).
    wrap = type(sql.params[ins]["meta"])
    null = wrap(None)
    for _ in range(n):
        row = conn.execute(lock, {lock_key: fid}).fetchone()
        assert row is not None
        state, seq = row[2], row[4] + 1
        name, target = ("ping", "b") if state == "a" else ("pong", "a")
        ts = datetime.now(UTC)
        cur = conn.execute(
            ins,
            {
                "flow_id": fid,
                "seq": seq,
                "name": name,
                "from_state": state,
                "to_state": target,
                "created_at": ts,
                "actor": None,
                "reason": None,
                "error_type": None,
                "error_message": None,
                "error_traceback": None,
                "meta": null,
            },
        )
        tid = cur.fetchone()[0]  # type: ignore[index]
        conn.execute(
            upd,
            {
                "state": target,
                "errored": False,
                "seq": seq,
                "updated_at": ts,
                "state_entered_at": ts,
                upd_key: fid,
            },
        )
        if art:
            conn.execute(
                ins_art,
                {
                    "flow_id": fid,
                    "transition_id": tid,
                    "name": "result",
                    "payload": wrap(PAYLOAD),
                    "created_at": ts,
                },
            ).fetchall()
        conn.commit()


# -- one backend -----------------------------------------------------------------------------


@dataclass
class Backend:
    """Everything needed to run every runner against one database."""

    name: str
    url: str
    engine: Engine
    app: Flask
    db: SQLAlchemy
    sql: EngineSQL
    raw: Any  # sqlite3.Connection | psycopg.Connection
    floor: Callable[..., None]


@contextmanager
def backend(name: str) -> Iterator[Backend]:
    """Set up ``name`` (``sqlite`` or ``postgresql``): database, tables, engine, app, raw."""
    with _database(name) as url:
        is_sqlite = name == "sqlite"
        engine = create_engine(url)
        if is_sqlite:
            install_sqlite_pragmas(engine)
        metadata.create_all(engine)
        app = Flask("flowstate_bench")
        app.config.update(
            SQLALCHEMY_DATABASE_URI=url, SQLALCHEMY_RECORD_QUERIES=False, FLOWSTATE_ADMIN=False
        )
        db = SQLAlchemy(app)
        FlowState(app, db=db)
        if is_sqlite:
            with app.app_context():
                install_sqlite_pragmas(db.engine)
        sql = capture_sql(engine)
        raw: Any
        if is_sqlite:
            raw = sqlite3.connect(make_url(url).database or "")
            apply_sqlite_pragmas(raw)
            floor: Callable[..., None] = sqlite_floor
        else:
            raw = psycopg.connect(
                make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            )
            floor = pg_floor
        try:
            yield Backend(name, url, engine, app, db, sql, raw, floor)
        finally:
            raw.close()
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
            engine.dispose()


@contextmanager
def _database(name: str) -> Iterator[str]:
    if name == "sqlite":
        with sqlite_database() as (url, _path):
            yield url
    elif name == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        raise SystemExit(f"unknown backend {name!r} (sqlite, postgresql)")


# Reference layers: the engine's statements, prebuilt the way the engine builds them, run
# through SQLAlchemy without any engine logic. They show how much of the engine/floor gap
# is SQLAlchemy's own per-statement and per-transaction cost.
_REF_LOCK = {
    "sqlite": update(flows)
    .where(flows.c.id == bindparam("flow_id"))
    .values(seq=flows.c.seq)
    .returning(*flows.c),
    "postgresql": select(flows).where(flows.c.id == bindparam("flow_id")).with_for_update(),
}
_REF_HISTORY = insert(transitions).returning(transitions.c.id)
_REF_UPDATE = update(flows).where(flows.c.id == bindparam("flow_id"))
_REF_ARTEFACT = insert(artefacts)


def sqlalchemy_steps(
    conn: Connection | Session,
    commit: Callable[[], None],
    dialect: str,
    fid: int,
    n: int,
    art: bool,
) -> None:
    """Run ``n`` transitions of flow ``fid`` as bare SQLAlchemy statements on ``conn``."""
    lock = _REF_LOCK[dialect]
    for _ in range(n):
        row = conn.execute(lock, {"flow_id": fid}).one()
        state, seq = row.state, row.seq + 1
        name, target = ("ping", "b") if state == "a" else ("pong", "a")
        ts = datetime.now(UTC)
        tid = conn.execute(
            _REF_HISTORY,
            {
                "flow_id": fid,
                "seq": seq,
                "name": name,
                "from_state": state,
                "to_state": target,
                "created_at": ts,
                "actor": None,
                "reason": None,
                "error_type": None,
                "error_message": None,
                "error_traceback": None,
                "meta": None,
            },
        ).scalar_one()
        conn.execute(
            _REF_UPDATE,
            {
                "state": target,
                "errored": False,
                "seq": seq,
                "updated_at": ts,
                "state_entered_at": ts,
                "flow_id": fid,
            },
        )
        if art:
            conn.execute(
                _REF_ARTEFACT,
                {
                    "flow_id": fid,
                    "transition_id": tid,
                    "name": "result",
                    "payload": dict(PAYLOAD),
                    "created_at": ts,
                },
            )
        commit()


#: Runner names: the floor first, the reference layers, then the engine.
FLOOR, REF_CORE, REF_SESSION = "floor (raw driver)", "ref: SA Core", "ref: SA Session"
ENGINE_SESSION, ENGINE_FLASK = "engine, Session", "engine, Flask db.session"


def runners(b: Backend, cls: type[Flow], layers: bool) -> dict[str, Callable[[int], None]]:
    """Return ``{runner name: run(n)}`` for scenario ``cls``, each on its own flow."""
    art = bool(cls.artefact_fields)
    with Session(b.engine) as s:
        ids = [cls.create(session=s).id for _ in range(3)]
    session = Session(b.engine)
    plain = cls.create(session=session)
    with b.app.app_context():
        flask_flow = cls.create()  # no session: resolves db.session on every call
    core_conn = b.engine.connect()
    ref_session = Session(b.engine)

    def floor(n: int) -> None:
        b.floor(b.raw, b.sql, ids[0], n, art)

    def ref_core(n: int) -> None:
        sqlalchemy_steps(core_conn, core_conn.commit, b.name, ids[1], n, art)

    def ref_sess(n: int) -> None:
        sqlalchemy_steps(ref_session, ref_session.commit, b.name, ids[2], n, art)

    def engine_session(n: int) -> None:
        engine_steps(plain, n)

    def engine_flask(n: int) -> None:
        with b.app.app_context():
            engine_steps(flask_flow, n)

    run: dict[str, Callable[[int], None]] = {FLOOR: floor}
    if layers:
        run |= {REF_CORE: ref_core, REF_SESSION: ref_sess}
    return run | {ENGINE_SESSION: engine_session, ENGINE_FLASK: engine_flask}


def measure(
    b: Backend, n: int, repeat: int, warmup: int, chunk: int, layers: bool
) -> list[list[Any]]:
    """Return table rows for backend ``b``: every scenario, every runner against the floor.

    Each of the ``repeat`` rounds runs ``n`` transitions per runner in chunks of ``chunk``,
    the runners taking turns chunk by chunk (rotating who goes first), so every runner sees
    the same machine load; a round's ratio is runner time / floor time over the round.
    """
    rows: list[list[Any]] = []
    for scenario, cls in SCENARIOS.items():
        run = runners(b, cls, layers)
        for fn in run.values():
            fn(warmup)
        names = list(run)
        us: dict[str, list[float]] = {k: [] for k in names}
        for _rep in range(repeat):
            total = dict.fromkeys(names, 0.0)
            gc.collect()
            for i in range(max(n // chunk, 1)):
                order = names[i % len(names) :] + names[: i % len(names)]
                for k in order:
                    fn = run[k]
                    start = time.perf_counter()
                    fn(chunk)
                    total[k] += time.perf_counter() - start
            done = max(n // chunk, 1) * chunk
            for k in names:
                us[k].append(total[k] / done * 1e6)
        floor_us = median(us[FLOOR])
        for k in names[1:]:
            ratio = median([e / f for e, f in zip(us[k], us[FLOOR], strict=True)])
            rows.append(
                [
                    b.name,
                    scenario,
                    k,
                    f"{floor_us:.0f}",
                    f"{median(us[k]):.0f}",
                    f"{ratio:.2f}x",
                    f"{1e6 / median(us[k]):,.0f}",
                ]
            )
            print(
                f"  {b.name:10} {scenario:9} {k:26} floor {floor_us:7.1f} µs  runner"
                f" {median(us[k]):7.1f} µs  ratio {ratio:.2f}x   (rounds: "
                + ", ".join(f"{e:.0f}/{f:.0f}" for e, f in zip(us[k], us[FLOOR], strict=True))
                + ")",
                file=sys.stderr,
                flush=True,
            )
    return rows


# -- memory ----------------------------------------------------------------------------------


def memory(b: Backend, total: int, samples: int, trace: bool) -> list[list[Any]]:
    """Run ``total`` MemoryMix transitions per runner and report growth after a warm-up tenth."""
    rows: list[list[Any]] = []
    step = max(total // samples, 1)
    with Session(b.engine) as s:
        session_flow = MemoryMix.create(session=s)
        with b.app.app_context():
            flask_id = MemoryMix.create().id

        def via_session(k: int) -> None:
            engine_steps(session_flow, k)

        def via_flask(k: int) -> None:
            with b.app.app_context():
                engine_steps(MemoryMix.get(flask_id), k)

        for label, run in (("Session", via_session), ("Flask db.session", via_flask)):
            if trace:
                tracemalloc.start()
            points: list[tuple[int, int, int, int]] = []
            start = time.perf_counter()
            for done in range(step, total + step, step):
                run(step)
                gc.collect()
                heap = tracemalloc.get_traced_memory()[0] if trace else 0
                points.append((done, rss_kib(), len(gc.get_objects()), heap))
            elapsed = time.perf_counter() - start
            if trace:
                tracemalloc.stop()
            base, end = points[0], points[-1]
            print(
                f"  memory {b.name} {label}: "
                + ", ".join(
                    f"{d // 1000}k:{r / 1024:.1f}MiB/{o}obj"
                    + (f"/{h / 1024:.0f}KiB" if trace else "")
                    for d, r, o, h in points
                ),
                file=sys.stderr,
                flush=True,
            )
            rows.append(
                [
                    b.name,
                    label,
                    f"{total:,}",
                    f"{elapsed:.1f}",
                    f"{base[1] / 1024:.1f}",
                    f"{end[1] / 1024:.1f}",
                    f"{(end[1] - base[1]):+,}",
                    f"{end[2] - base[2]:+,}",
                    f"{(end[3] - base[3]) / 1024:+,.0f}" if trace else "n/a",
                ]
            )
    return rows


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run every backend, print markdown tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="transitions per timed round")
    p.add_argument("--repeat", type=int, default=5, help="timed rounds per runner")
    p.add_argument("--warmup", type=int, default=300, help="untimed transitions first")
    p.add_argument("--chunk", type=int, default=100, help="runners alternate every CHUNK")
    p.add_argument(
        "--no-layers",
        dest="layers",
        action="store_false",
        help="skip the reference rows (bare SQLAlchemy Core / Session, no engine)",
    )
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument(
        "--memory",
        type=int,
        default=100_000,
        help="transitions in the memory run on SQLite (0: skip)",
    )
    p.add_argument("--samples", type=int, default=10, help="memory samples across the run")
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also trace the Python heap in the memory run (slower)",
    )
    args = p.parse_args(argv)

    rows: list[list[Any]] = []
    mem_rows: list[list[Any]] = []
    for name in args.backends.split(","):
        with backend(name.strip()) as b:
            rows += measure(b, args.n, args.repeat, args.warmup, args.chunk, args.layers)
            if args.memory and b.name == "sqlite":
                mem_rows += memory(b, args.memory, args.samples, args.tracemalloc)

    print(f"Machine: {machine()}")
    print(f"Command: bench/bench_transitions.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print(
        f"SQLite: file in a tmp dir, WAL + synchronous=NORMAL (engine and floor);"
        f" n={args.n} transitions per runner per round, runners alternating every"
        f" {args.chunk}; {args.repeat} rounds, medians; ratio = runner/floor time per"
        " transition (median of per-round ratios). `ref:` rows run the engine's statements"
        " through bare SQLAlchemy (no engine logic).\n"
    )
    print(
        markdown_table(
            [
                "backend",
                "scenario",
                "runner",
                "floor µs/tr",
                "runner µs/tr",
                "ratio",
                "runner tr/s",
            ],
            rows,
        )
    )
    if mem_rows:
        print(
            f"\nMemory: {args.memory:,} transitions (ping with an after-commit callback, pong"
            " with an artefact); growth from the first sample (after"
            f" {args.memory // args.samples:,}) to the last, after gc.collect().\n"
        )
        print(
            markdown_table(
                [
                    "backend",
                    "engine via",
                    "transitions",
                    "seconds",
                    "RSS first MiB",
                    "RSS last MiB",
                    "RSS growth KiB",
                    "live objects growth",
                    "traced heap growth KiB",
                ],
                mem_rows,
            )
        )


if __name__ == "__main__":
    main()
