"""Read stored JSON for display without trusting it: rows may predate the engine's boundary.

The engine refuses what it cannot store (:mod:`flowstate_web._values`), but rows written
before that rule, or by raw SQL, may hold JSON that the driver cannot decode (invalid text or
NaN on SQLite, nesting deeper than Python's recursion limit) or decodes into strings that
cannot be encoded (lone surrogates). The admin's pages therefore read JSON columns as text
(``CAST(... AS TEXT)``: the stored text on PostgreSQL's ``json``, a no-op on SQLite) and
decode it here; what cannot be decoded becomes an :class:`Unreadable` marker that the page
shows with an excerpt of the stored text, instead of failing the page.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import ColumnElement, Row, Text, cast, func, select
from sqlalchemy.orm import Session

from .._values import clean_text
from ..models import artefacts, flows, transitions
from ..records import ArtefactEntry, HistoryEntry, utc

if TYPE_CHECKING:
    from ..flow import Flow

#: How much of an unreadable value's stored text is shown.
EXCERPT: Final = 300
#: Artefacts up to this many characters are decoded and pretty-printed in the flow page's
#: previews; longer ones are previewed from the start of their stored text.
PREVIEW_PARSE_CHARS: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stored JSON value that could not be decoded: why, and the start of its text."""

    why: str
    excerpt: str

    def __str__(self) -> str:
        return f"⚠ {self.why}: {self.excerpt}"


@dataclass(frozen=True, slots=True)
class Decoded:
    """A stored JSON value read for a preview, with the length of its stored text."""

    value: Any
    #: Length of the stored text, in characters.
    length: int


@dataclass(frozen=True, slots=True)
class StoredText:
    """The start of a stored JSON text too large to decode for a preview."""

    head: str
    #: Length of the whole stored text, in characters.
    length: int


def as_text(column: Any, name: str | None = None) -> ColumnElement[Any]:
    """Return ``column`` read as its stored text (no JSON decoding by the driver)."""
    return cast(column, Text).label(name or column.key)


#: The columns of ``flowstate_flows`` with ``props`` as text: what the admin's lists select.
FLOW_COLUMNS: Final = tuple(as_text(c) if c.key == "props" else c for c in flows.c)
HISTORY_COLUMNS: Final = tuple(as_text(c) if c.key == "meta" else c for c in transitions.c)


def decode(raw: str | None) -> Any:
    """Return the JSON value in ``raw`` (``None`` for NULL), or an :class:`Unreadable`."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except RecursionError:
        why = "nested too deep to read"
    except ValueError:
        why = "not valid JSON"
    excerpt = clean_text(raw[:EXCERPT]) + ("…" if len(raw) > EXCERPT else "")
    return Unreadable(why, excerpt)


def decode_props(raw: str | None) -> dict[str, Any]:
    """Return stored props as a dict; unreadable ones under a ``(unreadable props)`` key."""
    value = decode(raw)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if not isinstance(value, Unreadable):
        value = Unreadable("not a JSON object", clean_text(str(raw)[:EXCERPT]))
    return {"(unreadable props)": value}


def to_flow(
    cls: type[Flow], row: Row[Any] | Mapping[str, Any], session: Session | None = None
) -> Flow:
    """Return a flow of ``cls`` (on ``session``) from a row selected with :data:`FLOW_COLUMNS`."""
    m = dict(row._mapping if isinstance(row, Row) else row)
    m["props"] = decode_props(m["props"])
    return cls(m, session)


def load_flow(session: Session, cls: type[Flow], flow_id: int) -> Flow | None:
    """Return flow ``flow_id`` of ``cls`` read defensively, or ``None``."""
    q = select(*FLOW_COLUMNS).where(flows.c.id == flow_id, flows.c.type == cls.type_name)
    row = session.execute(q).first()
    return None if row is None else to_flow(cls, row)


def history(session: Session, flow_id: int) -> list[HistoryEntry]:
    """Return the history of ``flow_id``, oldest first, its ``meta`` decoded defensively."""
    q = select(*HISTORY_COLUMNS).where(transitions.c.flow_id == flow_id)
    rows = session.execute(q.order_by(transitions.c.seq))
    return [_decode_meta(HistoryEntry.from_row(row)) for row in rows]


def _decode_meta(entry: HistoryEntry) -> HistoryEntry:
    raw: Any = entry.meta  # selected as text (HISTORY_COLUMNS)
    return dataclasses.replace(entry, meta=decode(raw))


def artefact_previews(
    session: Session, flow_id: int, parse_chars: int = PREVIEW_PARSE_CHARS
) -> list[ArtefactEntry]:
    """Return every artefact version of ``flow_id`` for previews, oldest first.

    Each payload is a :class:`Decoded` (its value, or an :class:`Unreadable`) up to
    ``parse_chars`` characters of stored text, else a :class:`StoredText` of its first
    ``parse_chars`` characters: a page of 10 MB artefacts never reads 10 MB per artefact.
    """
    text = cast(artefacts.c.payload, Text)
    q = (
        select(
            artefacts.c.id,
            artefacts.c.flow_id,
            artefacts.c.transition_id,
            artefacts.c.name,
            artefacts.c.created_at,
            func.length(text).label("length"),
            func.substr(text, 1, parse_chars + 1).label("head"),
        )
        .where(artefacts.c.flow_id == flow_id)
        .order_by(artefacts.c.id)
    )
    return [_entry(row, parse_chars) for row in session.execute(q)]


def _entry(row: Any, parse_chars: int) -> ArtefactEntry:
    m = row._mapping
    head: str | None = m["head"]
    length = int(m["length"] or 0)
    payload: Any = (
        Decoded(decode(head), length)
        if head is None or length <= parse_chars
        else StoredText(head, length)
    )
    return ArtefactEntry(
        id=m["id"],
        flow_id=m["flow_id"],
        transition_id=m["transition_id"],
        name=m["name"],
        payload=payload,
        created_at=utc(m["created_at"]),
    )


def artefact(
    session: Session, flow_id: int, artefact_id: int
) -> tuple[ArtefactEntry, str | None] | None:
    """Return artefact ``artefact_id`` of ``flow_id`` and its payload's stored text, or ``None``.

    The entry's ``payload`` is ``None``: the page decides how much of the text to decode.
    """
    cols: Sequence[Any] = [c for c in artefacts.c if c.key != "payload"]
    q = select(*cols, as_text(artefacts.c.payload)).where(
        artefacts.c.id == artefact_id, artefacts.c.flow_id == flow_id
    )
    row = session.execute(q).first()
    if row is None:
        return None
    m = row._mapping
    entry = ArtefactEntry(
        id=m["id"],
        flow_id=m["flow_id"],
        transition_id=m["transition_id"],
        name=m["name"],
        payload=None,
        created_at=utc(m["created_at"]),
    )
    return entry, m["payload"]
