"""``flask flowstate list | show | lint``: what operators script against.

Output is a table for people or, with ``--json``, one JSON document with stable keys for
scripts (see ``docs/cli.md``). Exit status: 0 done, 1 a failure (flow not found, lint
errors, a retry refused), 2 a usage error (bad option, unknown type, malformed filter);
``lint`` exits 3 when no flow type is registered (nothing was checked).
Retries are in :mod:`flowstate_web.cli_retry`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, cast

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import ColumnElement, Row, and_, false, func, not_, or_, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

from . import timeouts
from .admin import filters, queries
from .errors import UnknownFlowTypeError
from .jsondiff import short
from .lint import lint
from .models import artefacts, flows, transitions
from .records import ArtefactEntry, HistoryEntry, utc, utc_or_none
from .registry import find_flow_type, flow_types, get_flow_type, row_problem

if TYPE_CHECKING:
    from .flow import Flow

MAX_LIMIT: Final = 10_000
#: ``lint``'s exit status when no flow type is registered (nothing was checked).
NOTHING_TO_LINT: Final = 3
#: A flow id on the command line: 64-bit like the column (a larger one is a usage error).
FLOW_ID: Final = click.IntRange(1, 2**63 - 1)


def session() -> Session:
    """Return the app's database session (the one flows use)."""
    return current_app.extensions["flowstate"].db.session()  # type: ignore[no-any-return]


def say(text: str, *, err: bool = False) -> None:
    """Print ``text``; what UTF-8 cannot hold (lone surrogates in old rows) is escaped."""
    click.echo(text.encode("utf-8", "backslashreplace").decode("utf-8"), err=err)


def emit(document: Mapping[str, Any]) -> None:
    """Print ``document`` as JSON (keys in the order built, so stable).

    A lone surrogate comes out as its JSON escape (``\\udc80``), so the output stays JSON.
    """
    say(json.dumps(document, ensure_ascii=False, indent=2, default=str))


def iso(value: Any) -> str | None:
    """Return a stored timestamp as ISO 8601 UTC, ``None`` passing through."""
    found = utc_or_none(value)
    return None if found is None else found.isoformat()


def stalled_since(row: Row[Any]) -> datetime | None:
    """Return since when the flow of ``row`` is stalled (``None``: it is not, at present)."""
    m = row._mapping
    cls = find_flow_type(m["type"])
    spec = cls.graph().state(m["state"]) if cls is not None else None
    if spec is None or spec.timeout is None:
        return None
    since = utc(m["state_entered_at"]) + spec.timeout
    return since if since < datetime.now(UTC) else None


def flow_dict(row: Row[Any]) -> dict[str, Any]:
    """Return one ``flowstate_flows`` row as the JSON object the commands print."""
    m = row._mapping
    return {
        "id": m["id"],
        "type": m["type"],
        "state": m["state"],
        "errored": bool(m["errored"]),
        "seq": m["seq"],
        "created_at": iso(m["created_at"]),
        "updated_at": iso(m["updated_at"]),
        "state_entered_at": iso(m["state_entered_at"]),
        "completed_at": iso(m["completed_at"]),
        "last_error_type": m["last_error_type"],
        "last_error_message": m["last_error_message"],
        "props": m["props"] or {},
        "problem": row_problem(m["type"], m["state"]),
        "stalled_since": iso(stalled_since(row)),
    }


def flow_type_option(name: str | None) -> type[Flow] | None:
    """Return the flow class called ``name`` (``None`` for none).

    :raises click.UsageError: no such type is defined in this app.
    """
    if name is None:
        return None
    cls = find_flow_type(name)
    if cls is None:
        known = ", ".join(flow_types()) or "none"
        raise click.UsageError(f"no flow type {name!r} is defined in this app (known: {known})")
    return cls


def parse_filter(
    cls: type[Flow] | None,
    *,
    states: Sequence[str] = (),
    errored: bool | None = None,
    props: Sequence[str] = (),
    dates: Mapping[str, str | None] | None = None,
    stalled: bool | None = None,
) -> filters.ListFilter:
    """Return the admin's :class:`~flowstate_web.admin.filters.ListFilter` for CLI options.

    The same parser as the admin's list, so a filter means the same in both.

    :raises click.UsageError: a malformed filter, or ``prop=value`` without ``--type``.
    """
    args: MultiDict[str, str] = MultiDict([("state", s) for s in states])
    if errored is not None:
        args.add("errored", "1" if errored else "0")
    if stalled is not None:
        args.add("stalled", "1" if stalled else "0")
    for key, value in (dates or {}).items():
        if value:
            args.add(key, value)
    if len(props) > 1:
        raise click.UsageError("give at most one prop=value filter")
    for expr in props:
        if "=" not in expr:
            raise click.UsageError(f"expected prop=value, got {expr[:60]!r}")
        if cls is None:
            raise click.UsageError("a prop=value filter needs --type (props are per type)")
        args.add("q", expr)
    try:
        # Without a type there is no q to parse, the only part that reads the class.
        return filters.parse(args, cast("type[Flow]", cls))
    except BadRequest as exc:
        raise click.UsageError(str(exc.description)) from None


def where(
    sess: Session, cls: type[Flow] | None, f: filters.ListFilter
) -> list[ColumnElement[bool]]:
    """Return the WHERE conditions of ``f`` (the admin's, for one type; else across types)."""
    if cls is not None:
        return queries.conditions(sess, cls.type_name, f)
    found: list[ColumnElement[bool]] = []
    if f.states:
        found.append(flows.c.state.in_(f.states))
    if f.errored is not None:
        found.append(flows.c.errored.is_(f.errored))
    if f.stalled is not None:  # per type, as the admin's list does for one
        stalled = or_(
            false(),
            *(
                and_(flows.c.type == c.type_name, timeouts.stalled_condition(c, states=f.states))
                for c in flow_types().values()
                if c.graph().timed_states
            ),
        )
        found.append(stalled if f.stalled else not_(stalled))
    for column, bound, op in (
        (flows.c.created_at, f.created_from, "ge"),
        (flows.c.created_at, f.created_to, "le"),
        (flows.c.updated_at, f.updated_from, "ge"),
        (flows.c.updated_at, f.updated_to, "le"),
    ):
        if bound is not None:
            found.append(column >= bound if op == "ge" else column <= bound)
    return found


_DATE_OPTIONS = ("created_from", "created_to", "updated_from", "updated_to")


def date_options(fn: Any) -> Any:
    """Add ``--created-from/--created-to/--updated-from/--updated-to`` to a command."""
    for key in reversed(_DATE_OPTIONS):
        flag = "--" + key.replace("_", "-")
        fn = click.option(flag, key, default=None, help="ISO date or date-time, UTC")(fn)
    return fn


@click.command("list")
@click.option("--type", "type_name", default=None, help="only this flow type")
@click.option("--state", "states", multiple=True, help="only flows in this state (repeat)")
@click.option("--errored/--not-errored", default=None, help="only errored (or non-errored)")
@click.option(
    "--stalled/--not-stalled", default=None, help="only stalled (past their state's timeout)"
)
@date_options
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=100, show_default=True)
@click.option("--before", type=FLOW_ID, default=None, help="ids below this only")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.argument("props", nargs=-1, metavar="[PROP=VALUE]")
@with_appcontext
def list_command(
    type_name: str | None,
    states: tuple[str, ...],
    errored: bool | None,
    stalled: bool | None,
    limit: int,
    before: int | None,
    as_json: bool,
    props: tuple[str, ...],
    **dates: str | None,
) -> None:
    """List flows, newest first: at most --limit, the next page with --before."""
    cls = flow_type_option(type_name)
    f = parse_filter(cls, states=states, errored=errored, props=props, dates=dates, stalled=stalled)
    sess = session()
    q = select(flows).where(*where(sess, cls, f))
    if before is not None:
        q = q.where(flows.c.id < before)
    rows = list(sess.execute(q.order_by(flows.c.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_before = rows[-1].id if more else None
    if as_json:
        emit({"flows": [flow_dict(r) for r in rows], "next_before": next_before})
        return
    table(
        ["ID", "TYPE", "STATE", "FLAGS", "UPDATED", "PROPS"],
        [
            [
                str(r.id),
                r.type,
                r.state,
                ",".join(
                    x
                    for x, on in (
                        ("errored", r.errored),
                        ("stalled", stalled_since(r)),
                        ("undeclared", row_problem(r.type, r.state)),
                    )
                    if on
                )
                or "-",
                utc(r.updated_at).strftime("%Y-%m-%d %H:%M:%S"),
                short(r.props or {}, 60),
            ]
            for r in rows
        ],
    )
    if not rows:
        say("no flows match", err=True)
    if next_before is not None:
        say(f"more: add --before {next_before}", err=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` as aligned columns under ``header`` (the last column unpadded)."""
    if not rows:
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header[:-1])]
    for line in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(line, widths, strict=False)]
        say("  ".join([*cells, line[-1]]).rstrip())


@click.command("show")
@click.argument("flow_id", type=FLOW_ID)
@click.option(
    "--history",
    "history_limit",
    type=click.IntRange(0, MAX_LIMIT),
    default=100,
    show_default=True,
    help="the last N transitions",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON (artefact payloads included)")
@with_appcontext
def show_command(flow_id: int, history_limit: int, as_json: bool) -> None:
    """Show one flow: state, props, history (the last --history entries) and artefacts."""
    sess = session()
    row = sess.execute(select(flows).where(flows.c.id == flow_id)).first()
    if row is None:
        raise click.ClickException(f"no flow #{flow_id}")
    found = sess.execute(
        select(transitions)
        .where(transitions.c.flow_id == flow_id)
        .order_by(transitions.c.seq.desc())
        .limit(history_limit)
    )
    history = [HistoryEntry.from_row(r) for r in found][::-1]
    total = sess.execute(
        select(func.count()).select_from(transitions).where(transitions.c.flow_id == flow_id)
    ).scalar_one()
    versions = [
        ArtefactEntry.from_row(r)
        for r in sess.execute(
            select(artefacts).where(artefacts.c.flow_id == flow_id).order_by(artefacts.c.id)
        )
    ]
    seqs: dict[int, int] = {}
    if versions:
        wrote = select(transitions.c.id, transitions.c.seq).where(
            transitions.c.id.in_({a.transition_id for a in versions})
        )
        seqs = {tid: seq for tid, seq in sess.execute(wrote)}
    cls = find_flow_type(row.type)
    retries = [t.name for t in cls.graph().retry_transitions_from(row.state)] if cls else []
    numbered = _numbered(versions)
    if as_json:
        emit(
            {
                "flow": flow_dict(row),
                "retry_transitions": retries,
                "history": [_history_dict(h) for h in history],
                "history_total": total,
                "artefacts": [
                    {
                        "id": a.id,
                        "name": a.name,
                        "version": n,
                        "transition_id": a.transition_id,
                        "seq": seqs.get(a.transition_id),
                        "created_at": a.created_at.isoformat(),
                        "payload": a.payload,
                    }
                    for a, n in numbered
                ],
            }
        )
        return
    d = flow_dict(row)
    flags = " (errored)" if d["errored"] else ""
    say(f"#{d['id']} {d['type']}  state {d['state']}{flags}")
    if d["problem"]:
        say(f"  problem: {d['problem']}")
    say(f"  created {d['created_at']}  updated {d['updated_at']}")
    say(f"  in state since {d['state_entered_at']}")
    if d["stalled_since"]:
        say(f"  STALLED since {d['stalled_since']} (past its state's timeout)")
    if d["completed_at"]:
        say(f"  completed {d['completed_at']}")
    if d["last_error_type"] or d["last_error_message"]:
        say(f"  last error: {d['last_error_type']}: {short(d['last_error_message'], 300)}")
    if retries:
        say(f"  retry with: {', '.join(retries)}")
    say("props:")
    for key, value in d["props"].items():
        say(f"  {key} = {short(value, 200)}")
    shown = f"the last {len(history)} of {total}" if len(history) < total else f"{total}"
    say(f"history ({shown}, oldest first):")
    for h in history:
        by = f"  by {h.actor}" if h.actor else ""
        why = f"  “{short(h.reason, 120)[1:-1]}”" if h.reason else ""
        say(
            f"  {h.seq}. {h.from_state} -> {h.to_state}  {h.name}"
            f"  {h.created_at.strftime('%Y-%m-%d %H:%M:%S')}{by}{why}"
        )
        if h.error_type:
            say(f"     {h.error_type}: {short(h.error_message, 200)}")
    say(f"artefacts ({len(versions)}):")
    for a, n in numbered:
        seq = seqs.get(a.transition_id)
        say(f"  #{a.id} {a.name} v{n}  written at step {seq}  {short(a.payload, 120)}")


def _numbered(versions: Sequence[ArtefactEntry]) -> list[tuple[ArtefactEntry, int]]:
    seen: dict[str, int] = {}
    out: list[tuple[ArtefactEntry, int]] = []
    for a in versions:
        seen[a.name] = seen.get(a.name, 0) + 1
        out.append((a, seen[a.name]))
    return out


def _history_dict(h: HistoryEntry) -> dict[str, Any]:
    return {
        "seq": h.seq,
        "name": h.name,
        "from": h.from_state,
        "to": h.to_state,
        "created_at": h.created_at.isoformat(),
        "actor": h.actor,
        "reason": h.reason,
        "error_type": h.error_type,
        "error_message": h.error_message,
        "meta": h.meta,
    }


@click.command("lint")
@click.argument("type_names", nargs=-1, metavar="[TYPE]...")
@click.option("--ignore", "ignored", multiple=True, help="a code to leave out (repeat)")
@click.option("--strict", is_flag=True, help="warnings fail too (exit 1)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@with_appcontext
def lint_command(
    type_names: tuple[str, ...], ignored: tuple[str, ...], strict: bool, as_json: bool
) -> None:
    """Check the declared graph of every flow type (or those named).

    \b
    Exit status:
      0  clean (warnings too, unless --strict)
      1  errors (with --strict: or warnings)
      2  a usage error (an unknown type, a bad option)
      3  no flow type registered: nothing was checked
    """
    try:
        types = [get_flow_type(n) for n in type_names] or list(flow_types().values())
    except UnknownFlowTypeError as exc:
        raise click.UsageError(str(exc)) from None
    if not types:
        if as_json:
            emit({"types": [], "errors": [], "warnings": []})
        say(
            "no flow types registered: nothing to lint (import the modules that define your"
            " flows, e.g. FLOWSTATE_FLOW_MODULES for the standalone app)",
            err=True,
        )
        raise SystemExit(NOTHING_TO_LINT)
    messages = [m for cls in types for m in lint(cls, ignore=ignored)]
    errors = [m for m in messages if m.severity == "error"]
    warnings = [m for m in messages if m.severity == "warning"]
    if as_json:
        emit(
            {
                "types": [cls.type_name for cls in types],
                "errors": [m.to_dict() for m in errors],
                "warnings": [m.to_dict() for m in warnings],
            }
        )
    else:
        for title, group in (("errors", errors), ("warnings", warnings)):
            if group:
                say(f"{title}:")
                for m in group:
                    say(f"  {m.code} {m.type_name}: {m.message}")
        say(
            f"{len(types)} flow type(s) checked: {len(errors)} error(s), {len(warnings)} warning(s)"
        )
    if errors or (strict and warnings):
        raise SystemExit(1)
