"""The Prometheus endpoint: text format, figures from counters and rollup, access."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from flowstate_web import rollup
from tests.flows import Order


def scrape(app: Flask, **headers: str) -> tuple[int, str]:
    response = app.test_client().get("/metrics", headers=headers)
    return response.status_code, response.get_data(as_text=True)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def seed(app: Flask) -> None:
    with app.app_context():
        for i in range(5):
            flow = Order.create(customer="c", amount=1)
            flow.fail()
            if i < 2:
                flow.run("retry_payment", meta={"admin": "retry"})
            elif i < 3:
                flow.run("retry_payment", meta={"cli": "retry"})
        Order.create(customer="d", amount=1).pay({"x": 1})
        rollup.run()


def test_metrics_figures(make_app: Callable[..., Flask]) -> None:
    app = make_app(FLOWSTATE_METRICS=True, FLOWSTATE_PUBLIC=True)
    seed(app)
    status, text = scrape(app)
    assert status == 200
    got = samples(text)
    o = Order.type_name
    assert got["flowstate_flows", (("state", "failed"), ("type", o))] == 2
    assert got["flowstate_flows", (("state", "new"), ("type", o))] == 3
    assert got["flowstate_flows_errored", (("state", "failed"), ("type", o))] == 2
    tx = (("outcome", "error"), ("transition", "fail"), ("type", o))
    assert got["flowstate_transitions_total", tx] == 5
    ok = (("outcome", "ok"), ("transition", "pay"), ("type", o))
    assert got["flowstate_transitions_total", ok] == 1
    admin = (("actor_kind", "admin"), ("transition", "retry_payment"), ("type", o))
    cli = (("actor_kind", "cli"), ("transition", "retry_payment"), ("type", o))
    assert got["flowstate_retries_total", admin] == 2
    assert got["flowstate_retries_total", cli] == 1
    inf = (("le", "+Inf"), ("state", "new"), ("type", o))
    assert got["flowstate_time_in_state_seconds_bucket", inf] == 6  # 5 fail + 1 pay from new
    assert got["flowstate_time_in_state_seconds_count", (("state", "new"), ("type", o))] == 6
    assert got["flowstate_rollup_last_run_timestamp_seconds", ()] > 0


def test_scrape_statements_do_not_grow_with_the_tables(make_app: Callable[..., Flask]) -> None:
    app = make_app(FLOWSTATE_METRICS=True, FLOWSTATE_PUBLIC=True)
    seed(app)
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
    seen: list[str] = []

    def count(*args: object) -> None:
        seen.append(str(args[2]))

    scrape(app)  # the first use of a connection may run set-up statements
    event.listen(engine, "before_cursor_execute", count)
    try:
        scrape(app)
        first = len(seen)
        seed(app)
        seen.clear()
        scrape(app)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(seen) == first == 4  # no timed state in tests.Order: no stalled statement
    assert not any("flowstate_transitions" in s and "rollup" not in s for s in seen)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_token_guards_the_endpoint(make_app: Callable[..., Flask]) -> None:
    app = make_app(FLOWSTATE_METRICS=True, FLOWSTATE_METRICS_TOKEN="s3cret")
    assert scrape(app)[0] == 401
    assert scrape(app, Authorization="Bearer wrong")[0] == 401
    assert scrape(app, Authorization="Basic s3cret")[0] == 401
    status, text = scrape(app, Authorization="Bearer s3cret")
    assert status == 200
    assert "flowstate_flows" in text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_access_hook_guards_the_endpoint_without_a_token(make_app: Callable[..., Flask]) -> None:
    closed = make_app(FLOWSTATE_METRICS=True)
    assert scrape(closed)[0] == 403  # no hook, not public
    hooked = make_app(FLOWSTATE_METRICS=True, FLOWSTATE_METRICS_PATH="/ops/metrics")
    allowed = {"ok": False}
    hooked.extensions["flowstate"].access_check(lambda: allowed["ok"])
    client = hooked.test_client()
    assert client.get("/ops/metrics").status_code == 403
    allowed["ok"] = True
    assert client.get("/ops/metrics").status_code == 200
    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_off_by_default(make_app: Callable[..., Flask]) -> None:
    assert scrape(make_app(FLOWSTATE_PUBLIC=True))[0] == 404
