"""Who may see the admin, who may act, CSRF, and the headers of every admin response.

The model (``docs/admin.md``): deny unless the host registered an access check or set
``FLOWSTATE_PUBLIC``; refuse every action in read-only mode; every POST carries a CSRF
token checked here (only for this blueprint: the host's own routes are left alone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from flask import current_app, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import generate_csrf, validate_csrf
from werkzeug.exceptions import BadRequest, Forbidden
from wtforms.validators import ValidationError

from .settings import Settings

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

    from ..extension import FlowState

#: The actor recorded for writes made through a public admin with no actor hook.
PUBLIC_ACTOR: Final = "public"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "X-CSRFToken"

CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class NoActorError(Forbidden):
    """A write was attempted but nobody can be named as its actor."""


def hooks() -> FlowState:
    """Return the app's ``FlowState`` (its hooks may be set after ``init_app``)."""
    ext: FlowState = current_app.extensions["flowstate"]
    return ext


def allowed(settings: Settings) -> bool:
    """Return whether the current request may see the admin."""
    check = hooks().access
    if check is None:
        return settings.public
    return bool(check())


def denied() -> ResponseReturnValue | None:
    """Return the host's ``on_denied`` response, or ``None`` to use the default 403 page."""
    handler = hooks().on_denied
    return None if handler is None else handler()


def actor(settings: Settings) -> str:
    """Return who is acting, for the history row of a write.

    :raises NoActorError: no actor hook (or it returned nothing) on a non-public admin:
        an anonymous write would be unaccountable, so it is refused.
    """
    loader = hooks().actor
    name = loader() if loader is not None else None
    if name:
        return str(name)[:200]
    if settings.public:
        return PUBLIC_ACTOR
    raise NoActorError(
        "This admin cannot name who is acting: register FlowState.actor_loader"
        " so retries are recorded with an actor."
    )


def current_user() -> str | None:
    """Return the name the host's actor hook gives for this request (for the header), if any."""
    loader = hooks().actor
    name = loader() if loader is not None else None
    return str(name)[:200] if name else None


def can_write(settings: Settings) -> bool:
    """Return whether action buttons should be offered at all."""
    return not settings.read_only and (hooks().actor is not None or settings.public)


def csrf_token() -> str:
    """Return the session's CSRF token (Flask-WTF's, so a host's CSRFProtect accepts it too)."""
    token: str = generate_csrf()
    return token


def check_csrf() -> None:
    """Validate the CSRF token of a POST (form field first, then the htmx header).

    :raises BadRequest: missing, expired or wrong token (with a message an operator can use).
    """
    token = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    try:
        validate_csrf(token)
    except ValidationError as exc:
        raise BadRequest(
            f"CSRF check failed: {str(exc).rstrip('.')}. Reload the page and try again."
        ) from None


def add_headers(response: Response, *, static: bool = False) -> Response:
    """Add the security headers of admin responses (kept if a view already set one).

    Static files keep their normal caching; pages are ``no-store`` (they show live data).
    """
    for key, value in HEADERS.items():
        if not (static and key == "Cache-Control"):
            response.headers.setdefault(key, value)
    return response
