"""Remap orphaned states from the admin: a preview page, then batches (POST, CSRF).

The overview lists the orphans (rows in a state the class no longer declares) from the
per-state counters; this page counts the flows a remap would move, and its POST moves them
through :mod:`flowstate_web.remap` batch by batch until ``FLOWSTATE_BULK_REQUEST_SECONDS``
pass, then the progress partial posts itself again (htmx; a button without JavaScript).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, Forbidden, NotFound

from .. import remap
from ..registry import find_flow_type
from . import filters, security
from .posts import reason_field
from .settings import Settings
from .views import is_htmx, session


def _plan(args: Any, *, target: bool) -> remap.Remap:
    filters.refuse_nul(args)
    type_name, source = args.get("type", ""), args.get("from", "")
    if not type_name or not source:
        raise BadRequest("remap: type and from are required")
    if find_flow_type(type_name) is None:
        raise NotFound(
            f"No flow type {type_name[:200]!r} is defined in this application: define it (or"
            " give the renamed class this type_name) before remapping its states."
        )
    to = args.get("to", "") if target else None
    if target and not to:
        raise BadRequest("remap: choose the state to move the flows to")
    cls = find_flow_type(type_name)
    assert cls is not None
    try:
        return remap.plan(type_name, source, to if to is not None else cls.initial_state)
    except remap.RemapError as exc:
        raise BadRequest(f"{exc}.") from None


def register(bp: Blueprint, settings: Settings) -> None:
    """Add the remap page and its POST to ``bp``."""

    @bp.get("/remap")
    def remap_confirm() -> ResponseReturnValue:
        if settings.read_only:
            raise Forbidden("The flows admin is read-only (FLOWSTATE_READ_ONLY).")
        plan = _plan(request.args, target=False)
        graph = plan.cls.graph()
        return render_template(
            "flowstate/remap.html",
            plan=plan,
            graph=graph,
            n=remap.count(plan, session()),
        )

    @bp.post("/remap")
    def remap_run() -> ResponseReturnValue:
        plan = _plan(request.form, target=True)
        reason = reason_field(settings.require_reason)
        actor = security.actor(settings)
        try:
            before = max(0, int(request.form.get("moved", "0") or 0))
        except ValueError:
            raise BadRequest("moved: expected a number") from None
        moved, done = remap.run(
            plan,
            actor=actor,
            reason=reason,
            session=session(),
            batch_size=settings.bulk_batch_size,
            seconds=settings.bulk_request_seconds,
        )
        context: dict[str, Any] = {
            "plan": plan,
            "graph": plan.cls.graph(),
            "moved": before + moved,
            "done": done,
            "reason": reason or "",
        }
        template = "flowstate/_remap_progress.html" if is_htmx() else "flowstate/remap_result.html"
        return render_template(template, **context)
