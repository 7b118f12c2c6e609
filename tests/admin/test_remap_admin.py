"""The overview's orphaned states and the admin's remap (preview, POST in batches, CSRF)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, update

from flowstate_web.models import flows

from .conftest import ADMIN, HX, csrf_token
from .flows import BranchyFlow

REMAP = f"{ADMIN}/remap"


def orphans(admin: Flask, n: int) -> list[int]:
    db = admin.extensions["sqlalchemy"]
    ids = [BranchyFlow.create(ref=f"o{i}").id for i in range(n)]
    db.session.execute(update(flows).where(flows.c.id.in_(ids)).values(state="old<b>name"))
    moment = datetime.now(UTC)
    row = {"errored": False, "seq": 0, "props": {}, "created_at": moment, "updated_at": moment}
    db.session.execute(
        insert(flows).values(type="GoneFlow", state="x", state_entered_at=moment, **row)
    )
    db.session.commit()
    return ids


def test_overview_lists_orphans_with_a_remap_link(admin: Flask, web: FlaskClient) -> None:
    orphans(admin, 3)
    html = web.get(ADMIN + "/").get_data(as_text=True)
    assert "Orphaned states" in html
    assert '<span class="fs-state fs-state-undeclared">old&lt;b&gt;name</span>' in html
    assert f'href="{REMAP}?type=AdminBranchyFlow&amp;from=old%3Cb%3Ename"' in html
    assert "type not defined: define it" in html  # GoneFlow cannot be remapped here


def test_remap_preview_then_run(admin: Flask, web: FlaskClient) -> None:
    ids = orphans(admin, 3)
    html = web.get(f"{REMAP}?type=AdminBranchyFlow&from=old<b>name").get_data(as_text=True)
    assert '<b class="fs-remap-count">3</b> flows would be moved now.' in html
    assert '<option value="broken">broken (error)</option>' in html
    assert all(BranchyFlow.get(i).state == "old<b>name" for i in ids)  # GET writes nothing

    token = csrf_token(web)
    form = {"csrf_token": token, "type": "AdminBranchyFlow", "from": "old<b>name"}
    response = web.post(REMAP, data=form | {"to": "broken", "reason": "renamed"}, headers=HX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<b class="fs-remapped">3</b>' in html and "Done" in html
    flow = BranchyFlow.get(ids[0])
    assert (flow.state, flow.errored) == ("broken", True)
    assert flow.history()[-1].actor == "alice"
    page = web.get(f"{ADMIN}/types/AdminBranchyFlow/{ids[0]}").get_data(as_text=True)
    assert ">remapped</span>" in page
    overview = web.get(ADMIN + "/").get_data(as_text=True)
    assert "old&lt;b&gt;name" not in overview  # counters followed the move
    assert "Orphaned states" in overview  # GoneFlow is still listed


def test_remap_batches_continue_by_htmx(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(FLOWSTATE_BULK_BATCH_SIZE=2, FLOWSTATE_BULK_REQUEST_SECONDS=0)
    web = app.test_client()
    with app.app_context():
        orphans(app, 5)
    token = csrf_token(web)
    form = {"csrf_token": token, "type": "AdminBranchyFlow", "from": "old<b>name", "to": "new"}
    html = web.post(REMAP, data=form, headers=HX).get_data(as_text=True)
    assert '<b class="fs-remapped">2</b>' in html
    assert 'hx-trigger="load"' in html and 'name="moved" value="2"' in html
    html = web.post(REMAP, data=form | {"moved": "2"}, headers=HX).get_data(as_text=True)
    html = web.post(REMAP, data=form | {"moved": "4"}, headers=HX).get_data(as_text=True)
    assert '<b class="fs-remapped">5</b>' in html and "Done" in html


def test_remap_refusals(admin: Flask, web: FlaskClient, make_admin: Callable[..., Flask]) -> None:
    orphans(admin, 1)
    token = csrf_token(web)
    base = {"type": "AdminBranchyFlow", "from": "old<b>name", "to": "new"}
    assert web.post(REMAP, data=base).status_code == 400  # no CSRF token
    assert web.get(f"{REMAP}?type=AdminBranchyFlow").status_code == 400
    assert web.get(f"{REMAP}?type=GoneFlow&from=x").status_code == 404
    assert web.get(f"{REMAP}?type=AdminBranchyFlow&from=new").status_code == 400  # declared
    bad = base | {"csrf_token": token, "to": "nowhere"}
    response = web.post(REMAP, data=bad)
    assert response.status_code == 400
    assert "target state &#39;nowhere&#39; is not declared" in response.get_data(as_text=True)
    assert web.post(REMAP, data=base | {"csrf_token": token, "moved": "x"}).status_code == 400
    assert web.get(f"{REMAP}?type=AdminBranchyFlow&from=a%00b").status_code == 400
    assert BranchyFlow.get(1).state == "old<b>name"


def test_remap_is_refused_in_read_only_mode(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(FLOWSTATE_READ_ONLY=True)
    web = app.test_client()
    with app.app_context():
        orphans(app, 1)
    assert web.get(f"{REMAP}?type=AdminBranchyFlow&from=x").status_code == 403
    html = web.get(ADMIN + "/").get_data(as_text=True)
    assert "Orphaned states" in html and "Remap…" not in html
