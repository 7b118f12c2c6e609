"""Access, headers, CSP-friendliness, escaping, CSRF scope, vendored htmx, resources."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flowstate_web import FlowState
from flowstate_web._resources import resource_dir
from flowstate_web.admin.settings import Settings

from .conftest import ADMIN, errored_branchy
from .flows import HOSTILE, BranchyFlow, HostileFlow

PAGES = ("/", "/types/AdminBranchyFlow", "/types/AdminBranchyFlow/diagram")


@pytest.mark.parametrize("path", PAGES)
def test_no_access_check_and_not_public_is_403(make_admin: Callable[..., Flask], path: str) -> None:
    app = make_admin(access=None)
    response = app.test_client().get(ADMIN + path)
    assert response.status_code == 403


def test_access_check_false_is_403_and_custom_handler_is_used(
    make_admin: Callable[..., Flask],
) -> None:
    app = make_admin(access=False)
    assert app.test_client().get(ADMIN + "/").status_code == 403
    app.extensions["flowstate"].on_denied = lambda: ("go away", 401)
    response = app.test_client().get(ADMIN + "/")
    assert (response.status_code, response.data) == (401, b"go away")


def test_public_admin_needs_no_check(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(access=None, FLOWSTATE_PUBLIC=True)
    html = app.test_client().get(ADMIN + "/").get_data(as_text=True)
    assert "public" in html


def test_static_files_are_served_even_when_denied(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(access=False)
    with app.test_request_context():
        from flask import url_for

        path = url_for("flowstate.static", filename="flowstate/htmx.min.js")
    assert path == ADMIN + "/static/flowstate/htmx.min.js"
    response = app.test_client().get(path)
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" not in response.headers.get("Cache-Control", "")
    response.close()


def test_url_prefix_and_disabled_admin(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(FLOWSTATE_URL_PREFIX="/admin/flows")
    assert app.test_client().get("/admin/flows/").status_code == 200
    assert app.test_client().get(ADMIN + "/").status_code == 404
    off = make_admin(FLOWSTATE_ADMIN=False)
    assert "flowstate" not in off.blueprints


@pytest.mark.parametrize("path", [*PAGES, "/types/Nope", "/types/AdminBranchyFlow/1/retry"])
def test_security_headers(admin: Flask, web: FlaskClient, path: str) -> None:
    response = web.get(ADMIN + path)  # includes a 404 and a 405
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_no_inline_script_or_style(admin: Flask, web: FlaskClient) -> None:
    flow = errored_branchy("csp")
    for path in (
        *PAGES,
        f"/types/AdminBranchyFlow/{flow.id}",
        "/types/AdminBranchyFlow/bulk-retry",
    ):
        html = web.get(ADMIN + path).get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"<[^>]*\sstyle=", html), path
        assert not re.search(r"<[^>]*\son[a-z]+=", html), path
        assert "<style" not in html, path


def test_host_routes_are_not_csrf_protected(make_admin: Callable[..., Flask]) -> None:
    app = make_admin()

    @app.post("/host-form")
    def host_form() -> str:
        return "ok"

    response = app.test_client().post("/host-form", data={"x": "1"})
    assert (response.status_code, response.data) == (200, b"ok")
    assert "Content-Security-Policy" not in response.headers


def test_hostile_content_is_escaped(admin: Flask, web: FlaskClient) -> None:
    hostile = HostileFlow.create(note=HOSTILE)
    hostile.run("blow_up", {"html": HOSTILE, HOSTILE: 1})
    flow = BranchyFlow.create(ref=HOSTILE, extra={"k": HOSTILE})
    flow.start({"payload": HOSTILE})
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        flow.fail()
    hostile_type = HostileFlow.type_name
    artefact = hostile.latest_artefact("payload")
    assert artefact is not None
    with admin.test_request_context():
        from flask import url_for

        paths = [
            url_for("flowstate.overview"),
            url_for("flowstate.flow_type", type_name=hostile_type),
            url_for("flowstate.flow_detail", type_name=hostile_type, flow_id=hostile.id),
            url_for(
                "flowstate.artefact",
                type_name=hostile_type,
                flow_id=hostile.id,
                artefact_id=artefact.id,
            ),
            url_for("flowstate.flow_type", type_name="AdminBranchyFlow"),
            url_for("flowstate.flow_detail", type_name="AdminBranchyFlow", flow_id=flow.id),
            url_for("flowstate.bulk_retry_confirm", type_name=hostile_type),
        ]
    for path in paths:
        response = web.get(path)
        html = response.get_data(as_text=True)
        assert response.status_code == 200, path
        assert "<script>alert(1)" not in html, path
        assert "<img src=x" not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "&lt;img" in html, path


def test_htmx_is_vendored_as_recorded() -> None:
    static = resource_dir("static") / "flowstate"
    digest = hashlib.sha256((static / "htmx.min.js").read_bytes()).hexdigest()
    assert digest in (static / "VENDORED.md").read_text()


def test_resource_dirs() -> None:
    for name in ("templates", "static", "migrations"):
        assert resource_dir(name).is_dir()
    assert (resource_dir("templates") / "flowstate" / "base.html").is_file()
    with pytest.raises(ValueError, match="unknown resource"):
        resource_dir("secrets")


def test_resource_dir_prefers_the_installed_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowstate_web import _resources

    (tmp_path / "_data" / "static").mkdir(parents=True)
    monkeypatch.setattr(_resources, "_PACKAGE", tmp_path)
    assert resource_dir("static") == tmp_path / "_data" / "static"
    with pytest.raises(FileNotFoundError):
        resource_dir("templates")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("FLOWSTATE_PAGE_SIZE", 0),
        ("FLOWSTATE_PAGE_SIZE", "50"),
        ("FLOWSTATE_POLL_SECONDS", -1),
        ("FLOWSTATE_BULK_BATCH_SIZE", True),
        ("FLOWSTATE_DOT_TIMEOUT", "fast"),
        ("FLOWSTATE_URL_PREFIX", "flows"),
        ("FLOWSTATE_LOGOUT_ENDPOINT", 5),
    ],
)
def test_bad_settings_are_refused(make_app: Callable[..., Flask], key: str, value: object) -> None:
    from flowstate_web.admin.settings import DEFAULTS

    with pytest.raises(ValueError, match=key):
        Settings.from_config(DEFAULTS | {key: value})


def test_defaults_are_set_once_in_init_app(make_app: Callable[..., Flask]) -> None:
    app = make_app(FLOWSTATE_ADMIN=True)
    assert app.config["FLOWSTATE_URL_PREFIX"] == "/flows"
    assert app.config["FLOWSTATE_PAGE_SIZE"] == 50
    assert app.config["FLOWSTATE_PUBLIC"] is False
    with pytest.raises(RuntimeError, match="already registered"):
        FlowState(app, db=app.extensions["sqlalchemy"])


def test_hooks_by_decorator_and_constructor() -> None:
    ext = FlowState(access=lambda: True)
    assert ext.access is not None and ext.access()

    @ext.actor_loader
    def who() -> str:
        return "carol"

    assert ext.actor is who


def test_header_names_the_actor_without_a_logout_button_by_default(
    make_admin: Callable[..., Flask],
) -> None:
    app = make_admin(actor="carol@example.com")
    header = app.test_client().get(ADMIN + "/").get_data(as_text=True).split("</header>")[0]
    assert ">carol@example.com</span>" in header
    assert "Log out" not in header


def test_header_escapes_the_actor_name(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(actor=HOSTILE)
    header = app.test_client().get(ADMIN + "/").get_data(as_text=True).split("</header>")[0]
    assert "<script>" not in header
    assert "&lt;script&gt;" in header


def test_host_logout_endpoint_gets_a_log_out_button(make_admin: Callable[..., Flask]) -> None:
    app = make_admin(FLOWSTATE_LOGOUT_ENDPOINT="host_logout")
    logged_out: list[bool] = []

    @app.post("/bye")
    def host_logout() -> str:
        logged_out.append(True)
        return "bye"

    client = app.test_client()
    header = client.get(ADMIN + "/").get_data(as_text=True).split("</header>")[0]
    form = re.search(
        r'<form class="fs-logout" method="post" action="/bye">(.*?)</form>', header, re.S
    )
    assert form, header
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.group(1))
    assert token
    assert client.post("/bye", data={"csrf_token": token.group(1)}).data == b"bye"
    assert logged_out == [True]
