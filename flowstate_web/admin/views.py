"""The admin's read-only pages: overview, flow type, flow instance, artefact, diagrams."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from flask import Blueprint, abort, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session
from werkzeug.exceptions import NotFound
from werkzeug.utils import secure_filename
from werkzeug.wrappers import Response

from ..diagrams import DiagramView, build_dot, diagram_view, render, to_mermaid
from ..errors import FlowNotFoundError
from ..records import ArtefactEntry
from ..registry import find_flow_type
from . import filters, heat, present, queries, security, stored
from .settings import Settings

if TYPE_CHECKING:
    from ..flow import Flow

DIAGRAM_FORMATS: Final[dict[str, tuple[str, str]]] = {
    "svg": ("image/svg+xml", "svg"),
    "png": ("image/png", "png"),
    # werkzeug adds "; charset=utf-8" to text/* mimetypes itself.
    "dot": ("text/vnd.graphviz", "dot"),
    "mermaid": ("text/plain", "mmd"),
}


#: An artefact id in a URL: a 64-bit integer at most, so a larger one is a 404, not an
#: overflow in the database driver.
ARTEFACT_ID: Final = "<int(max=9223372036854775807):artefact_id>"


def is_htmx() -> bool:
    """Return whether htmx made this request (it then gets a fragment, not a page)."""
    return request.headers.get("HX-Request") == "true"


def session() -> Session:
    """Return the host's database session (the one flows use)."""
    db = security.hooks().db
    if db is None:  # pragma: no cover - init_app refuses to run without one
        raise RuntimeError("FlowState has no db")
    return db.session()


def flow_type_or_404(type_name: str) -> type[Flow]:
    """Return the flow class called ``type_name`` or abort with 404."""
    cls = find_flow_type(type_name)
    if cls is None:
        raise NotFound(f"No flow type {type_name!r} is defined in this application.")
    return cls


def load_flow(cls: type[Flow], raw_id: str) -> Flow:
    """Return flow ``raw_id`` of ``cls`` or abort with 404."""
    flow_id = filters.parse_flow_id(raw_id)
    if flow_id is None:
        raise NotFound(f"{raw_id[:40]!r} is not a flow id.")
    flow = stored.load_flow(session(), cls, flow_id)  # JSON read defensively
    if flow is None:
        raise NotFound(f"{FlowNotFoundError(cls.type_name, flow_id)}.")
    return flow


def type_counts(type_name: str) -> tuple[dict[str, int], dict[str, int], bool]:
    """Return ``({state: flows}, {state: errored flows}, scanned)`` of one type (one query)."""
    found = queries.state_counts(session(), type_name)
    return (
        {c.state: c.total for c in found.cells},
        {c.state: c.errored for c in found.cells},
        found.scanned,
    )


def matching_count(
    type_name: str,
    f: filters.ListFilter,
    page: queries.Page,
    counts: Mapping[str, int],
    errored: Mapping[str, int],
    floor: int | None,
) -> queries.Matching | None:
    """Return how many flows match an active filter (``None`` when nothing filters).

    A first page with no older page holds every match: count its rows instead of asking
    the database again (a search on SQLite would read its rows a second time).
    """
    if not f.active:
        return None
    if f.before is None and f.after is None and page.older is None:
        return queries.Matching(len(page.rows))
    return queries.matching(session(), type_name, f, counts, errored, floor)


def register(bp: Blueprint, settings: Settings) -> None:
    """Add the read-only routes to ``bp``."""

    def type_diagram_view(
        cls: type[Flow], counts: Mapping[str, int], errored: Mapping[str, int], live: bool
    ) -> DiagramView:
        name = cls.type_name
        view = diagram_view(
            cls.graph(),
            state_url=lambda state: url_for(".flow_type", type_name=name, state=state),
            counts=counts,
            errored=errored,
            download_urls={
                fmt: url_for(".diagram_download", type_name=name, fmt=fmt)
                for fmt in DIAGRAM_FORMATS
            },
            dom_id="flowstate-type-diagram",
            poll_url=url_for(".type_diagram", type_name=name)
            if live and settings.poll_seconds
            else None,
            timeout=settings.dot_timeout,
            executable=settings.dot_path,
        )
        return dataclasses.replace(view, poll_seconds=settings.poll_seconds or 5)

    @bp.get("/")
    def overview() -> ResponseReturnValue:
        sess = session()
        counts = queries.state_counts(sess)
        oldest = queries.oldest_errored(sess, counts.errored_types())
        stalled = queries.stalled_counts(sess, counts.cells)
        summaries = present.summarize(counts.cells, oldest, stalled)
        live = filters.live_flag(request.args)
        template = "flowstate/_overview_table.html" if is_htmx() else "flowstate/overview.html"
        return render_template(template, summaries=summaries, live=live, scanned=counts.scanned)

    @bp.get("/types/<type_name>")
    def flow_type(type_name: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        f = filters.parse(request.args, cls)
        counts, errored, scanned = type_counts(type_name)
        stalled = queries.stalled_by_state(session(), type_name, counts, errored)
        floor = queries.search_floor(session(), type_name, f)
        if f.stalled:
            page = queries.stalled_page(session(), type_name, f, settings.page_size)
        else:
            page = queries.list_page(session(), type_name, f, settings.page_size, floor)
        context: dict[str, Any] = {
            "cls": cls,
            "graph": cls.graph(),
            "f": f,
            "page": page,
            "flows": [stored.to_flow(cls, row) for row in page.rows],
            "counts": counts,
            "errored_counts": errored,
            "stalled_counts": stalled,
            "matching": (
                queries.stalled_matching(f, stalled)
                or matching_count(type_name, f, page, counts, errored, floor)
            ),
            "scanned": scanned,
            "artefact_counts": queries.artefact_counts(session(), [r.id for r in page.rows]),
            "back": request.full_path,
        }
        if is_htmx():
            return render_template("flowstate/_flow_list.html", **context)
        diagram = type_diagram_view(cls, counts, errored, f.live)
        heat_map = None
        if heat.enabled():
            window = heat.window_name(request.args)
            heat_map = heat.build(session(), cls, counts, errored, stalled, window)
            diagram = heat.apply(diagram, heat_map, type_name)
        return render_template(
            "flowstate/flow_type.html", diagram=diagram, heat=heat_map, **context
        )

    @bp.get("/types/<type_name>/diagram")
    def type_diagram(type_name: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        counts, errored, _ = type_counts(type_name)
        diagram = type_diagram_view(cls, counts, errored, filters.live_flag(request.args))
        if heat.enabled():
            stalled = queries.stalled_by_state(session(), type_name, counts, errored)
            heat_map = heat.build(
                session(), cls, counts, errored, stalled, heat.window_name(request.args)
            )
            diagram = heat.apply(diagram, heat_map, type_name)
        return render_template("flowstate/_diagram.html", diagram=diagram)

    @bp.get("/types/<type_name>/diagram.<fmt>")
    def diagram_download(type_name: str, fmt: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        if fmt not in DIAGRAM_FORMATS:
            raise NotFound(f"No diagram format {fmt[:20]!r} (use {', '.join(DIAGRAM_FORMATS)}).")
        mimetype, ext = DIAGRAM_FORMATS[fmt]
        graph = cls.graph()
        body: str | bytes
        if fmt == "mermaid":
            body = to_mermaid(graph)
        elif fmt == "dot":
            body = build_dot(graph, reserve_count_line=False)
        else:
            out = render(
                build_dot(graph, reserve_count_line=False),
                fmt,
                timeout=settings.dot_timeout,
                executable=settings.dot_path,
            )
            if out.data is None:
                return Response(out.error or "dot failed", 503, mimetype="text/plain")
            body = out.data
        response = Response(body, mimetype=mimetype)
        filename = secure_filename(f"{type_name}.{ext}") or f"diagram.{ext}"
        response.headers.set("Content-Disposition", "attachment", filename=filename)
        return response

    @bp.get("/types/<type_name>/<flow_id>")
    def flow_detail(type_name: str, flow_id: str) -> ResponseReturnValue:
        cls = flow_type_or_404(type_name)
        flow = load_flow(cls, flow_id)
        # Nothing happened since (same seq, and it did not stall meanwhile): keep the page.
        same = request.args.get("seq") == str(flow.seq)
        if is_htmx() and same and (request.args.get("stalled") == "1") == flow.stalled:
            return Response(status=204)
        context = panel_context(flow, settings, live=filters.live_flag(request.args))
        if is_htmx():
            return render_template("flowstate/_flow_panel.html", **context)
        return render_template("flowstate/flow_detail.html", **context)

    @bp.get(f"/types/<type_name>/<flow_id>/artefacts/{ARTEFACT_ID}")
    def artefact(type_name: str, flow_id: str, artefact_id: int) -> ResponseReturnValue:
        flow = load_flow(flow_type_or_404(type_name), flow_id)
        entry, raw = find_artefact(flow, artefact_id)
        return render_template(
            "flowstate/artefact.html", flow=flow, artefact=entry, **present.artefact_page(raw)
        )

    @bp.get(f"/types/<type_name>/<flow_id>/artefacts/{ARTEFACT_ID}.json")
    def artefact_json(type_name: str, flow_id: str, artefact_id: int) -> ResponseReturnValue:
        flow = load_flow(flow_type_or_404(type_name), flow_id)
        entry, raw = find_artefact(flow, artefact_id)
        # The stored text as is, in chunks: a 10 MB payload is never formatted or copied.
        response = Response(present.chunks(raw or "null"), mimetype="application/json")
        name = f"{flow.type_name}-{flow.id}-{entry.name}-{entry.id}.json"
        filename = secure_filename(name) or f"artefact-{entry.id}.json"
        response.headers.set("Content-Disposition", "attachment", filename=filename)
        return response


def find_artefact(flow: Flow, artefact_id: int) -> tuple[ArtefactEntry, str | None]:
    """Return artefact ``artefact_id`` of ``flow`` (payload ``None``) and its stored text.

    :raises NotFound: ``flow`` has no such artefact.
    """
    found = stored.artefact(session(), flow.id, artefact_id)
    if found is None:
        abort(404, f"{flow.type_name} #{flow.id} has no artefact #{artefact_id}.")
    return found


def panel_context(
    flow: Flow,
    settings: Settings,
    *,
    live: bool,
    message: str | None = None,
    level: str = "info",
) -> dict[str, Any]:
    """Return what ``_flow_panel.html`` needs for ``flow`` (three queries, any history size)."""
    history = stored.history(session(), flow.id)
    graph = flow.graph()
    diagram = diagram_view(
        graph,
        state_url=lambda state: url_for(".flow_type", type_name=flow.type_name, state=state),
        current=flow.state,
        traversed=present.traversed(history),
        dom_id="flowstate-flow-diagram",
        timeout=settings.dot_timeout,
        executable=settings.dot_path,
    )
    failure = next(
        (h for h in reversed(history) if h.to_state == flow.state and h.error_type), None
    )
    return {
        "flow": flow,
        "graph": graph,
        "steps": present.timeline(history, stored.artefact_previews(session(), flow.id)),
        "failure": failure,
        "stall": present.stall(flow, history),
        "blocked": present.retry_blockers(flow),
        "diagram": diagram,
        "live": live,
        "message": message,
        "level": level,
        "back": url_for(".flow_detail", type_name=flow.type_name, flow_id=flow.id),
    }
