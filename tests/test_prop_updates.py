"""Changing props: checked at assignment, staged, written with the next transition or save().

Every failure path is checked from the database: the three tables are compared row by row
before and after, and the instance shows the committed values again.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from flowstate_web import (
    Artefact,
    ConcurrentTransitionError,
    Flow,
    GuardFailedError,
    InvalidTransitionError,
    PayloadValidationError,
    Prop,
    State,
    transition,
)
from flowstate_web._props import MAX_CHANGE_VALUE, MAX_CHANGES_TOTAL
from flowstate_web.models import artefacts, flows, transitions
from tests.test_counters import assert_exact


class Ticket(Flow, type_name="tests.Ticket"):
    """A flow whose transitions edit props in their bodies."""

    title = Prop(str)
    external_id = Prop(str, default="")
    attempts = Prop(int, default=0)
    tags = Prop(list[str], default=[])
    extra = Prop(dict[str, Any], default={})

    new = State(initial=True)
    working = State()
    failed = State(error=True)
    done = State(final=True)

    result = Artefact(dict[str, Any])

    @transition(source=new, target=working)
    def start(self, external_id: str | None = None) -> None:
        if external_id is not None:
            self.external_id = external_id  # the job records what it learned
        self.attempts = self.attempts + 1

    @transition(source=working, target=done, guard="has_external_id", persists=result)
    def finish(self, result: Any) -> Any:
        return result

    @transition(source=working, target=failed)
    def fail(self) -> None:
        pass

    @transition(source=failed, target=working, retry=True, guard="can_retry")
    def retry_work(self) -> None:
        self.attempts = self.attempts + 1

    @transition(source=new, target=working)
    def explode(self) -> None:
        self.title = "changed in the body"
        raise RuntimeError("the body failed")

    @transition(source=new, target=working)
    def bad_edit(self) -> None:
        self.title = "valid"
        self.attempts = "not an int"  # type: ignore[assignment]

    def has_external_id(self) -> bool:
        return self.external_id != ""

    def can_retry(self) -> bool:
        return self.attempts < 3


def snapshot(db: SQLAlchemy) -> dict[str, list[tuple[Any, ...]]]:
    """Return every row of the three tables, for before/after comparisons."""
    db.session.rollback()
    return {
        t.name: [tuple(r) for r in db.session.execute(select(t).order_by(t.c.id))]
        for t in (flows, transitions, artefacts)
    }


def committed(flow: Ticket) -> Ticket:
    return Ticket.get(flow.id)


# -- assignment ---------------------------------------------------------------------------


def test_assignment_is_checked_at_once_and_staged(app: Any, db: SQLAlchemy) -> None:
    flow = Ticket.create(title="a")
    before = snapshot(db)
    with pytest.raises(PayloadValidationError, match=r"tests\.Ticket #\d+: prop 'attempts'"):
        flow.attempts = "3"  # type: ignore[assignment]
    with pytest.raises(PayloadValidationError, match="prop 'title' is None"):
        flow.title = None  # type: ignore[assignment]
    assert flow.staged == {}
    flow.title = "b"
    assert (flow.title, flow.props["title"], dict(flow.staged)) == ("b", "b", {"title": "b"})
    assert committed(flow).title == "a"  # staged, not written
    assert snapshot(db) == before


def test_props_view_is_read_only_and_undeclared_names_are_refused(app: Any) -> None:
    flow = Ticket.create(title="a")
    with pytest.raises(TypeError):
        flow.props["title"] = "b"  # type: ignore[index]
    with pytest.raises(AttributeError, match="only declared props can be assigned"):
        flow.titel = "b"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="declared state, transition or artefact"):
        flow.result = {}  # type: ignore[assignment]
    flow._cache = 1  # private names are the subclass's own
    assert flow._cache == 1
    assert flow.title == "a" and flow.staged == {}


def test_containers_are_read_as_copies(app: Any) -> None:
    flow = Ticket.create(title="a", tags=["x"])
    flow.tags.append("lost")  # changes a copy, not the flow
    assert flow.tags == ["x"]
    mine = ["y"]
    flow.tags = mine
    mine.append("later")  # the staged value is a copy too
    flow.start()
    assert committed(flow).tags == ["y"]
    flow.props["tags"].append(1)  # through the read-only view: a copy too
    flow.props["extra"]["k"] = "v"
    assert (flow.tags, flow.extra) == (["y"], {})
    assert flow.props["tags"] == ["y"]


def test_update_stages_several_and_names_every_problem(app: Any) -> None:
    flow = Ticket.create(title="a")
    with pytest.raises(PayloadValidationError) as info:
        flow.update(title=None, attempts="x", colour="red", tags="t")
    assert sorted(name for name, _ in info.value.problems) == [
        "attempts",
        "colour",
        "tags",
        "title",
    ]
    for part in ("prop 'title' is None", "'attempts' must be int", "unknown prop 'colour'"):
        assert part in str(info.value)
    assert flow.staged == {}  # nothing staged when anything is wrong
    flow.update(title="b", attempts=2)
    assert dict(flow.staged) == {"title": "b", "attempts": 2}


def test_create_names_every_problem(app: Any, db: SQLAlchemy) -> None:
    with pytest.raises(PayloadValidationError) as info:
        Ticket.create(attempts="x", colour="red", tags=None)
    assert info.value.problems == [
        ("colour", "unknown prop 'colour'"),
        ("title", "prop 'title' is missing"),
        ("attempts", "prop 'attempts' must be int, got str"),
        ("tags", "prop 'tags' is None"),
    ]
    assert str(info.value).startswith("tests.Ticket: unknown prop 'colour'; prop 'title'")
    assert snapshot(db)["flowstate_flows"] == []


# -- written with the next transition -------------------------------------------------------


def test_staged_edits_commit_with_the_next_transition(app: Any) -> None:
    flow = Ticket.create(title="a")
    flow.title = "b"
    entry = flow.start(external_id="tp-9")  # the body assigns too
    assert entry.changes == {
        "title": {"old": "a", "new": "b"},
        "external_id": {"old": "", "new": "tp-9"},
        "attempts": {"old": 0, "new": 1},
    }
    assert flow.staged == {} and flow.external_id == "tp-9"
    fresh = committed(flow)
    assert (fresh.title, fresh.external_id, fresh.attempts) == ("b", "tp-9", 1)
    assert fresh.history()[0].changes == entry.changes
    assert fresh.history()[0].kind == "transition"


def test_a_transition_that_edits_nothing_records_no_changes(app: Any) -> None:
    flow = Ticket.create(title="a")
    flow.start()
    flow.title = "a"  # the stored value: not a change
    entry = flow.fail()
    assert entry.changes is None and flow.staged == {}
    assert committed(flow).history()[1].changes is None


def test_guards_see_the_staged_edits(app: Any) -> None:
    flow = Ticket.create(title="a")
    flow.start()
    assert flow.why_not("finish") == "guard has_external_id returned False"
    flow.external_id = "tp-1"
    assert flow.why_not("finish") is None
    flow.finish({"ok": True})
    assert committed(flow).state == "done"


def failing_runs() -> list[tuple[str, type[BaseException]]]:
    return [
        ("invalid source", InvalidTransitionError),
        ("guard", GuardFailedError),
        ("artefact type", PayloadValidationError),
        ("body raises", RuntimeError),
        ("invalid edit in the body", PayloadValidationError),
        ("conflict", ConcurrentTransitionError),
    ]


@pytest.mark.parametrize(("case", "raised"), failing_runs())
def test_a_failed_transition_writes_nothing_and_forgets_the_edit(
    app: Any, db: SQLAlchemy, case: str, raised: type[BaseException]
) -> None:
    flow = Ticket.create(title="a")
    if case in ("guard", "artefact type"):
        flow.start(external_id="tp-1" if case == "artefact type" else None)
    if case == "conflict":  # a writer that bypassed the row lock took the next step
        db.session.execute(
            insert(transitions).values(
                flow_id=flow.id,
                seq=1,
                name="start",
                from_state="new",
                to_state="working",
                created_at=flow.created_at,
            )
        )
        db.session.commit()
    stored_title = committed(flow).title
    before = snapshot(db)
    flow.title = "edited"
    flow.attempts = 7
    run = {
        "invalid source": flow.retry_work,
        "guard": lambda: flow.finish({}),
        "artefact type": lambda: flow.finish("not a dict"),
        "body raises": flow.explode,
        "invalid edit in the body": flow.bad_edit,
        "conflict": flow.start,
    }[case]
    with pytest.raises(raised) as info:
        run()
    if case == "conflict":
        assert "another transition got there first" in str(info.value)
    assert snapshot(db) == before
    assert flow.staged == {}
    assert (flow.title, flow.attempts) == (stored_title, committed(flow).attempts)
    assert flow.state == committed(flow).state


# -- save() ---------------------------------------------------------------------------------


def test_save_writes_an_update_entry_without_a_state_change(app: Any, db: SQLAlchemy) -> None:
    flow = Ticket.create(title="a")
    flow.start()
    counts = assert_exact(db.session)
    entered, updated = flow.state_entered_at, flow.updated_at
    assert flow.save() is None  # nothing staged: nothing written
    flow.title = "b"
    entry = flow.save(actor="ops", reason="typo", meta={"via": "test"})
    assert entry is not None
    assert (entry.kind, entry.name, entry.from_state, entry.to_state, entry.seq) == (
        "update",
        "save",
        "working",
        "working",
        2,
    )
    assert entry.changes == {"title": {"old": "a", "new": "b"}}
    assert (entry.actor, entry.reason, entry.meta) == ("ops", "typo", {"via": "test"})
    fresh = committed(flow)
    assert (fresh.title, fresh.state, fresh.seq) == ("b", "working", 2)
    assert fresh.updated_at > updated and fresh.state_entered_at == entered
    assert (flow.seq, flow.updated_at, flow.staged) == (2, fresh.updated_at, {})
    history = fresh.history()
    assert [(h.seq, h.kind) for h in history] == [(1, "transition"), (2, "update")]
    assert history[1].is_update and history[1].changes == entry.changes
    assert assert_exact(db.session) == counts  # a save is not a state change
    flow.title = "b"
    assert flow.save() is None  # the stored value: nothing written
    assert len(committed(flow).history()) == 2
    flow.fail()  # the next transition follows the update in sequence
    assert [h.seq for h in committed(flow).history()] == [1, 2, 3]


def test_save_joins_the_callers_transaction(app: Any, db: SQLAlchemy) -> None:
    flow = Ticket.create(title="a")
    db.session.commit()
    with db.session.begin():
        flow.title = "b"
        flow.save()
        assert db.session().in_transaction()
    assert committed(flow).title == "b"
    db.session.rollback()
    flow.title = "c"
    with pytest.raises(RuntimeError), db.session.begin():  # noqa: PT012 - rollback tested
        flow.save()
        raise RuntimeError("the caller's work failed")
    assert committed(flow).title == "b"


def test_the_callers_rollback_shows_the_committed_row_again(app: Any, db: SQLAlchemy) -> None:
    """A transition (with edits) and a save in the caller's transaction, then its rollback."""
    flow = Ticket.create(title="a")
    db.session.commit()
    before = snapshot(db)
    db.session.rollback()  # end the snapshot's read, so the block below begins one
    shown = (flow.state, flow.seq, flow.title, flow.attempts, flow.updated_at)
    with pytest.raises(RuntimeError), db.session.begin():  # noqa: PT012 - rollback tested
        flow.start("tp-1")
        flow.title = "b"
        flow.save()
        assert (flow.state, flow.external_id, flow.title, flow.seq) == ("working", "tp-1", "b", 2)
        raise RuntimeError("the caller's work failed")
    assert snapshot(db) == before
    assert (flow.state, flow.seq, flow.title, flow.attempts, flow.updated_at) == shown
    assert flow.external_id == "" and dict(flow.staged) == {}
    flow.start()  # the instance is usable and agrees with the row
    assert committed(flow).state == "working" and flow.seq == committed(flow).seq == 1


# PostgreSQL only: pysqlite's legacy transaction mode does not run SAVEPOINTs reliably.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_rolled_back_savepoint_restores_only_its_own(app: Any, db: SQLAlchemy) -> None:
    a, b = Ticket.create(title="a"), Ticket.create(title="b")
    db.session.commit()
    with db.session.begin():
        a.start("kept")
        nested = db.session.begin_nested()
        b.start("dropped")
        a.fail()
        nested.rollback()
        assert (a.state, a.external_id) == ("working", "kept")
        assert (b.state, b.external_id, b.attempts) == ("new", "", 0)
        released = db.session.begin_nested()
        b.start("released")
        released.commit()
    assert (committed(a).state, committed(b).state) == ("working", "working")
    assert (b.state, b.external_id) == ("working", "released")


def test_save_of_a_deleted_flow_raises_and_forgets(app: Any, db: SQLAlchemy) -> None:
    from flowstate_web import FlowNotFoundError

    flow = Ticket.create(title="a")
    Ticket.get(flow.id).delete()
    flow.title = "b"
    with pytest.raises(FlowNotFoundError):
        flow.save()
    assert flow.staged == {}


def test_recorded_changes_are_bounded(app: Any) -> None:
    flow = Ticket.create(title="a")
    flow.update(title="x" * 10_000, extra={f"k{i}": "v" * 100 for i in range(200)})
    entry = flow.save()
    assert entry is not None and entry.changes is not None
    new_title = entry.changes["title"]["new"]
    assert new_title["chars"] == 10_002 and len(new_title["truncated"]) <= MAX_CHANGE_VALUE
    assert entry.changes["title"]["old"] == "a"
    import json

    assert len(json.dumps(entry.changes)) < MAX_CHANGES_TOTAL + 1000
    assert committed(flow).title == "x" * 10_000  # the prop itself is stored whole


# -- read-only row attributes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "state",
        "errored",
        "seq",
        "id",
        "created_at",
        "updated_at",
        "state_entered_at",
        "completed_at",
        "last_errored_at",
        "last_error_message",
        "props",
    ],
)
def test_row_attributes_are_read_only(app: Any, name: str) -> None:
    flow = Ticket.create(title="a")
    before = getattr(flow, name)
    with pytest.raises(AttributeError, match=r"read-only.*transition"):
        setattr(flow, name, "x")
    with pytest.raises(AttributeError, match=r"read-only.*transition"):
        delattr(flow, name)
    assert getattr(flow, name) == before


def test_a_prop_cannot_be_deleted(app: Any) -> None:
    flow = Ticket.create(title="a")
    with pytest.raises(AttributeError, match=r"tests\.Ticket #\d+: prop 'title' cannot be deleted"):
        del flow.title
    assert flow.title == "a"


def test_refresh_shows_another_sessions_transition(app: Any, db: SQLAlchemy) -> None:
    flow = Ticket.create(title="a")
    db.session.commit()
    with Session(db.engine) as other:
        Ticket.get(flow.id, session=other).start(external_id="tp-2")
    assert flow.state == "new"
    flow.title = "staged"
    flow.refresh()
    assert (flow.state, flow.external_id, flow.title, flow.staged) == (
        "working",
        "tp-2",
        "a",
        {},
    )


# -- concurrency (real parallel connections) ------------------------------------------------


def test_saves_and_transitions_in_parallel_keep_the_sequence(engine: Engine) -> None:
    """Workers saving props and one running transitions: every write lands, seq is 1..n."""
    with Session(engine) as s:
        flow_id = Ticket.create(session=s, title="a").id
    workers = 6
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with Session(engine) as s:
                flow = Ticket.get(flow_id, session=s)
                s.commit()
                barrier.wait()
                if i == 0:
                    flow.start()
                else:
                    flow.update(extra={"worker": i}, title=f"t{i}")
                    flow.save(actor=f"w{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engine) as s:
        fresh = Ticket.get(flow_id, session=s)
        history = fresh.history()
        assert [h.seq for h in history] == list(range(1, workers + 1))
        assert fresh.seq == workers and fresh.state == "working"
        assert sorted(h.kind for h in history) == ["transition"] + ["update"] * (workers - 1)
        last_save = [h for h in history if h.kind == "update"][-1]
        assert fresh.title == last_save.changes["title"]["new"]  # type: ignore[index]
        # each history row's "old" is the value the previous writer stored
        titles = [h.changes["title"] for h in history if h.changes and "title" in h.changes]
        for prev, cur in itertools.pairwise(titles):
            assert cur["old"] == prev["new"]
        assert_exact(s)


def test_props_are_written_only_when_edited(app: Any, db: SQLAlchemy) -> None:
    """A transition that edits nothing does not rewrite the props column."""
    from sqlalchemy import event

    flow = Ticket.create(title="a")
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        lock = "seq=flowstate_flows.seq" in statement  # SQLite's lock, not a write
        if statement.startswith("UPDATE flowstate_flows SET") and not lock:
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        flow.start()  # edits attempts in its body
        flow.fail()  # edits nothing
        flow.title = "b"
        flow.save()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    set_clauses = [s.split(" WHERE ")[0] for s in statements]
    assert ["props=" in s for s in set_clauses] == [True, False, True], set_clauses
