"""Pages of canary bulk runs: start one, watch it (and drive it by polling), stop it, list them.

The run page polls its progress partial: an operator who may write POSTs ``advance`` (one
bounded step, :func:`.bulk_runs.advance`); a read-only viewer GETs the partial. Starting,
advancing and stopping are POST, behind the CSRF check and the read-only switch of
:func:`create_blueprint`'s guard.
"""

from __future__ import annotations

from typing import Any, Final

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.wrappers import Response

from . import bulk, bulk_runs, filters, security
from .posts import reason_field
from .settings import Settings
from .views import flow_type_or_404, is_htmx, session

#: Seconds between two polls of an active run's page (each poll advances one step).
STEP_SECONDS: Final = 1
#: Run ids fit a signed 64-bit column; larger ones are a 404, not a database error.
RUN_ID: Final = "<int(max=9223372036854775807):run_id>"


def number(name: str, default: float, *, integer: bool = False) -> float:
    """Return the form field ``name`` as a number (``default`` when blank).

    :raises BadRequest: not a number, naming the field.
    """
    raw = request.form.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected a number, got {raw[:40]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise BadRequest(f"{name}: expected a finite number")
    return value


def register(bp: Blueprint, settings: Settings) -> None:
    """Add the bulk run routes to ``bp``."""

    def run_or_404(type_name: str, run_id: int) -> bulk_runs.Run:
        try:
            run = bulk_runs.get(session(), run_id)
        except bulk_runs.RunError as exc:
            raise NotFound(f"{exc}.") from None
        if run.type != type_name:
            raise NotFound(f"bulk run #{run_id} is not a run of {type_name}.")
        return run

    def page(run: bulk_runs.Run, status: int = 200) -> ResponseReturnValue:
        cls = flow_type_or_404(run.type)
        context: dict[str, Any] = {
            "cls": cls,
            "run": run,
            "canary": bulk_runs.canary_flows(session(), run),
            "step_seconds": STEP_SECONDS,
        }
        template = "flowstate/_bulk_run.html" if is_htmx() else "flowstate/bulk_run.html"
        return Response(render_template(template, **context), status=status, mimetype="text/html")

    @bp.post("/types/<type_name>/bulk-runs")
    def bulk_run_start(type_name: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        f = filters.parse(request.form, cls).for_bulk()
        chosen = bulk.choose(cls, request.form)
        reason = reason_field(settings.require_reason)
        actor = security.actor(settings)
        try:
            run = bulk_runs.start(
                session(),
                cls,
                f,
                chosen=chosen,
                actor=actor,
                reason=reason,
                canary=int(number("canary", 10, integer=True)),
                wait_seconds=number("wait", 60),
                rate=number("rate", 5),
                threshold=number("threshold", 50) / 100,
            )
        except bulk_runs.RunError as exc:
            raise BadRequest(f"{type_name} bulk run: {exc}") from None
        return redirect(url_for(".bulk_run", type_name=type_name, run_id=run.id), 303)

    @bp.get("/types/<type_name>/bulk-runs")
    def bulk_run_list(type_name: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        runs = bulk_runs.runs_of(session(), type_name)
        return render_template("flowstate/bulk_runs.html", cls=cls, runs=runs)

    @bp.get("/types/<type_name>/bulk-runs/" + RUN_ID)
    def bulk_run(type_name: str, run_id: int) -> ResponseReturnValue:
        return page(run_or_404(type_name, run_id))

    @bp.post("/types/<type_name>/bulk-runs/" + RUN_ID + "/advance")
    def bulk_run_advance(type_name: str, run_id: int) -> ResponseReturnValue:
        run_or_404(type_name, run_id)
        try:
            run = bulk_runs.advance(session(), run_id, batch_size=settings.bulk_batch_size)
        except bulk_runs.RunError as exc:
            raise BadRequest(f"{exc}.") from None
        if not is_htmx():
            return redirect(url_for(".bulk_run", type_name=type_name, run_id=run_id), 303)
        return page(run)

    @bp.post("/types/<type_name>/bulk-runs/" + RUN_ID + "/<any(stop, pause, resume):action>")
    def bulk_run_control(type_name: str, run_id: int, action: str) -> ResponseReturnValue:
        run_or_404(type_name, run_id)
        actor = security.actor(settings)
        try:
            run = bulk_runs.control(session(), run_id, action, actor)
        except bulk_runs.RunError as exc:
            raise BadRequest(f"{exc}.") from None
        if not is_htmx():
            return redirect(url_for(".bulk_run", type_name=type_name, run_id=run_id), 303)
        return page(run)
