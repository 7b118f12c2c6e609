"""The standalone app: configuration, database set-up, flow modules, login and public mode."""

from __future__ import annotations

import logging
import re
import stat
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from flowstate_web import find_flow_type
from flowstate_web.app import StartupError, create_app, database_url, db
from flowstate_web.cli_main import main

FLOWSTATE_TABLES = {"flowstate_flows", "flowstate_transitions", "flowstate_artefacts"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's environment out of the app's configuration."""
    import os

    for key in list(os.environ):
        if key.startswith("FLOWSTATE_") or key in {"DATABASE_URL", "SECRET_KEY"}:
            monkeypatch.delenv(key)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Return ``make(**config)``: a standalone app in a tmp instance folder (disposed after)."""
    made: list[Flask] = []

    def factory(**config: Any) -> Flask:
        base: dict[str, Any] = {
            "TESTING": True,
            "FLOWSTATE_INSTANCE_PATH": str(tmp_path / "instance"),
            "FLOWSTATE_ADMIN_PASSWORD": "s3cret",
        }
        app = create_app({**base, **config})
        made.append(app)
        return app

    yield factory
    for app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def _tables(app: Flask) -> set[str]:
    with app.app_context():
        return set(inspect(db.engine).get_table_names())


def _csrf(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path)
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


# -- database --------------------------------------------------------------------------------


def test_sqlite_in_instance_folder_with_migrations_applied(
    make: Callable[..., Flask], tmp_path: Path
) -> None:
    app = make()
    assert app.config["SQLALCHEMY_DATABASE_URI"] == (
        f"sqlite:///{tmp_path / 'instance' / 'flowstate.db'}"
    )
    assert (tmp_path / "instance" / "flowstate.db").is_file()
    assert _tables(app) >= FLOWSTATE_TABLES | {"alembic_version"}
    with app.app_context():
        version = db.session.execute(text("select version_num from alembic_version")).scalar()
    assert version == "0012_bulk_runs"


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(
    make: Callable[..., Flask],
) -> None:
    app = make()
    with app.app_context(), db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_starting_twice_keeps_the_data_and_the_secret_key(
    make: Callable[..., Flask], tmp_path: Path
) -> None:
    first = make()
    with first.app_context():
        db.session.execute(
            text(
                "insert into flowstate_flows (type, state, errored, seq, props, created_at,"
                " updated_at, state_entered_at) values ('X', 'a', false, 0, '{}',"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        db.session.commit()
    second = make()
    with second.app_context():
        assert db.session.execute(text("select count(*) from flowstate_flows")).scalar() == 1
    key_file = tmp_path / "instance" / "secret_key"
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"] == key_file.read_text()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_secret_key_from_the_environment(
    make: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SECRET_KEY", "from-env")
    assert make().config["SECRET_KEY"] == "from-env"
    assert not (tmp_path / "instance" / "secret_key").exists()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_postgresql_by_url_with_migrations_applied(
    make: Callable[..., Flask], fresh_pg_url: str, scheme: str
) -> None:
    url = make_url(fresh_pg_url).set(drivername=scheme).render_as_string(hide_password=False)
    app = make(FLOWSTATE_DATABASE_URL=url)
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg://")
    assert _tables(app) >= FLOWSTATE_TABLES | {"alembic_version"}
    again = make(FLOWSTATE_DATABASE_URL=url)  # already at head: a no-op
    assert _tables(again) >= FLOWSTATE_TABLES


def test_database_url_from_the_environment(
    make: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    generic, specific = tmp_path / "generic.db", tmp_path / "specific.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{generic}")
    assert make().config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{generic}"
    assert generic.is_file()
    monkeypatch.setenv("FLOWSTATE_DATABASE_URL", f"sqlite:///{specific}")
    assert make().config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{specific}"
    assert specific.is_file()


def test_database_url_normalisation(tmp_path: Path) -> None:
    assert database_url("postgres://u@h/d", tmp_path) == "postgresql+psycopg://u@h/d"
    assert database_url("postgresql://u@h/d", tmp_path) == "postgresql+psycopg://u@h/d"
    assert database_url("postgresql+psycopg://u@h/d", tmp_path) == "postgresql+psycopg://u@h/d"
    assert database_url(None, tmp_path) == f"sqlite:///{tmp_path / 'flowstate.db'}"
    assert database_url("", tmp_path, demo=True) == f"sqlite:///{tmp_path / 'flowstate-demo.db'}"


def test_migrations_keep_other_loggers_enabled(make: Callable[..., Flask]) -> None:
    engine_log = logging.getLogger("flowstate_web")
    make()
    assert not engine_log.disabled


# -- flow modules ----------------------------------------------------------------------------


def test_flow_modules_are_imported(make: Callable[..., Flask]) -> None:
    app = make(FLOWSTATE_FLOW_MODULES="tests.host_app.flows, flowstate_web.demo.orders_flow")
    assert find_flow_type("HostOnboardingFlow") is not None
    assert find_flow_type("OrderFulfilmentFlow") is not None
    assert app.config["FLOWSTATE_FLOW_MODULES"] == [
        "tests.host_app.flows",
        "flowstate_web.demo.orders_flow",
    ]


def test_flow_modules_from_the_environment(
    make: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWSTATE_FLOW_MODULES", "tests.host_app.flows")
    assert make().config["FLOWSTATE_FLOW_MODULES"] == ["tests.host_app.flows"]


def test_a_missing_flow_module_is_named(make: Callable[..., Flask]) -> None:
    with pytest.raises(StartupError, match=r"cannot import 'tests\.no_such_flows'"):
        make(FLOWSTATE_FLOW_MODULES=["tests.no_such_flows"])


def test_a_broken_flow_module_is_named_with_its_error(
    make: Callable[..., Flask], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"broken_flows_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('bad flow definition')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(StartupError, match=rf"'{name}'.*RuntimeError: bad flow definition"):
        make(FLOWSTATE_FLOW_MODULES=name)
    sys.modules.pop(name, None)


def test_demo_mode_loads_the_demo_flows(make: Callable[..., Flask], tmp_path: Path) -> None:
    app = make(FLOWSTATE_DEMO=True)
    assert find_flow_type("SyncThirdPartyApiFlow") is not None
    assert find_flow_type("OrderFulfilmentFlow") is not None
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("flowstate-demo.db")


# -- login -----------------------------------------------------------------------------------


def test_everything_requires_a_login(make: Callable[..., Flask]) -> None:
    client = make().test_client()
    for path in ("/", "/flows/", "/flows/types/X"):
        r = client.get(path)
        assert r.status_code == 303, path
        assert r.headers["Location"].startswith("/login?next=")
    htmx = client.get("/flows/", headers={"HX-Request": "true"})
    assert htmx.status_code == 401
    assert htmx.headers["HX-Redirect"].startswith("/login")


def test_wrong_password_is_refused(make: Callable[..., Flask]) -> None:
    client = make().test_client()
    token = _csrf(client)
    r = client.post("/login", data={"csrf_token": token, "password": "nope"})
    assert r.status_code == 401
    assert "Wrong password" in r.text
    assert client.get("/").status_code == 303


def test_login_without_csrf_token_is_refused(make: Callable[..., Flask]) -> None:
    client = make().test_client()
    client.get("/login")
    r = client.post("/login", data={"password": "s3cret"})
    assert r.status_code == 400
    assert client.get("/").status_code == 303


def test_right_password_logs_in_and_logout_logs_out(make: Callable[..., Flask]) -> None:
    app = make(FLOWSTATE_ADMIN_USERNAME="ops")
    client = app.test_client()
    token = _csrf(client)
    r = client.post("/login", data={"csrf_token": token, "password": "s3cret", "next": "/flows/"})
    assert r.status_code == 303
    assert r.headers["Location"] == "/flows/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    home = client.get("/")
    assert home.status_code == 302
    assert home.headers["Location"] == "/flows/"
    ext = app.extensions["flowstate"]
    with client:
        client.get("/login")
        assert ext.access() is True
        assert ext.actor() == "ops"
    token = _csrf(client)
    assert client.post("/logout").status_code == 400  # no CSRF token: refused
    r = client.post("/logout", data={"csrf_token": token})
    assert r.status_code == 303
    assert client.get("/").status_code == 303
    with client:
        client.get("/login")
        assert ext.access() is False


def test_login_never_redirects_off_site(make: Callable[..., Flask]) -> None:
    client = make().test_client()
    token = _csrf(client)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        r = client.post("/login", data={"csrf_token": token, "password": "s3cret", "next": target})
        assert r.headers["Location"] == "/", target
        token = _csrf(client)


def test_refuses_to_start_without_a_password(make: Callable[..., Flask]) -> None:
    with pytest.raises(StartupError, match="set FLOWSTATE_ADMIN_PASSWORD="):
        make(FLOWSTATE_ADMIN_PASSWORD=None)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_public_mode_on_localhost_needs_no_login(make: Callable[..., Flask], host: str) -> None:
    app = make(FLOWSTATE_ADMIN_PASSWORD=None, FLOWSTATE_PUBLIC=True, FLOWSTATE_BIND_HOST=host)
    client = app.test_client()
    assert client.get("/").status_code == 302
    assert client.get("/").headers["Location"] == "/flows/"
    assert client.get("/login").status_code == 302


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_public_mode_is_refused_on_a_network_bind(make: Callable[..., Flask], host: str) -> None:
    with pytest.raises(StartupError, match=r"only bind to 127\.0\.0\.1 or localhost"):
        make(FLOWSTATE_PUBLIC=True, FLOWSTATE_BIND_HOST=host)


def test_public_mode_from_the_environment(
    make: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWSTATE_PUBLIC", "1")
    app = make(FLOWSTATE_ADMIN_PASSWORD=None)
    assert app.config["FLOWSTATE_PUBLIC"] is True


# -- command line ------------------------------------------------------------------------------


def test_cli_refuses_without_password_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWSTATE_INSTANCE_PATH", str(tmp_path))
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "FLOWSTATE_ADMIN_PASSWORD" in err


def test_cli_refuses_public_on_a_network_bind(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWSTATE_INSTANCE_PATH", str(tmp_path))
    assert main(["serve", "--public", "--host", "0.0.0.0"]) == 2
    assert "only bind to 127.0.0.1" in capsys.readouterr().err


# -- Host names (DNS rebinding) and public mode ------------------------------------------------


def _public(make: Callable[..., Flask], **config: Any) -> Flask:
    return make(
        FLOWSTATE_ADMIN_PASSWORD=None,
        FLOWSTATE_PUBLIC=True,
        FLOWSTATE_FLOW_MODULES="tests.host_app.flows",
        **config,
    )


def _retry_form(client: FlaskClient) -> dict[str, str]:
    html = client.get("/flows/").text
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert found
    return {"csrf_token": found.group(1), "transition": "x"}


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "localhost", "127.0.0.1", "[::1]"]
)
def test_public_mode_serves_loopback_host_names(make: Callable[..., Flask], host: str) -> None:
    client = _public(make).test_client()
    r = client.get("/flows/", base_url=f"http://{host}")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "host",
    ["rebind.evil.example:8000", "rebind.evil.example", "localhost.evil.example", "[::2]:80"],
)
def test_public_mode_refuses_other_host_names(make: Callable[..., Flask], host: str) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: it gets a 400, no data."""
    client = _public(make).test_client()
    r = client.get("/flows/", base_url=f"http://{host}")
    assert r.status_code == 400
    assert "FLOWSTATE_TRUSTED_HOSTS" in r.text
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    form = _retry_form(client)  # a token from the real page, as a rebinding script could get
    post = client.post(
        "/flows/types/HostOnboardingFlow/1/retry", data=form, base_url=f"http://{host}"
    )
    assert post.status_code == 400


def test_public_mode_refuses_remote_clients(make: Callable[..., Flask]) -> None:
    client = _public(make).test_client()
    r = client.get("/flows/", environ_base={"REMOTE_ADDR": "192.0.2.10"})
    assert r.status_code == 403
    assert client.get("/flows/", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_trusted_hosts_for_a_proxy(
    make: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWSTATE_TRUSTED_HOSTS", "flows.example.com, .internal.example")
    app = _public(make)
    assert app.config["FLOWSTATE_TRUSTED_HOSTS"] == ["flows.example.com", ".internal.example"]
    client = app.test_client()
    for ok in ("flows.example.com", "flows.example.com:443", "ops.internal.example"):
        assert client.get("/flows/", base_url=f"http://{ok}").status_code == 200, ok
    for bad in ("localhost:8000", "internal.example.evil", "evil.example"):
        assert client.get("/flows/", base_url=f"http://{bad}").status_code == 400, bad


def test_trusted_hosts_apply_with_a_login_too(make: Callable[..., Flask]) -> None:
    app = make(FLOWSTATE_TRUSTED_HOSTS=["flows.example.com"])
    client = app.test_client()
    assert client.get("/login", base_url="http://flows.example.com").status_code == 200
    assert client.get("/login", base_url="http://other.example").status_code == 400


def test_login_mode_accepts_any_host_by_default(make: Callable[..., Flask]) -> None:
    client = make().test_client()
    assert client.get("/login", base_url="http://flows.corp.example:8000").status_code == 200


def test_public_mode_says_what_it_enforces(
    make: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        _public(make)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "only requests from this machine" in message
    assert "127.0.0.1" in message and "localhost" in message and "::1" in message


# -- security headers on every response --------------------------------------------------------

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _assert_headers(response: Any, what: str) -> None:
    for key, value in HEADERS.items():
        assert response.headers.get(key) == value, (what, key)
    csp = response.headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, what


def test_every_response_of_the_app_carries_the_security_headers(
    make: Callable[..., Flask],
) -> None:
    app = make(FLOWSTATE_LOGIN_LIMIT="1 per minute")
    client = app.test_client()
    _assert_headers(client.get("/login"), "login page")
    _assert_headers(client.get("/"), "redirect to login")
    _assert_headers(client.get("/no/such/page"), "404 (redirect)")
    _assert_headers(client.post("/login", data={}), "400 no CSRF")
    _assert_headers(client.put("/login"), "405")
    token = _csrf(client)
    _assert_headers(client.post("/login", data={"csrf_token": token, "password": "x"}), "401")
    _assert_headers(client.post("/login", data={"csrf_token": token, "password": "x"}), "429")
    static = client.get("/_static/flowstate/admin.css")
    _assert_headers(static, "static")
    assert "no-store" not in static.headers.get("Cache-Control", "")
    static.close()
    other = make().test_client()
    other.post("/login", data={"csrf_token": _csrf(other), "password": "s3cret"})
    for path in ("/flows/", "/no/such/page", "/flows/types/Nope", "/flows/types/X/1/retry"):
        _assert_headers(other.get(path), path)
    _assert_headers(other.get("/login", base_url="http://x.example"), "host")
    public = make(FLOWSTATE_ADMIN_PASSWORD=None, FLOWSTATE_PUBLIC=True).test_client()
    _assert_headers(public.get("/flows/", base_url="http://evil.example"), "public 400")
