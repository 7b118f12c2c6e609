"""Mermaid ``stateDiagram-v2`` text of a flow type, from the same :class:`FlowGraph`."""

from __future__ import annotations

import re
from typing import Final

from ..graph import FlowGraph

_SAFE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
# Words mermaid's state-diagram grammar reads as keywords (compared case-insensitively).
_RESERVED: Final = frozenset(
    {"state", "note", "end", "direction", "class", "classdef", "click", "style", "as",
     "left", "right", "of", "over", "fork", "join", "choice", "concurrent", "default",
     "statediagram", "statediagram-v2", "hide", "accdescr", "acctitle", "tb", "bt", "lr", "rl"}
)  # fmt: skip
# Characters written as mermaid entity codes (#NN;) in labels.
_SPECIAL = re.compile(r'["#;:<>&{}|\\`]')

CLASS_DEFS: Final = (
    ("error", "fill:#fdecea,stroke:#c62828,color:#b71c1c"),
    ("final", "stroke-width:3px"),
    ("dead_end", "stroke:#ef6c00,stroke-dasharray:5 3"),
)


def _label(text: str) -> str:
    text = " ".join(text.split())
    return _SPECIAL.sub(lambda m: f"#{ord(m.group())};", text)


def mermaid_ids(graph: FlowGraph) -> dict[str, str]:
    """Map each state to a mermaid id: its name when mermaid accepts it, else ``state_<n>``."""
    names = graph.state_names
    taken = {n for n in names if _SAFE_ID.match(n) and n.lower() not in _RESERVED}
    ids: dict[str, str] = {}
    for i, name in enumerate(names):
        if name in taken:
            ids[name] = name
            continue
        candidate = f"state_{i}"
        while candidate in taken:
            candidate += "_"
        taken.add(candidate)
        ids[name] = candidate
    return ids


def to_mermaid(graph: FlowGraph) -> str:
    """Return ``graph`` as a deterministic mermaid ``stateDiagram-v2`` (ends with a newline).

    Guards appear as ``[guard]`` and persisted artefacts as ``⤓ name`` after the transition
    name; error, final and dead-end states get the classes in :data:`CLASS_DEFS`.
    """
    ids = mermaid_ids(graph)
    lines = ["stateDiagram-v2"]
    for spec in graph.states:
        if ids[spec.name] != spec.name:
            lines.append(f'    state "{_label(spec.name)}" as {ids[spec.name]}')
    lines.append(f"    [*] --> {ids[graph.initial]}")
    for t in graph.transitions:
        text = t.name + (f" [{t.guard}]" if t.guard else "")
        text += f" ⤓ {t.persists}" if t.persists else ""
        text += " (retry)" if t.retry else ""
        for src in t.sources:
            target = ids.get(t.target, t.target)
            lines.append(f"    {ids.get(src, src)} --> {target}: {_label(text)}")
    lines += [f"    {ids[name]} --> [*]" for name in graph.final_states]
    members = {
        "error": graph.error_states,
        "final": graph.final_states,
        "dead_end": graph.dead_ends(),
    }
    for css_class, style in CLASS_DEFS:
        if members[css_class]:
            lines.append(f"    classDef {css_class} {style}")
            lines.append(f"    class {','.join(ids[n] for n in members[css_class])} {css_class}")
    return "\n".join(lines) + "\n"
