"""What the admin's pages add from the declared graph and the history, without new queries.

- the type page lists the graph's lint messages (:func:`flowstate_web.lint.lint`);
- the flow page shows, next to each artefact version a retried step wrote, what changed
  since the previous version (:func:`flowstate_web.jsondiff.diff`), computed from the
  artefacts the page has already loaded.

Templates reach these through the ``fs_lint`` and ``fs_artefact_diff`` globals that
:func:`context` provides (registered as a context processor of the blueprint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from flask import g

from ..graph import FlowGraph
from ..jsondiff import JsonDiff, diff
from ..lint import LintMessage, lint
from ..records import ArtefactEntry, HistoryEntry
from .present import Step
from .stored import Decoded, StoredText, Unreadable

#: At most this many changes of one artefact version are shown.
MAX_CHANGES: Final = 100
#: Values in the diff table are cut at this many characters.
VALUE_CHARS: Final = 160


@dataclass(frozen=True, slots=True)
class VersionDiff:
    """What changed in an artefact since its previous version, and who wrote that one."""

    version: int
    previous: ArtefactEntry
    previous_step: HistoryEntry | None
    diff: JsonDiff


def lint_messages(graph: FlowGraph) -> list[LintMessage]:
    """Return the lint messages of ``graph`` (errors first)."""
    return lint(graph)


def _index(steps: Sequence[Step]) -> dict[int, tuple[int, ArtefactEntry | None, int | None]]:
    """Return ``{artefact id: (version, previous version, step index of it)}``, once per page."""
    cached = getattr(g, "_flowstate_artefact_index", None)
    if cached is not None and cached[0] is steps:
        return cached[1]  # type: ignore[no-any-return]
    found = sorted(
        ((a, i) for i, step in enumerate(steps) for a in step.artefacts), key=lambda p: p[0].id
    )
    last: dict[str, tuple[int, ArtefactEntry, int]] = {}
    index: dict[int, tuple[int, ArtefactEntry | None, int | None]] = {}
    for artefact, i in found:
        before = last.get(artefact.name)
        version = 1 if before is None else before[0] + 1
        index[artefact.id] = (
            version,
            None if before is None else before[1],
            None if before is None else before[2],
        )
        last[artefact.name] = (version, artefact, i)
    g._flowstate_artefact_index = (steps, index)
    return index


_UNREADABLE: Final = object()


def _comparable(payload: Any) -> Any:
    """Return the value of a payload as the flow page read it (see :mod:`.stored`)."""
    if isinstance(payload, Decoded):
        return payload.value
    if isinstance(payload, StoredText | Unreadable):
        return _UNREADABLE
    return payload


def artefact_diff(steps: Sequence[Step], artefact: ArtefactEntry) -> VersionDiff | None:
    """Return the change of ``artefact`` since the previous version of the same name.

    ``None`` for a first version. ``steps`` is the flow page's timeline (its artefacts are
    all the flow's versions), so no statement runs.
    """
    version, previous, at = _index(steps).get(artefact.id, (1, None, None))
    if previous is None:
        return None
    old, new = _comparable(previous.payload), _comparable(artefact.payload)
    if old is _UNREADABLE or new is _UNREADABLE:
        return None  # too large to preview, or not readable: the version links still work
    return VersionDiff(
        version=version,
        previous=previous,
        previous_step=None if at is None else steps[at].entry,
        diff=diff(old, new, max_changes=MAX_CHANGES, value_chars=VALUE_CHARS),
    )


def context() -> dict[str, Any]:
    """Return the template globals of this module (a blueprint context processor)."""
    return {"fs_lint": lint_messages, "fs_artefact_diff": artefact_diff}
