"""Demo data: flows in every reachable state, made by running the real transitions.

Nothing writes a state directly: each seeded flow is created and walked along the shortest
path of declared transitions to its state, error states entered from inside ``except`` so
their error is recorded. Besides, some orders are seeded the way a flaky payment provider
leaves them: declined once or twice, retried, then authorised and carried on, so their
``payment_receipt`` has several versions for the flow page's artefact diff. Seeded flows are
snapshots: their hand-offs are not sent and are removed from the outbox, so they stay where
they were put; the errored ones continue through the queue once an operator retries them.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, select

from flowstate_web import Flow
from flowstate_web.graph import FlowGraph, TransitionSpec
from flowstate_web.models import flows, outbox
from flowstate_web.outbox import handoff

from .orders_flow import OrderFulfilmentFlow, payment_attempt
from .simulated_api import ApiError, PaymentDeclined, SimulatedApi
from .sync_flow import SyncThirdPartyApiFlow
from .tasks import AUTO_RETRY_ACTOR

DEMO_FLOWS: tuple[type[Flow], ...] = (SyncThirdPartyApiFlow, OrderFulfilmentFlow)

#: Orders seeded as declined, retried and authorised, per ``per_state`` of :func:`seed`.
RETRIED_ORDERS = 3
#: Where the retried orders end up (the states after a payment, mostly delivered).
_RETRIED_ENDS = ("delivered", "delivered", "shipped", "picking", "backordered")
#: Who retried a declined payment: the job queue by itself, or an operator with a reason.
_RETRIERS = (
    (AUTO_RETRY_ACTOR, "automatic retry of a failed job"),
    ("ops@example.com", "customer confirmed the card with their bank"),
)

_SKUS = ("MUG-BLUE", "TEE-L-BLACK", "POSTER-A2", "SOCKS-3PK", "NOTEBOOK-DOT")


def new_props(cls: type[Flow], rng: random.Random) -> dict[str, Any]:
    """Return plausible props for a new demo flow of ``cls``."""
    if cls is SyncThirdPartyApiFlow:
        return {
            "my_record_id": f"rec_{uuid.uuid4().hex[:8]}",
            "third_party_id": f"crm-{rng.randint(10000, 99999)}",
        }
    if cls is OrderFulfilmentFlow:
        return {
            "order_ref": f"ORD-{rng.randint(100000, 999999)}",
            "sku": rng.choice(_SKUS),
            "quantity": rng.randint(1, 4),
            "amount_cents": rng.randint(900, 25000),
        }
    raise LookupError(f"{cls.type_name} is not a demo flow")


def start_new(cls: type[Flow], rng: random.Random) -> Flow:
    """Create a live demo flow of ``cls`` and hand it to the job queue."""
    if cls is SyncThirdPartyApiFlow:
        sync = SyncThirdPartyApiFlow.create(**new_props(cls, rng))
        sync.pick()  # hands the fetch job off
        return sync
    session = current_app.extensions["flowstate"].db.session()
    if session.in_transaction():
        session.commit()
    with session.begin():  # the new order and its first hand-off commit together
        flow = cls.create(**new_props(cls, rng))
        handoff(flow, "authorise_payment")
    return flow


def paths(graph: FlowGraph) -> dict[str, list[TransitionSpec]]:
    """Return the shortest path of non-retry transitions from the initial state to each state."""
    found: dict[str, list[TransitionSpec]] = {graph.initial: []}
    todo = deque([graph.initial])
    while todo:
        state = todo.popleft()
        for t in graph.transitions_from(state):
            if not t.retry and t.target not in found:
                found[t.target] = [*found[state], t]
                todo.append(t.target)
    return found


def _args(t: TransitionSpec, flow: Flow, api: SimulatedApi) -> tuple[Any, ...]:
    """Return what a transition that persists an artefact needs, from the simulated API."""
    if isinstance(flow, SyncThirdPartyApiFlow) and t.name == "finish_third_party_api_request":
        return (api.fetch_record(flow.third_party_id),)
    if isinstance(flow, OrderFulfilmentFlow):
        if t.name == "authorise_payment":
            attempt = payment_attempt(flow)
            return (api.authorise_payment(flow.order_ref, flow.amount_cents, attempt=attempt),)
        if t.name == "ship":
            return (api.create_shipping_label(flow.order_ref, flow.sku, flow.quantity),)
    return ()


def drive(flow: Flow, path: list[TransitionSpec], api: SimulatedApi) -> None:
    """Run ``path`` on ``flow``; a step into an error state runs inside ``except ApiError``."""
    failing = SimulatedApi(failure_rate=1.0, latency=0.0, rng=api.rng)
    for t in path:
        if flow.state not in t.sources:
            return  # an after-commit callback already moved it on
        if t.target in flow.error_states:
            fail(flow, t.name, failing)
        else:
            flow.run(t.name, *_args(t, flow, api))


def fail(flow: Flow, name: str, failing: SimulatedApi) -> None:
    """Run error transition ``name`` inside ``except`` of a failed (simulated) call.

    A declined payment keeps the provider's answer as its receipt, as the job does.
    """
    try:
        if isinstance(flow, OrderFulfilmentFlow) and name == "decline_payment":
            failing.authorise_payment(flow.order_ref, flow.amount_cents, payment_attempt(flow))
        failing.fetch_record("seed")
    except PaymentDeclined as exc:
        flow.run(name, exc.response)
    except ApiError:
        flow.run(name)


def retried_order(rng: random.Random, api: SimulatedApi, end: str) -> OrderFulfilmentFlow:
    """Create an order declined once or twice, retried, authorised, then driven to ``end``."""
    failing = SimulatedApi(failure_rate=1.0, latency=0.0, rng=api.rng)
    flow = OrderFulfilmentFlow.create(**new_props(OrderFulfilmentFlow, rng))
    for _ in range(rng.choice((1, 1, 2))):
        flow.run("start_payment")
        fail(flow, "decline_payment", failing)
        actor, reason = rng.choice(_RETRIERS)
        flow.run("retry_payment", actor=actor, reason=reason)
    # The path starts with start_payment, authorise_payment: the receipt's last version.
    drive(flow, paths(OrderFulfilmentFlow.graph())[end], api)
    return flow


def seed(per_state: int = 2, *, rng: random.Random | None = None) -> dict[tuple[str, str], int]:
    """Create ``per_state`` flows in every reachable state of each demo flow type.

    Runs in an app context. Returns how many flows ended in each ``(type, state)``.
    """
    rng = rng or random.Random()
    api = SimulatedApi(failure_rate=0.0, latency=0.0, backorder_rate=0.0, rng=rng)
    ext = current_app.extensions["flowstate"]
    held, ext.queue = ext.queue, None  # nothing is sent while seeding
    made: dict[tuple[str, str], int] = {}
    ids: list[int] = []
    try:
        for cls in DEMO_FLOWS:
            for _state, path in paths(cls.graph()).items():
                for _ in range(per_state):
                    flow = cls.create(**new_props(cls, rng))
                    ids.append(flow.id)
                    drive(flow, path, api)
                    key = (cls.type_name, flow.state)
                    made[key] = made.get(key, 0) + 1
        for i in range(RETRIED_ORDERS * per_state):
            order = retried_order(rng, api, _RETRIED_ENDS[i % len(_RETRIED_ENDS)])
            ids.append(order.id)
            key = (order.type_name, order.state)
            made[key] = made.get(key, 0) + 1
        ext.db.session.execute(delete(outbox).where(outbox.c.flow_id.in_(ids)))
        ext.db.session.commit()
    finally:
        ext.queue = held
    from .history import seed_history  # past traffic for the heat map, then one rollup

    seed_history(ext.db.session(), n=per_state * 30, rng=rng)
    return made


def is_seeded() -> bool:
    """Return whether any demo flow exists already (so a restart does not seed twice)."""
    names = [cls.type_name for cls in DEMO_FLOWS]
    q = select(func.count()).select_from(flows).where(flows.c.type.in_(names))
    return bool(current_app.extensions["flowstate"].db.session.execute(q).scalar_one())


def transient_states(graph: FlowGraph) -> set[str]:
    """Return the states every way into which runs a callback transition leaving them."""
    names = {t.name: t for t in graph.transitions}
    out: set[str] = set()
    for state in graph.state_names:
        ins = [t for t in graph.transitions if t.target == state]
        if ins and all(any(a in names and state in names[a].sources for a in t.after) for t in ins):
            out.add(state)
    return out
