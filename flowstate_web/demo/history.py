"""Demo history for the heat map: past traffic over the last hours, then one rollup.

:func:`seed_history` runs extra demo flows to a final or an error state through the real
transitions, then moves every demo flow's history back in time (the order and gaps of each
flow's own transitions kept plausible: a per-state typical wait, varied), so the type
page's heat map and time-in-state percentiles have something to show. Flows still in
progress keep a recent last transition, so no timeout fires because of the rewrite.
"""

from __future__ import annotations

import random
import zlib
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from .. import rollup
from ..models import flows, outbox, transitions
from ..registry import find_flow_type
from .seed import DEMO_FLOWS, drive, new_props, paths
from .simulated_api import SimulatedApi

#: Share of the extra flows sent into an error state.
FAILURE_SHARE = 0.18


def _typical_wait(state: str) -> float:
    """Return a state's typical wait in seconds (stable per name: 2 s .. 8 min)."""
    return 2.0 * 1.6 ** (zlib.crc32(state.encode()) % 12)


def seed_history(
    session: Session, n: int = 120, *, hours: float = 6, rng: random.Random | None = None
) -> int:
    """Add ``n`` finished demo flows, spread all demo history over ``hours``, roll it up.

    Runs in an app context (the flows use the app's session). Returns the history rows
    rolled up.
    """
    rng = rng or random.Random()
    api = SimulatedApi(failure_rate=0.0, latency=0.0, backorder_rate=0.0, rng=rng)
    ext = current_app.extensions["flowstate"]
    held, ext.queue = ext.queue, None  # history, not work: nothing is sent
    ids: list[int] = []
    try:
        for _ in range(n):
            cls = rng.choice(DEMO_FLOWS)
            graph = cls.graph()
            found = paths(graph)
            errors = [s for s in graph.error_states if s in found]
            finals = [s for s in graph.final_states if s in found]
            target = (
                rng.choice(errors)
                if errors and rng.random() < FAILURE_SHARE
                else rng.choice(finals)
            )
            flow = cls.create(**new_props(cls, rng))
            ids.append(flow.id)
            drive(flow, found[target], api)
        session.execute(delete(outbox).where(outbox.c.flow_id.in_(ids)))
        session.commit()
    finally:
        ext.queue = held
    spread(session, hours=hours, rng=rng)
    total = 0
    while True:
        done = rollup.run(session)
        total += done
        if done < 10_000:
            return total


def spread(session: Session, *, hours: float, rng: random.Random) -> None:
    """Move each demo flow's history back so it ends within the last ``hours``."""
    now = datetime.now(UTC)
    names = [cls.type_name for cls in DEMO_FLOWS]
    rows = session.execute(
        select(transitions.c.id, transitions.c.flow_id, transitions.c.from_state, flows.c.type)
        .join(flows, flows.c.id == transitions.c.flow_id)
        .where(flows.c.type.in_(names))
        .order_by(transitions.c.flow_id, transitions.c.seq)
    ).all()
    by_flow: dict[int, list[tuple[int, str]]] = {}
    for r in rows:
        by_flow.setdefault(r.flow_id, []).append((r.id, r.from_state))
    found = session.execute(
        select(flows.c.id, flows.c.state, flows.c.type, flows.c.completed_at).where(
            flows.c.type.in_(names)
        )
    ).all()
    states = {r.id: r.state for r in found}
    types = {r.id: r.type for r in found}
    completed = {r.id for r in found if r.completed_at is not None}
    tx_updates: list[dict[str, object]] = []
    flow_updates: list[dict[str, object]] = []
    for flow_id, steps in by_flow.items():
        cls = find_flow_type(types[flow_id])
        state = states[flow_id]
        graph = cls.graph() if cls is not None else None
        settled = graph is not None and (state in graph.final_states or state in graph.error_states)
        ago = rng.uniform(60, hours * 3600) if settled else rng.uniform(1, 20)
        at = now - timedelta(seconds=ago)
        end = at
        for tx_id, from_state in reversed(steps):
            tx_updates.append({"tid": tx_id, "at": at})
            wait = _typical_wait(from_state) * rng.lognormvariate(0, 0.6)
            at -= timedelta(seconds=wait)
        done = end if flow_id in completed else None
        flow_updates.append({"fid": flow_id, "created": at, "end": end, "done": done})
    if tx_updates:
        session.execute(
            update(transitions)
            .where(transitions.c.id == bindparam("tid"))
            .values(created_at=bindparam("at")),
            tx_updates,
        )
    if flow_updates:
        session.execute(
            update(flows)
            .where(flows.c.id == bindparam("fid"))
            .values(
                created_at=bindparam("created"),
                updated_at=bindparam("end"),
                state_entered_at=bindparam("end"),
                completed_at=bindparam("done"),
            ),
            flow_updates,
        )
    session.commit()
