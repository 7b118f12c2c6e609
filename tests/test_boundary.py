"""What the engine stores: one boundary, the same on SQLite and PostgreSQL.

Failures are always recorded (exception text is repaired, never refused); every other value
(props, artefacts, actor, reason, meta) outside the rule is refused with a
``PayloadValidationError`` naming the field, before anything is written.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import func, select

from flowstate_web import (
    Artefact,
    Flow,
    PayloadValidationError,
    Prop,
    State,
    prune_completed,
    transition,
)
from flowstate_web._values import (
    MAX_ACTOR,
    MAX_ARTEFACT_BYTES,
    MAX_DEPTH,
    MAX_ERROR_MESSAGE,
    MAX_META_BYTES,
    MAX_PROPS_BYTES,
    MAX_REASON,
    MAX_TRACEBACK,
)
from flowstate_web.models import artefacts, flows, transitions


class BoundaryJob(Flow, type_name="tests.BoundaryJob"):
    """The README's job pattern: start, work, finish; on error fail from ``except``."""

    ref = Prop(str)
    data = Prop(dict[str, Any], default={})
    items = Prop(list[Any], default=[])
    n = Prop(int, default=0)

    pending = State(initial=True)
    working = State()
    failed = State(error=True)
    done = State(final=True)

    result = Artefact(dict[str, Any])
    text = Artefact(str)

    @transition(source=pending, target=working)
    def start(self) -> None: ...

    @transition(source=working, target=done, persists=result)
    def finish(self, result: Any) -> Any:
        return result

    @transition(source=working, target=done, persists=text)
    def finish_text(self, text: Any) -> Any:
        return text

    @transition(source=working, target=failed)
    def fail(self) -> None: ...

    @transition(source=failed, target=pending, retry=True)
    def retry_job(self) -> None: ...


def nested(depth: int) -> Any:
    """Return a list nested ``depth`` levels deep (built without recursion)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def run_job(flow_id: int, work: Any) -> None:
    """Run the README's job: get, start, work, finish; on error fail and re-raise."""
    flow = BoundaryJob.get(flow_id)
    flow.start()
    try:
        flow.finish(work())
    except Exception:
        flow.fail()
        raise


def job_failing_with(flow_id: int, exc: BaseException) -> None:
    """Run the job with work that raises ``exc``; check the job re-raised that very error."""

    def work() -> Any:
        raise exc

    with pytest.raises(type(exc)) as info:
        run_job(flow_id, work)
    assert info.value is exc


def count(db: SQLAlchemy, table: Any) -> int:
    return int(db.session.scalar(select(func.count()).select_from(table)) or 0)


# -- 1. failures can always be recorded ---------------------------------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


class NulNamed(Exception):
    pass


NulNamed.__qualname__ = "Nul\x00Named\ud800" + "x" * 500


def _chain() -> Exception:
    try:
        try:
            raise KeyError("inner \x00 with NUL and \udc80 surrogate")
        except KeyError as inner:
            raise ValueError("middle " + "m" * 300_000) from inner
    except ValueError:
        return RuntimeError("outer \ud83d lone high surrogate")


def _long_chain(n: int) -> Exception:
    exc: Exception = ValueError("root")
    for i in range(n):
        try:
            raise RuntimeError(f"link {i}\x00") from exc
        except RuntimeError as e:
            exc = e
    return exc


HOSTILE_ERRORS: dict[str, Any] = {
    "nul": lambda: ValueError("bad \x00 byte"),
    "lone_surrogate": lambda: ValueError("bad \ud800 surrogate \udfff"),
    "one_megabyte": lambda: ValueError("x" * 1_000_000),
    "str_raises": lambda: Unprintable(),
    "hostile_type_name": lambda: NulNamed("type name with NUL"),
    "chain": _chain,
    "long_chain": lambda: _long_chain(300),
    "exception_group": lambda: ExceptionGroup("group \x00", [ValueError("a\ud800"), KeyError()]),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_ERRORS))
def test_hostile_exception_is_recorded_by_the_job_pattern(app: Any, kind: str) -> None:
    flow = BoundaryJob.create(ref="r")
    job_failing_with(flow.id, HOSTILE_ERRORS[kind]())
    again = BoundaryJob.get(flow.id)
    assert again.state == "failed"
    failure = again.history()[-1]
    assert failure.to_state == "failed"
    for text in (failure.error_type, failure.error_message, failure.error_traceback):
        assert text is not None
        assert "\x00" not in text
        assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)
    assert failure.error_type is not None and len(failure.error_type) <= 200
    assert failure.error_message is not None and len(failure.error_message) <= MAX_ERROR_MESSAGE
    assert failure.error_traceback is not None and len(failure.error_traceback) <= MAX_TRACEBACK
    assert again.last_error_message == failure.error_message
    # The frames survive a huge message: the traceback still says where it failed.
    if kind in {"one_megabyte", "chain", "nul", "str_raises"}:
        assert "in work" in failure.error_traceback
    # And the usual recovery applies.
    again.retry(actor="ops", reason="fixed")
    assert BoundaryJob.get(flow.id).state == "pending"


def test_repaired_exception_text_says_what_it_held(app: Any) -> None:
    flow = BoundaryJob.create(ref="r")
    job_failing_with(flow.id, ValueError("a\x00b\ud800c"))
    entry = BoundaryJob.get(flow.id).history()[-1]
    assert entry.error_type == "ValueError"
    assert entry.error_message == "a\ufffdb\ufffdc"

    flow = BoundaryJob.create(ref="u")
    job_failing_with(flow.id, Unprintable())
    entry = BoundaryJob.get(flow.id).history()[-1]
    assert entry.error_message == "<str() of the exception raised RuntimeError>"
    assert entry.error_type == "tests.test_boundary.Unprintable"

    flow = BoundaryJob.create(ref="big")
    job_failing_with(flow.id, ValueError("y" * 1_000_000))
    entry = BoundaryJob.get(flow.id).history()[-1]
    assert entry.error_message is not None
    assert len(entry.error_message) == MAX_ERROR_MESSAGE
    assert entry.error_message.endswith("[cut at 2,000 of 1,000,000 characters]")


def test_explicit_error_argument_is_repaired_too(app: Any) -> None:
    flow = BoundaryJob.create(ref="r")
    flow.start()
    flow.run("fail", error=ValueError("\x00" * 10))
    assert BoundaryJob.get(flow.id).last_error_message == "\ufffd" * 10


# -- 2. one boundary for everything else ---------------------------------------------------

BAD_PROPS: list[tuple[str, dict[str, Any], str]] = [
    ("nul_value", {"ref": "a\x00b"}, "prop 'ref': string 'a\\x00b' contains a NUL"),
    ("surrogate_value", {"ref": "a\ud800"}, "prop 'ref': string 'a\\ud800' contains a lone"),
    ("nul_key", {"ref": "r", "data": {"k\x00": 1}}, "prop 'data': string"),
    ("surrogate_deep", {"ref": "r", "data": {"a": [{"b": "\udfff"}]}}, "lone surrogate"),
    ("deep_1000", {"ref": "r", "items": nested(1000)}, f"deeper than {MAX_DEPTH} levels"),
    ("deep_65", {"ref": "r", "items": nested(MAX_DEPTH + 1)}, "deeper than"),
    ("nan", {"ref": "r", "data": {"x": math.nan}}, "nan cannot be stored in JSON"),
    ("inf", {"ref": "r", "items": [math.inf]}, "inf cannot be stored in JSON"),
    ("datetime", {"ref": "r", "data": {"at": datetime(2024, 1, 1)}}, "datetime value"),
    ("big_int", {"ref": "r", "n": 2**64}, "65-bit integer does not fit in 64 bits"),
    ("big_int_deep", {"ref": "r", "items": [-(2**63) - 1]}, "does not fit in 64 bits"),
    (
        "too_large",
        {"ref": "r", "data": {"k": "v" * MAX_PROPS_BYTES}},
        "props is too large: 262,188 bytes (limit 262,144 bytes); the largest is 'data' (262,152",
    ),
]


@pytest.mark.parametrize(
    ("props", "message"), [b[1:] for b in BAD_PROPS], ids=[b[0] for b in BAD_PROPS]
)
def test_bad_props_are_refused_before_writing(
    app: Any, db: SQLAlchemy, props: dict[str, Any], message: str
) -> None:
    with pytest.raises(PayloadValidationError) as info:
        BoundaryJob.create(**props)
    assert message in str(info.value)
    assert "tests.BoundaryJob" in str(info.value)
    assert count(db, flows) == 0


def test_a_list_containing_itself_is_refused(app: Any) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(PayloadValidationError, match="contains itself"):
        BoundaryJob.create(ref="r", items=loop)


def test_values_at_the_limits_are_stored_on_both_databases(app: Any) -> None:
    assert BoundaryJob.create(ref="d", items=nested(MAX_DEPTH)).items == nested(MAX_DEPTH)
    deep = nested(MAX_DEPTH - 1)
    flow = BoundaryJob.create(
        ref="é" * 1000,
        n=2**63 - 1,
        items=[deep, -(2**63), 1.5e308, "\ufffd\U0001f600\u2028"],
    )
    again = BoundaryJob.get(flow.id)
    assert again.items == [deep, -(2**63), 1.5e308, "\ufffd\U0001f600\u2028"]
    assert again.n == 2**63 - 1
    again.start()
    entry = again.run(
        "finish",
        {"big": "z" * (10 * 1024 * 1024)},  # a 10 MB artefact is fine
        actor="ä" * MAX_ACTOR,  # characters, as VARCHAR(200) counts them on PostgreSQL
        reason="r" * MAX_REASON,
        meta={"deep": nested(MAX_DEPTH - 1), "n": 1},
    )
    stored = BoundaryJob.get(flow.id).history()[-1]
    assert stored.actor == "ä" * MAX_ACTOR == entry.actor
    assert stored.reason == "r" * MAX_REASON
    assert stored.meta == {"deep": nested(MAX_DEPTH - 1), "n": 1}
    assert len(BoundaryJob.get(flow.id).result.latest()["big"]) == 10 * 1024 * 1024


def _started(db: SQLAlchemy) -> BoundaryJob:
    flow = BoundaryJob.create(ref="r")
    flow.start()
    return flow


BAD_RUNS: list[tuple[str, dict[str, Any], str]] = [
    ("actor_nul", {"actor": "ops\x00"}, "'finish': actor: string 'ops\\x00' contains a NUL"),
    ("actor_surrogate", {"actor": "ops\ud800"}, "actor: string"),
    ("actor_long", {"actor": "a" * 201}, "actor is too long: 201 characters (limit 200)"),
    ("actor_long_100k", {"actor": "a" * 100_000}, "actor is too long"),
    ("actor_type", {"actor": 42}, "actor must be str, got int"),
    ("reason_nul", {"reason": "because\x00"}, "reason: string"),
    ("reason_surrogate", {"reason": "\udfff"}, "reason: string"),
    ("reason_long", {"reason": "r" * (MAX_REASON + 1)}, "reason is too long"),
    ("meta_nan", {"meta": {"x": math.nan}}, "meta: nan cannot be stored in JSON"),
    ("meta_datetime", {"meta": {"at": datetime.now(UTC)}}, "meta: datetime value"),
    ("meta_not_dict", {"meta": ["a"]}, "meta must be a dict, got list"),
    ("meta_key", {"meta": {1: "a"}}, "meta: dict key 1 is int"),
    ("meta_nul", {"meta": {"a": "\x00"}}, "meta: string"),
    ("meta_deep", {"meta": {"d": nested(1000)}}, "meta: lists/dicts nested deeper"),
    ("meta_large", {"meta": {"a": "m" * MAX_META_BYTES}}, "meta is too large"),
    ("artefact_nul", {"args": ({"a": "\x00"},)}, "artefact 'result' of 'finish': string"),
    ("artefact_surrogate", {"args": ({"\ud800": 1},)}, "artefact 'result' of 'finish'"),
    ("artefact_deep", {"args": ({"d": nested(1000)},)}, "nested deeper than 64"),
    ("artefact_nan", {"args": ({"x": math.inf},)}, "inf cannot be stored"),
    (
        "artefact_large",
        {"args": ({"a": "z" * MAX_ARTEFACT_BYTES},)},
        "artefact 'result' of 'finish' is too large",
    ),
]


@pytest.mark.parametrize(
    ("run", "message"), [b[1:] for b in BAD_RUNS], ids=[b[0] for b in BAD_RUNS]
)
def test_bad_transition_values_are_refused_before_writing(
    app: Any, db: SQLAlchemy, run: dict[str, Any], message: str
) -> None:
    flow = _started(db)
    before = count(db, transitions)
    run = dict(run)
    args = run.pop("args", ({"ok": True},))
    with pytest.raises(PayloadValidationError) as info:
        flow.run("finish", *args, **run)
    assert message in str(info.value)
    assert f"tests.BoundaryJob #{flow.id}" in str(info.value)
    assert count(db, transitions) == before
    assert count(db, artefacts) == 0
    assert BoundaryJob.get(flow.id).state == "working"


def test_bad_string_artefact_is_refused(app: Any, db: SQLAlchemy) -> None:
    flow = _started(db)
    with pytest.raises(PayloadValidationError, match="artefact 'text' of 'finish_text': string"):
        flow.finish_text("NUL\x00")
    assert count(db, artefacts) == 0


def test_retry_refuses_a_bad_actor(app: Any, db: SQLAlchemy) -> None:
    flow = _started(db)
    flow.fail()
    with pytest.raises(PayloadValidationError, match="'retry_job': actor is too long"):
        flow.retry(actor="x" * 500)
    with pytest.raises(PayloadValidationError, match="'retry_job': reason: string"):
        flow.retry(actor="ops", reason="\x00")
    assert BoundaryJob.get(flow.id).state == "failed"


def test_prune_refuses_bad_arguments_before_deleting(app: Any, db: SQLAlchemy) -> None:
    flow = _started(db)
    flow.finish({"ok": True})
    with pytest.raises(PayloadValidationError, match="prune: flow_type: string"):
        prune_completed(datetime.now(UTC), flow_type="tests.BoundaryJob\x00")
    with pytest.raises(PayloadValidationError, match="prune: flow_type is too long"):
        prune_completed(datetime.now(UTC), flow_type="t" * 201)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        prune_completed(datetime.now(UTC), batch_size=0)
    with pytest.raises(ValueError, match="older_than must be a datetime"):
        prune_completed("yesterday")  # type: ignore[arg-type]
    assert count(db, flows) == 1
    assert prune_completed(datetime.now(UTC), flow_type="tests.BoundaryJob") == 1


# -- the rule itself (no database) ---------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, "é", None, True, False]},
        ["\U0001f600", {"k": {"n": -(2**63)}}],
        "",
        {},
        [],
    ],
)
def test_json_size_is_the_compact_utf8_json_size(value: Any) -> None:
    import json

    from flowstate_web._values import json_size

    expected = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    assert json_size(value, what="x") == expected


def test_cut_and_clean_text() -> None:
    from flowstate_web._values import clean_text, cut, text_problem

    assert clean_text("a\x00b\ud800c\U0001f600") == "a\ufffdb\ufffdc\U0001f600"
    assert text_problem("fine é \U0001f600") is None
    assert text_problem("nul\x00") == "contains a NUL character"
    assert text_problem("x\udc80") == "contains a lone surrogate (U+DC80) at index 1"
    out = cut("x" * 100, 50)
    assert len(out) == 50 and out.endswith("… [cut at 50 of 100 characters]")
    tail = cut("a" * 50 + "END", 45, keep="end")
    assert len(tail) == 45 and tail.endswith("END") and tail.startswith("… [cut at 45 of 53")
    assert cut("short", 50) == "short"


def test_prune_command_reports_a_bad_type_as_a_usage_error(app: Any, runner: Any) -> None:
    result = runner.invoke(args=["flowstate", "prune", "--days", "1", "--type", "bad\x00type"])
    assert result.exit_code == 2
    assert "Invalid value for --type" in result.output
    assert "contains a NUL character" in result.output
