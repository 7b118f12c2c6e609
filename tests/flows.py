"""Flow types used by the engine tests (defined once: the registry is process-wide)."""

from __future__ import annotations

from typing import Any

from flowstate_web import Artefact, Flow, Prop, State, transition

calls: list[tuple[str, int]] = []


class Order(Flow, type_name="tests.Order"):
    """A small flow with a guard, an artefact, an error state and a retry."""

    customer = Prop(str)
    amount = Prop(int)
    express = Prop(bool, default=False)
    ratio = Prop(float, default=0.0)
    tags = Prop(list[str], default=[])
    extra = Prop(dict[str, Any], default={})

    new = State(initial=True)
    paid = State()
    failed = State(error=True)
    shipped = State()
    done = State(final=True)

    receipt = Artefact(dict[str, Any])
    note = Artefact(str)

    @transition(source=new, target=paid, persists=receipt, after="record_paid")
    def pay(self, receipt: dict[str, Any]) -> dict[str, Any]:
        return receipt

    @transition(source=[new, paid], target=failed)
    def fail(self) -> None:
        pass

    @transition(source=failed, target=new, retry=True)
    def retry_payment(self) -> None:
        pass

    @transition(source=paid, target=shipped, guard=lambda f: f.amount > 0, persists="note")
    def ship(self, note: Any = "shipped") -> Any:
        return note

    @transition(source=shipped, target=done)
    def finish(self) -> None:
        pass

    @transition(source=paid, target=paid)
    def touch(self) -> None:
        pass

    def record_paid(self) -> None:
        calls.append(("paid", self.id))


class Disposable(Flow, type_name="tests.Disposable", destroy_on_complete=True):
    """Deleted with its history when it completes."""

    start = State()
    end = State(final=True)

    @transition(source=start, target=end, after="seen")
    def close(self) -> None:
        pass

    def seen(self) -> None:
        calls.append(("closed", self.id))
