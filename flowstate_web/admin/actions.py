"""The admin's only writes: retry one flow, and bulk-retry the errored flows of a filter.

Both run declared retry transitions through the engine (never anything else), POST only,
behind the CSRF check and the read-only switch of :func:`create_blueprint`'s guard.
"""

from __future__ import annotations

import logging
from typing import Final

from flask import Blueprint, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, Forbidden, NotFound

from ..errors import (
    CallbackError,
    FlowNotFoundError,
    FlowStateError,
    GuardFailedError,
    InvalidTransitionError,
)
from . import bulk, filters, queries, security
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

log = logging.getLogger("flowstate_web.admin")

#: What the progress of a bulk retry says.
RETRY_TEXT: Final = ProgressText(
    title="Bulk retry",
    crumb="bulk retry",
    heading="Bulk retry of",
    done="Retried",
    failed="failed",
    failed_title="Failed",
    warned_title="Retried, but an after-commit callback failed",
    back="Back to the errored flows",
)


def register(bp: Blueprint, settings: Settings) -> None:
    """Add the POST routes (and the bulk confirm page) to ``bp``."""

    @bp.post("/types/<type_name>/<flow_id>/retry")
    def retry(type_name: str, flow_id: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        widget = widget_field()
        name = request.form.get("transition", "")
        spec = cls.graph().transition(name)
        if spec is None or not spec.retry:
            raise BadRequest(f"{name[:80]!r} is not a retry transition of {cls.type_name}")
        post = flow_post(cls, type_name, flow_id, settings)
        flow = post.flow
        status, level = 200, "success"
        try:
            entry = flow.run(name, actor=post.actor, reason=post.reason, meta={"admin": "retry"})
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
        return widget_response(post, settings, widget, message=message, level=level, status=status)

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
            start_token=bulk.start_token(),
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
        return progress_page(
            RETRY_TEXT,
            cls=cls,
            f=f,
            progress=progress,
            token=bulk.dump(progress),
            reason=reason,
            action=url_for(".bulk_retry", type_name=cls.type_name),
            back=url_for(".flow_type", type_name=cls.type_name, **f.query()),
            chosen=chosen,
        )
