"""The standalone admin app, flaskr-style: ``create_app(test_config=None)``.

Run it with ``flowstate-web serve`` (waitress) or ``flask --app flowstate_web.app run``.
By default it keeps its SQLite database in the instance folder; ``FLOWSTATE_DATABASE_URL``
(or ``DATABASE_URL``) points it at PostgreSQL. It applies the shipped migrations on start,
imports the flow modules named in ``FLOWSTATE_FLOW_MODULES`` and asks for a login
(``FLOWSTATE_ADMIN_PASSWORD``) unless it was explicitly started public on localhost.
See ``docs/standalone.md``.
"""

from __future__ import annotations

import contextlib
import hmac
import importlib
import logging
import os
import secrets
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_migrate import Migrate, upgrade
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event

from .admin.security import check_csrf, csrf_token
from .errors import FlowStateError
from .extension import FlowState

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEMO_MODULES = ("flowstate_web.demo.sync_flow", "flowstate_web.demo.orders_flow")
SESSION_USER = "flowstate_user"
SQLITE_BUSY_TIMEOUT_MS = 10_000

db = SQLAlchemy()


class StartupError(FlowStateError):
    """The standalone app cannot start as configured; the message says what to set."""


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the standalone admin app.

    Config comes from the defaults, then the environment, then ``test_config``.

    :raises StartupError: no admin password and not public, public on a non-local bind,
        or a flow module that cannot be imported.
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

    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
    ext = FlowState(app, db=db)
    if not app.config.get("FLOWSTATE_PUBLIC"):
        ext.access_check(_logged_in)
        ext.actor_loader(_current_user)
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
    app.register_blueprint(_login_blueprint())
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
    "FLOWSTATE_DEMO_QUEUE_NAME",
    "FLOWSTATE_QUEUE",
    "FLOWSTATE_REDIS_URL",
    "FLOWSTATE_QUEUE_PATH",
)
_ENV_BOOLS = (
    "FLOWSTATE_PUBLIC",
    "FLOWSTATE_READ_ONLY",
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
    host = str(app.config["FLOWSTATE_BIND_HOST"]).strip("[]")
    if app.config.get("FLOWSTATE_PUBLIC"):
        if host not in LOCAL_HOSTS:
            raise StartupError(
                f"a public admin (no login) may only bind to 127.0.0.1 or localhost, not {host};"
                " set FLOWSTATE_ADMIN_PASSWORD and drop --public to serve it on a network"
            )
        app.logger.warning("flowstate-web: PUBLIC admin, no login, on %s only", host)
        return
    if not app.config.get("FLOWSTATE_ADMIN_PASSWORD"):
        raise StartupError(
            "the admin needs a login: set FLOWSTATE_ADMIN_PASSWORD=<secret>"
            " (or start it with --public, which only binds to 127.0.0.1)"
        )


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


# -- login --------------------------------------------------------------------------------


def _logged_in() -> bool:
    return SESSION_USER in session


def _current_user() -> str | None:
    user = session.get(SESSION_USER)
    return str(user) if user else None


def _to_login() -> ResponseReturnValue:
    target = url_for("standalone.login", next=request.full_path.rstrip("?"))
    if request.headers.get("HX-Request"):
        return "", 401, {"HX-Redirect": target}
    return redirect(target, code=303)


def _require_login() -> ResponseReturnValue | None:
    """Send anyone not logged in to the login page (the whole app, not only the admin)."""
    if current_app.config.get("FLOWSTATE_PUBLIC") or _logged_in():
        return None
    endpoint = request.endpoint or ""
    if endpoint == "standalone.login" or endpoint == "static" or endpoint.endswith(".static"):
        return None
    return _to_login()


def _safe_next(target: str | None) -> str:
    """Return ``target`` if it is a path on this site, else the home page."""
    if target:
        parts = urlsplit(target)
        local = not parts.scheme and not parts.netloc and target.startswith("/")
        if local and not target.startswith("//") and "\\" not in target:
            return target
    return url_for("standalone.index")


def _login_page(error: str | None = None, status: int = 200) -> ResponseReturnValue:
    html = render_template(
        "flowstate/login.html",
        user=_current_user(),
        error=error,
        next=request.values.get("next", ""),
        csrf_token=csrf_token(),
    )
    headers = {
        "Content-Security-Policy": "default-src 'self'; form-action 'self'; frame-ancestors 'none'",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }
    return html, status, headers


def _login_blueprint() -> Blueprint:
    from ._resources import shipped_blueprint

    # Own template and static folders, so the login page works with the admin unmounted.
    bp = shipped_blueprint("standalone", __name__, "/_static")

    @bp.get("/")
    def index() -> ResponseReturnValue:
        if "flowstate.overview" in current_app.view_functions:
            return redirect(url_for("flowstate.overview"))
        return "flowstate-web is running; the admin is not mounted (FLOWSTATE_ADMIN).", 200

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> ResponseReturnValue:
        if current_app.config.get("FLOWSTATE_PUBLIC"):
            return redirect(url_for("standalone.index"))
        if request.method == "GET":
            return _login_page()
        check_csrf()
        expected = str(current_app.config.get("FLOWSTATE_ADMIN_PASSWORD") or "")
        given = request.form.get("password", "")
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            return _login_page("Wrong password.", 401)
        target = _safe_next(request.form.get("next"))
        session.clear()  # a fresh session on login: no fixation
        session[SESSION_USER] = str(current_app.config["FLOWSTATE_ADMIN_USERNAME"])
        return redirect(target, code=303)

    @bp.post("/logout")
    def logout() -> ResponseReturnValue:
        check_csrf()
        session.clear()
        return redirect(url_for("standalone.login"), code=303)

    return bp
