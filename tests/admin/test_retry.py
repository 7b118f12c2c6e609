"""Retry one flow: htmx partials, 409 in place, no-JS redirects, CSRF, read-only, actors."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from .conftest import ADMIN, HX, csrf_token, errored_branchy
from .flows import BranchyFlow


def retry_url(flow_id: int) -> str:
    return f"{ADMIN}/types/AdminBranchyFlow/{flow_id}/retry"


def post_retry(
    web: FlaskClient,
    flow_id: int,
    transition: str = "retry_work",
    *,
    htmx: bool = True,
    token: str | None = None,
    **fields: str,
) -> TestResponse:
    data = {"transition": transition, "csrf_token": token or csrf_token(web), **fields}
    return web.post(retry_url(flow_id), data=data, headers=HX if htmx else {})


def test_htmx_retry_returns_the_panel_in_its_new_state(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("r")

    response = post_retry(web, flow.id, reason="fixed upstream")

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith(f'<section id="flow-{flow.id}"')
    assert 'hx-target="this"' in html and 'hx-swap="outerHTML"' in html
    assert "Retried with retry_work: broken → working." in html
    assert "HX-Request" in response.headers["Vary"]
    entry = BranchyFlow.get(flow.id).history()[-1]
    assert (entry.name, entry.actor, entry.reason) == ("retry_work", "alice", "fixed upstream")
    assert entry.meta == {"admin": "retry"}
    assert BranchyFlow.get(flow.id).state == "working"


def test_htmx_retry_from_a_row_returns_the_row(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("row")
    response = post_retry(web, flow.id, widget="row")
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith(f'<tr id="flow-{flow.id}"')
    assert "working" in html


def test_second_retry_gets_409_in_place_and_one_history_row(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("twice")
    token = csrf_token(web)
    first = post_retry(web, flow.id, token=token)
    second = post_retry(web, flow.id, token=token)

    assert first.status_code == 200
    assert second.status_code == 409
    html = second.get_data(as_text=True)
    assert html.lstrip().startswith(f'<section id="flow-{flow.id}"')
    assert "cannot run &#39;retry_work&#39; from state &#39;working&#39;" in html
    assert [h.name for h in BranchyFlow.get(flow.id).history()].count("retry_work") == 1


def test_guard_failure_is_409_and_changes_nothing(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("no-restart")
    response = post_retry(web, flow.id, "restart")
    assert response.status_code == 409
    assert "guard of &#39;restart&#39; refused" in response.get_data(as_text=True)
    again = BranchyFlow.get(flow.id)
    assert again.state == "broken" and again.seq == flow.seq


def test_failing_retry_code_is_shown_in_place_and_rolled_back(
    admin: Flask, web: FlaskClient
) -> None:
    flow = errored_branchy("boom")
    response = post_retry(web, flow.id, "explode")
    assert response.status_code == 500
    assert "RuntimeError: explode failed for boom" in response.get_data(as_text=True)
    assert BranchyFlow.get(flow.id).seq == flow.seq


def test_non_htmx_post_redirects_back_with_a_flash(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("nojs")
    back = f"{ADMIN}/types/AdminBranchyFlow?errored=1"
    response = post_retry(web, flow.id, htmx=False, back=back)
    assert response.status_code == 303
    assert response.headers["Location"] == back
    page = web.get(back).get_data(as_text=True)
    assert "Retried with retry_work" in page

    again = post_retry(web, flow.id, htmx=False)
    assert again.status_code == 303
    assert again.headers["Location"] == f"{ADMIN}/types/AdminBranchyFlow/{flow.id}"
    assert "Not retried" in web.get(again.headers["Location"]).get_data(as_text=True)


@pytest.mark.parametrize("back", ["https://evil.example/", "//evil.example/x", "/elsewhere"])
def test_back_cannot_redirect_outside_the_admin(admin: Flask, web: FlaskClient, back: str) -> None:
    flow = errored_branchy("redir")
    response = post_retry(web, flow.id, htmx=False, back=back)
    assert response.headers["Location"] == f"{ADMIN}/types/AdminBranchyFlow/{flow.id}"


def test_get_is_405(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("get")
    assert web.get(retry_url(flow.id)).status_code == 405
    assert BranchyFlow.get(flow.id).state == "broken"


@pytest.mark.parametrize("token", [None, "", "not-a-token"])
def test_missing_or_wrong_csrf_is_400(admin: Flask, web: FlaskClient, token: str | None) -> None:
    flow = errored_branchy("csrf")
    csrf_token(web)  # a session exists, so only the token is wrong
    data = {"transition": "retry_work"} | ({} if token is None else {"csrf_token": token})
    response = web.post(retry_url(flow.id), data=data)
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert "CSRF" in text
    assert ".. Reload" not in text and ". Reload the page" in text  # one full stop
    assert BranchyFlow.get(flow.id).state == "broken"


def test_csrf_token_in_the_htmx_header_is_accepted(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("header")
    token = csrf_token(web)
    response = web.post(
        retry_url(flow.id), data={"transition": "retry_work"}, headers=HX | {"X-CSRFToken": token}
    )
    assert response.status_code == 200


def test_htmx_errors_are_retargeted_to_the_alert_area(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("retarget")
    response = web.post(retry_url(flow.id), data={"transition": "retry_work"}, headers=HX)
    assert response.status_code == 400
    assert response.headers["HX-Retarget"] == "#fs-alerts"
    assert 'class="fs-alert fs-alert-error"' in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"transition": "finish"}, "is not a retry transition"),
        ({"transition": ""}, "is not a retry transition"),
        ({"widget": "sidebar"}, "widget"),
        ({"reason": "x" * 2001}, "reason"),
    ],
)
def test_bad_retry_input_is_400(
    admin: Flask, web: FlaskClient, fields: dict[str, str], message: str
) -> None:
    flow = errored_branchy("bad")
    data = {"transition": "retry_work", "csrf_token": csrf_token(web)} | fields
    response = web.post(retry_url(flow.id), data=data)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_unknown_flow_or_type_is_404(admin: Flask, web: FlaskClient) -> None:
    token = csrf_token(web)
    assert post_retry(web, 999999, token=token).status_code == 404
    response = web.post(
        f"{ADMIN}/types/Nope/1/retry", data={"transition": "x", "csrf_token": token}
    )
    assert response.status_code == 404


def test_read_only_refuses_and_hides_buttons(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(FLOWSTATE_READ_ONLY=True)
    with app.app_context():
        flow = errored_branchy("ro")
        web = app.test_client()
        for page in (
            f"{ADMIN}/types/AdminBranchyFlow",
            f"{ADMIN}/types/AdminBranchyFlow/{flow.id}",
        ):
            html = web.get(page).get_data(as_text=True)
            assert '<button type="submit" name="transition"' not in html
            assert "Retry all errored" not in html
            assert "read-only" in html
        assert post_retry(web, flow.id).status_code == 403
        assert BranchyFlow.get(flow.id).state == "broken"


def test_public_admin_records_the_public_actor(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(access=None, actor=None, FLOWSTATE_PUBLIC=True)
    with app.app_context():
        flow = errored_branchy("pub")
        assert post_retry(app.test_client(), flow.id).status_code == 200
        assert BranchyFlow.get(flow.id).history()[-1].actor == "public"


def test_no_actor_hook_refuses_writes_and_hides_buttons(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(actor=None)
    with app.app_context():
        flow = errored_branchy("anon")
        web = app.test_client()
        html = web.get(f"{ADMIN}/types/AdminBranchyFlow/{flow.id}").get_data(as_text=True)
        assert "Retry: retry_work" not in html
        response = post_retry(web, flow.id)
        assert response.status_code == 403
        assert "actor_loader" in response.get_data(as_text=True)
        assert BranchyFlow.get(flow.id).state == "broken"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_operators_at_once_exactly_one_retry(make_admin: Callable[..., Flask]) -> None:
    app = make_admin()
    with app.app_context():
        flow = errored_branchy("race")
    clients = [app.test_client(), app.test_client()]
    tokens = [csrf_token(c) for c in clients]
    barrier = threading.Barrier(2)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def operator(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            response = post_retry(clients[i], flow.id, token=tokens[i])
            statuses.append(response.status_code)
        except BaseException as exc:  # surfaced below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=operator, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sorted(statuses) == [200, 409]
    with app.app_context():
        history = BranchyFlow.get(flow.id).history()
        assert [h.name for h in history].count("retry_work") == 1


def test_demo_flow_retry_hands_off_and_a_queue_that_is_down_leaves_it_for_the_relay(
    admin: Flask, web: FlaskClient
) -> None:
    from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow
    from flowstate_web.outbox import pending_handoffs

    def failed() -> SyncThirdPartyApiFlow:
        flow = SyncThirdPartyApiFlow.create(my_record_id="m", third_party_id="t")
        flow.run("pick")
        flow.run("start_third_party_api_request")
        try:
            raise TimeoutError("API timed out")
        except TimeoutError:
            flow.run("fail_third_party_api_request")
        return flow

    base = f"{ADMIN}/types/SyncThirdPartyApiFlow"
    ok = failed()
    token = csrf_token(web)
    data = {"transition": "retry_fetch", "csrf_token": token}
    assert web.post(f"{base}/{ok.id}/retry", data=data, headers=HX).status_code == 200
    latest = pending_handoffs(ok.id)[0]
    assert (latest.job, latest.kind) == ("fetch_third_party", "transition")

    class Down:
        def bind(self, app: Flask) -> None:
            pass

        def send(self, handoff: object) -> None:
            raise ConnectionError("queue down")

    broken_queue = failed()
    admin.extensions["flowstate"].queue = Down()
    response = web.post(f"{base}/{broken_queue.id}/retry", data=data, headers=HX)
    assert response.status_code == 200  # the retry committed; its hand-off waits
    assert SyncThirdPartyApiFlow.get(broken_queue.id).state == "picked"
    waiting = pending_handoffs(broken_queue.id)[0]
    assert waiting.sent_at is None and waiting.last_error == "ConnectionError: queue down"
    page = web.get(f"{base}/{broken_queue.id}").get_data(as_text=True)
    assert "ConnectionError: queue down" in page and "fetch_third_party" in page
