"""State timeouts: declarations, stalled flows, failing them, and the sweep (both databases)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from flowstate_web import (
    DefinitionError,
    Flow,
    FlowStateError,
    NotStalledError,
    State,
    fail_stalled,
    sweep,
    sweeper,
    transition,
)
from flowstate_web.models import flows, transitions
from flowstate_web.timeouts import SWEEP_ACTOR, fail_transitions, short, sweep_all
from tests.timed_flows import HOUR, TEN_MINUTES, ExplodingTimeoutFlow, TimedFlow

#: A fixed "now" a day in the past: flows written now are young then, and stalls before it
#: are long past for the real clock too.
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def entered(s: Session, flow_id: int, at: datetime) -> None:
    """Rewrite when the flow entered its state (time control without sleeping)."""
    s.execute(update(flows).where(flows.c.id == flow_id).values(state_entered_at=at))
    s.commit()


def fetching(s: Session, ref: str = "r", since: datetime | None = None) -> TimedFlow:
    flow = TimedFlow.create(ref=ref, session=s)
    flow.start()
    if since is not None:
        entered(s, flow.id, since)
        flow.refresh()
    return flow


# -- declarations --------------------------------------------------------------------------


def test_graph_carries_the_timeouts_with_the_default_applied() -> None:
    g = TimedFlow.graph()
    assert g.state("queued").timeout == HOUR  # type: ignore[union-attr]
    assert g.state("fetching").timeout == TEN_MINUTES  # type: ignore[union-attr]
    assert g.state("fetching").on_timeout == "fail_fetch"  # type: ignore[union-attr]
    assert g.state("parked").timeout is None  # type: ignore[union-attr]
    assert g.state("failed").timeout is None  # type: ignore[union-attr]
    assert g.state("done").timeout is None  # type: ignore[union-attr]
    assert [s.name for s in g.timed_states] == ["queued", "fetching"]
    states = {s["name"]: s for s in g.to_dict()["states"]}  # type: ignore[union-attr, index]
    assert states["fetching"]["timeout"] == 600.0
    assert "timeout" not in states["parked"]


def test_a_subclass_inherits_the_type_default() -> None:
    class Child(TimedFlow, type_name="tests.TimedChild"):
        pass

    assert Child.graph().state("queued").timeout == HOUR  # type: ignore[union-attr]


def _define(**state: Any) -> type[Flow]:
    class Bad(Flow, type_name=f"tests.Bad{id(state)}"):
        a = State(initial=True, **state)
        b = State(error=True)
        c = State(final=True)

        @transition(source=a, target=b)
        def fail(self) -> None: ...

        @transition(source=a, target=c)
        def finish(self) -> None: ...

        @transition(source=a, target=b)
        def fail_with(self, why: str) -> None: ...

    return Bad


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"timeout": timedelta(0)}, "timeout of state 'a' must be positive"),
        ({"timeout": timedelta(seconds=-5)}, "must be positive"),
        ({"timeout": 600}, "must be a datetime.timedelta, got 600"),
        ({"on_timeout": "fail"}, "declares on_timeout='fail' but has no timeout"),
        ({"timeout": HOUR, "on_timeout": "nope"}, "must name a declared transition"),
        ({"timeout": HOUR, "on_timeout": "finish"}, "must enter an error state"),
        ({"timeout": HOUR, "on_timeout": "fail_with"}, "cannot take required arguments"),
    ],
)
def test_bad_timeouts_are_refused_at_definition(state: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message.replace("(", r"\(")):
        _define(**state)


@pytest.mark.parametrize("kind", ["error", "final"])
def test_no_timeout_on_final_or_error_states(kind: str) -> None:
    with pytest.raises(DefinitionError, match=f"state 'b' is an? {kind} state and cannot"):

        class Bad(Flow, type_name=f"tests.BadKind{kind}"):
            a = State(initial=True)
            b = State(timeout=HOUR, **{kind: True})


def test_the_type_default_must_be_a_positive_timedelta() -> None:
    with pytest.raises(DefinitionError, match="state_timeout must be positive"):

        class Bad(Flow, type_name="tests.BadDefault", state_timeout=timedelta(0)):
            a = State(initial=True)


def test_on_timeout_must_leave_its_state() -> None:
    with pytest.raises(DefinitionError, match="does not leave 'b'"):

        class Bad(Flow, type_name="tests.BadLeave"):
            a = State(initial=True)
            b = State(timeout=HOUR, on_timeout="fail")
            e = State(error=True)

            @transition(source=a, target=e)
            def fail(self) -> None: ...


def test_short_durations() -> None:
    assert short(timedelta(minutes=10)) == "10m"
    assert short(timedelta(hours=1, minutes=30, seconds=3)) == "1h 30m"
    assert short(timedelta(0)) == "0s"


# -- stalled -------------------------------------------------------------------------------


def test_stalled_after_the_timeout_only(engine: Engine) -> None:
    with Session(engine) as s:
        flow = fetching(s, since=NOW - TEN_MINUTES - timedelta(seconds=1))
        assert flow.stalled_since == NOW - timedelta(seconds=1)
        assert flow.stalled  # against the real clock: long past
        from flowstate_web.timeouts import is_stalled

        assert is_stalled(flow, NOW)
        assert not is_stalled(flow, NOW - timedelta(seconds=2))

        fresh = fetching(s, "fresh")
        assert not fresh.stalled
        assert fresh.stalled_since is not None and fresh.stalled_since > datetime.now(UTC)


def test_final_errored_and_opted_out_flows_never_stall(engine: Engine) -> None:
    long_ago = NOW - timedelta(days=30)
    with Session(engine) as s:
        done = fetching(s, "done")
        done.finish()
        failed = fetching(s, "failed")
        failed.fail_fetch()
        parked = fetching(s, "parked")
        parked.park()
        for f in (done, failed, parked):
            entered(s, f.id, long_ago)
            f.refresh()
            assert f.stalled_since is None
            assert not f.stalled
        assert s.execute(TimedFlow.stalled_query(NOW)).all() == []


def test_stalled_query_uses_each_states_timeout(engine: Engine) -> None:
    with Session(engine) as s:
        old_fetch = fetching(s, "old-fetch", NOW - timedelta(minutes=11))
        young_fetch = fetching(s, "young-fetch", NOW - timedelta(minutes=9))
        old_queue = TimedFlow.create(ref="old-queue", session=s)
        entered(s, old_queue.id, NOW - timedelta(minutes=61))
        young_queue = TimedFlow.create(ref="young-queue", session=s)
        entered(s, young_queue.id, NOW - timedelta(minutes=59))
        ids = set(s.execute(TimedFlow.stalled_query(NOW).with_only_columns(flows.c.id)).scalars())
        assert ids == {old_fetch.id, old_queue.id}
        assert young_fetch.id not in ids and young_queue.id not in ids


# -- failing a stalled flow ----------------------------------------------------------------


def test_fail_stalled_records_who_why_and_the_timeout(engine: Engine) -> None:
    with Session(engine) as s:
        flow = fetching(s, since=NOW - timedelta(minutes=25))
        entry = fail_stalled(flow, "fail_fetch", actor="alice", reason="API down", now=NOW)
        assert (entry.from_state, entry.to_state) == ("fetching", "failed")
        assert (entry.actor, entry.reason) == ("alice", "API down")
        assert entry.error_type == "flowstate_web.timeouts.FlowTimedOutError"
        assert entry.error_message == (
            f"tests.TimedFlow #{flow.id} stalled in state 'fetching' for 25m (timeout 10m)"
        )
        again = TimedFlow.get(flow.id, session=s)
        assert again.errored and again.state == "failed"
        assert again.last_error_message == entry.error_message
        again.retry()  # the usual retry applies
        assert TimedFlow.get(flow.id, session=s).state == "queued"


def test_fail_stalled_defaults_to_on_timeout(engine: Engine) -> None:
    with Session(engine) as s:
        flow = fetching(s, since=NOW - HOUR)
        assert fail_stalled(flow, now=NOW).name == "fail_fetch"


def test_a_state_with_several_ways_out_needs_a_name(engine: Engine) -> None:
    with Session(engine) as s:
        flow = TimedFlow.create(ref="q", session=s)
        entered(s, flow.id, NOW - 2 * HOUR)
        flow.refresh()
        assert [t.name for t in fail_transitions(TimedFlow, "queued")] == ["cancel"]
        assert [t.name for t in fail_transitions(TimedFlow, "fetching")] == [
            "fail_fetch",
            "cancel",
        ]
        assert fail_stalled(flow, now=NOW).name == "cancel"  # the only one
        other = fetching(s, "f", NOW - HOUR)
        # fetching has on_timeout, so it is the default; an unknown name is refused
        with pytest.raises(FlowStateError, match="'finish' is not a transition from 'fetching'"):
            fail_stalled(other, "finish", now=NOW)
        assert TimedFlow.get(other.id, session=s).state == "fetching"


def test_a_flow_that_is_not_stalled_is_left_alone(engine: Engine) -> None:
    with Session(engine) as s:
        flow = fetching(s, since=NOW - timedelta(minutes=5))
        with pytest.raises(NotStalledError, match=r"is not stalled: its timeout passes in 5m"):
            fail_stalled(flow, "fail_fetch", now=NOW)
        parked = fetching(s, "p")
        parked.park()
        with pytest.raises(NotStalledError, match="its state has no timeout"):
            fail_stalled(parked, "fail_fetch", now=NOW)
        n = s.execute(select(func.count()).select_from(transitions)).scalar_one()
        assert n == 3  # start, start, park: nothing else written
        assert not s.in_transaction() or not s.dirty


def test_the_stall_is_checked_on_the_fresh_row(engine: Engine) -> None:
    with Session(engine) as s, Session(engine) as other:
        stale = fetching(s, since=NOW - HOUR)
        # Meanwhile, another process moved it on and back: fresh in its state again.
        mine = TimedFlow.get(stale.id, session=other)
        mine.park()
        mine.finish()
        with pytest.raises(NotStalledError, match="it is final"):
            fail_stalled(stale, "fail_fetch", now=NOW)


def test_fail_stalled_joins_the_callers_transaction(engine: Engine) -> None:
    with Session(engine) as s:
        flow = fetching(s, since=NOW - HOUR)
        s.commit()
        trans = s.begin()
        fail_stalled(flow, now=NOW)
        assert TimedFlow.get(flow.id, session=s).state == "failed"  # inside: written
        trans.rollback()  # nothing was committed by the engine
        assert TimedFlow.get(flow.id, session=s).state == "fetching"


# -- the sweep -----------------------------------------------------------------------------


def test_sweep_fails_stalled_flows_of_states_with_on_timeout(engine: Engine) -> None:
    with Session(engine) as s:
        old = [fetching(s, f"old{i}", NOW - timedelta(minutes=30 + i)) for i in range(3)]
        young = fetching(s, "young", NOW - timedelta(minutes=2))
        queued = TimedFlow.create(ref="queued", session=s)  # stalled, but no on_timeout
        entered(s, queued.id, NOW - 5 * HOUR)

        assert sweep(session=s, now=NOW) == 3

        for f in old:
            f.refresh()
            assert f.state == "failed"
            last = f.history()[-1]
            assert (last.name, last.actor) == ("fail_fetch", SWEEP_ACTOR)
            assert last.meta == {"timeout": {"state": "fetching", "transition": "fail_fetch"}}
            assert last.error_type == "flowstate_web.timeouts.FlowTimedOutError"
        assert TimedFlow.get(young.id, session=s).state == "fetching"
        assert TimedFlow.get(queued.id, session=s).state == "queued"
        assert sweep(session=s, now=NOW) == 0  # nothing left


def test_sweep_respects_the_limit_oldest_first(engine: Engine) -> None:
    with Session(engine) as s:
        made = [fetching(s, f"f{i}", NOW - timedelta(minutes=20 + i)) for i in range(5)]
        assert sweep(session=s, now=NOW, limit=2) == 2
        states = {f.id: TimedFlow.get(f.id, session=s).state for f in made}
        assert [states[f.id] for f in made] == ["fetching"] * 3 + ["failed"] * 2
        assert sweep(session=s, now=NOW, limit=10) == 3


def test_a_raising_timeout_transition_is_rolled_back_alone(engine: Engine) -> None:
    with Session(engine) as s:
        boom = ExplodingTimeoutFlow.create(ref="boom", session=s)
        fine = ExplodingTimeoutFlow.create(ref="fine", session=s)
        for f in (boom, fine):
            entered(s, f.id, NOW - HOUR)
        assert sweep(session=s, now=NOW) == 1
        assert ExplodingTimeoutFlow.get(boom.id, session=s).state == "waiting"
        assert ExplodingTimeoutFlow.get(fine.id, session=s).state == "timed_out"


def test_sweep_all_goes_on_past_flows_whose_timeout_raises(engine: Engine) -> None:
    with Session(engine) as s:
        booms = [ExplodingTimeoutFlow.create(ref="boom", session=s) for _ in range(3)]
        fine = [ExplodingTimeoutFlow.create(ref="fine", session=s) for _ in range(2)]
        for i, f in enumerate([*booms, *fine]):  # the raising ones stalled longest
            entered(s, f.id, NOW - HOUR + timedelta(seconds=i))
        # One batch at a time, the raising flows at the head of the state hold sweep() back,
        assert sweep(session=s, now=NOW, limit=2) == 0
        # sweep_all carries on past them, and says which raised and why.
        report = sweep_all(session=s, now=NOW, limit=2)
        assert (report.timed_out, report.failed, report.seen) == (2, 3, 5)
        assert [f.flow_id for f in report.failures] == [b.id for b in booms]
        assert str(report.failures[0]) == (
            f"tests.ExplodingTimeoutFlow #{booms[0].id} in state 'waiting':"
            " time_out raised RuntimeError: time_out exploded for boom"
        )
        states = [ExplodingTimeoutFlow.get(f.id, session=s).state for f in [*booms, *fine]]
        assert states == ["waiting"] * 3 + ["timed_out"] * 2
        again = sweep_all(session=s, now=NOW, limit=2)  # the raising ones are tried again
        assert (again.timed_out, again.failed) == (0, 3)


def test_sweep_report_describes_at_most_so_many_failures(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeper, "MAX_FAILURES_SHOWN", 2)
    with Session(engine) as s:
        for _ in range(5):
            entered(s, ExplodingTimeoutFlow.create(ref="boom", session=s).id, NOW - HOUR)
        report = sweep_all(session=s, now=NOW, limit=2)
        assert (report.failed, len(report.failures)) == (5, 2)


def test_concurrent_sweepers_fail_each_flow_once(engine: Engine) -> None:
    """Four sweepers on their own connections at once: every stalled flow failed exactly once."""
    n = 40
    with Session(engine) as s:
        ids = [fetching(s, f"c{i}", NOW - HOUR).id for i in range(n)]
    sweepers = 4
    barrier = threading.Barrier(sweepers)
    results: list[int | str] = []
    lock = threading.Lock()

    def worker() -> None:
        with Session(engine) as mine:
            barrier.wait()
            try:
                result: int | str = sweep(session=mine, now=NOW, limit=7)
                while result and isinstance(result, int):
                    more = sweep(session=mine, now=NOW, limit=7)
                    result += more
                    if not more:
                        break
            except Exception as exc:  # a bug the test must show
                result = f"{type(exc).__name__}: {exc}"
        with lock:
            results.append(result)

    threads = [threading.Thread(target=worker) for _ in range(sweepers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, int) for r in results), results
    assert sum(r for r in results if isinstance(r, int)) == n
    with Session(engine) as s:
        per_flow = dict(
            s.execute(
                select(transitions.c.flow_id, func.count())
                .where(transitions.c.name == "fail_fetch")
                .group_by(transitions.c.flow_id)
            ).all()
        )
        assert per_flow == {i: 1 for i in ids}
        # The history chain holds: seq 1..n without gaps, current state = last row.
        for flow_id in ids:
            seqs = list(
                s.execute(
                    select(transitions.c.seq)
                    .where(transitions.c.flow_id == flow_id)
                    .order_by(transitions.c.seq)
                ).scalars()
            )
            assert seqs == [1, 2]
            assert TimedFlow.get(flow_id, session=s).state == "failed"


def test_sweep_in_an_app_context(app: Any, db: Any) -> None:
    flow = TimedFlow.create(ref="app")
    flow.start()
    db.session.execute(
        update(flows).where(flows.c.id == flow.id).values(state_entered_at=NOW - HOUR)
    )
    db.session.commit()
    assert sweep(now=NOW) == 1
    assert TimedFlow.get(flow.id).state == "failed"


def test_sweep_cli(app: Any, db: Any) -> None:
    made = []
    for i in range(3):
        flow = TimedFlow.create(ref=f"cli{i}")
        flow.start()
        made.append(flow.id)
    db.session.execute(
        update(flows).where(flows.c.id.in_(made[:2])).values(state_entered_at=NOW - HOUR)
    )
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["flowstate", "sweep", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "failed 2 stalled flow(s)"
    assert [TimedFlow.get(i).state for i in made] == ["failed", "failed", "fetching"]


def test_sweep_cli_exits_1_naming_the_flows_whose_timeout_raised(
    app: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    booms = [ExplodingTimeoutFlow.create(ref="boom") for _ in range(3)]
    fine = ExplodingTimeoutFlow.create(ref="fine")
    ids = [f.id for f in [*booms, fine]]
    db.session.execute(update(flows).where(flows.c.id.in_(ids)).values(state_entered_at=NOW - HOUR))
    db.session.commit()
    monkeypatch.setattr(sweeper, "MAX_FAILURES_SHOWN", 2)
    result = app.test_cli_runner().invoke(args=["flowstate", "sweep", "--limit", "1"])
    assert result.exit_code == 1, result.output
    assert result.stdout == "failed 1 stalled flow(s)\n"
    assert result.stderr.splitlines() == [
        "error: the on_timeout transition of 3 stalled flow(s) raised; they stay where they were:",
        *(
            f"  tests.ExplodingTimeoutFlow #{b.id} in state 'waiting':"
            " time_out raised RuntimeError: time_out exploded for boom"
            for b in booms[:2]
        ),
        "  ... and 1 more",
    ]
    assert ExplodingTimeoutFlow.get(fine.id).state == "timed_out"
    assert [ExplodingTimeoutFlow.get(b.id).state for b in booms] == ["waiting"] * 3


def test_a_sweep_failure_is_one_printable_line() -> None:
    from flowstate_web.sweeper import SweepFailure

    failure = SweepFailure(
        "t.Flow", 7, "waiting", "time_out", "RuntimeError: a\nb\x00c\udcff\x1b[31m"
    )
    line = str(failure)
    assert line.isprintable() and "\n" not in line and "\x00" not in line
    assert line.endswith("raised RuntimeError: a\\nb\\x00c\\udcff\\x1b[31m")
    assert failure.error == "RuntimeError: a\nb\x00c\udcff\x1b[31m"  # kept as raised
