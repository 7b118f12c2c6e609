"""The admin's view of job hand-offs: a flow's outbox rows, overdue counts, and Re-dispatch.

Reads and writes through :mod:`flowstate_web.outbox` only. The flow page includes
``_handoffs.html`` (a self-contained widget); the overview and type pages include
``_handoff_counts.html``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from .. import outbox
from .._executor import now
from ..errors import FlowNotFoundError, FlowStateError
from . import security
from .settings import Settings
from .views import flow_type_or_404, is_htmx, load_flow, session

if TYPE_CHECKING:
    from ..flow import Flow

log = logging.getLogger("flowstate_web.admin")


def handoff_view(flow: Flow) -> dict[str, Any]:
    """Return what ``_handoffs.html`` shows for ``flow`` (three small indexed queries)."""
    entries = outbox.pending_handoffs(flow.id, session())
    delay = float(current_app.config.get("FLOWSTATE_OUTBOX_RELAY_DELAY", 30.0))
    return {
        "entries": entries,
        "waits_for": flow.graph().handoff_into(flow.state),
        "can_redispatch": outbox.can_redispatch(flow, entries),
        "now": now(),
        "delay": delay,
    }


def unsent_counts() -> dict[str, int]:
    """Return overdue unsent hand-offs per flow type (capped; see :func:`outbox.unsent_counts`)."""
    return outbox.unsent_counts(session())


def register(bp: Blueprint, settings: Settings) -> None:
    """Add the hand-off helpers for templates and the Re-dispatch action to ``bp``."""

    @bp.context_processor
    def _handoff_context() -> dict[str, Any]:
        return {
            "fs_handoffs": handoff_view,
            "fs_unsent_counts": unsent_counts,
            "fs_count_cap": outbox.COUNT_CAP,
        }

    @bp.get("/types/<type_name>/<flow_id>/handoffs")
    def handoffs(type_name: str, flow_id: str) -> ResponseReturnValue:
        flow = load_flow(flow_type_or_404(type_name), flow_id)
        return render_template(
            "flowstate/_handoffs.html", flow=flow, live=True, message=None, level=None
        )

    @bp.post("/types/<type_name>/<flow_id>/redispatch")
    def redispatch(type_name: str, flow_id: str) -> ResponseReturnValue:
        from .posts import reason_field

        cls = flow_type_or_404(type_name)
        reason = reason_field(settings.require_reason)
        actor = security.actor(settings)
        flow = load_flow(cls, flow_id)
        status, level = 200, "success"
        try:
            sent = outbox.redispatch(flow, actor=actor, reason=reason)
            jobs = ", ".join(e.job for e in sent)
            message = f"Re-dispatched {jobs} for {flow.type_name} #{flow.id} ({flow.state})."
        except FlowNotFoundError as exc:
            raise NotFound(f"{exc} (deleted meanwhile).") from None
        except FlowStateError as exc:
            status, level, message = 409, "error", f"Not re-dispatched: {exc}"
        if not is_htmx():
            flash(message, level)
            return redirect(url_for(".flow_detail", type_name=type_name, flow_id=flow.id), 303)
        flow = load_flow(cls, str(flow.id))
        html = render_template("flowstate/_handoffs.html", flow=flow, message=message, level=level)
        return Response(html, status=status, mimetype="text/html")
