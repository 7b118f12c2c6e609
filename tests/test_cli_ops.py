"""``flask flowstate list | show | retry | lint`` through the test CLI runner, both databases."""

from __future__ import annotations

import getpass
import json
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import text, update

from flowstate_web import Flow, State, transition
from flowstate_web.models import flows

from .admin.flows import BranchyFlow, SimpleRetryFlow
from .flows import Order
from .timed_flows import TimedFlow


class DeadEndFlow(Flow, type_name="tests.cli.DeadEnd"):
    """A flow the linter must fail: ``waiting`` has no way out."""

    new = State(initial=True)
    waiting = State()
    done = State(final=True)

    @transition(source=new, target=waiting)
    def wait(self) -> None:
        """Wait forever."""

    @transition(source=new, target=done)
    def finish(self) -> None:
        """Finish."""


class NoisyRetryFlow(Flow, type_name="tests.cli.NoisyRetry"):
    """A retry whose after-commit callback fails (e.g. no job queue in this process)."""

    new = State(initial=True)
    failed = State(error=True)

    @transition(source=new, target=failed)
    def fail(self) -> None:
        """Fail."""

    @transition(source=failed, target=new, retry=True, after="notify")
    def again(self) -> None:
        """Retry, then notify."""

    def notify(self) -> None:
        raise ConnectionError(f"queue unreachable for #{self.id}")


def invoke(runner: FlaskCliRunner, *args: str) -> Any:
    return runner.invoke(args=["flowstate", *args])


def as_json(runner: FlaskCliRunner, *args: str, code: int = 0) -> Any:
    result = invoke(runner, *args, "--json")
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def failed_order(customer: str = "ann") -> Order:
    flow = Order.create(customer=customer, amount=5)
    try:
        raise TimeoutError(f"gateway timed out for {customer}")
    except TimeoutError:
        flow.fail()
    return flow.refresh()


def broken(ref: str) -> BranchyFlow:
    flow = BranchyFlow.create(ref=ref)
    flow.start()
    flow.fail()
    return flow


# -- list ------------------------------------------------------------------------------------


def test_list_filters_like_the_admin(app: Flask, runner: FlaskCliRunner) -> None:
    ann = failed_order("ann")
    bob = Order.create(customer="bob", amount=1)
    other = SimpleRetryFlow.create(ref="x")
    found = as_json(runner, "list")
    assert [f["id"] for f in found["flows"]] == [other.id, bob.id, ann.id]  # newest first
    assert found["next_before"] is None
    assert set(found["flows"][0]) == {
        "id", "type", "state", "errored", "seq", "created_at", "updated_at",
        "state_entered_at", "completed_at", "last_error_type", "last_error_message",
        "props", "problem", "stalled_since",
    }  # fmt: skip
    only = as_json(runner, "list", "--type", "tests.Order", "--errored")["flows"]
    assert [(f["id"], f["state"], f["errored"]) for f in only] == [(ann.id, "failed", True)]
    assert only[0]["last_error_type"] == "TimeoutError"
    assert only[0]["props"]["customer"] == "ann"
    assert [f["id"] for f in as_json(runner, "list", "--not-errored")["flows"]] == [
        other.id,
        bob.id,
    ]
    assert [f["id"] for f in as_json(runner, "list", "--state", "new")["flows"]] == [
        other.id,
        bob.id,
    ]
    by_prop = as_json(runner, "list", "--type", "tests.Order", "customer=bob")["flows"]
    assert [f["id"] for f in by_prop] == [bob.id]
    assert as_json(runner, "list", "--type", "tests.Order", "amount=7")["flows"] == []
    table = invoke(runner, "list", "--type", "tests.Order")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "STATE", "FLAGS", "UPDATED", "PROPS"]
    assert lines[2].split()[:4] == [str(ann.id), "tests.Order", "failed", "errored"]


def test_list_is_bounded_and_pages_by_keyset(app: Flask, runner: FlaskCliRunner) -> None:
    ids = [SimpleRetryFlow.create(ref=str(i)).id for i in range(5)]
    first = as_json(runner, "list", "--limit", "2")
    assert [f["id"] for f in first["flows"]] == ids[:-3:-1]
    assert first["next_before"] == ids[3]
    second = as_json(runner, "list", "--limit", "2", "--before", str(first["next_before"]))
    assert [f["id"] for f in second["flows"]] == [ids[2], ids[1]]
    last = as_json(runner, "list", "--limit", "2", "--before", str(second["next_before"]))
    assert [f["id"] for f in last["flows"]] == [ids[0]]
    assert last["next_before"] is None
    text = invoke(runner, "list", "--limit", "2")
    assert f"more: add --before {ids[3]}" in text.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--type", "nope"], "no flow type 'nope'"),
        (["customer=ann"], "needs --type"),
        (["--type", "tests.Order", "colour=red"], "has no prop 'colour'"),
        (["--type", "tests.Order", "amount=lots"], "prop 'amount' is a int"),
        (["--type", "tests.Order", "a=1", "b=2"], "at most one prop=value"),
        (["--created-from", "yesterday"], "created_from: expected a date"),
        (["--limit", "0"], "--limit"),
        (["--before", str(2**64)], "--before"),
    ],
)
def test_list_usage_errors_exit_2(
    app: Flask, runner: FlaskCliRunner, args: list[str], said: str
) -> None:
    result = invoke(runner, "list", *args)
    assert result.exit_code == 2, result.output
    assert said in result.output


def test_list_and_show_stalled_flows(app: Flask, runner: FlaskCliRunner) -> None:
    db = app.extensions["sqlalchemy"]
    stalled, young = TimedFlow.create(ref="old"), TimedFlow.create(ref="young")
    stalled.start()
    young.start()
    other = failed_order()
    db.session.execute(
        update(flows)
        .where(flows.c.id == stalled.id)
        .values(state_entered_at=stalled.state_entered_at - timedelta(minutes=25))
    )
    db.session.commit()

    for args in ([], ["--type", "tests.TimedFlow"], ["--state", "fetching"]):
        ids = [f["id"] for f in as_json(runner, "list", "--stalled", *args)["flows"]]
        assert ids == [stalled.id], args
    listed = as_json(runner, "list", "--not-stalled")["flows"]
    assert {young.id, other.id} <= {f["id"] for f in listed}
    assert stalled.id not in {f["id"] for f in listed}
    assert all(f["stalled_since"] is None for f in listed)
    assert as_json(runner, "list", "--stalled", "--state", "queued")["flows"] == []

    text = invoke(runner, "list", "--type", "tests.TimedFlow")
    rows = {line.split()[0]: line.split()[3] for line in text.stdout.splitlines()[1:]}
    assert rows == {str(stalled.id): "stalled", str(young.id): "-"}
    shown = as_json(runner, "show", str(stalled.id))["flow"]
    assert shown["stalled_since"] == (stalled.state_entered_at - timedelta(minutes=15)).isoformat()
    assert "STALLED since" in invoke(runner, "show", str(stalled.id)).stdout
    assert "STALLED" not in invoke(runner, "show", str(young.id)).stdout


# -- show ------------------------------------------------------------------------------------


def test_show_state_props_history_and_artefacts(app: Flask, runner: FlaskCliRunner) -> None:
    flow = broken("r1")
    flow.retry_work()
    flow.fail()
    flow.retry_work()
    shown = as_json(runner, "show", str(flow.id))
    assert shown["flow"]["state"] == "working"
    assert shown["flow"]["props"]["ref"] == "r1"
    assert shown["retry_transitions"] == []
    assert [h["name"] for h in shown["history"]] == [
        "start", "fail", "retry_work", "fail", "retry_work",
    ]  # fmt: skip
    assert shown["history_total"] == 5
    assert shown["history"][0] | {"created_at": None} == {
        "seq": 1, "name": "start", "from": "new", "to": "working", "created_at": None,
        "actor": None, "reason": None, "error_type": None, "error_message": None, "meta": None,
    }  # fmt: skip
    assert [(a["name"], a["version"], a["seq"], a["payload"]) for a in shown["artefacts"]] == [
        ("report", 1, 1, {"started": True})
    ]
    short = as_json(runner, "show", str(flow.id), "--history", "2")
    assert [h["seq"] for h in short["history"]] == [4, 5]
    text = invoke(runner, "show", str(flow.id), "--history", "2")
    assert text.exit_code == 0
    assert f"#{flow.id} AdminBranchyFlow  state working" in text.stdout
    assert "history (the last 2 of 5, oldest first):" in text.stdout
    assert "report v1  written at step 1" in text.stdout
    errored = failed_order()
    text = invoke(runner, "show", str(errored.id))
    assert "(errored)" in text.stdout
    assert 'last error: TimeoutError: "gateway timed out for ann"' in text.stdout
    assert "retry with: retry_payment" in text.stdout


def test_show_a_missing_flow_exits_1(app: Flask, runner: FlaskCliRunner) -> None:
    result = invoke(runner, "show", "999999")
    assert result.exit_code == 1
    assert "no flow #999999" in result.output
    assert invoke(runner, "show", "abc").exit_code == 2
    past_64_bits = invoke(runner, "show", str(2**63))  # a usage error, not a driver traceback
    assert past_64_bits.exit_code == 2, past_64_bits.output
    assert "is not in the range" in past_64_bits.output


# -- retry -----------------------------------------------------------------------------------


def test_retry_by_id_is_audited_like_the_admin(app: Flask, runner: FlaskCliRunner) -> None:
    flow = failed_order()
    done = as_json(runner, "retry", str(flow.id), "--reason", "gateway is back", "--actor", "ops")
    assert done["retried"] == 1 and done["not_retried"] == 0
    assert done["results"] == [
        {
            "id": flow.id, "type": "tests.Order", "outcome": "retried",
            "transition": "retry_payment", "from": "failed", "to": "new",
            "message": "retried with retry_payment: failed -> new",
        }
    ]  # fmt: skip
    last = flow.refresh().history()[-1]
    assert (last.name, last.actor, last.reason, last.meta) == (
        "retry_payment", "ops", "gateway is back", {"cli": "retry"},
    )  # fmt: skip
    assert flow.state == "new"


def test_retry_actor_defaults_to_the_os_user(app: Flask, runner: FlaskCliRunner) -> None:
    flow = failed_order()
    result = invoke(runner, "retry", str(flow.id))
    assert result.exit_code == 0, result.output
    assert f"retried 1 of 1 flow(s) as {getpass.getuser()}" in result.stdout
    assert flow.history()[-1].actor == getpass.getuser()


def test_retry_refusals_exit_1_and_write_nothing(app: Flask, runner: FlaskCliRunner) -> None:
    fine = failed_order("fine")
    healthy = Order.create(customer="ok", amount=1)
    choosy = broken("choosy")
    guarded = broken("no-restart")
    result = invoke(
        runner, "retry", str(fine.id), str(healthy.id), str(choosy.id), "424242", "--json"
    )
    assert result.exit_code == 1
    out = {r["id"]: r for r in json.loads(result.stdout)["results"]}
    assert out[fine.id]["outcome"] == "retried"
    assert (
        out[healthy.id]["message"]
        == "state 'new' has no retry transition (the flow is not errored)"
    )
    assert "several retry transitions (retry_work, restart, explode)" in out[choosy.id]["message"]
    assert out[424242]["message"] == "no flow #424242"
    assert choosy.refresh().state == "broken" and healthy.refresh().seq == 0
    # A guard refusing, and a name that is not a retry transition from the state.
    refused = invoke(runner, "retry", str(guarded.id), "--transition", "restart", "--json")
    assert refused.exit_code == 1
    (r,) = json.loads(refused.stdout)["results"]
    assert (r["outcome"], r["transition"]) == ("refused", "restart")
    assert "guard of 'restart' refused" in r["message"]
    wrong = invoke(runner, "retry", str(guarded.id), "--transition", "finish")
    assert wrong.exit_code == 1
    assert "finish is not a retry transition from state 'broken'" in wrong.stdout
    assert guarded.refresh().seq == 2
    chosen = invoke(runner, "retry", str(guarded.id), "--transition", "broken=retry_work")
    assert chosen.exit_code == 0, chosen.output
    assert guarded.refresh().state == "working"


def test_retry_whose_code_fails_is_reported_and_rolled_back(
    app: Flask, runner: FlaskCliRunner
) -> None:
    boom = broken("boom")
    result = invoke(runner, "retry", str(boom.id), "--transition", "explode", "--json")
    assert result.exit_code == 1
    (r,) = json.loads(result.stdout)["results"]
    assert r["outcome"] == "failed"
    assert r["message"] == "explode raised RuntimeError: explode failed for boom"
    assert boom.refresh().state == "broken" and boom.seq == 2


def test_bulk_retry_by_type_is_bounded_by_limit(app: Flask, runner: FlaskCliRunner) -> None:
    failed = []
    for i in range(5):
        flow = SimpleRetryFlow.create(ref=str(i))
        flow.fail()
        failed.append(flow.id)
    SimpleRetryFlow.create(ref="healthy")
    first = as_json(
        runner, "retry", "--type", "AdminSimpleRetryFlow", "--errored", "--limit", "3",
        "--reason", "bulk", "--actor", "ops",
    )  # fmt: skip
    assert [r["id"] for r in first["results"]] == failed[:3]
    assert first["retried"] == 3
    again = invoke(runner, "retry", "--type", "AdminSimpleRetryFlow", "--errored")
    assert again.exit_code == 0, again.output
    assert "retried 2 of 2 flow(s) as" in again.stdout
    none = invoke(runner, "retry", "--type", "AdminSimpleRetryFlow", "--errored")
    assert none.exit_code == 0
    assert "no errored AdminSimpleRetryFlow flows match" in none.stderr
    entry = SimpleRetryFlow.get(failed[0]).history()[-1]
    assert (entry.name, entry.actor, entry.reason, entry.meta) == (
        "again", "ops", "bulk", {"cli": "bulk_retry"},
    )  # fmt: skip


def test_bulk_retry_one_failing_flow_rolls_back_alone(app: Flask, runner: FlaskCliRunner) -> None:
    good = broken("good")
    boom = broken("boom")
    other = broken("other")
    result = invoke(
        runner, "retry", "--type", "AdminBranchyFlow", "--errored", "--state", "broken",
        "--transition", "explode", "--json",
    )  # fmt: skip
    assert result.exit_code == 1
    out = {r["id"]: r["outcome"] for r in json.loads(result.stdout)["results"]}
    assert out == {good.id: "retried", boom.id: "failed", other.id: "retried"}
    assert [good.refresh().state, boom.refresh().state, other.refresh().state] == [
        "done", "broken", "done",
    ]  # fmt: skip
    assert boom.seq == 2
    by_prop = invoke(
        runner, "retry", "--type", "AdminBranchyFlow", "--errored", "--prop", "ref=boom",
        "--transition", "retry_work",
    )  # fmt: skip
    assert by_prop.exit_code == 0, by_prop.output
    assert boom.refresh().state == "working"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "give flow ids, or --type T --errored"),
        (["--type", "tests.Order"], "give flow ids, or --type T --errored"),
        (["1", "--type", "tests.Order", "--errored"], "not both"),
        (["--type", "nope", "--errored"], "no flow type 'nope'"),
        (["1", "--reason", "x" * 2001], "--reason: at most 2000"),
        (["1", "--actor", " "], "--actor is empty"),
        ([str(2**64)], "is not in the range"),
    ],
)
def test_retry_usage_errors_exit_2(
    app: Flask, runner: FlaskCliRunner, args: list[str], said: str
) -> None:
    result = invoke(runner, "retry", *args)
    assert result.exit_code == 2, result.output
    assert said in result.output


# -- lint ------------------------------------------------------------------------------------


def test_lint_exit_codes_and_json(app: Flask, runner: FlaskCliRunner) -> None:
    clean = invoke(runner, "lint", "tests.Order", "AdminSimpleRetryFlow")
    assert clean.exit_code == 0
    assert clean.stdout == "2 flow type(s) checked: 0 error(s), 0 warning(s)\n"
    warned = invoke(runner, "lint", "AdminBranchyFlow")
    assert warned.exit_code == 0
    assert warned.stdout.splitlines() == [
        "warnings:",
        "  FS103 AdminBranchyFlow: error state 'stuck' has no retry transition, so the admin"
        " offers no Retry and nothing leaves it",
        "1 flow type(s) checked: 0 error(s), 1 warning(s)",
    ]
    assert invoke(runner, "lint", "AdminBranchyFlow", "--strict").exit_code == 1
    assert (
        invoke(runner, "lint", "AdminBranchyFlow", "--strict", "--ignore", "FS103").exit_code == 0
    )
    failed = as_json(runner, "lint", "tests.cli.DeadEnd", "AdminBranchyFlow", code=1)
    assert failed["types"] == ["tests.cli.DeadEnd", "AdminBranchyFlow"]
    assert [(m["code"], m["type"], m["states"]) for m in failed["errors"]] == [
        ("FS102", "tests.cli.DeadEnd", ["waiting"])
    ]
    assert [m["code"] for m in failed["warnings"]] == ["FS103"]
    everything = as_json(runner, "lint", code=1)  # every registered type, DeadEnd included
    assert "tests.Order" in everything["types"]
    unknown = invoke(runner, "lint", "nope")
    assert unknown.exit_code == 2
    assert "no flow type 'nope'" in unknown.output


def test_lint_with_no_flow_type_registered_says_so_and_exits_3(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowstate_web.cli_ops

    monkeypatch.setattr(flowstate_web.cli_ops, "flow_types", dict)
    said = "no flow types registered: nothing to lint"
    for args in ((), ("--strict",)):
        result = invoke(runner, "lint", *args)
        assert result.exit_code == 3, result.output
        assert result.stdout == ""
        assert result.stderr.startswith(said)
    as_json_ = invoke(runner, "lint", "--json")
    assert as_json_.exit_code == 3
    assert json.loads(as_json_.stdout) == {"types": [], "errors": [], "warnings": []}
    assert said in as_json_.stderr
    assert (
        "  3  no flow type registered: nothing was checked\n"
        in invoke(runner, "lint", "--help").stdout
    )


def test_a_failing_callback_is_a_warning_the_retry_committed(
    app: Flask, runner: FlaskCliRunner
) -> None:
    one, two = NoisyRetryFlow.create(), NoisyRetryFlow.create()
    one.fail()
    two.fail()
    by_id = as_json(runner, "retry", str(one.id))
    assert by_id["results"][0]["outcome"] == "retried"
    assert by_id["results"][0]["message"] == "retried with again: failed -> new"
    assert by_id["warnings"] == [
        f"tests.cli.NoisyRetry.again -> notify: ConnectionError: queue unreachable for #{one.id}"
    ]
    bulk = invoke(runner, "retry", "--type", "tests.cli.NoisyRetry", "--errored")
    assert bulk.exit_code == 0, bulk.output
    said = "tests.cli.NoisyRetry.again -> notify: ConnectionError: queue unreachable for"
    assert f"warning: {said} #{two.id}" in bulk.stderr
    assert [one.refresh().state, two.refresh().state] == ["new", "new"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL cannot store it
def test_rows_written_before_the_boundary_never_break_the_output(
    app: Flask, runner: FlaskCliRunner
) -> None:
    flow = failed_order()
    db = app.extensions["sqlalchemy"]
    db.session.execute(
        text("UPDATE flowstate_flows SET props = :p WHERE id = :i"),
        {"p": '{"customer": "\\ud800x", "amount": 5}', "i": flow.id},
    )
    db.session.commit()
    listed = invoke(runner, "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["flows"][0]["props"]["customer"] == "\ud800x"
    for args in (["list"], ["show", str(flow.id)], ["show", str(flow.id), "--json"]):
        result = invoke(runner, *args)
        assert result.exit_code == 0, (args, result.output)
        assert "\\ud800x" in result.stdout
