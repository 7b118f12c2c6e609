"""The standalone app's login: one password, throttled, with every login kept server-side.

- The password is compared in constant time (digests of equal length, so neither the
  content nor the length of the expected password shows in the timing).
- Failed logins are throttled per client address and for everyone together
  (Flask-Limiter; in memory by default, Redis or another ``limits`` storage when
  ``FLOWSTATE_LOGIN_LIMIT_STORAGE_URI`` is set, so several processes share the counts).
  A throttled attempt gets a 429 with ``Retry-After``, even with the right password.
- A login is a random token in the signed session cookie *and* a file in
  ``<instance>/logins/``. Logout deletes the file, so a copy of the cookie taken before
  stops working; a changed password or an expired login (``PERMANENT_SESSION_LIFETIME``)
  ends every login too. See ``docs/standalone.md`` ("Login").
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
)
from flask import url_for as _url_for
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address
from limits import parse_many

from .admin.security import check_csrf, csrf_token

log = logging.getLogger("flowstate_web.login")

SESSION_USER: Final = "flowstate_user"
SESSION_LOGIN: Final = "flowstate_login"
#: Config keys of the login (defaults set by ``create_app``; documented in docs/standalone.md).
DEFAULTS: Final[dict[str, object]] = {
    "FLOWSTATE_LOGIN_LIMIT": "5 per minute; 30 per hour",
    "FLOWSTATE_LOGIN_GLOBAL_LIMIT": "30 per minute; 500 per day",
    "FLOWSTATE_LOGIN_LIMIT_STORAGE_URI": "memory://",
    "FLOWSTATE_LOGIN_LIMIT_PREFIX": "flowstate-login",
    "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
}
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{43}")
#: Characters that must never reach a redirect's Location header.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def password_matches(given: str, expected: str) -> bool:
    """Return whether ``given`` is the password ``expected`` (constant time; "" never is)."""
    if not expected:
        return False
    digest = hashlib.sha256
    return hmac.compare_digest(
        digest(given.encode("utf-8", "surrogatepass")).digest(),
        digest(expected.encode("utf-8", "surrogatepass")).digest(),
    )


class LoginStore:
    """The active logins of the app: one file per login in ``folder`` (mode 0600).

    Files, not memory, so every process of the app (and a restart) sees the same logins.
    A file holds a fingerprint of the password it was opened with: a changed password
    ends the logins opened with the old one.
    """

    def __init__(self, folder: Path, *, secret: str, password: str, lifetime: timedelta) -> None:
        self.folder = folder
        self.lifetime = lifetime.total_seconds()
        self.fingerprint = hmac.new(
            secret.encode(), password.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()

    def start(self) -> str:
        """Open a login; return its token (for the session cookie)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.prune()
        token = secrets.token_urlsafe(32)
        fd = os.open(self.folder / token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.fingerprint)
        return token

    def active(self, token: object) -> bool:
        """Return whether ``token`` is an open, unexpired login under the current password."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return False
        path = self.folder / token
        try:
            age = time.time() - path.stat().st_mtime
            stored = path.read_text()
        except OSError:
            return False
        return age < self.lifetime and hmac.compare_digest(stored, self.fingerprint)

    def end(self, token: object) -> None:
        """Close the login ``token`` (a no-op when it is not open)."""
        if isinstance(token, str) and _TOKEN.fullmatch(token):
            (self.folder / token).unlink(missing_ok=True)

    def prune(self) -> None:
        """Delete the files of expired logins (run on each login, so the folder stays small)."""
        now = time.time()
        for path in self.folder.iterdir():
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime >= self.lifetime:
                    path.unlink()


def store() -> LoginStore:
    """Return the app's :class:`LoginStore`."""
    found: LoginStore = current_app.extensions["flowstate_logins"]
    return found


def logged_in() -> bool:
    """Return whether this request carries an open login (checked once per request)."""
    if "flowstate_logged_in" not in g:
        g.flowstate_logged_in = SESSION_USER in session and store().active(
            session.get(SESSION_LOGIN)
        )
    return bool(g.flowstate_logged_in)


def current_user() -> str | None:
    """Return the logged-in user's name, or ``None``."""
    user = session.get(SESSION_USER)
    return str(user) if user and logged_in() else None


def safe_next(target: str | None) -> str:
    """Return ``target`` if it is a plain path on this site, else the home page.

    Refused: other sites (``//host``, ``scheme:``, ``/\\host``) and control characters
    (a CR/LF would split the ``Location`` header).
    """
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not _CONTROL.search(target)
        and not _off_site(target)
    ):
        return target
    return _url_for("standalone.index")


def _off_site(target: str) -> bool:
    try:
        parts = urlsplit(target)
    except ValueError:  # e.g. an unbalanced "[" in the netloc
        return True
    return bool(parts.scheme or parts.netloc)


def _failed(response: Response) -> bool:
    return response.status_code == 401


def _everyone() -> str:
    return "everyone"


def check_limit(key: str, value: object) -> str:
    """Return ``value`` if it is a valid limit (``"5 per minute; 30 per hour"``).

    :raises ValueError: naming ``key`` (Flask-Limiter would only log it and not throttle).
    """
    try:
        parse_many(str(value))
    except ValueError:
        raise ValueError(
            f"{key} must be a limit like '5 per minute; 30 per hour', got {value!r}"
        ) from None
    return str(value)


def init_throttle(app: Flask) -> Limiter:
    """Return the login throttle of ``app`` (Flask-Limiter, configured from ``app.config``).

    :raises ValueError: the storage URI is malformed or its client library is missing.
    """
    limiter = Limiter(
        key_func=get_remote_address,
        app=app,
        storage_uri=str(app.config["FLOWSTATE_LOGIN_LIMIT_STORAGE_URI"]),
        key_prefix=str(app.config["FLOWSTATE_LOGIN_LIMIT_PREFIX"]),
        strategy="moving-window",
        on_breach=_throttled,
    )
    return limiter


def _throttled(limit: RequestLimit) -> Response:
    wait = max(1, math.ceil(limit.reset_at - time.time()))
    log.warning(
        "flowstate-web: login throttled for %s (%s failed logins reached; retry in %ss)",
        get_remote_address(),
        limit.limit,
        wait,
    )
    body, status, headers = login_page(f"Too many failed logins. Try again in {wait} seconds.", 429)
    return Response(body, status, headers | {"Retry-After": str(wait)})


def login_page(error: str | None = None, status: int = 200) -> tuple[str, int, dict[str, str]]:
    """Return the login page (or, when logged in, the "logged in as" page)."""
    html = render_template(
        "flowstate/login.html",
        user=current_user(),
        error=error,
        next=request.values.get("next", "")[:2000],
        csrf_token=csrf_token(),
    )
    return html, status, {"Cache-Control": "no-store"}


def login_blueprint(limiter: Limiter, *, per_address: str, everyone: str) -> Blueprint:
    """Return the ``standalone`` blueprint: ``/``, ``/login`` (throttled), ``/logout``.

    ``per_address`` and ``everyone`` are the limits of failed logins (``"5 per minute"``).
    """
    from ._resources import shipped_blueprint

    # Own template and static folders, so the login page works with the admin unmounted.
    bp = shipped_blueprint("standalone", __name__, "/_static")

    @bp.get("/")
    def index() -> ResponseReturnValue:
        if "flowstate.overview" in current_app.view_functions:
            return redirect(_url_for("flowstate.overview"))
        return "flowstate-web is running; the admin is not mounted (FLOWSTATE_ADMIN).", 200

    @bp.route("/login", methods=["GET", "POST"])
    @limiter.limit(per_address, methods=["POST"], deduct_when=_failed)
    @limiter.limit(
        everyone,
        key_func=_everyone,
        scope="flowstate-login-everyone",
        methods=["POST"],
        deduct_when=_failed,
    )
    def login() -> ResponseReturnValue:
        if current_app.config.get("FLOWSTATE_PUBLIC"):
            return redirect(_url_for("standalone.index"))
        if request.method == "GET":
            return login_page()
        check_csrf()
        expected = str(current_app.config.get("FLOWSTATE_ADMIN_PASSWORD") or "")
        if not password_matches(request.form.get("password", ""), expected):
            log.warning("flowstate-web: failed login from %s", get_remote_address())
            return login_page("Wrong password.", 401)
        target = safe_next(request.form.get("next"))
        store().end(session.get(SESSION_LOGIN))
        session.clear()  # a fresh session on login: no fixation
        session.permanent = True  # the cookie expires with the login
        session[SESSION_LOGIN] = store().start()
        session[SESSION_USER] = str(current_app.config["FLOWSTATE_ADMIN_USERNAME"])
        log.info("flowstate-web: login from %s", get_remote_address())
        return redirect(target, code=303)

    @bp.post("/logout")
    def logout() -> ResponseReturnValue:
        check_csrf()
        store().end(session.get(SESSION_LOGIN))
        session.clear()
        return redirect(_url_for("standalone.login"), code=303)

    return bp
