"""The admin's only writes: retry one flow, and bulk-retry the errored flows of a filter.

Both run declared retry transitions through the engine (never anything else), POST only,
behind the CSRF check and the read-only switch of :func:`create_blueprint`'s guard.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, Forbidden, NotFound
from werkzeug.wrappers import Response

from .._values import text_problem
from ..errors import (
    CallbackError,
    FlowNotFoundError,
    FlowStateError,
    GuardFailedError,
    InvalidTransitionError,
)
from . import bulk, filters, queries, security
from .settings import Settings
from .views import flow_type_or_404, is_htmx, load_flow, panel_context, session

if TYPE_CHECKING:
    from ..flow import Flow

log = logging.getLogger("flowstate_web.admin")

MAX_REASON: Final = 2000
WIDGETS: Final = ("panel", "row")


def reason_field(required: bool = False) -> str | None:
    """Return the reason of an action (``None`` when blank and not ``required``).

    :raises BadRequest: longer than :data:`MAX_REASON` characters, not storable (NUL), or
        blank when ``required`` (``FLOWSTATE_REQUIRE_REASON``).
    """
    reason = request.form.get("reason", "").strip()
    if len(reason) > MAX_REASON:
        raise BadRequest(f"reason: at most {MAX_REASON} characters")
    problem = text_problem(reason)
    if problem is not None:
        raise BadRequest(f"reason: {problem}; remove it and try again")
    if required and not reason:
        raise BadRequest(
            "reason: required (FLOWSTATE_REQUIRE_REASON is set): say why, it is recorded"
            " in each flow's history"
        )
    return reason or None


def safe_back(raw: str | None, default: str) -> str:
    """Return ``raw`` if it is a path inside this admin, else ``default`` (no open redirect)."""
    if not raw or "\\" in raw:
        return default
    parts = urlsplit(raw)
    root = url_for(".overview")
    if parts.scheme or parts.netloc or not parts.path.startswith(root) or raw.startswith("//"):
        return default
    return raw


def row_context(flow: Flow, back: str, message: str | None, level: str) -> dict[str, Any]:
    """Return what ``_flow_row.html`` needs for ``flow`` (one artefact-count query)."""
    return {
        "flow": flow,
        "graph": flow.graph(),
        "artefact_counts": queries.artefact_counts(session(), [flow.id]),
        "back": back,
        "message": message,
        "level": level,
    }


def register(bp: Blueprint, settings: Settings) -> None:
    """Add the POST routes (and the bulk confirm page) to ``bp``."""

    @bp.post("/types/<type_name>/<flow_id>/retry")
    def retry(type_name: str, flow_id: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        widget = request.form.get("widget", "panel")
        if widget not in WIDGETS:
            raise BadRequest(f"widget: expected one of {', '.join(WIDGETS)}")
        name = request.form.get("transition", "")
        spec = cls.graph().transition(name)
        if spec is None or not spec.retry:
            raise BadRequest(f"{name[:80]!r} is not a retry transition of {cls.type_name}")
        reason = reason_field(settings.require_reason)
        actor = security.actor(settings)
        flow = load_flow(cls, flow_id)
        detail = url_for(".flow_detail", type_name=type_name, flow_id=flow.id)
        back = safe_back(request.form.get("back"), detail)
        status, level = 200, "success"
        try:
            entry = flow.run(name, actor=actor, reason=reason, meta={"admin": "retry"})
            message = f"Retried with {name}: {entry.from_state} → {entry.to_state}."
        except (InvalidTransitionError, GuardFailedError) as exc:
            status, level, message = 409, "error", f"Not retried: {exc}."
        except FlowNotFoundError as exc:
            raise NotFound(f"{exc} (deleted meanwhile).") from None
        except CallbackError as exc:
            level, message = "warning", f"Retried with {name}, but {exc}"
        except FlowStateError as exc:
            status, level, message = 409, "error", f"Not retried: {exc}"
        except Exception as exc:
            log.exception("flowstate admin: retry %s of %s #%s failed", name, type_name, flow.id)
            status, level = 500, "error"
            message = f"Not retried: {name} raised {type(exc).__name__}: {exc}"
        if not is_htmx():
            flash(message, level)
            return redirect(back, 303)
        flow = load_flow(cls, str(flow.id))
        if widget == "row":
            html = render_template(
                "flowstate/_flow_row.html", **row_context(flow, back, message, level)
            )
        else:
            context = panel_context(
                flow,
                settings,
                live=filters.live_flag(request.args),
                message=message,
                level=level,
            )
            html = render_template("flowstate/_flow_panel.html", **context)
        return Response(html, status=status, mimetype="text/html")

    @bp.get("/types/<type_name>/bulk-retry")
    def bulk_retry_confirm(type_name: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        if settings.read_only:
            raise Forbidden("The flows admin is read-only (FLOWSTATE_READ_ONLY).")
        f = filters.parse(request.args, cls).for_bulk()
        by_state = queries.errored_by_state(session(), type_name, f)
        graph = cls.graph()
        total = sum(by_state.values())
        # Guards evaluated on the first DRY_RUN matching flows only, whatever the total.
        dry = bulk.dry_run(session(), cls, f, bulk.choose(cls, request.args)) if total else None
        return render_template(
            "flowstate/bulk_confirm.html",
            cls=cls,
            graph=graph,
            f=f,
            by_state=by_state,
            total=total,
            dry=dry,
        )

    @bp.post("/types/<type_name>/bulk-retry")
    def bulk_retry(type_name: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        f = filters.parse(request.form, cls).for_bulk()
        progress = bulk.load(request.form.get("progress"))
        chosen = bulk.choose(cls, request.form)
        reason = reason_field(settings.require_reason)
        actor = security.actor(settings)
        progress = bulk.run(
            session(),
            cls,
            f,
            progress,
            chosen=chosen,
            actor=actor,
            reason=reason,
            batch_size=settings.bulk_batch_size,
            seconds=settings.bulk_request_seconds,
        )
        context: dict[str, Any] = {
            "cls": cls,
            "f": f,
            "progress": progress,
            "token": bulk.dump(progress),
            "chosen": chosen,
            "reason": reason or "",
        }
        template = "flowstate/_bulk_progress.html" if is_htmx() else "flowstate/bulk_result.html"
        return render_template(template, **context)
