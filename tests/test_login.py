"""The standalone app's login: throttling, server-side logins, logout, the admin's header."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flowstate_web.app import StartupError, create_app, db
from flowstate_web.login import password_matches

REDIS_URL = os.environ.get("FLOWSTATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FLOWSTATE_") or key in {"DATABASE_URL", "SECRET_KEY"}:
            monkeypatch.delenv(key)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Return ``make(**config)``: a standalone app with a login, in a tmp instance folder."""
    made: list[Flask] = []

    def factory(**config: Any) -> Flask:
        base: dict[str, Any] = {
            "TESTING": True,
            "FLOWSTATE_INSTANCE_PATH": str(tmp_path / "instance"),
            "FLOWSTATE_ADMIN_PASSWORD": "s3cret",
            "FLOWSTATE_FLOW_MODULES": "tests.host_app.flows",
        }
        app = create_app({**base, **config})
        made.append(app)
        return app

    yield factory
    for app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def csrf(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def log_in(client: FlaskClient, password: str = "s3cret", **extra: str) -> Any:
    return client.post("/login", data={"csrf_token": csrf(client), "password": password, **extra})


def from_address(client: FlaskClient, address: str) -> FlaskClient:
    client.environ_base["REMOTE_ADDR"] = address
    return client


# -- password ----------------------------------------------------------------------------------


def test_password_comparison() -> None:
    assert password_matches("s3cret", "s3cret")
    assert password_matches("pässwörd ✓", "pässwörd ✓")
    assert not password_matches("s3cre", "s3cret")
    assert not password_matches("s3cret" * 100, "s3cret")
    assert not password_matches("", "")  # no password configured never matches


# -- throttling --------------------------------------------------------------------------------


def test_failed_logins_are_throttled_per_address_then_allowed_again(
    make: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make(FLOWSTATE_LOGIN_LIMIT="3 per 2 seconds", FLOWSTATE_LOGIN_GLOBAL_LIMIT="100/minute")
    attacker = from_address(app.test_client(), "203.0.113.7")
    with caplog.at_level(logging.WARNING, logger="flowstate_web.login"):
        for _ in range(3):
            assert log_in(attacker, "guess").status_code == 401
        blocked = log_in(attacker, "s3cret")  # even the right password: throttled
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 3
    assert "Too many failed logins" in blocked.text
    assert blocked.headers["X-Content-Type-Options"] == "nosniff"
    failures = [r for r in caplog.records if "failed login from 203.0.113.7" in r.getMessage()]
    assert len(failures) == 3
    assert any("throttled for 203.0.113.7" in r.getMessage() for r in caplog.records)
    # Another address is not affected, and the GET page never is.
    other = from_address(app.test_client(), "198.51.100.1")
    assert log_in(other).status_code == 303
    assert attacker.get("/login").status_code == 200
    # After the window the right password works again.
    deadline = time.monotonic() + 10
    while (status := log_in(attacker).status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for the window to pass, not synchronisation
    assert status == 303


def test_failed_logins_are_throttled_for_everyone_together(make: Callable[..., Flask]) -> None:
    app = make(FLOWSTATE_LOGIN_LIMIT="100 per minute", FLOWSTATE_LOGIN_GLOBAL_LIMIT="4 per minute")
    for n in range(4):
        client = from_address(app.test_client(), f"203.0.113.{n + 1}")
        assert log_in(client, "guess").status_code == 401
    fresh = from_address(app.test_client(), "198.51.100.99")
    r = log_in(fresh, "guess")
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1


def test_successful_logins_are_not_counted(make: Callable[..., Flask]) -> None:
    app = make(FLOWSTATE_LOGIN_LIMIT="2 per minute")
    client = app.test_client()
    for _ in range(4):
        assert log_in(client).status_code == 303


def test_throttle_counts_are_shared_through_redis(make: Callable[..., Flask]) -> None:
    redis = pytest.importorskip("redis", reason="the redis extra is not installed")
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} unreachable: {exc} (CI requires Redis)")
        pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")
    shared = {
        "FLOWSTATE_LOGIN_LIMIT_STORAGE_URI": REDIS_URL,
        "FLOWSTATE_LOGIN_LIMIT_PREFIX": f"flowstate-test-{uuid.uuid4().hex}",
        "FLOWSTATE_LOGIN_LIMIT": "2 per minute",
    }
    one, two = make(**shared), make(**shared)  # like two processes of one deployment
    assert log_in(one.test_client(), "guess").status_code == 401
    assert log_in(two.test_client(), "guess").status_code == 401
    assert log_in(one.test_client()).status_code == 429


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("FLOWSTATE_LOGIN_LIMIT", "lots"),
        ("FLOWSTATE_LOGIN_GLOBAL_LIMIT", "5 per fortnight"),
        ("FLOWSTATE_LOGIN_LIMIT_STORAGE_URI", "nosuchstore://x"),
    ],
)
def test_bad_throttle_settings_refuse_to_start(
    make: Callable[..., Flask], key: str, value: str
) -> None:
    with pytest.raises(StartupError, match=key):
        make(**{key: value})


# -- logout and server-side logins ---------------------------------------------------------------


def test_a_cookie_copied_before_logout_stops_working(make: Callable[..., Flask]) -> None:
    app = make()
    victim = app.test_client()
    assert log_in(victim).status_code == 303
    cookie = victim.get_cookie("session")
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie("session", cookie.value)
    assert thief.get("/flows/").status_code == 200  # the copy works while logged in
    r = victim.post("/logout", data={"csrf_token": csrf(victim, "/flows/")})
    assert (r.status_code, r.headers["Location"]) == (303, "/login")
    r = thief.get("/flows/")
    assert r.status_code == 303
    assert r.headers["Location"].startswith("/login")


def test_logout_ends_only_that_login(make: Callable[..., Flask]) -> None:
    app = make()
    first, second = app.test_client(), app.test_client()
    log_in(first)
    log_in(second)
    first.post("/logout", data={"csrf_token": csrf(first, "/flows/")})
    assert first.get("/flows/").status_code == 303
    assert second.get("/flows/").status_code == 200


def test_a_changed_password_ends_every_login(make: Callable[..., Flask]) -> None:
    app = make()
    client = app.test_client()
    log_in(client)
    cookie = client.get_cookie("session")
    assert cookie is not None
    restarted = make(FLOWSTATE_ADMIN_PASSWORD="n3w-secret")  # same instance folder and key
    again = restarted.test_client()
    again.set_cookie("session", cookie.value)
    assert again.get("/flows/").status_code == 303


def test_a_login_expires(make: Callable[..., Flask], tmp_path: Path) -> None:
    app = make(PERMANENT_SESSION_LIFETIME=timedelta(hours=1))
    client = app.test_client()
    r = log_in(client)
    assert "Expires=" in r.headers["Set-Cookie"]
    assert client.get("/flows/").status_code == 200
    (login_file,) = (tmp_path / "instance" / "logins").iterdir()
    two_hours_ago = time.time() - 7200
    os.utime(login_file, (two_hours_ago, two_hours_ago))
    assert client.get("/flows/").status_code == 303
    log_in(app.test_client())  # a new login prunes the expired file
    assert not login_file.exists()
    assert len(list((tmp_path / "instance" / "logins").iterdir())) == 1


def test_a_forged_login_token_is_refused(make: Callable[..., Flask]) -> None:
    app = make()
    client = app.test_client()
    log_in(client)
    with client.session_transaction() as sess:
        sess["flowstate_login"] = "../secret_key"
    assert client.get("/flows/").status_code == 303


@pytest.mark.parametrize(
    "target",
    ["/flows/\r\nSet-Cookie: x=1", "/flows/\nx", "/\x00", "//evil.example", "http://[::1"],
)
def test_login_next_with_control_characters_goes_home(
    make: Callable[..., Flask], target: str
) -> None:
    client = make().test_client()
    r = log_in(client, next=target)
    assert (r.status_code, r.headers["Location"]) == (303, "/")
    r = client.get("/login", query_string={"next": target})
    assert r.status_code == 200


# -- the admin's header --------------------------------------------------------------------------


def test_header_shows_the_user_and_a_log_out_button(make: Callable[..., Flask]) -> None:
    app = make(FLOWSTATE_ADMIN_USERNAME="ops-oncall")
    client = app.test_client()
    log_in(client)
    html = client.get("/flows/").text
    header = html.split("</header>")[0]
    assert ">ops-oncall</span>" in header
    form = re.search(
        r'<form class="fs-logout" method="post" action="([^"]+)">(.*?)</form>', header, re.S
    )
    assert form, header
    assert form.group(1) == "/logout"
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.group(2))
    assert token
    r = client.post("/logout", data={"csrf_token": token.group(1)})
    assert r.status_code == 303
    assert client.get("/flows/").status_code == 303


def test_public_mode_has_no_log_out_button(make: Callable[..., Flask]) -> None:
    app = make(FLOWSTATE_ADMIN_PASSWORD=None, FLOWSTATE_PUBLIC=True)
    html = app.test_client().get("/flows/").text
    assert "fs-logout" not in html
    assert "Log out" not in html
