"""The history rollup's cost per history row, and the heat-map page at full rollup size.

1. **µs per history row**: seeds ``--flows`` flows with :mod:`seed` (set-based, the two demo
   types, about 5 history rows each), then times :func:`flowstate_web.rollup.run` over all of
   the history in batches of ``--limit`` (medians of ``--repeat`` runs, the rollup tables
   emptied between runs). The transition's own transaction writes nothing for the rollup,
   so the transition benchmark is unchanged by design.
2. **heat-map page**: :func:`fill_rollup` writes the largest rollup the retention keeps
   (every 5-minute period of 2 h, hourly period of 26 h and daily period of 8 days, for
   every edge and state of both demo types, 12 histogram bins per state) and the type page
   is timed with the 24 h and 7 d windows, empty rollup vs full. The page's rollup reads
   depend on the number of edges and periods, never on the number of flows or history rows.

    .venv/bin/python bench/bench_rollup.py --flows 20000 --backends sqlite,postgresql
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))

import seed
from _common import machine, markdown_table, postgres_database, sqlite_database

from flowstate_web import rollup
from flowstate_web.demo.orders_flow import OrderFulfilmentFlow
from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow
from flowstate_web.models import metadata, rollup_cursor, rollup_dwell, rollup_edges, transitions

TYPES = (SyncThirdPartyApiFlow, OrderFulfilmentFlow)


def empty_rollup(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in (rollup_edges, rollup_dwell, rollup_cursor):
            conn.execute(delete(table))


def fill_rollup(engine: Engine, now: datetime | None = None) -> int:
    """Write the largest rollup retention keeps for the demo types; return rows written."""
    now = now or datetime.now(UTC)
    periods = [(rollup.FINE, rollup.floor(now - timedelta(minutes=5 * i), rollup.FINE))
               for i in range(24)]  # fmt: skip
    periods += [(rollup.HOURLY, rollup.floor(now - timedelta(hours=i), rollup.HOURLY))
                for i in range(26)]  # fmt: skip
    periods += [(rollup.DAILY, rollup.floor(now - timedelta(days=i), rollup.DAILY))
                for i in range(9)]  # fmt: skip
    periods.append((rollup.ALL_TIME, rollup.EPOCH))
    edge_rows, dwell_rows = [], []
    for cls in TYPES:
        g = cls.graph()
        for grain, period in periods:
            for t in g.transitions:
                for src in t.sources:
                    edge_rows.append({"type": cls.type_name, "grain": grain, "period": period,
                                      "name": t.name, "from_state": src, "to_state": t.target,
                                      "actor_kind": "code", "n": 7})  # fmt: skip
            for s in g.states:
                for b in range(10, 22):
                    dwell_rows.append({"type": cls.type_name, "grain": grain,
                                       "period": period, "state": s.name, "bin": b, "n": 3,
                                       "seconds": 9.0})  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(rollup_edges), edge_rows)
        conn.execute(insert(rollup_dwell), dwell_rows)
    return len(edge_rows) + len(dwell_rows)


def time_rollup(engine: Engine, limit: int, repeat: int) -> tuple[int, float]:
    """Return (history rows, median µs per row) of rolling up the whole history."""
    with engine.connect() as conn:
        rows = int(conn.execute(select(func.count()).select_from(transitions)).scalar_one())
    samples = []
    for _ in range(repeat):
        empty_rollup(engine)
        t0 = time.perf_counter()
        with Session(engine) as s:
            done = 0
            while True:
                n = rollup.run(s, limit=limit)
                done += n
                if n < limit:
                    break
        samples.append((time.perf_counter() - t0) / done * 1e6)
        assert done == rows, (done, rows)
    return rows, statistics.median(samples)


def time_page(engine_url: str, path: str, repeat: int) -> float:
    """Return the median ms of GET ``path`` on the admin (via bench_admin's app)."""
    import bench_admin

    app, db = bench_admin.make_app(engine_url)
    client = app.test_client()
    for _ in range(3):
        bench_admin._get(client, path)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        bench_admin._get(client, path)
        samples.append((time.perf_counter() - t0) * 1000)
    with app.app_context():
        db.engine.dispose()
    return statistics.median(samples)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flows", type=int, default=20_000)
    p.add_argument("--limit", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--page-repeat", type=int, default=15)
    p.add_argument("--backends", default="sqlite,postgresql")
    args = p.parse_args(argv)
    print(f"# History rollup on {machine()}\n")
    cost_rows, page_rows = [], []
    for backend in args.backends.split(","):
        ctx = postgres_database() if backend == "postgresql" else sqlite_database()
        with ctx as made:
            url = made if isinstance(made, str) else made[0]
            engine = seed.make_engine(url)
            metadata.drop_all(engine)
            seed.seed(engine, args.flows, types=list(TYPES))
            rows, us = time_rollup(engine, args.limit, args.repeat)
            cost_rows.append([backend, f"{rows:,}", args.limit, f"{us:.1f}"])
            print(f"{backend}: {rows:,} history rows, {us:.1f} µs/row", file=sys.stderr)
            base = f"/flows/types/{SyncThirdPartyApiFlow.type_name}"
            empty_rollup(engine)
            empty = {w: time_page(url, f"{base}?window={w}", args.page_repeat)
                     for w in ("24h", "7d")}  # fmt: skip
            n_rows = fill_rollup(engine)
            full = {w: time_page(url, f"{base}?window={w}", args.page_repeat)
                    for w in ("24h", "7d")}  # fmt: skip
            for w in ("24h", "7d"):
                page_rows.append([backend, w, f"{empty[w]:.1f}", f"{n_rows:,}", f"{full[w]:.1f}",
                                  f"{full[w] / empty[w]:.2f}x"])  # fmt: skip
            engine.dispose()
    print("## Rollup cost\n")
    print(markdown_table(["backend", "history rows", "batch", "µs per row"], cost_rows))
    print("\n## Type page (heat map) with an empty vs a full-retention rollup\n")
    print(markdown_table(["backend", "window", "empty rollup ms", "rollup rows",
                          "full rollup ms", "ratio"], page_rows))  # fmt: skip


if __name__ == "__main__":
    main()
