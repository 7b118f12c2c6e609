"""Artefacts: typed, linked to the transition that made them, every version kept."""

from __future__ import annotations

from typing import Any

import pytest

from flowstate_web import UnknownArtefactError
from tests.flows import Order


def test_latest_and_versions_linked_to_transitions(app: Any) -> None:
    flow = Order.create(customer="c", amount=1)
    assert flow.receipt.latest() is None and not flow.receipt.exists()
    pay = flow.pay({"v": 1})
    flow.fail()
    flow.retry()
    pay2 = flow.pay({"v": 2})
    assert flow.receipt.latest() == {"v": 2}
    versions = flow.receipt.versions()
    assert [v.payload for v in versions] == [{"v": 1}, {"v": 2}]
    assert [v.transition_id for v in versions] == [pay.id, pay2.id]
    assert flow.latest_artefact("receipt") == versions[-1]
    ship = flow.ship("by boat")
    assert flow.note.latest() == "by boat"
    assert [a.name for a in flow.artefacts()] == ["receipt", "receipt", "note"]
    assert flow.artefacts()[-1].transition_id == ship.id


def test_undeclared_artefact_name(app: Any) -> None:
    flow = Order.create(customer="c", amount=1)
    with pytest.raises(UnknownArtefactError, match="no artefact 'nope'"):
        flow.latest_artefact("nope")
