"""What the admin's templates get: :class:`DiagramView`, built by :func:`diagram_view`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from markupsafe import Markup

from ..graph import FlowGraph
from .dot import build_dot
from .overlay import overlay_counts, overlay_instance
from .rendering import DEFAULT_EXECUTABLE, DEFAULT_TIMEOUT, render_svg


@dataclass(frozen=True, slots=True)
class DiagramView:
    """Input of ``templates/flowstate/_diagram.html``.

    :param svg: the inline SVG, or ``None`` when rendering failed.
    :param error: why there is no SVG (e.g. how to install Graphviz).
    :param dot_source: shown (escaped) when there is no SVG.
    :param download_urls: ``{"svg": url, "png": url, ...}`` for download links.
    :param dom_id: the widget's stable element id.
    :param poll_url: when set, the widget re-fetches itself from here (htmx polling).
    """

    svg: Markup | None
    error: str | None
    dot_source: str
    download_urls: dict[str, str] = field(default_factory=dict)
    dom_id: str = "flowstate-diagram"
    poll_url: str | None = None
    poll_seconds: int = 5


def diagram_view(
    graph: FlowGraph,
    *,
    state_url: Callable[[str], str] | None = None,
    counts: Mapping[str, int] | None = None,
    errored: Mapping[str, int] | None = None,
    current: str | None = None,
    traversed: Mapping[tuple[str, str, str], int] | None = None,
    download_urls: Mapping[str, str] | None = None,
    dom_id: str = "flowstate-diagram",
    poll_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    executable: str | os.PathLike[str] = DEFAULT_EXECUTABLE,
) -> DiagramView:
    """Build, render (cached) and overlay ``graph``'s diagram for a page.

    Type page: pass ``counts`` / ``errored``. Instance page: pass ``current`` and
    ``traversed``. Only the first view of a given graph spawns ``dot``; later views only
    rebuild the DOT text, hit the cache and rewrite the SVG.
    """
    dot_source = build_dot(graph, state_url=state_url)
    rendered = render_svg(dot_source, timeout=timeout, executable=executable)
    svg = rendered.svg
    if svg is not None and (counts or errored):
        svg = overlay_counts(svg, counts or {}, errored or {})
    if svg is not None and (current is not None or traversed):
        svg = overlay_instance(svg, current=current, traversed=traversed or {})
    return DiagramView(
        # dot escapes every label and we escape URLs; overlays write through ElementTree.
        svg=Markup(svg) if svg is not None else None,  # noqa: S704
        error=rendered.error,
        dot_source=dot_source,
        download_urls=dict(download_urls or {}),
        dom_id=dom_id,
        poll_url=poll_url,
    )
