"""State diagrams of flow types: DOT and mermaid text, cached SVG rendering, live overlays.

Typical use in a view::

    view = diagram_view(FlowClass.graph(), state_url=..., counts=..., errored=...)
    render_template("...", diagram=view)  # the page includes flowstate/_diagram.html
"""

from __future__ import annotations

from .dot import (
    COUNT_PLACEHOLDER,
    DEFAULT_STYLES,
    build_digraph,
    build_dot,
    dom_token,
    edge_dom_id,
    merge_styles,
    state_dom_id,
)
from .mermaid import mermaid_ids, to_mermaid
from .overlay import overlay_counts, overlay_instance
from .rendering import (
    INSTALL_HINT,
    Rendered,
    RenderedBytes,
    cache_size,
    clear_cache,
    dot_hash,
    render,
    render_svg,
)
from .view import DiagramView, diagram_view

__all__ = [
    "COUNT_PLACEHOLDER",
    "DEFAULT_STYLES",
    "INSTALL_HINT",
    "DiagramView",
    "Rendered",
    "RenderedBytes",
    "build_digraph",
    "build_dot",
    "cache_size",
    "clear_cache",
    "diagram_view",
    "dom_token",
    "dot_hash",
    "edge_dom_id",
    "merge_styles",
    "mermaid_ids",
    "overlay_counts",
    "overlay_instance",
    "render",
    "render_svg",
    "state_dom_id",
    "to_mermaid",
]
