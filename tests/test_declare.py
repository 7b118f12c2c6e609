"""Declaration errors fail when the class is defined, naming the class and the culprit."""

from __future__ import annotations

import pytest

from flowstate_web import (
    Artefact,
    DefinitionError,
    Flow,
    Prop,
    State,
    flow_types,
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


def test_specific_error_classes_are_definition_errors() -> None:
    from flowstate_web import UnknownArtefactError, UnknownStateError

    with pytest.raises(UnknownStateError, match=r"tests\.Bad\.go: unknown state 'gone'"):

        class BadState(Flow, type_name="tests.Bad"):
            x = State()

            @transition(source=x, target="gone")
            def go(self) -> None:
                pass

    with pytest.raises(UnknownArtefactError, match="undeclared artefact 'nothing'") as info:

        class BadArtefact(Flow, type_name="tests.Bad"):
            x = State()

            @transition(source=x, target=x, persists="nothing")
            def go(self) -> None:
                pass

    assert isinstance(info.value, DefinitionError)
    assert issubclass(UnknownStateError, DefinitionError)


def test_messages_name_the_type_not_the_local_qualname() -> None:
    def make() -> None:
        class Local(Flow, type_name="tests.Named"):
            x = State()
            x = State()

    with pytest.raises(DefinitionError) as info:
        make()
    assert str(info.value).startswith("tests.Named: 'x' is declared twice")
    assert "<locals>" not in str(info.value)
    assert "share one namespace" in str(info.value)


@pytest.mark.parametrize("name", ["retry", "run", "state", "props", "id", "save", "update"])
def test_reserved_names_say_why(name: str) -> None:
    with pytest.raises(DefinitionError) as info:
        type(Flow)("Reserving", (Flow,), {name: State()}, type_name="tests.Reserving")
    msg = str(info.value)
    assert msg.startswith(f"tests.Reserving: {name!r} is reserved by Flow")
    assert "share one namespace" in msg and "Reserved names" in msg


def test_readme_lists_every_reserved_name() -> None:
    import re
    from pathlib import Path

    from flowstate_web.flow import reserved_names

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Reserved names", 1)[1].split("\n#", 1)[0]
    listed = set(re.findall(r"`([a-z_]+)`", section))
    public = {n for n in reserved_names() if not n.startswith("_")}
    assert public <= listed, sorted(public - listed)
    assert listed - public <= {"_"}, sorted(listed - public)


@pytest.mark.parametrize(
    "name",
    ["a/b", "<b>x</b>", "line\r\nbreak", "", "..", ".", "sp ace", "x" * 201, "naïve", "a?b", "a#b"],
)
def test_type_names_that_cannot_be_a_url_segment_are_refused(name: str) -> None:
    with pytest.raises(DefinitionError, match=r"type name .* cannot be used") as info:
        type(Flow)("Odd", (Flow,), {"x": State()}, type_name=name)
    assert "A-Z, a-z, 0-9" in str(info.value)
    if name:
        assert name not in flow_types()


@pytest.mark.parametrize("name", ["a", "tests.Ok-name_1", "x" * 200, "v2.Flow"])
def test_url_safe_type_names_are_accepted(name: str) -> None:
    cls = type(Flow)("Fine", (Flow,), {"x": State()}, type_name=name)
    try:
        assert get_flow_type(name) is cls
    finally:
        unregister(name)


def test_the_demo_flows_have_url_safe_names() -> None:
    import flowstate_web.demo.orders_flow
    import flowstate_web.demo.sync_flow  # noqa: F401
    from flowstate_web._definition import TYPE_NAME

    for name in flow_types():
        assert TYPE_NAME.fullmatch(name), name
