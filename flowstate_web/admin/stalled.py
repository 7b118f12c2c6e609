"""Stalled flows: "fail it" on one flow, and on every stalled flow of a filter (bulk).

Both run a declared transition from the flow's state into an error state through
:func:`flowstate_web.timeouts.fail_stalled` (row lock, stall re-checked on the fresh row,
then the normal transition path), audited like a retry: actor, reason and
``meta={"admin": ...}`` in the history. POST only, behind the CSRF check and the read-only
switch of :func:`create_blueprint`'s guard; the usual Retry then applies.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Final

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, Forbidden, NotFound
from werkzeug.wrappers import Response

from .. import timeouts
from ..errors import CallbackError, FlowNotFoundError, FlowStateError
from . import bulk, bulk_fail, bulk_redispatch, filters, queries, security
from .actions import WIDGETS, reason_field, row_context, safe_back
from .settings import Settings
from .views import flow_type_or_404, is_htmx, load_flow, panel_context, session

if TYPE_CHECKING:
    from ..flow import Flow

log = logging.getLogger("flowstate_web.admin")

#: ``meta["admin"]`` of the history rows these actions write.
FAIL_META: Final = "fail_stalled"


def error_transitions(cls: type[Flow]) -> set[str]:
    """Return the names of ``cls``'s transitions into an error state (that are not retries)."""
    return {t.name for t in cls.graph().transitions if t.target in cls.error_states and not t.retry}


def register(bp: Blueprint, settings: Settings) -> None:
    """Add the "fail it" routes (one flow, bulk) and bulk re-dispatch to ``bp``."""

    @bp.post("/types/<type_name>/<flow_id>/fail")
    def fail_stalled(type_name: str, flow_id: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        widget = request.form.get("widget", "panel")
        if widget not in WIDGETS:
            raise BadRequest(f"widget: expected one of {', '.join(WIDGETS)}")
        name = request.form.get("transition", "")
        if name not in error_transitions(cls):
            raise BadRequest(
                f"{name[:80]!r} is not a transition of {cls.type_name} into an error state"
            )
        reason = reason_field(settings.require_reason)
        actor = security.actor(settings)
        flow = load_flow(cls, flow_id)
        detail = url_for(".flow_detail", type_name=type_name, flow_id=flow.id)
        back = safe_back(request.form.get("back"), detail)
        status, level = 200, "success"
        try:
            entry = timeouts.fail_stalled(
                flow, name, actor=actor, reason=reason, meta={"admin": FAIL_META}
            )
            message = f"Failed with {name}: {entry.from_state} → {entry.to_state}."
        except FlowNotFoundError as exc:
            raise NotFound(f"{exc} (deleted meanwhile).") from None
        except CallbackError as exc:
            level, message = "warning", f"Failed with {name}, but {exc}"
        except FlowStateError as exc:  # not stalled any more, state changed, guard refused
            status, level, message = 409, "error", f"Not failed: {exc}."
        except Exception as exc:
            log.exception("flowstate admin: fail %s of %s #%s raised", name, type_name, flow.id)
            status, level = 500, "error"
            message = f"Not failed: {name} raised {type(exc).__name__}: {exc}"
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
                flow, settings, live=filters.live_flag(request.args), message=message, level=level
            )
            html = render_template("flowstate/_flow_panel.html", **context)
        return Response(html, status=status)

    @bp.get("/types/<type_name>/bulk-fail")
    def bulk_fail_confirm(type_name: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        if settings.read_only:
            raise Forbidden("The flows admin is read-only (FLOWSTATE_READ_ONLY).")
        f = filters.parse(request.args, cls).for_bulk_fail()
        counts, errored = _type_counts(type_name)
        by_state = queries.stalled_by_state(session(), type_name, counts, errored)
        if f.states:
            by_state = {s: m for s, m in by_state.items() if s in f.states}
        return render_template(
            "flowstate/bulk_fail_confirm.html",
            cls=cls,
            graph=cls.graph(),
            f=f,
            by_state=by_state,
            options={s: timeouts.fail_transitions(cls, s) for s in by_state},
            total=sum(m.n for m in by_state.values()),
            capped=any(m.capped for m in by_state.values()),
            # Search and dates narrow the list further than the per-state counts show.
            matching=None
            if queries.counted_by_state(dataclasses.replace(f, stalled=None))
            else queries.matching(session(), type_name, f, counts, errored),
        )

    @bp.post("/types/<type_name>/bulk-fail")
    def bulk_fail_run(type_name: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        f = filters.parse(request.form, cls).for_bulk_fail()
        progress = bulk.load(request.form.get("progress"), salt=bulk_fail.SALT)
        chosen = bulk_fail.choose(cls, request.form)
        reason = reason_field(settings.require_reason)
        actor = security.actor(settings)
        progress = bulk_fail.run(
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
            "token": bulk.dump(progress, salt=bulk_fail.SALT),
            "chosen": chosen,
            "reason": reason or "",
        }
        template = (
            "flowstate/_bulk_fail_progress.html" if is_htmx() else "flowstate/bulk_fail_result.html"
        )
        return render_template(template, **context)

    @bp.get("/types/<type_name>/bulk-redispatch")
    def bulk_redispatch_confirm(type_name: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        if settings.read_only:
            raise Forbidden("The flows admin is read-only (FLOWSTATE_READ_ONLY).")
        f = filters.parse(request.args, cls).for_bulk_fail()
        counts, errored = _type_counts(type_name)
        by_state = queries.stalled_by_state(session(), type_name, counts, errored)
        if f.states:
            by_state = {s: m for s, m in by_state.items() if s in f.states}
        return render_template(
            "flowstate/bulk_redispatch_confirm.html",
            cls=cls,
            graph=cls.graph(),
            f=f,
            by_state=by_state,
            jobs={s: bulk_redispatch.handoffs(cls, s) for s in by_state},
            initial=cls.graph().initial,
            total=sum(m.n for m in by_state.values()),
            capped=any(m.capped for m in by_state.values()),
            matching=None
            if queries.counted_by_state(dataclasses.replace(f, stalled=None))
            else queries.matching(session(), type_name, f, counts, errored),
        )

    @bp.post("/types/<type_name>/bulk-redispatch")
    def bulk_redispatch_run(type_name: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        f = filters.parse(request.form, cls).for_bulk_fail()
        progress = bulk.load(request.form.get("progress"), salt=bulk_redispatch.SALT)
        reason = reason_field(settings.require_reason)
        actor = security.actor(settings)
        progress = bulk_redispatch.run(
            session(),
            cls,
            f,
            progress,
            actor=actor,
            reason=reason,
            batch_size=settings.bulk_batch_size,
            seconds=settings.bulk_request_seconds,
        )
        context: dict[str, Any] = {
            "cls": cls,
            "f": f,
            "progress": progress,
            "token": bulk.dump(progress, salt=bulk_redispatch.SALT),
            "reason": reason or "",
        }
        template = (
            "flowstate/_bulk_redispatch_progress.html"
            if is_htmx()
            else "flowstate/bulk_redispatch_result.html"
        )
        return render_template(template, **context)


def _type_counts(type_name: str) -> tuple[dict[str, int], dict[str, int]]:
    found = queries.state_counts(session(), type_name)
    return {c.state: c.total for c in found.cells}, {c.state: c.errored for c in found.cells}
