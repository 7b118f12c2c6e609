"""Declaration errors fail when the class is defined, naming the class and the culprit."""

from __future__ import annotations

import pytest

from flowstate_web import (
    Artefact,
    DefinitionError,
    Flow,
    Prop,
    State,
    get_flow_type,
    transition,
)
from flowstate_web.registry import unregister
from tests.flows import Order


def test_graph_is_known_without_running() -> None:
    g = Order.graph()
    assert g.initial == "new"
    assert g.error_states == ("failed",)
    assert g.final_states == ("done",)
    pay = g.transition("pay")
    assert pay is not None
    assert (pay.sources, pay.target, pay.persists, pay.after) == (
        ("new",),
        "paid",
        "receipt",
        ("record_paid",),
    )
    ship = g.transition("ship")
    assert ship is not None and ship.guard == "guard"
    assert [t.name for t in g.retry_transitions_from("failed")] == ["retry_payment"]
    assert get_flow_type("tests.Order") is Order


def test_initial_defaults_to_first_declared() -> None:
    class FirstIsInitial(Flow, type_name="tests.FirstIsInitial"):
        a = State()
        b = State()

    try:
        assert FirstIsInitial.initial_state == "a"
    finally:
        unregister("tests.FirstIsInitial")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "x = State()\n@transition(source='nope', target=x)\ndef go(self): pass",
            "unknown state 'nope'",
        ),
        (
            "x = State()\n@transition(source=x, target='gone')\ndef go(self): pass",
            "unknown state 'gone'",
        ),
        ("x = State()\nx = State()", "'x' is declared twice"),
        (
            "x = State()\n@transition(source=x, target=x)\ndef go(self): pass\n"
            "@transition(source=x, target=x)\ndef go(self): pass",
            "'go' is declared twice",
        ),
        (
            "x = State()\n@transition(source=x, target=x, persists='nothing')\ndef go(self): pass",
            "undeclared artefact 'nothing'",
        ),
        (
            "x = State()\n@transition(source=x, target=x, after='missing')\ndef go(self): pass",
            "'missing' is not a method",
        ),
        ("x = State(initial=True)\ny = State(initial=True)", "more than one initial state"),
        ("x = State(error=True, final=True)", "both error and final"),
        (
            "x = State()\ne = State(error=True)\n@transition(source=x, target=e, retry=True)\n"
            "def go(self): pass",
            "must leave an error state",
        ),
        (
            "x = State()\ne = State(error=True)\n@transition(source=e, target=x, retry=True)\n"
            "def go(self, why): pass",
            "cannot take required arguments",
        ),
        ("import datetime\nwhen = Prop(datetime.datetime)", "cannot be stored in JSON"),
        ("x = State()\nthing = Artefact(set)", "cannot be stored in JSON"),
        ("pass", "declare at least one State"),
    ],
)
def test_bad_declarations_fail_at_definition(body: str, message: str) -> None:
    src = "class Broken(Flow, type_name='tests.Broken'):\n" + "\n".join(
        "    " + line for line in body.splitlines()
    )
    namespace = {
        "Flow": Flow,
        "State": State,
        "Prop": Prop,
        "Artefact": Artefact,
        "transition": transition,
    }
    with pytest.raises(DefinitionError, match="Broken") as info:
        exec(src, namespace)
    assert message in str(info.value)
    unregister("tests.Broken")


def test_type_name_collision_is_refused() -> None:
    with pytest.raises(DefinitionError, match=r"tests\.Order"):

        class Order(Flow, type_name="tests.Order"):  # another class, same stored name
            a = State()


def test_abstract_base_shares_declarations() -> None:
    class Base(Flow, abstract=True):
        a = State()
        b = State(final=True)

        @transition(source=a, target=b)
        def go(self) -> None:
            pass

    class Child(Base, type_name="tests.Child"):
        c = State(error=True)

    try:
        assert Child.graph().state_names == ("a", "b", "c")
        assert [t.name for t in Child.graph().transitions] == ["go"]
    finally:
        unregister("tests.Child")
