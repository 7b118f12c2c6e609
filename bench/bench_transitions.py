"""The user's path -- ``Flow.get(flow_id)`` + a transition -- against a raw-driver floor.

**Floor.** The least a guarded, row-locked, history-keeping transition can cost: through the
bare driver (``sqlite3`` / ``psycopg``), on a minimal schema (``floor_flows(id, type,
state, seq)``, ``floor_history(id, flow_id, seq, name, from_state, to_state,
created_at)`` with its ``(flow_id, seq)`` unique key), one transaction of five statements:
lock the flow row and read it (``SELECT ... FOR UPDATE`` on PostgreSQL; ``UPDATE ... SET
seq = seq ... RETURNING`` on SQLite, which takes the write lock), check the state in
Python, INSERT history, UPDATE the state, COMMIT. The job shape's floor is two such
transactions, the second also inserting an artefact row into ``floor_artefacts``.

**Runners** (each on its own flow, same database, interleaved in chunks with the floor):

- ``get(lock=True) + transition``: ``flow = PingPong.get(flow_id, session=s, lock=True)``
  then ``flow.ping()`` (or ``pong()``): what the README's jobs do (the row read under the
  transition's lock, which that transition then uses). The headline.
- ``get + transition``: the same with a plain ``get`` (no lock): what a job costs that
  reads without the lock (the transition locks and reads the row again). Also a headline:
  the pattern any caller may write.
- ``job: get, start, work, finish``: the gem's job shape as the README's job writes it,
  ``get(lock=True)``, ``start()`` (commits), no work, ``finish()`` persisting a small
  artefact (commits), then ``again()`` to loop: three transactions per job, against three
  floor transactions.
- ``loaded object``: ``flow.ping()`` / ``flow.pong()`` on an object kept from one call to
  the next (no ``get``); the figure this file reported before, now secondary.

**Durability.** ``fsync on``: PostgreSQL ``synchronous_commit=on`` (the default), SQLite
WAL + ``synchronous=FULL``. ``fsync off`` (pure CPU cost): ``synchronous_commit=off`` per
session, SQLite WAL + ``synchronous=NORMAL``. The engine's and the floor's connections
always get the same settings.

**Workers.** ``--procs 4`` (PostgreSQL) also runs 4 worker processes, each on its own
flow, for the floor and for ``get + transition`` in alternation, and compares throughput.

Ratios are runner time / floor time per transition (per job for the job shape) in the same
round, median over rounds. Peak RSS is the process's ``ru_maxrss``.

    .venv/bin/python bench/bench_transitions.py [--n 1000] [--repeat 5]
        [--backends sqlite,postgresql] [--durability on,off] [--procs 4]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import multiprocessing as mp
import os
import resource
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import psycopg.types.json
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    machine,
    markdown_table,
    median,
    postgres_database,
    rss_kib,
    sqlite_database,
)

from flowstate_web import Artefact, Flow, State, counters, transition
from flowstate_web.models import flows, metadata

# -- the flows -------------------------------------------------------------------------------

#: The job's artefact: a small dict, as an API response summary would be.
PAYLOAD: dict[str, Any] = {"status": 200, "id": "tp-4711", "ok": True, "items": [1, 2, 3]}


class PingPong(Flow, type_name="bench_pingpong"):
    """Two states, two transitions, no artefact."""

    a = State(initial=True)
    b = State()

    @transition(source=a, target=b)
    def ping(self) -> None:
        pass

    @transition(source=b, target=a)
    def pong(self) -> None:
        pass


class Job(Flow, type_name="bench_job"):
    """The gem's job shape: start, (work), finish with an artefact; ``again`` loops it."""

    pending = State(initial=True)
    started = State()
    done = State()
    response = Artefact(dict)

    @transition(source=pending, target=started)
    def start(self) -> None:
        pass

    @transition(source=started, target=done, persists=response)
    def finish(self, response: dict[str, Any]) -> dict[str, Any]:
        return response

    @transition(source=done, target=pending)
    def again(self) -> None:
        pass


# -- the floor -------------------------------------------------------------------------------

FLOOR_SCHEMA = (
    "CREATE TABLE floor_flows (id {pk}, type VARCHAR(200) NOT NULL,"
    " state VARCHAR(200) NOT NULL, seq INTEGER NOT NULL)",
    "CREATE TABLE floor_history (id {pk}, flow_id BIGINT NOT NULL REFERENCES floor_flows(id),"
    " seq INTEGER NOT NULL, name VARCHAR(200) NOT NULL, from_state VARCHAR(200) NOT NULL,"
    " to_state VARCHAR(200) NOT NULL, created_at {ts} NOT NULL, UNIQUE (flow_id, seq))",
    "CREATE TABLE floor_artefacts (id {pk}, flow_id BIGINT NOT NULL REFERENCES floor_flows(id),"
    " history_id BIGINT NOT NULL, payload {json} NOT NULL)",
)
TYPES = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY", "ts": "TEXT", "json": "TEXT"},
    "postgresql": {"pk": "BIGSERIAL PRIMARY KEY", "ts": "TIMESTAMPTZ", "json": "JSON"},
}
SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"

#: ping-pong: state -> (transition name, target). The job: pending -> started -> done.
PINGPONG = {"a": ("ping", "b"), "b": ("pong", "a")}


class Floor:
    """The five statements per transition on the bare driver, one flow row of its own."""

    def __init__(self, backend: str, raw: Any, fid: int) -> None:
        self.backend = backend
        self.raw = raw
        self.fid = fid
        if backend == "sqlite":
            self.lock = "UPDATE floor_flows SET seq = seq WHERE id = ? RETURNING state, seq"
            self.ins = (
                "INSERT INTO floor_history (flow_id, seq, name, from_state, to_state,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id"
            )
            self.upd = "UPDATE floor_flows SET state = ?, seq = ? WHERE id = ?"
            self.art = "INSERT INTO floor_artefacts (flow_id, history_id, payload) VALUES (?, ?, ?)"
        else:
            self.lock = "SELECT state, seq FROM floor_flows WHERE id = %s FOR UPDATE"
            self.ins = (
                "INSERT INTO floor_history (flow_id, seq, name, from_state, to_state,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id"
            )
            self.upd = "UPDATE floor_flows SET state = %s, seq = %s WHERE id = %s"
            self.art = (
                "INSERT INTO floor_artefacts (flow_id, history_id, payload) VALUES (%s, %s, %s)"
            )

    def transition(self, moves: dict[str, tuple[str, str]], artefact: bool = False) -> None:
        raw, fid = self.raw, self.fid
        state, seq = raw.execute(self.lock, (fid,)).fetchone()
        if state not in moves:
            raise RuntimeError(f"floor: no move from {state}")
        name, target = moves[state]
        now = datetime.now(UTC)
        ts = now.strftime(SQLITE_TS) if self.backend == "sqlite" else now
        hid = raw.execute(self.ins, (fid, seq + 1, name, state, target, ts)).fetchone()[0]
        raw.execute(self.upd, (target, seq + 1, fid))
        if artefact:
            payload = (
                json.dumps(PAYLOAD)
                if self.backend == "sqlite"
                else psycopg.types.json.Json(PAYLOAD)
            )
            raw.execute(self.art, (fid, hid, payload))
        raw.commit()

    def ops(self, n: int) -> None:
        for _ in range(n):
            self.transition(PINGPONG)

    def jobs(self, n: int) -> None:
        for _ in range(n):
            self.transition({"pending": ("start", "started")})
            self.transition({"started": ("finish", "done")}, artefact=True)
            self.transition({"done": ("again", "pending")})


# -- the bounds: the engine's statements with no engine code around them -----------------------

HISTORY_KEYS = (
    "flow_id", "seq", "name", "from_state", "to_state", "created_at", "actor", "reason",
    "error_type", "error_message", "error_traceback", "meta",
)  # fmt: skip
UPDATE_KEYS = ("state", "seq", "errored", "updated_at", "state_entered_at", "flow_id")


class Bound:
    """What ``get`` + transition would cost if the engine's own Python took no time.

    The engine's statements, as the fast path compiles and binds them (``get``'s SELECT,
    the lock, the write: one statement on PostgreSQL, INSERT history + UPDATE on SQLite),
    on the engine's schema (its indexes and counter triggers), on a driver cursor, reading
    state and seq straight from the row tuple. ``session``: inside a SQLAlchemy ``Session``
    transaction (``Session.connection()`` ... ``Session.commit()``), as the engine runs;
    without it, on the bare driver connection. The first bound is what the schema costs
    against the floor's; the second adds what keeping the caller's Session costs.
    """

    def __init__(self, backend: str, engine: Engine, raw: Any, fid: int, session: bool) -> None:
        from flowstate_web import _fastpath as fp

        d = engine.dialect
        self.raw, self.fid, self.backend = raw, fid, backend
        self.session = Session(engine) if session else None
        self.select = fp.CompiledStatement(fp.SELECT_FLOW, d, ["flow_id"])
        lock = fp.LOCK_SQLITE if backend == "sqlite" else fp.LOCK_FOR_UPDATE
        self.lock = fp.CompiledStatement(lock, d, ["flow_id"])
        if backend == "postgresql":
            stmt = fp.write_statement(HISTORY_KEYS, UPDATE_KEYS, False)
            keys = [f"h_{k}" for k in HISTORY_KEYS] + [f"f_{k}" for k in UPDATE_KEYS]
            self.write = fp.CompiledStatement(stmt, d, keys)
        else:
            self.ins = fp.CompiledStatement(fp.INSERT_TRANSITION, d, list(HISTORY_KEYS))
            self.upd = fp.CompiledStatement(fp.UPDATE_FLOW, d, list(UPDATE_KEYS))

    def transition(self) -> None:
        sess = self.session
        drv: Any = self.raw if sess is None else sess.connection().connection.driver_connection
        cur = drv.cursor()
        key = {"flow_id": self.fid}
        cur.execute(self.select.sql, self.select.params(key))
        cur.fetchone()
        cur.execute(self.lock.sql, self.lock.params(key))
        row = cur.fetchone()
        state, seq = row[2], row[4]
        name, target = PINGPONG[state]
        ts = datetime.now(UTC)
        h = {
            "flow_id": self.fid, "seq": seq + 1, "name": name, "from_state": state,
            "to_state": target, "created_at": ts, "actor": None, "reason": None,
            "error_type": None, "error_message": None, "error_traceback": None, "meta": None,
        }  # fmt: skip
        u = {
            "state": target, "seq": seq + 1, "errored": False, "updated_at": ts,
            "state_entered_at": ts, "flow_id": self.fid,
        }  # fmt: skip
        if self.backend == "postgresql":
            p = {f"h_{k}": v for k, v in h.items()} | {f"f_{k}": v for k, v in u.items()}
            cur.execute(self.write.sql, self.write.params(p))
            cur.fetchone()
        else:
            cur.execute(self.ins.sql, self.ins.params(h))
            cur.fetchone()
            cur.execute(self.upd.sql, self.upd.params(u))
        cur.close()
        if sess is None:
            drv.commit()
        else:
            sess.commit()

    def ops(self, n: int) -> None:
        for _ in range(n):
            self.transition()


# -- databases -------------------------------------------------------------------------------


def sqlite_pragmas(durable: bool) -> tuple[str, ...]:
    return (
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}",
        "PRAGMA busy_timeout=5000",
    )


def make_engine(backend: str, url: str, durable: bool) -> Engine:
    """Return the engine the flows run on, with the durability setting on every connection."""
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if backend == "sqlite":
            for pragma in sqlite_pragmas(durable):
                cur.execute(pragma)
        else:
            cur.execute(f"SET synchronous_commit = {'on' if durable else 'off'}")
            dbapi_conn.commit()
        cur.close()

    return engine


def raw_connect(backend: str, url: str, durable: bool) -> Any:
    """Return the floor's bare driver connection, with the same durability setting."""
    if backend == "sqlite":
        raw = sqlite3.connect(make_url(url).database or "")
        for pragma in sqlite_pragmas(durable):
            raw.execute(pragma)
        return raw
    raw = psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    raw.execute(f"SET synchronous_commit = {'on' if durable else 'off'}")
    raw.commit()
    return raw


def setup_schema(backend: str, url: str, triggers: bool, indexes: bool = True) -> None:
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        for ddl in FLOOR_SCHEMA:
            conn.exec_driver_sql(ddl.format(**TYPES[backend]))
        if not triggers:
            counters.uninstall(conn)
        if not indexes:  # what the admin's lists, filters and counts need: measured apart
            for index in flows.indexes:
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index.name}")
    engine.dispose()


def new_floor_flow(raw: Any, backend: str) -> int:
    q = "INSERT INTO floor_flows (type, state, seq) VALUES ('floor', 'a', 0) RETURNING id"
    fid = int(raw.execute(q).fetchone()[0])
    raw.commit()
    return fid


@contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with sqlite_database() as (url, _path):
            yield url
    elif backend == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        raise SystemExit(f"unknown backend {backend!r} (sqlite, postgresql)")


# -- the runners -----------------------------------------------------------------------------

FLOOR = "floor (raw driver, minimal schema)"
GET = "get + transition"
GET_LOCKED = "get(lock=True) + transition (README's jobs)"
JOB = "job: get, start, work, finish"
JOB_FLOOR = "floor, job shape"
LOADED = "loaded object (secondary)"
BOUND_RAW = "bound: engine's statements + schema, bare driver"
BOUND_SESSION = "bound: the same in a Session transaction"


def runners(
    backend: str, engine: Engine, raw: Any, bound: bool = True
) -> dict[str, Callable[[int], None]]:
    """Return ``{name: run(n)}``, each on its own flow; ``n`` transitions (or jobs)."""
    with Session(engine) as s:
        get_id = PingPong.create(session=s).id
        locked_id = PingPong.create(session=s).id
        job_id = Job.create(session=s).id
        loaded_id = PingPong.create(session=s).id
    loaded = PingPong.get(loaded_id, session=Session(engine))  # kept from call to call
    floor = Floor(backend, raw, new_floor_flow(raw, backend))
    job_floor = Floor(backend, raw, new_floor_flow(raw, backend))
    raw.execute(f"UPDATE floor_flows SET state = 'pending' WHERE id = {job_floor.fid}")
    raw.commit()
    session = Session(engine)

    def get_transition(n: int) -> None:
        for _ in range(n):
            flow = PingPong.get(get_id, session=session)
            if flow.state == "a":
                flow.ping()
            else:
                flow.pong()

    def get_locked(n: int) -> None:
        for _ in range(n):
            flow = PingPong.get(locked_id, session=session, lock=True)
            if flow.state == "a":
                flow.ping()
            else:
                flow.pong()

    def job(n: int) -> None:
        for _ in range(n):
            flow = Job.get(job_id, session=session, lock=True)  # as the README's jobs do
            flow.start()
            flow.finish(dict(PAYLOAD))  # the work's result
            flow.again()  # back to pending for the next job (not timed apart)

    def loaded_object(n: int) -> None:
        for _ in range(n):
            if loaded.state == "a":
                loaded.ping()
            else:
                loaded.pong()

    # Flow.get(lock=True) is new: a run against an older checkout leaves that runner out.
    locked = "lock" in inspect.signature(PingPong.get).parameters
    bounds: dict[str, Callable[[int], None]] = {}
    if bound:
        with Session(engine) as s:
            b1, b2 = PingPong.create(session=s).id, PingPong.create(session=s).id
        bounds = {
            BOUND_RAW: Bound(backend, engine, raw, b1, session=False).ops,
            BOUND_SESSION: Bound(backend, engine, raw, b2, session=True).ops,
        }
    return {
        FLOOR: floor.ops,
        **bounds,
        GET: get_transition,
        **({GET_LOCKED: get_locked} if locked else {}),
        JOB_FLOOR: job_floor.jobs,
        JOB: job,
        LOADED: loaded_object,
    }


#: Which floor each runner is compared with.
BASELINE = {
    BOUND_RAW: FLOOR,
    BOUND_SESSION: FLOOR,
    GET: FLOOR,
    GET_LOCKED: FLOOR,
    LOADED: FLOOR,
    JOB: JOB_FLOOR,
}


class CpuClock:
    """CPU seconds used so far by this process and, on PostgreSQL, by the server processes
    of the benchmark's database (``/proc/<pid>/schedstat``, the server being on this host).

    Robust against other load on a shared machine, unlike wall time: it is the "pure CPU
    cost" of a transaction on both sides of the wire.
    """

    def __init__(self, backend: str, url: str) -> None:
        self.admin: Any = None
        self.seen: dict[int, int] = {}
        if backend == "postgresql":
            self.admin = psycopg.connect(
                make_url(url).set(drivername="postgresql").render_as_string(False),
                autocommit=True,
            )

    def __call__(self) -> float:
        cpu = time.process_time()
        if self.admin is None:
            return cpu
        pids = self.admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchall()
        for (pid,) in pids:
            try:
                with open(f"/proc/{pid}/schedstat") as f:
                    self.seen[pid] = int(f.read().split()[0])
            except OSError:
                pass  # the backend ended: its last reading stays in the total
        return cpu + sum(self.seen.values()) / 1e9

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()


def measure(
    backend: str, url: str, durable: bool, n: int, repeat: int, chunk: int, warmup: int
) -> list[list[Any]]:
    """Return table rows: every runner against its floor, wall time and CPU time."""
    engine = make_engine(backend, url, durable)
    raw = raw_connect(backend, url, durable)
    clock = CpuClock(backend, url)
    try:
        run = runners(backend, engine, raw)
        for name, fn in run.items():
            fn(warmup if name not in (JOB, JOB_FLOOR) else max(warmup // 3, 1))
        names = list(run)
        us: dict[str, list[float]] = {k: [] for k in names}
        cpu_us: dict[str, list[float]] = {k: [] for k in names}
        for _ in range(repeat):
            total = dict.fromkeys(names, 0.0)
            cpu = dict.fromkeys(names, 0.0)
            count = dict.fromkeys(names, 0)
            gc.collect()
            for i in range(max(n // chunk, 1)):
                order = names[i % len(names) :] + names[: i % len(names)]
                for k in order:
                    k_n = chunk if k not in (JOB, JOB_FLOOR) else max(chunk // 3, 1)
                    c0 = clock()
                    start = time.perf_counter()
                    run[k](k_n)
                    total[k] += time.perf_counter() - start
                    cpu[k] += clock() - c0
                    count[k] += k_n
            for k in names:
                us[k].append(total[k] / count[k] * 1e6)
                cpu_us[k].append(cpu[k] / count[k] * 1e6)
        rows = []
        for k, base in BASELINE.items():
            if k not in us:
                continue
            ratio = median([e / f for e, f in zip(us[k], us[base], strict=True)])
            cpu_ratio = median([e / f for e, f in zip(cpu_us[k], cpu_us[base], strict=True)])
            unit = "job" if k == JOB else "tx"
            bold = k in (GET, GET_LOCKED, JOB)
            row = [
                backend,
                "on" if durable else "off",
                k,
                f"{median(us[base]):.0f}",
                f"{median(us[k]):.0f} µs/{unit}",
                f"**{ratio:.2f}x**" if bold else f"{ratio:.2f}x",
                f"{median(cpu_us[base]):.0f}",
                f"{median(cpu_us[k]):.0f}",
                f"**{cpu_ratio:.2f}x**" if bold else f"{cpu_ratio:.2f}x",
            ]
            rows.append(row)
            print(
                f"  {backend:10} fsync {row[1]:3} {k:32} floor {median(us[base]):7.1f}"
                f"  runner {median(us[k]):7.1f}  ratio {ratio:.2f}x  cpu {median(cpu_us[base]):.0f}"
                f"/{median(cpu_us[k]):.0f} = {cpu_ratio:.2f}x  rounds "
                + " ".join(f"{e:.0f}/{f:.0f}" for e, f in zip(us[k], us[base], strict=True)),
                file=sys.stderr,
                flush=True,
            )
        return rows
    finally:
        clock.close()
        raw.close()
        engine.dispose()


# -- worker processes (PostgreSQL) -----------------------------------------------------------


def _worker(url: str, durable: bool, pipe: Any) -> None:
    """Serve ``(runner, n)`` requests on one flow each; answer with the elapsed seconds."""
    engine = make_engine("postgresql", url, durable)
    raw = raw_connect("postgresql", url, durable)
    run = runners("postgresql", engine, raw)
    while True:
        msg = pipe.recv()
        if msg is None:
            break
        name, n = msg
        start = time.perf_counter()
        run[name](n)
        pipe.send(time.perf_counter() - start)
    pipe.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    raw.close()
    engine.dispose()


def measure_procs(
    url: str, durable: bool, procs: int, n: int, repeat: int, warmup: int
) -> tuple[list[Any], int]:
    """Return a table row comparing the throughput of ``procs`` workers, and their peak RSS."""
    ctx = mp.get_context("spawn")
    pipes, workers = [], []
    for _ in range(procs):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(url, durable, child))
        p.start()
        pipes.append(parent)
        workers.append(p)

    def round_(name: str, k: int) -> float:
        start = time.perf_counter()
        for pipe in pipes:
            pipe.send((name, k))
        for pipe in pipes:
            pipe.recv()
        return procs * k / (time.perf_counter() - start)

    runs = (FLOOR, BOUND_SESSION, GET_LOCKED, GET)
    for name in runs:
        round_(name, warmup)
    tps: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(repeat):
        for name in runs[i % len(runs) :] + runs[: i % len(runs)]:
            tps[name].append(round_(name, n))
    for pipe in pipes:
        pipe.send(None)
    rss = max(pipe.recv() for pipe in pipes)
    for p in workers:
        p.join()
    shares = {
        name: median([e / f for e, f in zip(tps[name], tps[FLOOR], strict=True)])
        for name in (BOUND_SESSION, GET_LOCKED, GET)
    }
    print(
        f"  postgresql fsync {'on' if durable else 'off'} {procs} procs: floor"
        f" {median(tps[FLOOR]):.0f} tx/s, bound in a Session {median(tps[BOUND_SESSION]):.0f}"
        f" tx/s ({shares[BOUND_SESSION]:.0%}), get(lock=True)+transition"
        f" {median(tps[GET_LOCKED]):.0f} tx/s ({shares[GET_LOCKED]:.0%}), get+transition"
        f" {median(tps[GET]):.0f} tx/s ({shares[GET]:.0%})",
        file=sys.stderr,
        flush=True,
    )
    row = [
        "postgresql",
        "on" if durable else "off",
        procs,
        f"{median(tps[FLOOR]):,.0f}",
        f"{median(tps[BOUND_SESSION]):,.0f}",
        f"{shares[BOUND_SESSION]:.0%}",
        f"{median(tps[GET_LOCKED]):,.0f}",
        f"**{shares[GET_LOCKED]:.0%}**",
        f"{median(tps[GET]):,.0f}",
        f"**{shares[GET]:.0%}**",
    ]
    return row, rss


# -- memory ----------------------------------------------------------------------------------


def memory(total: int, samples: int = 10) -> list[list[Any]]:
    """Run ``total`` get + transition on SQLite; RSS and live objects after a warm-up tenth."""
    step = max(total // samples, 1)
    points: list[tuple[int, int, int]] = []
    with database("sqlite") as url:
        setup_schema("sqlite", url, True)
        engine = make_engine("sqlite", url, False)
        with Session(engine) as s:
            flow_id = Job.create(session=s).id
        session = Session(engine)
        start = time.perf_counter()
        for done in range(step, total + step, step):
            for _ in range(step // 3 + 1):
                flow = Job.get(flow_id, session=session)
                flow.start()
                flow.finish(dict(PAYLOAD))
                flow.again()
            gc.collect()
            points.append((done, rss_kib(), len(gc.get_objects())))
        elapsed = time.perf_counter() - start
        session.close()
        engine.dispose()
    (_, rss0, obj0), (_, rss1, obj1) = points[0], points[-1]
    print(
        "  memory: " + ", ".join(f"{d // 1000}k:{r / 1024:.1f}MiB/{o}obj" for d, r, o in points),
        file=sys.stderr,
        flush=True,
    )
    return [
        [
            f"{total:,}",
            f"{elapsed:.0f}",
            f"{rss0 / 1024:.1f}",
            f"{rss1 / 1024:.1f}",
            f"{rss1 - rss0:+,}",
            f"{obj1 - obj0:+,}",
        ]
    ]


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="transitions per runner per round")
    p.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    p.add_argument("--chunk", type=int, default=60, help="runners take turns every CHUNK")
    p.add_argument("--warmup", type=int, default=200, help="untimed transitions first")
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--durability", default="on,off", help="fsync on, off, or both")
    p.add_argument("--procs", type=int, default=4, help="worker processes (PostgreSQL; 0: skip)")
    p.add_argument(
        "--memory",
        type=int,
        default=0,
        help="also run this many job transitions on SQLite and sample RSS (0: skip)",
    )
    p.add_argument(
        "--no-indexes",
        dest="indexes",
        action="store_false",
        help="drop the flows table's secondary indexes (to measure what they cost)",
    )
    p.add_argument(
        "--no-triggers",
        dest="triggers",
        action="store_false",
        help="leave the state-count triggers out (to measure what they cost)",
    )
    args = p.parse_args(argv)
    load_before = os.getloadavg()

    rows: list[list[Any]] = []
    proc_rows: list[list[Any]] = []
    worker_rss = 0
    for backend in [b.strip() for b in args.backends.split(",")]:
        with database(backend) as url:
            setup_schema(backend, url, args.triggers, args.indexes)
            for mode in args.durability.split(","):
                durable = mode.strip() == "on"
                rows += measure(backend, url, durable, args.n, args.repeat, args.chunk, args.warmup)
                if backend == "postgresql" and args.procs:
                    row, rss = measure_procs(
                        url, durable, args.procs, max(args.n // 2, 50), args.repeat, args.warmup
                    )
                    proc_rows.append(row)
                    worker_rss = max(worker_rss, rss)

    mem_rows = memory(args.memory) if args.memory else []
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"Machine: {machine()}")
    print(f"Command: bench/bench_transitions.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print(
        f"Load average (1, 5, 15 min): before {' '.join(f'{x:.2f}' for x in load_before)},"
        f" after {' '.join(f'{x:.2f}' for x in os.getloadavg())}."
        f" Triggers {'installed' if args.triggers else 'left out'}."
        f" Flows' secondary indexes {'installed' if args.indexes else 'dropped'}."
        f" Peak RSS: benchmark process {peak / 1024:.1f} MiB"
        + (f", each worker process at most {worker_rss / 1024:.1f} MiB." if worker_rss else ".")
        + "\n"
    )
    print(
        markdown_table(
            [
                "backend",
                "fsync",
                "runner",
                "floor µs",
                "runner",
                "ratio to floor",
                "floor CPU µs",
                "runner CPU µs",
                "CPU ratio",
            ],
            rows,
        )
    )
    if proc_rows:
        print()
        print(
            markdown_table(
                [
                    "backend",
                    "fsync",
                    "processes",
                    "floor tx/s",
                    "bound in a Session tx/s",
                    "share of floor",
                    "get(lock=True) + transition tx/s",
                    "share of floor",
                    "get + transition tx/s",
                    "share of floor",
                ],
                proc_rows,
            )
        )
    if mem_rows:
        print(
            f"\nMemory: {args.memory:,} transitions on SQLite (jobs: get, start, finish with"
            " an artefact, again), growth from the sample after the first tenth to the last,"
            " after gc.collect().\n"
        )
        print(
            markdown_table(
                [
                    "transitions",
                    "seconds",
                    "RSS first MiB",
                    "RSS last MiB",
                    "RSS growth KiB",
                    "live objects growth",
                ],
                mem_rows,
            )
        )


if __name__ == "__main__":
    main()
