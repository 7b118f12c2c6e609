"""The operator's admin: a blueprint built per app by :func:`create_blueprint`.

Pages read the engine's public API (flow classes, their graph, history, artefacts) and the
admin's own queries (:mod:`.queries`); the only write is running a retry transition through
the engine (:mod:`.actions`, :mod:`.bulk`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import Forbidden, HTTPException
from werkzeug.wrappers import Response

from .._resources import shipped_blueprint
from . import (
    actions,
    bulk_run_views,
    handoffs,
    insight,
    present,
    remap,
    security,
    stalled,
    views,
)
from .settings import Settings

__all__ = ["Settings", "create_blueprint"]

STATIC = "flowstate.static"


def create_blueprint(settings: Settings) -> Blueprint:
    """Return a new admin blueprint named ``flowstate`` configured by ``settings``.

    Register it with ``app.register_blueprint(bp, url_prefix=settings.url_prefix)``
    (``FlowState.init_app`` does this when ``FLOWSTATE_ADMIN`` is true).
    """
    bp = shipped_blueprint("flowstate", __name__, "/static")

    @bp.before_request
    def _guard() -> ResponseReturnValue | None:
        if request.endpoint == STATIC:
            return None
        if not security.allowed(settings):
            custom = security.denied()
            if custom is not None:
                return custom
            raise Forbidden("You are not allowed to see the flows admin.")
        if request.method == "POST":
            security.check_csrf()
            if settings.read_only:
                raise Forbidden("The flows admin is read-only (FLOWSTATE_READ_ONLY).")
        return None

    @bp.after_request
    def _vary(response: Response) -> Response:
        if request.endpoint != STATIC:
            response.vary.add("HX-Request")
        return response

    @bp.after_app_request
    def _headers(response: Response) -> Response:
        # After *app* request so 405s and host 404s under the prefix get the headers too.
        inside = request.blueprint == "flowstate" or (
            bool(settings.url_prefix) and request.path.startswith(settings.url_prefix + "/")
        )
        if not inside:
            return response
        return security.add_headers(response, static=request.endpoint == STATIC)

    @bp.context_processor
    def _context() -> dict[str, Any]:
        return {
            "fs": present,
            "fs_settings": settings,
            "fs_csrf_token": security.csrf_token,
            "fs_user": security.current_user,
            "fs_can_write": security.can_write(settings),
        }

    @bp.errorhandler(HTTPException)
    def _error(exc: HTTPException) -> ResponseReturnValue:
        code = exc.code or 500
        if views.is_htmx():
            response = Response(
                render_template("flowstate/_alert.html", level="error", message=exc.description),
                status=code,
                mimetype="text/html",
            )
            # Keep the widget that asked; show the message in the page's alert area.
            response.headers["HX-Retarget"] = "#fs-alerts"
            response.headers["HX-Reswap"] = "innerHTML"
            return response
        html = render_template("flowstate/error.html", code=code, error=exc)
        # werkzeug's Response defaults to text/plain: with nosniff the page would be source.
        return Response(html, status=code, mimetype="text/html")

    bp.context_processor(insight.context)
    views.register(bp, settings)
    actions.register(bp, settings)
    stalled.register(bp, settings)
    handoffs.register(bp, settings)
    bulk_run_views.register(bp, settings)
    remap.register(bp, settings)
    return bp
