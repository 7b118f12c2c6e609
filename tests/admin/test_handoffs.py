"""The admin's hand-offs: the flow page's outbox widget, overdue counts, and Re-dispatch."""

from __future__ import annotations

from collections.abc import Callable
from html import unescape
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from huey import SqliteHuey
from sqlalchemy import func, select

from flowstate_web.models import outbox
from flowstate_web.outbox import pending_handoffs
from flowstate_web.queues.huey import HueyQueue
from tests.outbox_app import JOBS, Shipment

from .conftest import ADMIN, HX, csrf_token

BASE = f"{ADMIN}/types/tests.Shipment"


def with_queue(app: Flask, tmp_path: Path) -> SqliteHuey:
    huey = SqliteHuey("admin-handoffs", filename=str(tmp_path / "q.db"), results=False)
    app.extensions["flowstate"].use_queue(HueyQueue(huey, JOBS, relay=False), app)
    return huey


def count(admin: Flask) -> int:
    db = admin.extensions["sqlalchemy"]
    return int(db.session.execute(select(func.count()).select_from(outbox)).scalar_one())


def test_flow_page_shows_handoffs_and_redispatch_resends(
    admin: Flask, web: FlaskClient, tmp_path: Path
) -> None:
    huey = with_queue(admin, tmp_path)
    flow = Shipment.create()
    flow.queue_with("<fragile>")
    page = web.get(f"{BASE}/{flow.id}").get_data(as_text=True)
    assert 'id="handoffs-' in page and "Job hand-offs" in page
    assert "<code>ship</code>" in page and "fs-badge-sent" in page
    assert "Re-dispatch</button>" in page
    assert "&lt;fragile&gt;" in page and "<fragile>" not in page  # args escaped in the title

    token = csrf_token(web)
    data = {"csrf_token": token, "reason": "worker <b>died</b>"}
    response = web.post(f"{BASE}/{flow.id}/redispatch", data=data, headers=HX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    assert response.mimetype == "text/html"  # an htmx partial, as every other action's
    assert html.lstrip().startswith('<section id="handoffs-')
    assert "Re-dispatched ship for tests.Shipment" in html
    assert "worker &lt;b&gt;died&lt;/b&gt;" in html and "by <b>alice</b>" in html
    latest = pending_handoffs(flow.id)[0]
    assert (latest.kind, latest.actor, latest.reason) == (
        "redispatch",
        "alice",
        "worker <b>died</b>",
    )
    assert latest.args == {"note": "<fragile>"} and latest.sent_at is not None
    assert huey.pending_count() == 2
    assert Shipment.get(flow.id).seq == 1  # no state change, no history row


def test_redispatch_needs_csrf_and_post_and_is_refused_when_nothing_waits(
    admin: Flask, web: FlaskClient, tmp_path: Path
) -> None:
    with_queue(admin, tmp_path)
    flow = Shipment.create()
    flow.hand_off()
    assert web.post(f"{BASE}/{flow.id}/redispatch", data={}).status_code == 400
    assert web.get(f"{BASE}/{flow.id}/redispatch").status_code == 405
    assert count(admin) == 1
    flow.start()
    page = web.get(f"{BASE}/{flow.id}").get_data(as_text=True)
    assert "Re-dispatch</button>" not in page
    token = csrf_token(web)
    response = web.post(f"{BASE}/{flow.id}/redispatch", data={"csrf_token": token}, headers=HX)
    assert response.status_code == 409 and response.mimetype == "text/html"
    html = unescape(response.get_data(as_text=True))
    assert f"tests.Shipment #{flow.id}" in html and "'working' was entered by 'start'" in html
    assert count(admin) == 1
    assert web.post(f"{BASE}/999999/redispatch", data={"csrf_token": token}).status_code == 404


def test_read_only_admin_offers_and_accepts_no_redispatch(
    make_admin: Callable[..., Flask], tmp_path: Path
) -> None:
    app = make_admin(FLOWSTATE_READ_ONLY=True)
    with app.app_context():
        with_queue(app, tmp_path)
        flow = Shipment.create()
        flow.hand_off()
        web = app.test_client()
        page = web.get(f"{BASE}/{flow.id}").get_data(as_text=True)
        assert "Job hand-offs" in page and "Re-dispatch</button>" not in page
        token = csrf_token(web)
        assert (
            web.post(f"{BASE}/{flow.id}/redispatch", data={"csrf_token": token}).status_code == 403
        )
        assert count(app) == 1


def test_overdue_unsent_handoffs_are_counted_per_type(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(FLOWSTATE_OUTBOX_RELAY_DELAY=0)  # no queue: every hand-off stays unsent
    with app.app_context():
        for _ in range(3):
            Shipment.create().hand_off()
        web = app.test_client()
        overview = web.get(f"{ADMIN}/").get_data(as_text=True)
        assert "Job hand-offs unsent past the relay delay" in overview
        assert "tests.Shipment</a> <b>3</b>" in overview
        type_page = web.get(BASE).get_data(as_text=True)
        assert "tests.Shipment</a> <b>3</b>" in type_page
        flow_page = web.get(f"{BASE}/1").get_data(as_text=True)
        assert "overdue; the relay re-sends it" in flow_page


def test_no_alert_when_everything_was_sent(admin: Flask, web: FlaskClient, tmp_path: Path) -> None:
    with_queue(admin, tmp_path)
    Shipment.create().hand_off()
    assert "unsent past the relay delay" not in web.get(f"{ADMIN}/").get_data(as_text=True)


def test_a_hostile_reason_is_refused_with_a_message_not_a_5xx(
    admin: Flask, web: FlaskClient, tmp_path: Path
) -> None:
    with_queue(admin, tmp_path)
    flow = Shipment.create()
    flow.hand_off()
    token = csrf_token(web)
    for reason in ("nul\x00byte", "%ED%A0%80 is a surrogate once decoded"):
        response = web.post(
            f"{BASE}/{flow.id}/redispatch", data={"csrf_token": token, "reason": reason}, headers=HX
        )
        if "\x00" in reason:
            assert response.status_code == 400  # the admin's one reason check, as for Retry
            assert "NUL" in response.get_data(as_text=True)
        else:
            assert response.status_code == 200  # a plain string: nothing to refuse
    assert count(admin) == 2


def test_redispatch_honours_require_reason(
    make_admin: Callable[..., Flask], tmp_path: Path
) -> None:
    strict = make_admin(FLOWSTATE_REQUIRE_REASON=True)
    web = strict.test_client()
    with strict.app_context():
        with_queue(strict, tmp_path)
        flow = Shipment.create()
        flow.hand_off()
        before = count(strict)
        url = f"{BASE}/{flow.id}/redispatch"
        response = web.post(url, data={"csrf_token": csrf_token(web), "reason": " "}, headers=HX)
        assert response.status_code == 400
        assert "FLOWSTATE_REQUIRE_REASON" in response.get_data(as_text=True)
        assert count(strict) == before
        response = web.post(url, data={"csrf_token": csrf_token(web), "reason": "lost"}, headers=HX)
        assert response.status_code == 200
        assert count(strict) == before + 1
