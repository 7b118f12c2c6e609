"""State timeouts: when a flow is *stalled*, and the ways out (fail it, or let the sweep do it).

A state may declare how long a flow may stay in it (``State(timeout=timedelta(minutes=10))``);
a flow type may declare a default for its other states (``class X(Flow,
state_timeout=timedelta(hours=1))``: every state that is neither final nor error and says
nothing about its timeout inherits it; ``State(timeout=None)`` opts out). Final and error
states cannot have a timeout: a completed flow waits for nothing, and an errored flow is
already shown (and retried) as errored.

A flow is **stalled** when it is in a state with a timeout and entered it longer ago than
that timeout: ``state_entered_at < now - timeout``. Final and errored flows are never stalled.

Two ways out, both running a declared transition from the current state into an error state
through the normal transition path, so the usual retry applies afterwards:

- :func:`fail_stalled` (the admin's "fail it", one flow or in bulk), and
- :func:`sweep`, which runs each state's ``on_timeout`` transition on its stalled flows; a
  worker or ``flask flowstate sweep`` calls it periodically. Several sweepers at once never
  run the same flow twice: rows are locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and the
  flow is checked again under the lock. It lives in :mod:`flowstate_web.sweeper`; its names
  are re-exported here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, and_, false, or_, select, update
from sqlalchemy.orm import Session

from ._executor import now as utcnow
from ._tx import caller_owns, resolve_session
from .errors import (
    DefinitionError,
    FlowNotFoundError,
    FlowStateError,
)
from .models import flows
from .records import HistoryEntry, utc

if TYPE_CHECKING:
    from .flow import Flow
    from .graph import StateSpec, TransitionSpec

T = TypeVar("T")


class NotStalledError(FlowStateError):
    """The flow is not (or no longer) stalled, so it was not failed."""

    def __init__(self, flow_type: str, flow_id: object, state: str, why: str) -> None:
        super().__init__(f"{flow_type} #{flow_id} in state {state!r} is not stalled: {why}")
        self.flow_type = flow_type
        self.flow_id = flow_id
        self.state = state


class FlowTimedOutError(FlowStateError):
    """Recorded as the error of a stalled flow that was failed (by an operator or the sweep)."""

    def __init__(
        self, flow_type: str, flow_id: object, state: str, stayed: timedelta, timeout: timedelta
    ) -> None:
        super().__init__(
            f"{flow_type} #{flow_id} stalled in state {state!r} for {short(stayed)}"
            f" (timeout {short(timeout)})"
        )
        self.flow_type = flow_type
        self.flow_id = flow_id
        self.state = state
        self.stayed = stayed
        self.timeout = timeout


def short(delta: timedelta) -> str:
    """Return ``delta`` as ``45s``, ``10m``, ``1h 30m``, ``2d 4h`` (for messages)."""
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s"))]
    kept = [p for p in parts if not p.startswith("0")][:2]
    return " ".join(kept) or "0s"


# -- declarations ---------------------------------------------------------------------------


def resolve(cls: type[Flow]) -> dict[str, tuple[timedelta, str | None]]:
    """Return ``{state: (timeout, on_timeout)}`` of ``cls``, the type's default applied.

    :raises DefinitionError: a timeout that is not a positive ``timedelta``, a timeout on a
        final or error state, or an ``on_timeout`` that is not a transition from the state
        into an error state runnable without arguments.
    """
    from .declare import _MISSING

    where = cls.__qualname__
    default = cls.state_timeout
    if default is not None:
        _check_positive(default, f"{where}: state_timeout")
    found: dict[str, tuple[timedelta, str | None]] = {}
    for name, state in cls.states.items():
        declared = state.timeout
        if declared is not _MISSING and declared is not None:
            _check_positive(declared, f"{where}: timeout of state {name!r}")
            if state.final or state.error:
                kind = "final" if state.final else "error"
                raise DefinitionError(
                    f"{where}: state {name!r} is a{'n' if kind == 'error' else ''} {kind} state"
                    " and cannot have a timeout (flows there are never stalled)"
                )
        timeout = default if declared is _MISSING else declared
        if state.final or state.error:
            timeout = None
        if state.on_timeout is not None:
            if timeout is None:
                raise DefinitionError(
                    f"{where}: state {name!r} declares on_timeout={state.on_timeout!r}"
                    " but has no timeout"
                )
            _check_on_timeout(cls, name, state.on_timeout)
        if timeout is not None:
            found[name] = (timeout, state.on_timeout)
    return found


def _check_positive(value: object, what: str) -> None:
    if not isinstance(value, timedelta):
        raise DefinitionError(f"{what} must be a datetime.timedelta, got {value!r}")
    if value <= timedelta(0):
        raise DefinitionError(f"{what} must be positive, got {value}")


def _check_on_timeout(cls: type[Flow], state: str, name: object) -> None:
    where = cls.__qualname__
    t = cls.transition_fields.get(name) if isinstance(name, str) else None
    if t is None:
        raise DefinitionError(
            f"{where}: on_timeout of state {state!r} must name a declared transition, got {name!r}"
        )
    if state not in t.sources:
        raise DefinitionError(
            f"{where}: on_timeout {t.name!r} of state {state!r} does not leave {state!r}"
            f" (its sources: {', '.join(t.sources)})"
        )
    target = cls.states[t.target]
    if not target.error:
        raise DefinitionError(
            f"{where}: on_timeout {t.name!r} of state {state!r} must enter an error state"
            f" ({t.target!r} is not one)"
        )
    if not _runs_without_arguments(t.fn):
        raise DefinitionError(
            f"{where}: on_timeout {t.name!r} of state {state!r} cannot take required arguments"
        )


def _runs_without_arguments(fn: Callable[..., Any]) -> bool:
    params = list(inspect.signature(fn).parameters.values())[1:]
    return not any(
        p.default is p.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        for p in params
    )


# -- reading ----------------------------------------------------------------------------------


def timed_state(flow: Flow) -> StateSpec | None:
    """Return the spec of ``flow``'s state when it declares a timeout, else ``None``."""
    spec = flow.graph().state(flow.state)
    return spec if spec is not None and spec.timeout is not None else None


def stalled_since(flow: Flow) -> datetime | None:
    """Return when ``flow``'s state timeout passes or passed (``None`` if none applies)."""
    spec = timed_state(flow)
    if spec is None or spec.timeout is None:
        return None
    return utc(flow.state_entered_at) + spec.timeout


def is_stalled(flow: Flow, now: datetime | None = None) -> bool:
    """Return whether ``flow`` is past its state's timeout at ``now`` (default: now)."""
    since = stalled_since(flow)
    return since is not None and since < (now or utcnow())


def stalled_condition(
    cls: type[Flow], now: datetime | None = None, states: tuple[str, ...] = ()
) -> ColumnElement[bool]:
    """Return the SQL condition "stalled at ``now``" on ``flowstate_flows`` rows of ``cls``.

    One ``(state = s AND state_entered_at < now - timeout)`` per timed state (only those in
    ``states`` when given), OR-ed; each is a range on the (type, state, state_entered_at)
    index. The type itself is not part of the condition.
    """
    moment = now or utcnow()
    parts = [
        and_(flows.c.state == s.name, flows.c.state_entered_at < moment - s.timeout)
        for s in cls.graph().timed_states
        if s.timeout is not None and (not states or s.name in states)
    ]
    if not parts:
        return false()
    return parts[0] if len(parts) == 1 else or_(*parts)


def fail_transitions(cls: type[Flow], state: str) -> tuple[TransitionSpec, ...]:
    """Return the transitions an operator can run to fail a flow stalled in ``state``.

    Those leaving ``state`` for an error state that are not retries and take no required
    arguments; the state's ``on_timeout`` comes first.
    """
    graph = cls.graph()
    spec = graph.state(state)
    first = spec.on_timeout if spec is not None else None
    found = [
        t
        for t in graph.transitions_from(state)
        if not t.retry
        and t.target in cls.error_states
        and _runs_without_arguments(cls.transition_fields[t.name].fn)
    ]
    return tuple(sorted(found, key=lambda t: t.name != first))


# -- failing ----------------------------------------------------------------------------------


def fail_stalled(
    flow: Flow,
    name: str | None = None,
    *,
    actor: str | None = None,
    reason: str | None = None,
    now: datetime | None = None,
    meta: dict[str, Any] | None = None,
) -> HistoryEntry:
    """Run transition ``name`` (into an error state) on ``flow`` if it is still stalled.

    The row is locked and the flow re-read first; then the stall is checked on the fresh
    row and the transition runs through the normal transition path in the same transaction,
    recording a :class:`FlowTimedOutError` as its error (and ``actor``, ``reason``). It is
    its own transaction unless you began one (the engine's transaction rule).

    :param name: default: the state's ``on_timeout``, else its only fail transition.
    :raises NotStalledError: the flow is not stalled (any more); nothing is written.
    :raises FlowStateError: ``name`` is not a fail transition of the current state.
    """
    cls = type(flow)
    sess = resolve_session(flow._session)
    moment = now or utcnow()

    def work() -> HistoryEntry:
        _lock(sess, flow)
        spec = timed_state(flow)
        if spec is None or spec.timeout is None:
            why = "it is final" if flow.is_final else "it is errored" if flow.errored else ""
            raise NotStalledError(
                cls.type_name, flow.id, flow.state, why or "its state has no timeout"
            )
        since = utc(flow.state_entered_at) + spec.timeout
        if not since < moment:
            raise NotStalledError(
                cls.type_name, flow.id, flow.state, f"its timeout passes in {short(since - moment)}"
            )
        chosen = _choose(cls, flow, name)
        stayed = moment - utc(flow.state_entered_at)
        error = FlowTimedOutError(cls.type_name, flow.id, flow.state, stayed, spec.timeout)
        return flow.run(chosen, actor=actor, reason=reason, error=error, meta=meta)

    return _own(sess, work)


def _choose(cls: type[Flow], flow: Flow, name: str | None) -> str:
    options = fail_transitions(cls, flow.state)
    names = [t.name for t in options]
    if name is None:
        spec = cls.graph().state(flow.state)
        if spec is not None and spec.on_timeout is not None:
            return spec.on_timeout
        if len(names) == 1:
            return names[0]
        raise FlowStateError(
            f"{cls.type_name} #{flow.id}: state {flow.state!r} has {len(names)} transitions"
            f" into an error state ({', '.join(names) or 'none'}); name one"
        )
    if name not in names:
        raise FlowStateError(
            f"{cls.type_name} #{flow.id}: {name!r} is not a transition from {flow.state!r}"
            f" into an error state (declared: {', '.join(names) or 'none'})"
        )
    return name


def _lock(sess: Session, flow: Flow) -> None:
    """Lock ``flow``'s row until the transaction ends and load it fresh."""
    cls = type(flow)
    if sess.get_bind().dialect.name == "postgresql":
        q: Any = select(flows).where(flows.c.id == flow.id).with_for_update()
    else:
        # SQLite has no row locks: a no-op UPDATE takes the database's write lock first
        # (as the engine's own lock does), so no writer can slip in before the transition.
        q = update(flows).where(flows.c.id == flow.id).values(seq=flows.c.seq).returning(*flows.c)
    row = sess.execute(q).first()
    if row is None or row.type != cls.type_name:
        raise FlowNotFoundError(cls.type_name, flow.id)
    flow._load(row)


def _own(sess: Session, work: Callable[[], T]) -> T:
    """Run ``work`` as its own transaction unless the caller began one."""
    if caller_owns(sess):
        return work()
    try:
        result = work()
    except BaseException:
        sess.rollback()
        raise
    if sess.in_transaction():
        sess.commit()
    return result


# The sweep is its own module; its public names stay importable from here. Imported last:
# the sweeper imports this module's names, which are all defined by now.
from .sweeper import MAX_FAILURES_SHOWN as MAX_FAILURES_SHOWN  # noqa: E402
from .sweeper import SWEEP_ACTOR as SWEEP_ACTOR  # noqa: E402
from .sweeper import SWEEP_LIMIT as SWEEP_LIMIT  # noqa: E402
from .sweeper import SweepFailure as SweepFailure  # noqa: E402
from .sweeper import SweepReport as SweepReport  # noqa: E402
from .sweeper import sweep as sweep  # noqa: E402
from .sweeper import sweep_all as sweep_all  # noqa: E402
from .sweeper import sweep_batch as sweep_batch  # noqa: E402
