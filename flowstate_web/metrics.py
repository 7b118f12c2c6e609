"""A Prometheus endpoint: flow counts, transitions, retries and time in state, per scrape.

Mounted by :class:`flowstate_web.FlowState` when ``FLOWSTATE_METRICS = True`` at
``FLOWSTATE_METRICS_PATH`` (default ``/metrics``). A scrape runs five statements whatever
the size of the tables, none of which scans flows or history:

1. the per-state counters (``flowstate_state_counts``): flows and errored flows;
2. the stalled counts (one capped index range per timed state, at most 1,001 entries each);
3. and 4. the rollup's all-time rows (:mod:`flowstate_web.rollup`): transitions by outcome,
   retries by actor kind, the time-in-state histograms;
5. the rollup cursor: when it last ran and how far it got.

Access: with ``FLOWSTATE_METRICS_TOKEN`` set, a request needs ``Authorization: Bearer
<token>``; otherwise the admin's access check applies (``FLOWSTATE_PUBLIC`` opens it).
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Final

from flask import Flask, Response, current_app, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import rollup
from .models import rollup_cursor
from .registry import find_flow_type

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - the optional extra is missing
    raise RuntimeError(
        "FLOWSTATE_METRICS needs prometheus_client: pip install 'flowstate-web[metrics]'"
    ) from exc

DEFAULTS: Final[dict[str, Any]] = {
    "FLOWSTATE_METRICS": False,
    "FLOWSTATE_METRICS_PATH": "/metrics",
    "FLOWSTATE_METRICS_TOKEN": None,
}

#: Histogram buckets: every 4th bin bound of the rollup (a factor 4 apart), 0.1 s .. 19 days.
BUCKETS: Final[tuple[int, ...]] = tuple(range(0, len(rollup.BOUNDS), 4))


class FlowStateCollector(Collector):
    """Read the counters and the rollup on each scrape (five statements)."""

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (called by ``generate_latest``)."""
        ext = current_app.extensions["flowstate"]
        yield from collect(ext.db.session())


def collect(session: Session) -> Iterator[Any]:
    """Yield the metric families from ``session``'s database."""
    from .admin import queries

    counts = queries.state_counts(session)
    flows = GaugeMetricFamily(
        "flowstate_flows", "Flows per type and state (from the counters)", labels=["type", "state"]
    )
    errored = GaugeMetricFamily(
        "flowstate_flows_errored", "Errored flows per type and state", labels=["type", "state"]
    )
    for c in counts.cells:
        flows.add_metric([c.type, c.state], c.total)
        errored.add_metric([c.type, c.state], c.errored)
    yield flows
    yield errored

    stalled = GaugeMetricFamily(
        "flowstate_flows_stalled",
        f"Flows past their state's timeout (counted up to {queries.COUNT_LIMIT + 1})",
        labels=["type", "state"],
    )
    for (type_, state), m in sorted(queries.stalled_counts(session, counts.cells).items()):
        stalled.add_metric([type_, state], m.n + (1 if m.capped else 0))
    yield stalled

    edges, dwell = rollup.totals(session)
    taken: dict[tuple[str, str, str], int] = defaultdict(int)
    retries: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in edges:
        cls = find_flow_type(r.type)
        graph = cls.graph() if cls is not None else None
        outcome = "error" if graph is not None and r.to_state in graph.error_states else "ok"
        taken[r.type, r.name, outcome] += int(r.n)
        spec = graph.transition(r.name) if graph is not None else None
        if spec is not None and spec.retry:
            retries[r.type, r.name, r.actor_kind] += int(r.n)
    transitions = CounterMetricFamily(
        "flowstate_transitions",
        "Transitions rolled up from the history; outcome=error when into an error state",
        labels=["type", "transition", "outcome"],
    )
    for key, n in sorted(taken.items()):
        transitions.add_metric(list(key), n)
    yield transitions
    retried = CounterMetricFamily(
        "flowstate_retries",
        "Retry transitions by who ran them: admin, cli (from the history's meta) or code (jobs)",
        labels=["type", "transition", "actor_kind"],
    )
    for key, n in sorted(retries.items()):
        retried.add_metric(list(key), n)
    yield retried

    yield _time_in_state(dwell)

    cursor = session.execute(select(rollup_cursor.c.last_id, rollup_cursor.c.updated_at)).first()
    last = GaugeMetricFamily(
        "flowstate_rollup_last_run_timestamp_seconds",
        "When the history rollup last ran (alert if it stops)",
    )
    if cursor is not None and cursor.updated_at is not None:
        last.add_metric([], rollup.as_utc(cursor.updated_at).timestamp())
    yield last


def _time_in_state(dwell: list[Any]) -> HistogramMetricFamily:
    bins: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for r in dwell:
        bins[r.type, r.state][int(r.bin)] += int(r.n)
        sums[r.type, r.state] += float(r.seconds)
    family = HistogramMetricFamily(
        "flowstate_time_in_state_seconds",
        "Time a flow spent in a state before a transition left it (from the history rollup;"
        " the time between consecutive transitions, not the transition's execution time)",
        labels=["type", "state"],
    )
    for key in sorted(bins):
        counts = bins[key]
        buckets: list[tuple[str, float]] = []
        for b in BUCKETS:
            below = sum(n for i, n in counts.items() if i <= b)
            buckets.append((_le(rollup.BOUNDS[b]), below))
        buckets.append(("+Inf", sum(counts.values())))
        family.add_metric(list(key), buckets, sums[key])
    return family


def _le(bound: float) -> str:
    return f"{bound:.6g}"


def allowed() -> bool:
    """Return whether this request may read the metrics."""
    token = current_app.config.get("FLOWSTATE_METRICS_TOKEN")
    if token:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), str(token).encode()
        )
    ext = current_app.extensions["flowstate"]
    if ext.access is None:
        return bool(current_app.config.get("FLOWSTATE_PUBLIC", False))
    return bool(ext.access())


def init_app(app: Flask) -> None:
    """Mount the endpoint on ``app`` (called by ``FlowState.init_app`` when enabled)."""
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FlowStateCollector())

    def metrics() -> Response:
        if not allowed():
            headers = {"WWW-Authenticate": "Bearer"}
            if app.config.get("FLOWSTATE_METRICS_TOKEN"):
                return Response("401 Unauthorized\n", 401, headers, mimetype="text/plain")
            return Response("403 Forbidden\n", 403, mimetype="text/plain")
        return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.add_url_rule(
        app.config["FLOWSTATE_METRICS_PATH"], endpoint="flowstate_metrics", view_func=metrics
    )
