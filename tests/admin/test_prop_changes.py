"""The flow page shows what changed (transitions and prop updates) and why a retry is blocked."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from .conftest import ADMIN, HX, csrf_token, errored_branchy
from .flows import HOSTILE, BranchyFlow


def page(web: FlaskClient, flow_id: int) -> str:
    response = web.get(f"{ADMIN}/types/AdminBranchyFlow/{flow_id}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_timeline_shows_prop_changes_and_updates_are_not_state_changes(
    admin: Flask, web: FlaskClient
) -> None:
    flow = BranchyFlow.create(ref="a")
    flow.count = 1
    flow.start()
    flow.update(ref="b", extra={"html": HOSTILE})
    flow.save(actor="ops", reason="typo")
    html = page(web, flow.id)
    step1 = html.split('id="step-1"', 1)[1].split("\n    </li>", 1)[0]
    assert "<code>count</code>" in step1 and ">0</span>" in step1 and ">1</span>" in step1
    step2 = html.split('id="step-2"', 1)[1].split("\n    </li>", 1)[0]
    assert "props updated" in step2 and "fs-step-update" in html
    assert 'fs-arrow">→</span>\n        <span class="fs-state' not in step2  # no from → to
    assert "<code>ref</code>" in step2 and "&#34;a&#34;" in step2 and "&#34;b&#34;" in step2
    assert "by <b>ops</b>" in step2 and "“typo”" in step2
    assert HOSTILE not in html  # escaped
    # The current step is the last transition, not the update after it.
    current = re.findall(r'fs-step[^"]*fs-step-current[^"]*" id="step-(\d+)"', html)
    assert current == ["1"]


def test_a_blocked_retry_shows_why_and_can_be_tried_anyway(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("no-restart")
    html = page(web, flow.id)
    blocked = html.split('class="fs-blocked"', 1)[1].split("</span>\n    </span>", 1)[0]
    assert "Retry: restart</button>" in blocked and "disabled" in blocked
    assert "guard allow_restart returned False" in blocked
    assert 'name="transition" value="restart"' in blocked and "try anyway" in blocked
    # the other retries are plain buttons
    assert 'value="retry_work" class="fs-btn fs-btn-retry"' in html
    # "try anyway" posts the retry (with the CSRF token of the form); the lock decides
    response = web.post(
        f"{ADMIN}/types/AdminBranchyFlow/{flow.id}/retry",
        data={"transition": "restart", "csrf_token": csrf_token(web)},
        headers=HX,
    )
    assert response.status_code == 409
    assert "guard of &#39;restart&#39; refused" in response.get_data(as_text=True)
    ok = errored_branchy("fine")
    assert "fs-blocked" not in page(web, ok.id)


def test_a_stored_hostile_type_name_is_rendered_escaped(admin: Flask, web: FlaskClient) -> None:
    """Type names are validated at definition; rows written before (or by SQL) still render."""
    from sqlalchemy import update

    from flowstate_web.models import flows

    from .flows import HostileFlow

    flow = HostileFlow.create(note="n")
    db = admin.extensions["sqlalchemy"]
    db.session.execute(update(flows).where(flows.c.id == flow.id).values(type=HOSTILE))
    db.session.commit()
    response = web.get(f"{ADMIN}/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert HOSTILE not in html and "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # listed, escaped
