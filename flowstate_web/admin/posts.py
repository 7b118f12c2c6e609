"""What the admin's POST actions share: the reason field, the flow acted on, the responses.

One flow (retry, fail it): :func:`widget_field`, then :func:`flow_post` (reason, actor, the
flow, a safe way back), then :func:`widget_response` (a flash and a redirect, or the same
widget again for htmx). Bulk (retry, fail, re-dispatch): :func:`progress_page` renders
``_bulk_progress.html`` with a :class:`ProgressText` saying what differs. The CSRF check and
the read-only switch are the blueprint's guard (:mod:`.security`), before any of this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response

from .._values import text_problem
from . import filters, queries, security
from .bulk import Progress
from .filters import ListFilter
from .settings import Settings
from .views import is_htmx, load_flow, panel_context, session

if TYPE_CHECKING:
    from ..flow import Flow

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


# -- one flow ----------------------------------------------------------------------------------


def widget_field() -> str:
    """Return which widget an htmx answer re-renders (``panel`` or ``row``).

    :raises BadRequest: another value.
    """
    widget = request.form.get("widget", "panel")
    if widget not in WIDGETS:
        raise BadRequest(f"widget: expected one of {', '.join(WIDGETS)}")
    return widget


@dataclass(frozen=True, slots=True)
class FlowPost:
    """An action on one flow: the flow, who acts and why, and where to go back to."""

    flow: Flow
    actor: str
    reason: str | None
    back: str


def flow_post(cls: type[Flow], type_name: str, flow_id: str, settings: Settings) -> FlowPost:
    """Read an action on flow ``flow_id`` of ``cls``: reason, actor, the flow, ``back``.

    :raises BadRequest: a bad reason (see :func:`reason_field`).
    :raises NotFound: no such flow.
    """
    reason = reason_field(settings.require_reason)
    actor = security.actor(settings)
    flow = load_flow(cls, flow_id)
    detail = url_for(".flow_detail", type_name=type_name, flow_id=flow.id)
    return FlowPost(flow, actor, reason, safe_back(request.form.get("back"), detail))


def widget_response(
    post: FlowPost,
    settings: Settings,
    widget: str,
    *,
    message: str,
    level: str,
    status: int,
) -> ResponseReturnValue:
    """Answer an action on one flow: flash and redirect, or (htmx) the widget re-rendered."""
    if not is_htmx():
        flash(message, level)
        return redirect(post.back, 303)
    flow = load_flow(type(post.flow), str(post.flow.id))
    if widget == "row":
        html = render_template(
            "flowstate/_flow_row.html", **row_context(flow, post.back, message, level)
        )
    else:
        context = panel_context(
            flow, settings, live=filters.live_flag(request.args), message=message, level=level
        )
        html = render_template("flowstate/_flow_panel.html", **context)
    return Response(html, status=status, mimetype="text/html")


# -- bulk --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgressText:
    """What the progress of one kind of bulk action says; ``_bulk_progress.html`` is shared."""

    #: The page's title and last crumb: ``"Bulk retry"``, ``"bulk retry"``.
    title: str
    crumb: str
    #: The heading, before the type's name: ``"Bulk retry of"``.
    heading: str
    #: The tally's labels: flows done (``"Retried"``), flows whose action raised.
    done: str
    failed: str
    #: Titles of the reason tables of flows whose action raised, or whose callback did.
    failed_title: str
    warned_title: str
    #: The text of the link shown when done.
    back: str


def progress_page(
    text: ProgressText,
    *,
    cls: type[Flow],
    f: ListFilter,
    progress: Progress,
    token: str,
    reason: str | None,
    action: str,
    back: str,
    chosen: Mapping[str, str],
) -> str:
    """Render a bulk action's progress: the partial for htmx, else the whole page.

    ``action`` is where the next batch is posted (htmx posts it by itself); ``back`` where
    the link goes once done; ``chosen`` the per-state transitions sent along again.
    """
    template = "flowstate/_bulk_progress.html" if is_htmx() else "flowstate/bulk_result.html"
    return render_template(
        template,
        text=text,
        cls=cls,
        f=f,
        progress=progress,
        token=token,
        reason=reason or "",
        action=action,
        back=back,
        chosen=chosen,
    )
