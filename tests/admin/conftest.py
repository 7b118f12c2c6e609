"""Admin fixtures: an app with the admin mounted, seeded flows, CSRF tokens, SQL counting."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from .flows import BranchyFlow, SimpleRetryFlow

ADMIN = "/flows"
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture
def make_admin(make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    """Return a factory of apps with the admin mounted, an access check and an actor."""

    def factory(*, access: bool | None = True, actor: str | None = "alice", **config: Any) -> Flask:
        app = make_app(**({"FLOWSTATE_ADMIN": True} | config))
        ext = app.extensions["flowstate"]
        if access is not None:
            ext.access_check(lambda: access)
        if actor is not None:
            ext.actor_loader(lambda: actor)
        return app

    return factory


@pytest.fixture
def admin(make_admin: Callable[..., Flask]) -> Iterator[Flask]:
    """Return an admin app (access granted, actor "alice") with an app context pushed."""
    app = make_admin()
    with app.app_context():
        yield app


@pytest.fixture
def web(admin: Flask) -> FlaskClient:
    """Return a test client of the admin app."""
    return admin.test_client()


def csrf_token(client: FlaskClient, path: str = ADMIN + "/") -> str:
    """Return the CSRF token the admin puts in its pages (and the client's session)."""
    html = client.get(path).get_data(as_text=True)
    found = _META.search(html)
    assert found, html[:500]
    return found.group(1)


HX = {"HX-Request": "true"}


def errored_branchy(ref: str = "r1", **props: Any) -> BranchyFlow:
    """Return a BranchyFlow in its ``broken`` error state, with an error recorded."""
    flow = BranchyFlow.create(ref=ref, **props)
    flow.start()
    try:
        raise ValueError(f"upstream said no for {ref}")
    except ValueError:
        flow.fail()
    return flow


def errored_simple(ref: str = "s") -> SimpleRetryFlow:
    """Return a SimpleRetryFlow in ``failed``."""
    flow = SimpleRetryFlow.create(ref=ref)
    try:
        raise RuntimeError("nope")
    except RuntimeError:
        flow.fail()
    return flow


@contextmanager
def count_queries(app: Flask) -> Iterator[list[str]]:
    """Collect every SQL statement run on the app's engine inside the block."""
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
