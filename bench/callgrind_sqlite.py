"""Instructions per transaction on SQLite, counted by callgrind: a measure load cannot move.

Wall and CPU time on a shared 2-core VM move by more than a small change to the engine;
``valgrind --tool=callgrind`` counts the instructions the process executes, which do not
depend on what else runs. Each measurement runs a fresh process twice, with ``--small``
and ``--large`` transactions after the same set-up and warm-up, and reports the difference
divided by ``large - small``: start-up and set-up cancel out. (Instructions are not time:
cache misses and the kernel's work, e.g. SQLite's writes, are not in them.)

What (SQLite WAL, ``synchronous=NORMAL``, one flow, ``PingPong`` from
``bench_transitions``):

- ``floor``: the raw-driver floor of ``bench_transitions.py`` (five statements).
- ``raw``: the engine's statements (``get``'s SELECT, the lock, INSERT history, UPDATE
  flow, COMMIT) on the engine's schema through the bare ``sqlite3`` connection.
- ``session``: ``Session.connection()`` + ``Session.commit()`` alone, no statement.
- ``get``: ``PingPong.get(flow_id, session=s)`` + ``ping()``/``pong()``.
- ``lock``: the same with ``get(lock=True)``.

    .venv/bin/python bench/callgrind_sqlite.py [floor,raw,session,get,lock]
        [--small 100] [--large 600]

Needs ``valgrind`` (Debian package ``valgrind``). About a minute per measurement.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SELECT = "SELECT * FROM flowstate_flows WHERE id = ?"
LOCK = "UPDATE flowstate_flows SET seq = seq WHERE id = ? RETURNING *"
INSERT = (
    "INSERT INTO flowstate_transitions (flow_id, seq, name, from_state, to_state, created_at,"
    " actor, reason, error_type, error_message, error_traceback, meta)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id"
)
UPDATE = (
    "UPDATE flowstate_flows SET state=?, errored=?, seq=?, updated_at=?, state_entered_at=?"
    " WHERE id = ?"
)


def run(what: str, n: int) -> None:
    """Set up, warm up, then run ``n`` transactions of ``what`` (inside valgrind)."""
    from bench_transitions import (
        Floor,
        PingPong,
        make_engine,
        new_floor_flow,
        raw_connect,
        setup_schema,
    )
    from sqlalchemy.orm import Session

    url = f"sqlite:///{tempfile.mkdtemp()}/callgrind.db"
    setup_schema("sqlite", url, triggers=True)
    engine = make_engine("sqlite", url, durable=False)
    with Session(engine) as s:
        fid = PingPong.create(session=s).id
    session = Session(engine)

    if what == "floor":
        raw = raw_connect("sqlite", url, durable=False)
        floor = Floor("sqlite", raw, new_floor_flow(raw, "sqlite"))
        step = floor.ops
    elif what == "raw":
        raw = raw_connect("sqlite", url, durable=False)

        def step(k: int) -> None:
            for _ in range(k):
                raw.execute(SELECT, (fid,)).fetchone()
                row = raw.execute(LOCK, (fid,)).fetchone()
                state, seq = row[2], row[4]
                target = "b" if state == "a" else "a"
                ts = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
                values = (fid, seq + 1, "x", state, target, ts, *[None] * 5, "null")
                raw.execute(INSERT, values).fetchone()
                raw.execute(UPDATE, (target, 0, seq + 1, ts, ts, fid))
                raw.commit()
    elif what == "session":

        def step(k: int) -> None:
            for _ in range(k):
                session.connection()
                session.commit()
    else:
        lock = what == "lock"

        def step(k: int) -> None:
            for _ in range(k):
                flow = PingPong.get(fid, session=session, lock=lock)
                flow.ping() if flow.state == "a" else flow.pong()

    step(50)
    step(n)


def instructions(what: str, n: int) -> int:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            what,
            str(n),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"no callgrind total in:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run(sys.argv[2], int(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", nargs="?", default="floor,raw,session,get,lock")
    p.add_argument("--small", type=int, default=100)
    p.add_argument("--large", type=int, default=600)
    args = p.parse_args()
    results = {}
    for what in args.what.split(","):
        per_tx = (instructions(what, args.large) - instructions(what, args.small)) / (
            args.large - args.small
        )
        results[what] = per_tx
        floor = results.get("floor")
        times = f"  {per_tx / floor:.2f}x floor" if floor else ""
        print(f"{what:8} {per_tx:12,.0f} instructions per transaction{times}", flush=True)


if __name__ == "__main__":
    main()
