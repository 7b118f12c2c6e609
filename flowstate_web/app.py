"""The standalone admin app, flaskr-style: ``create_app(test_config=None)``.

Run it with ``flowstate-web serve`` (waitress) or ``flask --app flowstate_web.app run``.
By default it keeps its SQLite database in the instance folder; ``FLOWSTATE_DATABASE_URL``
(or ``DATABASE_URL``) points it at PostgreSQL. It applies the shipped migrations on start,
imports the flow modules named in ``FLOWSTATE_FLOW_MODULES`` and asks for a login
(``FLOWSTATE_ADMIN_PASSWORD``; :mod:`flowstate_web.login`) unless it was explicitly started
public. A public app cannot know where a WSGI server binds it, so it checks every request:
the client must be this machine (a loopback address) and the ``Host`` a loopback name
(``FLOWSTATE_TRUSTED_HOSTS`` replaces the names). See ``docs/standalone.md``.
"""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
import logging
import os
import secrets
import warnings
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, current_app, redirect, request, url_for
from flask.typing import ResponseReturnValue
from flask_migrate import Migrate, upgrade
from flask_sqlalchemy import SQLAlchemy
from limits.errors import ConfigurationError
from sqlalchemy import event
from werkzeug.exceptions import BadRequest, Forbidden
from werkzeug.wrappers import Response

from . import login
from .admin.security import add_headers
from .errors import FlowStateError
from .extension import FlowState

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEMO_MODULES = ("flowstate_web.demo.sync_flow", "flowstate_web.demo.orders_flow")
SESSION_USER = login.SESSION_USER
SQLITE_BUSY_TIMEOUT_MS = 10_000

db = SQLAlchemy()


class StartupError(FlowStateError):
    """The standalone app cannot start as configured; the message says what to set."""


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the standalone admin app.

    Config comes from the defaults, then the environment, then ``test_config``.

    :raises StartupError: no admin password and not public, public with a non-local
        ``FLOWSTATE_BIND_HOST`` (what ``--host`` said), a malformed login limit or limit
        storage, or a flow module that cannot be imported.
    """
    config = {**_from_env(os.environ), **(test_config or {})}
    instance = config.get("FLOWSTATE_INSTANCE_PATH")
    app = Flask(
        __name__,
        instance_path=os.path.abspath(instance) if instance else None,
        instance_relative_config=True,
    )
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(
        FLOWSTATE_ADMIN_USERNAME="admin",
        FLOWSTATE_BIND_HOST="127.0.0.1",
        FLOWSTATE_AUTO_MIGRATE=True,
        FLOWSTATE_DEMO=False,
        FLOWSTATE_FLOW_MODULES=[],
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        **login.DEFAULTS,
    )
    app.config.update(config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(Path(app.instance_path))
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url(
        app.config.get("FLOWSTATE_DATABASE_URL"),
        Path(app.instance_path),
        demo=bool(app.config["FLOWSTATE_DEMO"]),
    )
    _check_access_config(app)
    # First of all hooks: a request for a foreign Host or (public) from another machine
    # is refused before anything else looks at it.
    app.before_request(_check_origin)
    app.after_request(_headers)
    if not app.config.get("FLOWSTATE_PUBLIC"):
        app.config.setdefault("FLOWSTATE_LOGOUT_ENDPOINT", "standalone.logout")

    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
    ext = FlowState(app, db=db)
    if not app.config.get("FLOWSTATE_PUBLIC"):
        ext.access_check(login.logged_in)
        ext.actor_loader(login.current_user)
        ext.on_denied = _to_login
    migrations = str(_migrations_dir())
    Migrate(app, db, directory=migrations)
    _import_flow_modules(app)
    if app.config["FLOWSTATE_DEMO"]:
        from .demo.tasks import install

        install(app)  # the demo flows hand their jobs off to the demo's huey queue
    elif app.config.get("FLOWSTATE_QUEUE") == "huey":
        from .queues.huey import HueyQueue, huey_from_config

        huey = huey_from_config(app.config, app.instance_path, "flowstate")
        ext.use_queue(HueyQueue(huey), app)  # jobs: those @job() in FLOWSTATE_FLOW_MODULES
    if app.config["FLOWSTATE_AUTO_MIGRATE"]:
        with app.app_context(), _keep_loggers(), warnings.catch_warnings():
            # The shipped env.py tries Flask-SQLAlchemy 2's get_engine() first.
            warnings.filterwarnings("ignore", "'get_engine' is deprecated", DeprecationWarning)
            upgrade(directory=migrations)
    app.register_blueprint(_login_blueprint(app))
    app.before_request(_require_login)
    return app


# -- configuration ------------------------------------------------------------------------


_ENV_KEYS = (
    "FLOWSTATE_INSTANCE_PATH",
    "FLOWSTATE_ADMIN_PASSWORD",
    "FLOWSTATE_ADMIN_USERNAME",
    "FLOWSTATE_BIND_HOST",
    "FLOWSTATE_URL_PREFIX",
    "FLOWSTATE_DEMO_REDIS_URL",
    "FLOWSTATE_DEMO_QUEUE_PATH",
    "FLOWSTATE_TRUSTED_HOSTS",
    "FLOWSTATE_LOGIN_LIMIT",
    "FLOWSTATE_LOGIN_GLOBAL_LIMIT",
    "FLOWSTATE_LOGIN_LIMIT_STORAGE_URI",
    "FLOWSTATE_LOGIN_LIMIT_PREFIX",
    "FLOWSTATE_DEMO_QUEUE_NAME",
    "FLOWSTATE_QUEUE",
    "FLOWSTATE_REDIS_URL",
    "FLOWSTATE_QUEUE_PATH",
)
_ENV_BOOLS = (
    "FLOWSTATE_PUBLIC",
    "FLOWSTATE_READ_ONLY",
    "FLOWSTATE_REQUIRE_REASON",
    "FLOWSTATE_DEMO",
    "FLOWSTATE_AUTO_MIGRATE",
    "SESSION_COOKIE_SECURE",
)
_ENV_NUMBERS = (
    "FLOWSTATE_POLL_SECONDS",
    "FLOWSTATE_DEMO_SEED",
    "FLOWSTATE_DEMO_WORKERS",
    "FLOWSTATE_DEMO_FAILURE_RATE",
    "FLOWSTATE_DEMO_BACKORDER_RATE",
    "FLOWSTATE_DEMO_LATENCY",
    "FLOWSTATE_DEMO_RETRY_DELAY",
    "FLOWSTATE_DEMO_TRICKLE_SECONDS",
    "FLOWSTATE_DEMO_RESTOCK_SECONDS",
    "FLOWSTATE_DEMO_DELIVERY_SECONDS",
    "FLOWSTATE_OUTBOX_RELAY_DELAY",
)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Return the config the environment sets (only keys that are present)."""
    out: dict[str, Any] = {k: env[k] for k in _ENV_KEYS if env.get(k)}
    for key in _ENV_BOOLS:
        if env.get(key):
            out[key] = env[key].strip().lower() in {"1", "true", "yes", "on"}
    for key in _ENV_NUMBERS:
        if env.get(key):
            try:
                value = float(env[key])
            except ValueError:
                raise StartupError(f"{key} must be a number, got {env[key]!r}") from None
            out[key] = int(value) if value.is_integer() and "RATE" not in key else value
    url = env.get("FLOWSTATE_DATABASE_URL") or env.get("DATABASE_URL")
    if url:
        out["FLOWSTATE_DATABASE_URL"] = url
    if env.get("FLOWSTATE_FLOW_MODULES"):
        out["FLOWSTATE_FLOW_MODULES"] = env["FLOWSTATE_FLOW_MODULES"]
    secret = env.get("SECRET_KEY") or env.get("FLOWSTATE_SECRET_KEY")
    if secret:
        out["SECRET_KEY"] = secret
    return out


def database_url(url: str | None, instance: Path, *, demo: bool = False) -> str:
    """Return the SQLAlchemy URL to use: ``url`` normalised, or a SQLite file in ``instance``.

    ``postgres://`` and ``postgresql://`` (as hosting platforms hand them out) become
    ``postgresql+psycopg://`` so psycopg 3 is used. The demo gets its own SQLite file, so
    it never mixes its flows into a real database.
    """
    if not url:
        return f"sqlite:///{instance / ('flowstate-demo.db' if demo else 'flowstate.db')}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def _secret_key(instance: Path) -> str:
    """Return the secret key persisted in the instance folder, creating it once (mode 0600)."""
    path = instance / "secret_key"
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip()


def _check_access_config(app: Flask) -> None:
    for key in ("FLOWSTATE_LOGIN_LIMIT", "FLOWSTATE_LOGIN_GLOBAL_LIMIT"):
        try:
            login.check_limit(key, app.config[key])
        except ValueError as exc:
            raise StartupError(str(exc)) from None
    hosts = app.config.get("FLOWSTATE_TRUSTED_HOSTS")
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",")]
    if hosts:
        app.config["FLOWSTATE_TRUSTED_HOSTS"] = [h.lower() for h in hosts if h]
    host = str(app.config["FLOWSTATE_BIND_HOST"]).strip("[]")
    if app.config.get("FLOWSTATE_PUBLIC"):
        if host not in LOCAL_HOSTS:
            raise StartupError(
                f"a public admin (no login) may only bind to 127.0.0.1 or localhost, not {host};"
                " set FLOWSTATE_ADMIN_PASSWORD and drop --public to serve it on a network"
            )
        if not hosts:
            app.config["FLOWSTATE_TRUSTED_HOSTS"] = sorted(LOCAL_HOSTS)
        app.logger.warning(
            "flowstate-web: PUBLIC admin, no login: it answers only requests from this machine"
            " (a loopback client address) for the host names %s",
            ", ".join(app.config["FLOWSTATE_TRUSTED_HOSTS"]),
        )
        return
    if not app.config.get("FLOWSTATE_ADMIN_PASSWORD"):
        raise StartupError(
            "the admin needs a login: set FLOWSTATE_ADMIN_PASSWORD=<secret>"
            " (or start it with --public, which only answers requests from this machine)"
        )


def host_name(host: str) -> str:
    """Return the name in a ``Host`` header value: lower case, no port, IPv6 without brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if ":" in host else host


def host_allowed(host: str, allowed: Collection[str]) -> bool:
    """Return whether ``host`` (``name[:port]``) is one of ``allowed``.

    An allowed name matches exactly, or as a suffix when it starts with a dot
    (``.example.com``); ports are ignored; IPv6 may be given with or without brackets.
    Werkzeug's ``TRUSTED_HOSTS`` has the same rules but cannot match an IPv6 address,
    so the standalone app checks this itself.
    """
    name = host_name(host)
    for ref in allowed:
        ref = ref.strip().lower()
        if ref.startswith("."):
            if name.endswith(ref):
                return True
        elif name == host_name(ref) or name == ref.strip("[]"):
            return True
    return False


def _check_origin() -> None:
    """Refuse a foreign ``Host`` (DNS rebinding) and, when public, any remote client.

    :raises BadRequest: the Host is not in ``FLOWSTATE_TRUSTED_HOSTS``.
    :raises Forbidden: a public admin was asked by a client that is not this machine.
    """
    allowed = current_app.config.get("FLOWSTATE_TRUSTED_HOSTS")
    if allowed and not host_allowed(request.host, allowed):
        raise BadRequest(
            f"Host {request.host[:100]!r} is not served here (FLOWSTATE_TRUSTED_HOSTS:"
            f" {', '.join(allowed)})."
        )
    if current_app.config.get("FLOWSTATE_PUBLIC") and not _loopback(request.remote_addr):
        raise Forbidden("This admin is public (no login) and answers only this machine.")


def _headers(response: Response) -> Response:
    """Give every response of the app (login, errors, static files) the admin's headers."""
    endpoint = request.endpoint or ""
    return add_headers(response, static=endpoint == "static" or endpoint.endswith(".static"))


def _loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the admin read while jobs write; the busy timeout makes writers queue
    # instead of failing with "database is locked".
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _migrations_dir() -> Path:
    from ._resources import resource_dir

    return resource_dir("migrations")


def _import_flow_modules(app: Flask) -> None:
    names = app.config["FLOWSTATE_FLOW_MODULES"]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    names = [n for n in names if n]
    if app.config["FLOWSTATE_DEMO"]:
        names = [*DEMO_MODULES, *names]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise StartupError(
                f"FLOWSTATE_FLOW_MODULES: cannot import {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
    app.config["FLOWSTATE_FLOW_MODULES"] = names


@contextlib.contextmanager
def _keep_loggers() -> Iterator[None]:
    """Undo what Alembic's ``env.py`` (``logging.config.fileConfig``) does to logging.

    ``fileConfig`` disables every logger it does not name, so without this the engine's
    callback errors and the job queue's logs would vanish after the first migration.
    """
    manager = logging.Logger.manager
    loggers = {
        name: lg.disabled
        for name, lg in manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    root_handlers, root_level = list(logging.root.handlers), logging.root.level
    try:
        yield
    finally:
        for name, disabled in loggers.items():
            logging.getLogger(name).disabled = disabled
        for handler in logging.root.handlers:
            if handler not in root_handlers:
                logging.root.removeHandler(handler)
        for handler in root_handlers:
            if handler not in logging.root.handlers:
                logging.root.addHandler(handler)
        logging.root.setLevel(root_level)


# -- login ------------------------------------------------------------------------------


def _to_login() -> ResponseReturnValue:
    target = url_for("standalone.login", next=request.full_path.rstrip("?"))
    if request.headers.get("HX-Request"):
        return "", 401, {"HX-Redirect": target}
    return redirect(target, code=303)


def _require_login() -> ResponseReturnValue | None:
    """Send anyone not logged in to the login page (the whole app, not only the admin)."""
    if current_app.config.get("FLOWSTATE_PUBLIC") or login.logged_in():
        return None
    endpoint = request.endpoint or ""
    if endpoint == "standalone.login" or endpoint == "static" or endpoint.endswith(".static"):
        return None
    return _to_login()


def _login_blueprint(app: Flask) -> Any:
    app.extensions["flowstate_logins"] = login.LoginStore(
        Path(app.instance_path) / "logins",
        secret=str(app.config["SECRET_KEY"]),
        password=str(app.config.get("FLOWSTATE_ADMIN_PASSWORD") or ""),
        lifetime=app.permanent_session_lifetime,
    )
    try:
        limiter = login.init_throttle(app)
    except ConfigurationError as exc:
        raise StartupError(f"FLOWSTATE_LOGIN_LIMIT_STORAGE_URI: {exc}") from None
    return login.login_blueprint(
        limiter,
        per_address=str(app.config["FLOWSTATE_LOGIN_LIMIT"]),
        everyone=str(app.config["FLOWSTATE_LOGIN_GLOBAL_LIMIT"]),
    )
