"""``bench/soak.py --short``: worker processes SIGKILLed under load, then invariants from the DB.

Under two minutes on PostgreSQL + Redis: two ``flowstate-web worker`` processes, a kill every
2.5 s, the admin's pages loaded meanwhile. Asserts what the soak checks: no invariant
violation, no silently stalled flow (every flow final, errored, waiting for a hand-off the
relay will send, or classified), no 5xx from the admin.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests._proc import run
from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("FLOWSTATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def test_soak_short_mode_kills_workers_and_keeps_every_invariant(pg_url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} unreachable: {exc} (CI requires Redis)")
        pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTATE_")}
    # The soak makes (and drops) its own scratch database on the tests' server; ``pg_url``
    # only makes this test skip (or fail in CI) like the others when there is no server.
    env |= {"FLOWSTATE_BENCH_POSTGRES_URL": PG_URL, "FLOWSTATE_SOAK_REDIS_URL": REDIS_URL}
    proc = run(
        [sys.executable, "bench/soak.py", "--short", "--json"], cwd=ROOT, env=env, timeout=170
    )
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["kills"] >= 5
    assert figures["re-sent by the relay"] >= 1  # the lost sends, at least
    assert figures["flows"] >= 50 and figures["transitions"] > figures["flows"]
    assert figures["invariant violations"] == dict.fromkeys(figures["invariant violations"], 0)
    assert figures["invariant violations"]  # the checks ran
    assert figures["silently stalled"] == 0, figures["stalled examples"]
    assert figures["after recovery"]["job lost in a killed worker"] == 0
    assert figures["admin 5xx"] == 0 and figures["admin requests"] > 20
