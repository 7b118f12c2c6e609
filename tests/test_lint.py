"""The graph linter: each check on a small graph, and the demo and test flows as shipped."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

import flowstate_web.demo.orders_flow
import flowstate_web.demo.sync_flow
import flowstate_web.lint as lint_module
from flowstate_web import Flow
from flowstate_web.graph import FlowGraph, StateSpec, TransitionSpec
from flowstate_web.lint import CODES, LintMessage, lint, lint_all, reachable

from . import flows as engine_flows
from .admin import flows as admin_flows


def graph(states: list[StateSpec], transitions: list[TransitionSpec]) -> FlowGraph:
    return FlowGraph(name="T", states=tuple(states), transitions=tuple(transitions))


def codes(messages: list[LintMessage]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    return [(m.code, m.states, m.transitions) for m in messages]


def t(name: str, sources: tuple[str, ...], target: str, *, retry: bool = False) -> TransitionSpec:
    return TransitionSpec(name=name, sources=sources, target=target, retry=retry)


S = StateSpec


def test_a_clean_graph_has_no_messages() -> None:
    g = graph(
        [S("new", initial=True), S("failed", error=True), S("done", final=True)],
        [
            t("go", ("new",), "done"),
            t("fail", ("new",), "failed"),
            t("again", ("failed",), "new", retry=True),
        ],
    )
    assert lint(g) == []
    assert reachable(g) == {"new", "failed", "done"}


def test_unreachable_state_and_transitions_that_can_never_run() -> None:
    g = graph(
        [S("new", initial=True), S("lost"), S("done", final=True)],
        [
            t("go", ("new",), "done"),
            t("from_lost", ("lost",), "done"),
            t("either", ("lost", "new"), "done"),
        ],
    )
    assert codes(lint(g)) == [("FS101", ("lost",), ()), ("FS105", ("lost",), ("from_lost",))]
    first = lint(g)[0]
    assert first.severity == "error"
    assert "'lost'" in first.message and "'new'" in first.message
    assert str(first).startswith("error FS101 T: state 'lost'")


def test_dead_end_error_without_retry_and_final_with_exits() -> None:
    g = graph(
        [S("new", initial=True), S("waiting"), S("broken", error=True), S("done", final=True)],
        [
            t("wait", ("new",), "waiting"),
            t("break_", ("new",), "broken"),
            t("give_up", ("broken",), "done"),
            t("finish", ("new",), "done"),
            t("reopen", ("done",), "new"),
        ],
    )
    found = lint(g)
    assert codes(found) == [
        ("FS102", ("waiting",), ()),
        ("FS103", ("broken",), ("give_up",)),
        ("FS104", ("done",), ("reopen",)),
    ]
    assert [m.severity for m in found] == ["error", "warning", "warning"]
    assert "only by give_up" in found[1].message
    assert codes(lint(g, ignore={"FS103", "FS104"})) == [("FS102", ("waiting",), ())]


def test_timeout_without_action_or_hand_off() -> None:
    # Timeouts and hand-offs are declared by the reliability work; the check reads them
    # when the graph carries them and stays silent otherwise.
    has_timeout = "timeout" in {f.name for f in dataclasses.fields(StateSpec)}
    has_enqueue = "enqueue" in {f.name for f in dataclasses.fields(TransitionSpec)}
    if not has_timeout:
        g = graph([S("new", initial=True), S("done", final=True)], [t("go", ("new",), "done")])
        assert [m for m in lint(g) if m.code == "FS106"] == []
        return
    waiting = S("waiting", timeout=timedelta(minutes=5))  # type: ignore[call-arg]
    g = graph(
        [S("new", initial=True), waiting, S("done", final=True)],
        [t("wait", ("new",), "waiting"), t("go", ("waiting",), "done")],
    )
    assert codes(lint(g)) == [("FS106", ("waiting",), ("wait",))]
    acted = dataclasses.replace(waiting, on_timeout="go")  # type: ignore[call-arg]
    assert lint(dataclasses.replace(g, states=(g.states[0], acted, g.states[2]))) == []
    if has_enqueue:
        handed = dataclasses.replace(g.transitions[0], enqueue=("job",))  # type: ignore[call-arg]
        assert lint(dataclasses.replace(g, transitions=(handed, g.transitions[1]))) == []


def test_every_code_is_documented_with_a_severity() -> None:
    assert set(CODES) == {f"FS10{i}" for i in range(1, 7)}
    assert {sev for sev, _ in CODES.values()} == {"error", "warning"}
    for code in CODES:
        assert code in (lint_module.__doc__ or "")


def test_to_dict_is_stable() -> None:
    g = graph([S("new", initial=True), S("stuck")], [t("go", ("new",), "stuck")])
    assert [m.to_dict() for m in lint(g)] == [
        {
            "code": "FS102",
            "severity": "error",
            "type": "T",
            "title": "dead end",
            "message": "state 'stuck' is neither final nor an error state, but no transition"
            " leaves it: flows that enter it stay there forever",
            "states": ["stuck"],
            "transitions": [],
        }
    ]


def test_the_demo_flows_are_clean() -> None:
    demo = [
        flowstate_web.demo.sync_flow.SyncThirdPartyApiFlow,
        flowstate_web.demo.orders_flow.OrderFulfilmentFlow,
    ]
    assert lint_all(demo) == []


def test_the_test_flows_have_only_their_deliberate_warnings() -> None:
    # The engine's test flows are clean; the admin's have error states left by no retry on
    # purpose (the admin must show "no retry" for them).
    assert lint_all([engine_flows.Order, engine_flows.Disposable]) == []
    assert codes(lint(admin_flows.BranchyFlow)) == [("FS103", ("stuck",), ())]
    assert codes(lint(admin_flows.SimpleRetryFlow)) == []
    assert [m.code for m in lint(admin_flows.HostileFlow)] == ["FS103"]


@pytest.mark.parametrize("cls", [admin_flows.BranchyFlow, engine_flows.Order])
def test_lint_accepts_a_class_or_its_graph(cls: type[Flow]) -> None:
    assert lint(cls) == lint(cls.graph())
