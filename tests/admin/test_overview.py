"""The overview: counts per type and state, errored, oldest errored, stale rows flagged."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, update

from flowstate_web.models import flows

from .conftest import ADMIN, HX, errored_branchy
from .flows import BranchyFlow, SimpleRetryFlow


def test_counts_per_type_and_state(admin: Flask, web: FlaskClient) -> None:
    BranchyFlow.create(ref="a")
    BranchyFlow.create(ref="b")
    oldest = errored_branchy("c")
    errored_branchy("d")
    SimpleRetryFlow.create(ref="s")

    html = web.get(ADMIN + "/").get_data(as_text=True)

    assert 'href="/flows/types/AdminBranchyFlow"' in html
    assert "new <b>2</b>" in html
    assert "broken <b>2</b>" in html
    assert 'href="/flows/types/AdminBranchyFlow?errored=1">2</a>' in html
    assert f'href="/flows/types/AdminBranchyFlow/{oldest.id}">#{oldest.id}</a>' in html
    assert 'href="/flows/types/AdminSimpleRetryFlow"' in html


def test_rows_of_undefined_type_and_undeclared_state_are_flagged(
    admin: Flask, web: FlaskClient
) -> None:
    flow = BranchyFlow.create(ref="x")
    db = admin.extensions["sqlalchemy"]
    now = datetime.now(UTC)
    db.session.execute(
        insert(flows).values(
            type="GoneFlow",
            state="somewhere",
            errored=True,
            seq=0,
            props={},
            created_at=now,
            updated_at=now,
            state_entered_at=now,
        )
    )
    db.session.execute(update(flows).where(flows.c.id == flow.id).values(state="renamed_state"))
    db.session.commit()

    response = web.get(ADMIN + "/")

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "GoneFlow" in html
    assert "type not defined" in html
    assert "renamed_state <b>1</b>" in html
    assert "1 undeclared state" in html
    # The type page lists the flow in its undeclared state, flagged, without crashing.
    page = web.get(ADMIN + "/types/AdminBranchyFlow?state=renamed_state").get_data(as_text=True)
    assert f"#{flow.id}" in page
    assert "undeclared state" in page


def test_htmx_refresh_returns_only_the_table(admin: Flask, web: FlaskClient) -> None:
    BranchyFlow.create(ref="a")

    full = web.get(ADMIN + "/")
    part = web.get(ADMIN + "/", headers=HX)

    assert "<html" in full.get_data(as_text=True)
    assert 'hx-trigger="every 5s"' in full.get_data(as_text=True)
    assert "<html" not in part.get_data(as_text=True)
    assert part.get_data(as_text=True).lstrip().startswith("<table")
    assert "HX-Request" in full.headers["Vary"]
    assert "HX-Request" in part.headers["Vary"]


def test_live_refresh_can_be_paused_or_disabled(make_admin: Callable[..., Flask]) -> None:
    app = make_admin()
    paused = app.test_client().get(ADMIN + "/?live=0").get_data(as_text=True)
    assert "hx-trigger" not in paused
    assert "paused" in paused
    off = make_admin(FLOWSTATE_POLL_SECONDS=0)
    html = off.test_client().get(ADMIN + "/").get_data(as_text=True)
    assert "hx-trigger" not in html
    assert "fs-live-on" not in html


def test_empty_database(admin: Flask, web: FlaskClient) -> None:
    response = web.get(ADMIN + "/")
    assert response.status_code == 200
    assert "AdminBranchyFlow" in response.get_data(as_text=True)  # defined types, zero rows
