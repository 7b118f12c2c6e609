"""Helpers shared by the benchmark scripts: databases, timing, memory, tables.

Nothing here is part of the package; the scripts in ``bench/`` are run by hand
(see ``bench/README.md``), never collected by pytest.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

#: The PostgreSQL server used by the benchmarks (trust auth); a throw-away database is
#: created next to the one named here and dropped afterwards.
PG_URL = os.environ.get(
    "FLOWSTATE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

#: Durability settings applied identically to the engine's and the floor's SQLite
#: connections: write-ahead log, fsync at checkpoints only (the usual production choice
#: for SQLite web apps), and a busy timeout so writers queue instead of failing.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=5000",
)


def apply_sqlite_pragmas(dbapi_conn: Any) -> None:
    """Apply :data:`SQLITE_PRAGMAS` to a raw ``sqlite3`` connection."""
    cur = dbapi_conn.cursor()
    for pragma in SQLITE_PRAGMAS:
        cur.execute(pragma)
    cur.close()


def sqlite_engine(url: str, **kwargs: Any) -> Engine:
    """Return an engine on ``url`` whose every connection gets :data:`SQLITE_PRAGMAS`."""
    engine = create_engine(url, **kwargs)
    install_sqlite_pragmas(engine)
    return engine


def install_sqlite_pragmas(engine: Engine) -> None:
    """Make every new connection of ``engine`` apply :data:`SQLITE_PRAGMAS`."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        apply_sqlite_pragmas(dbapi_conn)


@contextmanager
def sqlite_database() -> Iterator[tuple[str, Path]]:
    """Yield ``(sqlalchemy_url, path)`` of a fresh SQLite file in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="flowstate_bench_") as tmp:
        path = Path(tmp) / "bench.db"
        yield f"sqlite:///{path}", path


@contextmanager
def postgres_database(base_url: str = PG_URL) -> Iterator[str]:
    """Yield the URL of a fresh PostgreSQL database (``flowstate_bench_<random>``), then drop it."""
    admin_url = make_url(base_url)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"flowstate_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def median(values: Sequence[float]) -> float:
    """Return the median of ``values``."""
    return statistics.median(values)


def rss_kib() -> int:
    """Return this process's resident set size in KiB (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def machine() -> str:
    """Describe the machine the benchmark ran on, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()},"
        f" Python {platform.python_version()}"
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render ``rows`` under ``header`` as a GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
