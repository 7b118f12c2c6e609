"""Every error the admin answers is an HTML page (or an htmx fragment), never text/plain."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .conftest import ADMIN
from .flows import BranchyFlow

HTML = "text/html; charset=utf-8"
TYPE = f"{ADMIN}/types/{BranchyFlow.type_name}"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"{TYPE}?created_from=yesterday", 400),
        (f"{TYPE}?before=abc", 400),
        (f"{ADMIN}/types/NoSuchFlow", 404),
        (f"{TYPE}/999999", 404),
        (f"{TYPE}/diagram.gif", 404),
    ],
)
@pytest.mark.parametrize("htmx", [False, True])
def test_errors_are_html(
    admin: Flask, web: FlaskClient, path: str, status: int, htmx: bool
) -> None:
    headers = {"HX-Request": "true"} if htmx else {}
    response = web.get(path, headers=headers)
    assert response.status_code == status
    assert response.headers["Content-Type"] == HTML
    body = response.get_data(as_text=True)
    if htmx:
        assert body.lstrip().startswith('<div class="fs-alert')
    else:
        assert body.lstrip().lower().startswith("<!doctype html>")


def test_denied_is_an_html_page(make_admin: object) -> None:
    app = make_admin(access=False)  # type: ignore[operator]
    with app.app_context():
        response = app.test_client().get(f"{ADMIN}/")
    assert response.status_code == 403
    assert response.headers["Content-Type"] == HTML


def test_read_only_refusal_is_an_html_page(make_admin: object) -> None:
    app = make_admin(FLOWSTATE_READ_ONLY=True)  # type: ignore[operator]
    with app.app_context():
        response = app.test_client().get(f"{TYPE}/bulk-retry")
    assert response.status_code == 403
    assert response.headers["Content-Type"] == HTML
