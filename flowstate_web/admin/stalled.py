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

from flask import Blueprint, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, Forbidden, NotFound

from .. import timeouts
from ..errors import CallbackError, FlowNotFoundError, FlowStateError
from . import bulk, bulk_fail, bulk_redispatch, filters, queries, security
from .posts import (
    ProgressText,
    flow_post,
    progress_page,
    reason_field,
    widget_field,
    widget_response,
)
from .settings import Settings
from .views import flow_type_or_404, session

if TYPE_CHECKING:
    from ..flow import Flow

log = logging.getLogger("flowstate_web.admin")

#: ``meta["admin"]`` of the history rows these actions write.
FAIL_META: Final = "fail_stalled"

#: What the progress of a bulk "fail it" says.
FAIL_TEXT: Final = ProgressText(
    title="Fail stalled flows",
    crumb="fail stalled",
    heading="Failing stalled",
    done="Failed",
    failed="errors",
    failed_title="The transition raised (rolled back)",
    warned_title="Failed, but an after-commit callback failed",
    back="See the errored flows (to retry them)",
)
#: What the progress of a bulk re-dispatch says.
REDISPATCH_TEXT: Final = ProgressText(
    title="Re-dispatch stalled flows",
    crumb="re-dispatch stalled",
    heading="Re-dispatching stalled",
    done="Re-dispatched",
    failed="errors",
    failed_title="Writing the hand-off failed (rolled back)",
    warned_title="Re-dispatched, but an after-commit callback failed",
    back="See the stalled flows",
)


def error_transitions(cls: type[Flow]) -> set[str]:
    """Return the names of ``cls``'s transitions into an error state (that are not retries)."""
    return {t.name for t in cls.graph().transitions if t.target in cls.error_states and not t.retry}


def register(bp: Blueprint, settings: Settings) -> None:
    """Add the "fail it" routes (one flow, bulk) and bulk re-dispatch to ``bp``."""

    @bp.post("/types/<type_name>/<flow_id>/fail")
    def fail_stalled(type_name: str, flow_id: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        widget = widget_field()
        name = request.form.get("transition", "")
        if name not in error_transitions(cls):
            raise BadRequest(
                f"{name[:80]!r} is not a transition of {cls.type_name} into an error state"
            )
        post = flow_post(cls, type_name, flow_id, settings)
        flow = post.flow
        status, level = 200, "success"
        try:
            entry = timeouts.fail_stalled(
                flow, name, actor=post.actor, reason=post.reason, meta={"admin": FAIL_META}
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
        return widget_response(post, settings, widget, message=message, level=level, status=status)

    def stalled_confirm(type_name: str, template: str, salt: str, **per_state: Any) -> str:
        """Render a bulk action's confirm page over the stalled flows matching the filter.

        ``per_state``: ``{name: f(cls, state)}``, each rendered as ``{name: {state: value}}``.
        """
        cls = flow_type_or_404(type_name)
        if settings.read_only:
            raise Forbidden("The flows admin is read-only (FLOWSTATE_READ_ONLY).")
        f = filters.parse(request.args, cls).for_bulk_fail()
        counts, errored = _type_counts(type_name)
        by_state = queries.stalled_by_state(session(), type_name, counts, errored)
        if f.states:
            by_state = {s: m for s, m in by_state.items() if s in f.states}
        return render_template(
            template,
            start_token=bulk.start_token(salt),
            cls=cls,
            graph=cls.graph(),
            f=f,
            by_state=by_state,
            **{name: {s: fn(cls, s) for s in by_state} for name, fn in per_state.items()},
            initial=cls.graph().initial,
            total=sum(m.n for m in by_state.values()),
            capped=any(m.capped for m in by_state.values()),
            # Search and dates narrow the list further than the per-state counts show.
            matching=None
            if queries.counted_by_state(dataclasses.replace(f, stalled=None))
            else queries.matching(session(), type_name, f, counts, errored),
        )

    @bp.get("/types/<type_name>/bulk-fail")
    def bulk_fail_confirm(type_name: str) -> ResponseReturnValue:
        return stalled_confirm(
            type_name,
            "flowstate/bulk_fail_confirm.html",
            bulk_fail.SALT,
            options=timeouts.fail_transitions,
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
        return progress_page(
            FAIL_TEXT,
            cls=cls,
            f=f,
            progress=progress,
            token=bulk.dump(progress, salt=bulk_fail.SALT),
            reason=reason,
            action=url_for(".bulk_fail_run", type_name=cls.type_name),
            back=url_for(".flow_type", type_name=cls.type_name, errored="1"),
            chosen=chosen,
        )

    @bp.get("/types/<type_name>/bulk-redispatch")
    def bulk_redispatch_confirm(type_name: str) -> ResponseReturnValue:
        return stalled_confirm(
            type_name,
            "flowstate/bulk_redispatch_confirm.html",
            bulk_redispatch.SALT,
            jobs=bulk_redispatch.handoffs,
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
        return progress_page(
            REDISPATCH_TEXT,
            cls=cls,
            f=f,
            progress=progress,
            token=bulk.dump(progress, salt=bulk_redispatch.SALT),
            reason=reason,
            action=url_for(".bulk_redispatch_run", type_name=cls.type_name),
            back=url_for(".flow_type", type_name=cls.type_name, stalled="1"),
            chosen={},
        )


def _type_counts(type_name: str) -> tuple[dict[str, int], dict[str, int]]:
    found = queries.state_counts(session(), type_name)
    return {c.state: c.total for c in found.cells}, {c.state: c.errored for c in found.cells}
