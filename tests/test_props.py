"""Props: typed, validated on creation, falsy values are present."""

from __future__ import annotations

import math
from typing import Any

import pytest
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import func, select

from flowstate_web import PayloadValidationError
from flowstate_web.models import flows
from tests.flows import Order


def test_props_round_trip_with_types(app: Any) -> None:
    flow = Order.create(customer="ann", amount=3, ratio=2, tags=["a"], extra={"k": [1, None]})
    again = Order.get(flow.id)
    assert again.customer == "ann"
    assert again.amount == 3
    assert again.ratio == 2.0 and isinstance(again.ratio, float)
    assert again.tags == ["a"]
    assert again.extra == {"k": [1, None]}
    assert again.express is False  # default


@pytest.mark.parametrize("value", [False, 0, "", [], {}])
def test_falsy_values_are_present_not_missing(app: Any, value: Any) -> None:
    field = {bool: "express", int: "amount", str: "customer", list: "tags", dict: "extra"}[
        type(value)
    ]
    props: dict[str, Any] = {"customer": "c", "amount": 1} | {field: value}
    assert getattr(Order.create(**props), field) == value


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"amount": 1}, "prop 'customer' is missing"),
        ({"customer": "c", "amount": "1"}, "prop 'amount' must be int, got str"),
        ({"customer": "c", "amount": True}, "prop 'amount' must be int, got bool"),
        ({"customer": "c", "amount": 1, "express": 1}, "prop 'express' must be bool"),
        ({"customer": "c", "amount": 1, "ratio": math.nan}, "cannot be stored in JSON"),
        ({"customer": "c", "amount": 1, "extra": {1: "x"}}, "JSON keys must be str"),
        ({"customer": "c", "amount": 1, "extra": {"when": object()}}, "cannot be stored in JSON"),
        ({"customer": "c", "amount": 1, "colour": "red"}, "unknown prop 'colour'"),
        ({"customer": None, "amount": 1}, "prop 'customer' is None"),
    ],
)
def test_bad_props_write_nothing(app: Any, db: SQLAlchemy, props: Any, message: str) -> None:
    with pytest.raises(PayloadValidationError) as info:
        Order.create(**props)
    assert message in str(info.value)
    assert "tests.Order" in str(info.value)
    assert db.session.scalar(select(func.count()).select_from(flows)) == 0
