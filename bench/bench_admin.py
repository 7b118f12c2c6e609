"""Server time of the admin's pages with 1,000 and with 1,000,000 flows, on SQLite and PostgreSQL.

The target (from the issue): with a million flows every page costs at most 1.5x what it
costs with a thousand. Each page is requested through Flask's test client (no network):
``--warmup`` requests first (diagram SVGs get cached, connections opened), then the median
of ``--repeat`` requests is reported. Databases are seeded by :mod:`seed` (set-based SQL,
the two demo flow types, 5 % errored) and ``ANALYZE``d.

Pages (all of ``SyncThirdPartyApiFlow``): overview; flow type list, first page; filtered by
one in-progress state; errored only; a deep keyset page (``before=`` the id 90 % of the way
down the list); a 7-day created range at the newest, middle and oldest data, its second
page, and combined with the state filter and with errored only; a 7-day updated range in
the middle, alone and with the state filter; a prop search (``q=my_record_id=...``, one
match); stalled flows only (``stalled=1``: flows past their state's timeout; the seeded
in-progress flows are days old, so nearly all of them are); a free-text search of the
same value (every prop and the id), and of a value nothing holds; the bulk-retry preview of
the middle week; the type list with the heat map's 7 d window (``window=7d``; every
type-list page shows the 24 h heat map, read from a rollup filled to its full retention size
by ``bench_rollup.fill_rollup`` at every size); one completed flow's page (history,
artefact, diagram). Lists show
``--page-size`` rows (default 10,
``FLOWSTATE_PAGE_SIZE``): small enough that most lists are a full page at 1,000 flows too,
so both sizes render the same rows (the ``rows`` column) and only the database's share of
the work can differ. A week of one state (or of
errored flows) holds about one flow at 1,000: those rows differ, and are marked so.

For every page over the target, the statements it ran at the large size are listed with
their time, and the slowest one is EXPLAINed (``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL,
``EXPLAIN QUERY PLAN`` on SQLite).

    .venv/bin/python bench/bench_admin.py                # 1k vs 1M, both backends
    .venv/bin/python bench/bench_admin.py --quick        # 1k vs 100k
    .venv/bin/python bench/bench_admin.py --backends postgresql --keep   # reuse next time

PostgreSQL databases are ``flowstate_bench_<size>`` next to ``FLOWSTATE_BENCH_POSTGRES_URL``
(default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``); they are dropped at the end
unless ``--keep``, and reused when they already hold the expected number of flows.
SQLite files go to ``--data-dir`` (default: a temporary directory, removed at the end).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_rollup
import seed
from _common import PG_URL, machine, markdown_table

from flowstate_web import FlowState, counters
from flowstate_web.demo.orders_flow import OrderFulfilmentFlow
from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow
from flowstate_web.models import flows, metadata

TARGET_RATIO = 1.5
TYPE = SyncThirdPartyApiFlow.type_name
#: An in-progress state holding ~2.5 % of the type's flows.
FILTER_STATE = "saving_my_record"
PAGES = (
    "overview",
    "type list",
    "type list, state filter",
    "type list, errored only",
    "type list, deep keyset page",
    "type list, created in the newest week",
    "type list, created in a middle week",
    "type list, created in the oldest week",
    "type list, middle week, next page",
    "type list, middle week + state",
    "type list, middle week + errored",
    "type list, updated in a middle week",
    "type list, updated middle week + state",
    "type list, prop search",
    "type list, stalled only",
    "type list, free-text search",
    "type list, free-text search, no match",
    "bulk-retry preview, middle week",
    "type list, heat map 7d",
    "flow page",
)


@dataclass
class Statement:
    """One SQL statement a page ran: its text, parameters and duration."""

    sql: str
    params: Any
    ms: float


@dataclass
class Measure:
    """The timings of one page on one database."""

    median_ms: float
    samples: list[float]
    rows: int
    statements: list[Statement] = field(default_factory=list)


def label(n: int) -> str:
    """Return ``1k``, ``100k``, ``1m`` for 1_000, 100_000, 1_000_000."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def pretty(n: int) -> str:
    return f"{n:,}"


# -- databases ---------------------------------------------------------------------------


@contextmanager
def postgres_db(n: int, keep: bool) -> Iterator[str]:
    """Yield the URL of ``flowstate_bench_<n>`` holding ``n`` seeded flows."""
    admin_url = make_url(PG_URL)
    name = f"flowstate_bench_{label(n)}"
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).first()
        if exists and _count(url) != n:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            exists = None
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        _ensure_seeded(url, n)
        yield url
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def sqlite_db(n: int, data_dir: Path) -> Iterator[str]:
    """Yield the URL of ``<data_dir>/flowstate_bench_<n>.db`` holding ``n`` seeded flows."""
    path = data_dir / f"flowstate_bench_{label(n)}.db"
    url = f"sqlite:///{path}"
    if path.exists() and _count(url) != n:
        path.unlink()
    _ensure_seeded(url, n)
    yield url


def _count(url: str) -> int | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(flows)).scalar_one())
    except Exception:
        return None
    finally:
        engine.dispose()


def _ensure_seeded(url: str, n: int) -> None:
    if _count(url) == n and _add_missing_indexes(url) and _current_schema(url):
        print(f"  reusing {_where(url)} ({pretty(n)} flows)", flush=True)
        return
    engine = seed.make_engine(url)
    metadata.drop_all(engine)
    print(f"  seeding {pretty(n)} flows into {_where(url)}", flush=True)
    t0 = time.perf_counter()
    seed.seed(engine, n, types=[SyncThirdPartyApiFlow, OrderFulfilmentFlow])
    print(f"  seeded in {time.perf_counter() - t0:.1f}s", flush=True)
    engine.dispose()


def _add_missing_indexes(url: str) -> bool:
    """Create the models' indexes a reused database lacks (a newer schema); return True."""
    engine = seed.make_engine(url)
    try:
        with engine.begin() as conn:
            found = inspect(conn)
            for table in metadata.sorted_tables:
                if not found.has_table(table.name):
                    return False
                names = {ix["name"] for ix in found.get_indexes(table.name)}
                for ix in _indexes(table, engine.dialect.name):
                    if ix.name not in names:
                        print(f"  adding index {ix.name}", flush=True)
                        ix.create(conn)
            if engine.dialect.name == "postgresql":
                conn.execute(text("ANALYZE flowstate_flows"))
            else:
                conn.exec_driver_sql("ANALYZE")
        return True
    finally:
        engine.dispose()


def _indexes(table: Any, dialect: str) -> list[Any]:
    """Return the indexes of ``table`` that exist on ``dialect`` (GIN is PostgreSQL's only)."""
    return [
        ix
        for ix in table.indexes
        if dialect == "postgresql" or not ix.dialect_kwargs.get("postgresql_using")
    ]


def _current_schema(url: str) -> bool:
    """Return whether the database has every table and index of the current models."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            for table in metadata.sorted_tables:
                if not found.has_table(table.name):
                    return False
                names = {ix["name"] for ix in found.get_indexes(table.name)}
                if any(ix.name not in names for ix in _indexes(table, conn.dialect.name)):
                    return False
            return counters.installed(conn)
    finally:
        engine.dispose()


def _where(url: str) -> str:
    u = make_url(url)
    return str(u.database) if u.get_backend_name() == "sqlite" else f"PostgreSQL {u.database}"


# -- the app and its pages -----------------------------------------------------------------


def make_app(url: str, page_size: int = 10) -> tuple[Flask, SQLAlchemy]:
    """Return a host app with the admin mounted (open access) on ``url``."""
    app = Flask("flowstate_bench_admin")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url,
        SECRET_KEY="bench",
        FLOWSTATE_ADMIN=True,
        FLOWSTATE_PAGE_SIZE=page_size,
    )
    db = SQLAlchemy(app)
    FlowState(app, db=db, access=lambda: True, actor=lambda: "bench")
    return app, db


def page_paths(engine: Engine) -> dict[str, str]:
    """Return the URL of each benchmarked page on this database."""
    with engine.connect() as conn:
        n_type = conn.execute(
            select(func.count()).select_from(flows).where(flows.c.type == TYPE)
        ).scalar_one()
        deep = conn.execute(
            select(flows.c.id)
            .where(flows.c.type == TYPE)
            .order_by(flows.c.id)
            .offset(n_type // 10)
            .limit(1)
        ).scalar_one()
        mid = conn.execute(select(func.max(flows.c.id))).scalar_one() // 2
        completed = conn.execute(
            select(flows.c.id)
            .where(flows.c.type == TYPE, flows.c.state == "completed", flows.c.id >= mid)
            .order_by(flows.c.id)
            .limit(1)
        ).scalar_one()
        oldest, newest = conn.execute(
            select(func.min(flows.c.created_at), func.max(flows.c.created_at)).where(
                flows.c.type == TYPE
            )
        ).one()
        record = conn.execute(select(flows.c.props).where(flows.c.id == completed)).scalar_one()
    middle = oldest + (newest - oldest) / 2
    week = timedelta(days=7)

    def window(lo: Any, key: str = "created") -> str:
        return f"{key}_from={_minute(lo)}&{key}_to={_minute(lo + week)}"

    newest_week, middle_week, oldest_week = window(newest - week), window(middle), window(oldest)
    base = f"/flows/types/{TYPE}"
    with engine.connect() as conn:
        # The id at the bottom of the middle week's first page: its "Older" cursor.
        in_middle = conn.execute(
            select(flows.c.id)
            .where(
                flows.c.type == TYPE,
                flows.c.created_at >= middle,
                flows.c.created_at <= middle + week,
            )
            .order_by(flows.c.created_at.desc(), flows.c.id.desc())
            .offset(20)
            .limit(1)
        ).scalar_one()
    search = quote(f"my_record_id={record['my_record_id']}")
    return {
        "overview": "/flows/",
        "type list": base,
        "type list, state filter": f"{base}?state={FILTER_STATE}",
        "type list, errored only": f"{base}?errored=1",
        "type list, deep keyset page": f"{base}?before={deep}",
        "type list, created in the newest week": f"{base}?{newest_week}",
        "type list, created in a middle week": f"{base}?{middle_week}",
        "type list, created in the oldest week": f"{base}?{oldest_week}",
        "type list, middle week, next page": f"{base}?{middle_week}&before={in_middle}",
        "type list, middle week + state": f"{base}?{middle_week}&state={FILTER_STATE}",
        "type list, middle week + errored": f"{base}?{middle_week}&errored=1",
        "type list, updated in a middle week": f"{base}?{window(middle, 'updated')}",
        "type list, updated middle week + state": (
            f"{base}?{window(middle, 'updated')}&state={FILTER_STATE}"
        ),
        "type list, prop search": f"{base}?q={search}",
        "type list, stalled only": f"{base}?stalled=1",
        "type list, free-text search": f"{base}?q={quote(record['my_record_id'])}",
        "type list, free-text search, no match": f"{base}?q=no-such-record",
        "bulk-retry preview, middle week": f"{base}/bulk-retry?{middle_week}",
        "type list, heat map 7d": f"{base}?window=7d",
        "flow page": f"{base}/{completed}",
    }


def _minute(at: Any) -> str:
    return str(at.strftime("%Y-%m-%dT%H:%M"))


def measure(app: Flask, db: SQLAlchemy, path: str, warmup: int, repeat: int) -> Measure:
    """Return the median server time of GET ``path`` and the statements of one request."""
    client = app.test_client()
    body = _get(client, path)
    rows = body.count('<tr id="flow-') or body.count('<td class="fs-num">')
    for _ in range(warmup):
        _get(client, path)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        _get(client, path)
        samples.append((time.perf_counter() - t0) * 1000)
    with app.app_context():
        engine = db.engine
    statements: list[Statement] = []

    def before(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def after(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        ms = (time.perf_counter() - conn.info.pop("bench_t0")) * 1000
        statements.append(Statement(sql, params, ms))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        _get(client, path)
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    return Measure(statistics.median(samples), samples, rows, statements)


def _get(client: Any, path: str) -> str:
    response = client.get(path)
    if response.status_code != 200:
        raise SystemExit(f"GET {path} answered {response.status_code}: {response.text[:500]}")
    body: str = response.text
    return body


def explain(engine: Engine, st: Statement) -> str:
    """Return the plan of ``st`` on its database (run with the same parameters)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            rows = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {st.sql}", st.params)
            return "\n".join(r[0] for r in rows)
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {st.sql}", st.params)
        return "\n".join(str(r[3]) for r in rows)


def render_sql(st: Statement) -> str:
    return " ".join(st.sql.split())


# -- main --------------------------------------------------------------------------------


def run_backend(
    backend: str, sizes: Sequence[int], args: argparse.Namespace, data_dir: Path
) -> dict[int, dict[str, Measure]]:
    """Seed (or reuse) one database per size and measure every page on it."""
    results: dict[int, dict[str, Measure]] = {}
    for n in sizes:
        print(f"{backend}, {pretty(n)} flows", flush=True)
        ctx = postgres_db(n, args.keep) if backend == "postgresql" else sqlite_db(n, data_dir)
        with ctx as url:
            app, db = make_app(url, args.page_size)
            with app.app_context():
                paths = page_paths(db.engine)
                # The heat map reads the rollup: give every size the largest one retention
                # keeps (its size depends on edges and periods, not on flows).
                bench_rollup.empty_rollup(db.engine)
                bench_rollup.fill_rollup(db.engine)
            results[n] = {}
            for page in pages(args):
                m = measure(app, db, paths[page], args.warmup, args.repeat)
                results[n][page] = m
                print(
                    f"  {page:<30} {m.median_ms:8.2f} ms  ({len(m.statements)} statements,"
                    f" {m.rows} rows)",
                    flush=True,
                )
            if n == sizes[-1]:  # explain while the large database still exists
                with app.app_context():
                    for page in _over_target(results, sizes):
                        report_slow(db.engine, page, results[n][page])
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
    return results


def pages(args: argparse.Namespace) -> list[str]:
    """Return the pages to measure: every page, or those whose name contains ``--pages``."""
    wanted = [w.strip() for w in (args.pages or "").split(",") if w.strip()]
    return [p for p in PAGES if not wanted or any(w in p for w in wanted)]


def _over_target(results: dict[int, dict[str, Measure]], sizes: Sequence[int]) -> list[str]:
    small, big = results[sizes[0]], results[sizes[-1]]
    if len(sizes) < 2:
        return []
    return [p for p in big if big[p].median_ms > TARGET_RATIO * small[p].median_ms]


def rerun(engine: Engine, st: Statement) -> Statement:
    """Return ``st`` timed again, all rows fetched.

    The cursor hooks time ``execute`` only, and sqlite3 returns from it at the first row.
    """
    with engine.connect() as conn:
        t0 = time.perf_counter()
        conn.exec_driver_sql(st.sql, st.params).fetchall()
        return Statement(st.sql, st.params, (time.perf_counter() - t0) * 1000)


def report_slow(engine: Engine, page: str, m: Measure) -> None:
    """Print the statements of an over-target page, and the plan of the slowest."""
    print(f"\n### Over target: {page} ({m.median_ms:.1f} ms)\n")
    timed = sorted((rerun(engine, st) for st in m.statements), key=lambda s: -s.ms)
    for st in timed:
        print(f"- {st.ms:8.2f} ms  `{render_sql(st)[:300]}`")
    slowest = timed[0]
    print(f"\nPlan of the slowest, parameters {slowest.params!r}:\n")
    print("```")
    print(explain(engine, slowest))
    print("```\n", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k vs 100k instead of 1k vs 1M")
    parser.add_argument("--sizes", help="comma-separated flow counts, smallest first")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per page first")
    parser.add_argument("--page-size", type=int, default=10, help="FLOWSTATE_PAGE_SIZE")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL databases")
    parser.add_argument("--data-dir", type=Path, help="where the SQLite files live (kept)")
    parser.add_argument("--pages", help="comma-separated parts of page names (default: all)")
    args = parser.parse_args(argv)
    if args.sizes:
        sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    else:
        sizes = [1_000, 100_000] if args.quick else [1_000, 1_000_000]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    print(f"# Admin pages: {' vs '.join(pretty(n) for n in sizes)} flows on {machine()}")
    print(f"page size {args.page_size}, median of {args.repeat} after {args.warmup} warm-ups")
    with tempfile.TemporaryDirectory(prefix="flowstate_bench_admin_") as tmp:
        data_dir = args.data_dir or Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        all_results = {b: run_backend(b, sizes, args, data_dir) for b in backends}
    small, big = sizes[0], sizes[-1]
    header = [
        "backend",
        "page",
        f"ms at {label(small)}",
        f"ms at {label(big)}",
        "ratio",
        f"≤ {TARGET_RATIO}x",
        "rows",
    ]
    rows = []
    for backend, results in all_results.items():
        for page in pages(args):
            a, b = results[small][page].median_ms, results[big][page].median_ms
            ratio = b / a
            rows.append(
                [
                    backend,
                    page,
                    f"{a:.2f}",
                    f"{b:.2f}",
                    f"{ratio:.2f}x",
                    "yes" if ratio <= TARGET_RATIO else "**no**",
                    _rows(results[small][page].rows, results[big][page].rows),
                ]
            )
    print()
    print(markdown_table(header, rows))


def _rows(a: int, b: int) -> str:
    if not (a or b):
        return "-"
    return str(a) if a == b else f"{a} / {b} (differ!)"


if __name__ == "__main__":
    main()
