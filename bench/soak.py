"""Soak: the demo flows on PostgreSQL + Redis with worker processes SIGKILLed as they run.

M ``flowstate-web worker --demo`` processes share a throw-away PostgreSQL database and a
Redis queue; this process creates demo flows (the simulated APIs fail at
``--failure-rate``; ``--lost-sends`` of the first hand-offs are committed but never sent, as
if the process died right after its commit), SIGKILLs a random worker every
``--kill-every`` seconds (starting a replacement), and loads the admin's pages in a bounded
loop. Then it lets the queue and the relay settle and checks, from the database:

- invariants: per-flow sequence 1..n without gaps, the history chain (each row starts where
  the previous ended, the first at the initial state), current state = last history row,
  counters = recount, no orphan artefacts or outbox rows;
- that no flow is silently stalled: each is final, errored, waits for a hand-off the relay
  will still send, or is classified (a job lost in a killed worker — recovered here by the
  operator's Re-dispatch — or a worker killed mid-job, which needs a state timeout).

Run by hand (figures go to BENCHMARKS.md)::

    .venv/bin/python bench/soak.py --duration 120 --workers 4
    .venv/bin/python bench/soak.py --short --json     # < 2 minutes; tests/test_soak.py

Needs PostgreSQL (``FLOWSTATE_BENCH_POSTGRES_URL``) and Redis (``FLOWSTATE_SOAK_REDIS_URL``,
default ``redis://127.0.0.1:6379/14``; keys are unique per run and deleted after).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import postgres_database  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

REDIS_URL = os.environ.get("FLOWSTATE_SOAK_REDIS_URL", "redis://127.0.0.1:6379/14")

INVARIANTS = {
    "seq 1..n": """
        SELECT count(*) FROM flowstate_flows f
        LEFT JOIN (SELECT flow_id, count(*) n, min(seq) lo, max(seq) hi
                   FROM flowstate_transitions GROUP BY flow_id) t ON t.flow_id = f.id
        WHERE coalesce(t.n, 0) <> f.seq OR (f.seq > 0 AND (t.lo <> 1 OR t.hi <> f.seq))""",
    "history chain": """
        SELECT count(*) FROM (
            SELECT from_state, lag(to_state) OVER (PARTITION BY flow_id ORDER BY seq) prev
            FROM flowstate_transitions) c
        WHERE prev IS NOT NULL AND prev <> from_state""",
    "state = last history row": """
        SELECT count(*) FROM flowstate_flows f JOIN flowstate_transitions t
          ON t.flow_id = f.id AND t.seq = f.seq
        WHERE t.to_state <> f.state""",
    "orphan artefacts": """
        SELECT count(*) FROM flowstate_artefacts a
        LEFT JOIN flowstate_transitions t ON t.id = a.transition_id
        WHERE t.id IS NULL OR t.flow_id <> a.flow_id""",
    "orphan outbox rows": """
        SELECT count(*) FROM flowstate_outbox o
        LEFT JOIN flowstate_flows f ON f.id = o.flow_id WHERE f.id IS NULL""",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=90.0, help="seconds of load (default 90)")
    p.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    p.add_argument("--threads", type=int, default=2, help="threads per worker (default 2)")
    p.add_argument("--kill-every", type=float, default=3.0, help="seconds between SIGKILLs")
    p.add_argument("--rate", type=float, default=10.0, help="new flows per second")
    p.add_argument("--failure-rate", type=float, default=0.2, help="simulated API failures")
    p.add_argument("--relay-delay", type=float, default=3.0, help="FLOWSTATE_OUTBOX_RELAY_DELAY")
    p.add_argument(
        "--lost-sends",
        type=float,
        default=0.1,
        help="share of new flows whose first send is lost (as if the web process died)",
    )
    p.add_argument("--settle", type=float, default=45.0, help="max seconds to settle")
    p.add_argument("--short", action="store_true", help="under 2 minutes (the test's mode)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--seed", type=int, default=1)
    return p


class Workers:
    """The worker processes: start, SIGKILL a random one (and replace it), stop."""

    def __init__(self, env: dict[str, str], n: int, threads: int, logs: Path) -> None:
        self.env, self.threads, self.logs = env, threads, logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.kills = 0
        for _ in range(n):
            self.start()

    def start(self) -> None:
        log = open(self.logs / f"worker-{len(self.procs) + self.kills}.log", "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "flowstate_web", "worker", "--demo"]
        cmd += ["--threads", str(self.threads), "--relay-interval", "0.5"]
        self.procs.append(
            subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        )

    def kill_one(self, rng: random.Random) -> None:
        victim = self.procs.pop(rng.randrange(len(self.procs)))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.kills += 1
        self.start()

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class AdminLoad(threading.Thread):
    """GET the overview, a type page and a flow page in turn, timing each (bounded: 10/s)."""

    def __init__(self, app: Any, flow_ids: list[tuple[str, int]]) -> None:
        super().__init__(daemon=True)
        self.app, self.flow_ids = app, flow_ids
        self.stop_event = threading.Event()
        self.times: list[float] = []
        self.errors = 0

    def run(self) -> None:
        client = self.app.test_client()
        rng = random.Random(2)
        pages = [
            "/flows/",
            "/flows/types/SyncThirdPartyApiFlow",
            "/flows/types/OrderFulfilmentFlow",
        ]
        i = 0
        while not self.stop_event.wait(0.1):
            path = pages[i % len(pages)]
            if i % 4 == 3 and self.flow_ids:
                type_name, flow_id = rng.choice(self.flow_ids)
                path = f"/flows/types/{type_name}/{flow_id}"
            i += 1
            t0 = time.perf_counter()
            status = client.get(path).status_code
            self.times.append(time.perf_counter() - t0)
            self.errors += status >= 500


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def classify(session: Any) -> dict[str, list[tuple[str, int]]]:
    """Sort every flow that is neither final nor errored by why it is not moving."""
    from flowstate_web._executor import now
    from flowstate_web.models import flows, outbox, transitions
    from flowstate_web.registry import get_flow_type

    out: dict[str, list[tuple[str, int]]] = {
        "pending hand-off": [],
        "job lost in a killed worker": [],
        "killed mid-job": [],
        "after= callback lost": [],
        "silently stalled": [],
    }
    ts = now()
    entered = (transitions.c.flow_id == flows.c.id) & (transitions.c.seq == flows.c.seq)
    q = (
        select(
            flows.c.id, flows.c.type, flows.c.seq, transitions.c.id.label("tid"), transitions.c.name
        )
        .select_from(flows)
        .outerjoin(transitions, entered)
        .where(flows.c.completed_at.is_(None), flows.c.errored.is_(False))
    )
    for row in session.execute(q).all():
        key = (row.type, row.id)
        rows = session.execute(
            select(outbox.c.sent_at, outbox.c.available_at).where(
                outbox.c.flow_id == row.id,
                outbox.c.transition_id == row.tid
                if row.tid is not None
                else outbox.c.transition_id.is_(None),
            )
        ).all()
        spec = get_flow_type(row.type).graph().transition(row.name) if row.name else None
        if any(r.sent_at is None and r.available_at > ts for r in rows):
            out["pending hand-off"].append(key)
        elif rows:
            # Sent: a worker took the job and died holding it (huey has no acknowledgements).
            out["job lost in a killed worker"].append(key)
        elif spec is not None and not spec.enqueue and spec.after:
            out["after= callback lost"].append(key)  # at-most-once, by design
        elif spec is not None and not spec.enqueue:
            out["killed mid-job"].append(key)  # entered by a job's start transition
        else:
            out["silently stalled"].append(key)  # a declared hand-off with no outbox row
    return out


def invariants(session: Any) -> dict[str, int]:
    """Return the number of violations of each invariant, counted by SQL."""
    found = {name: int(session.execute(text(sql)).scalar_one()) for name, sql in INVARIANTS.items()}
    kept = session.execute(
        text("SELECT type, state, sum(n) FROM flowstate_state_counts GROUP BY type, state")
    ).all()
    kept_map = {(t, s): int(n) for t, s, n in kept if int(n)}
    actual = session.execute(
        text("SELECT type, state, count(*) FROM flowstate_flows GROUP BY type, state")
    ).all()
    found["counters = recount"] = int(kept_map != {(t, s): int(n) for t, s, n in actual})
    return found


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.short:
        args.duration, args.workers, args.kill_every, args.rate = 20.0, 2, 2.5, 6.0
        args.settle = min(args.settle, 40.0)
    rng = random.Random(args.seed)
    name = f"flowstate-soak-{uuid.uuid4().hex[:8]}"
    with postgres_database() as db_url, tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTATE_")}
        env |= {
            "FLOWSTATE_INSTANCE_PATH": str(Path(tmp) / "instance"),
            "FLOWSTATE_DATABASE_URL": db_url,
            "FLOWSTATE_DEMO_REDIS_URL": REDIS_URL,
            "FLOWSTATE_DEMO_QUEUE_NAME": name,
            "FLOWSTATE_DEMO_FAILURE_RATE": str(args.failure_rate),
            "FLOWSTATE_DEMO_LATENCY": "0.05",
            "FLOWSTATE_DEMO_BACKORDER_RATE": "0.2",
            "FLOWSTATE_DEMO_RESTOCK_SECONDS": "0.5",
            "FLOWSTATE_DEMO_DELIVERY_SECONDS": "0.5",
            "FLOWSTATE_OUTBOX_RELAY_DELAY": str(args.relay_delay),
            "FLOWSTATE_DEMO_SEED": "0",
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith("FLOWSTATE_")})
        from flowstate_web._executor import now
        from flowstate_web.app import create_app, db
        from flowstate_web.demo.seed import DEMO_FLOWS, start_new
        from flowstate_web.models import outbox, transitions
        from flowstate_web.outbox import redispatch
        from flowstate_web.timeouts import sweep

        app = create_app({"FLOWSTATE_DEMO": True, "FLOWSTATE_PUBLIC": True})
        made: list[tuple[str, int]] = []
        workers = Workers(env, args.workers, args.threads, Path(tmp))
        load = AdminLoad(app, made)
        load.start()
        t0 = time.monotonic()
        next_kill = t0 + args.kill_every
        n = 0
        try:
            while time.monotonic() - t0 < args.duration:
                with app.app_context():
                    cls = DEMO_FLOWS[n % len(DEMO_FLOWS)]
                    ext = app.extensions["flowstate"]
                    held = ext.queue
                    if rng.random() < args.lost_sends:
                        ext.queue = None  # committed, never sent: only the relay sends it
                    try:
                        made.append((cls.type_name, start_new(cls, rng).id))
                    finally:
                        ext.queue = held
                n += 1
                if time.monotonic() >= next_kill:
                    workers.kill_one(rng)
                    next_kill += args.kill_every
                time.sleep(1.0 / args.rate)  # the load's pace, not synchronisation

            def busy() -> int:
                with app.app_context():
                    unsent = select(func.count()).select_from(outbox)
                    q = unsent.where(outbox.c.sent_at.is_(None))
                    pending = int(db.session.execute(q).scalar_one())
                    db.session.remove()
                return pending

            with app.app_context():
                unsent_at_stop = busy()
            settle_end = time.monotonic() + args.settle
            last_seq = -1
            while time.monotonic() < settle_end:  # until nothing moves for 2 s and none unsent
                with app.app_context():
                    total = int(
                        db.session.execute(
                            select(func.count()).select_from(transitions)
                        ).scalar_one()
                    )
                    db.session.remove()
                if total == last_seq and busy() == 0:
                    break
                last_seq = total
                time.sleep(2.0)  # polling interval of the settle phase
            with app.app_context():
                before = classify(db.session)
                # The operator's recovery: re-dispatch the hand-offs lost in killed workers.
                lost = before["job lost in a killed worker"]
                from flowstate_web.registry import get_flow_type

                for type_name, flow_id in lost:
                    redispatch(get_flow_type(type_name).get(flow_id), actor="soak", reason="lost")
                # A worker killed mid-job leaves its flow in the job's in-progress state. The
                # state's timeout makes it stalled (shown in the admin), and its on_timeout
                # transition fails it, so Retry applies: run the worker's sweep as of a moment
                # past the longest timeout instead of waiting minutes for it.
                later = now() + max(
                    (s.timeout for cls in DEMO_FLOWS for s in cls.graph().timed_states),
                    default=timedelta(0),
                )
                swept = 0
                while (n := sweep(now=later, limit=500)) == 500:
                    swept += n
                swept += n
                db.session.remove()
            settle_end = time.monotonic() + args.settle
            last_seq = -1
            while lost and time.monotonic() < settle_end:
                with app.app_context():
                    total = int(
                        db.session.execute(
                            select(func.count()).select_from(transitions)
                        ).scalar_one()
                    )
                    db.session.remove()
                if total == last_seq and busy() == 0:
                    break
                last_seq = total
                time.sleep(2.0)  # polling interval of the settle phase
        finally:
            load.stop_event.set()
            load.join(timeout=10)
            workers.stop()
        with app.app_context():
            after = classify(db.session)
            found = invariants(db.session)
            figures = {
                "flows": len(made),
                "transitions": int(
                    db.session.execute(select(func.count()).select_from(transitions)).scalar_one()
                ),
                "kills": workers.kills,
                "handoffs": int(
                    db.session.execute(select(func.count()).select_from(outbox)).scalar_one()
                ),
                "unsent at the end of the load": unsent_at_stop,
                "re-sent by the relay": int(
                    db.session.execute(
                        select(func.count())
                        .select_from(outbox)
                        .where(
                            outbox.c.sent_at.is_not(None),
                            outbox.c.kind != "redispatch",
                            outbox.c.sent_at >= outbox.c.available_at,
                        )
                    ).scalar_one()
                ),
                "before recovery": {k: len(v) for k, v in before.items()},
                "failed by the timeout sweep": swept,
                "after recovery": {k: len(v) for k, v in after.items()},
                "silently stalled": len(after["silently stalled"]),
                "stalled examples": {
                    k: v[:5] for k, v in after.items() if v and k != "pending hand-off"
                },
                "invariant violations": found,
                "admin requests": len(load.times),
                "admin 5xx": load.errors,
                "admin p50 ms": round(_percentile(load.times, 0.5) * 1000, 1),
                "admin p99 ms": round(_percentile(load.times, 0.99) * 1000, 1),
            }
            db.session.remove()
            db.engine.dispose()
        _cleanup_redis(name)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:32} {value}")
    bad = sum(found.values()) + figures["silently stalled"] + figures["admin 5xx"]
    return 1 if bad else 0


def _cleanup_redis(name: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"*{name}*"):
        client.delete(key)
    client.close()


if __name__ == "__main__":
    sys.exit(main())
