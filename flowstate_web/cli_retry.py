"""``flask flowstate retry``: run declared retry transitions from a script, audited.

Two forms: ``retry ID... `` and ``retry --type T --errored [--state S] [--prop p=v]
--limit N``. Both run the engine's ``flow.run(<retry transition>, actor=, reason=, meta=)``
exactly as the admin's Retry does (the admin records ``meta={"admin": ...}``, this command
``meta={"cli": "retry"}`` or ``{"cli": "bulk_retry"}``), so the history shows who retried,
why, and from where. The bulk form works like the admin's bulk retry: batches by keyset on
the id, one transaction per batch, each flow in a savepoint (one failing flow rolls back
alone). Exit status 0 when every flow was retried, 1 when any was not, 2 on usage errors.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select
from sqlalchemy.orm import Session

from .admin import queries
from .admin.stored import to_flow
from .cli_ops import FLOW_ID, MAX_LIMIT, emit, flow_type_option, parse_filter, say, session
from .errors import (
    CallbackError,
    FlowNotFoundError,
    FlowStateError,
    GuardFailedError,
    InvalidTransitionError,
)
from .models import flows
from .registry import find_flow_type

if TYPE_CHECKING:
    from .flow import Flow

log = logging.getLogger("flowstate_web.cli")

#: The admin's limit on a reason, kept the same here.
MAX_REASON: Final = 2000
BATCH: Final = 100


def who(actor: str | None) -> str:
    """Return ``actor``, or the OS user running the command.

    :raises click.UsageError: no ``--actor`` and the OS user cannot be named.
    """
    if actor is not None:
        if not actor.strip():
            raise click.UsageError("--actor is empty")
        return actor.strip()
    try:
        return getpass.getuser()
    except Exception:  # OSError (no passwd entry) or KeyError, depending on the platform
        raise click.UsageError("cannot tell which OS user you are: pass --actor NAME") from None


def choose(flow: Flow, via: Sequence[str]) -> tuple[str | None, str]:
    """Return ``(retry transition, "")`` for ``flow``, or ``(None, why not)``.

    ``via`` holds ``NAME`` or ``STATE=NAME`` choices; without one that fits the flow's state,
    the state's only retry transition is taken.
    """
    options = [t.name for t in flow.retry_transitions()]
    state = flow.state
    if not options:
        return None, f"state {state!r} has no retry transition" + (
            "" if flow.errored else " (the flow is not errored)"
        )
    by_state = dict(v.split("=", 1) for v in via if "=" in v)
    plain = [v for v in via if "=" not in v]
    wanted = [by_state[state]] if state in by_state else plain
    fitting = [n for n in wanted if n in options]
    if len(fitting) == 1:
        return fitting[0], ""
    if wanted and not fitting:
        return None, (
            f"{' / '.join(wanted)} is not a retry transition from state {state!r}"
            f" (options: {', '.join(options)})"
        )
    if len(options) == 1 and not wanted:
        return options[0], ""
    return None, (
        f"state {state!r} has several retry transitions ({', '.join(options)}):"
        " choose with --transition NAME or STATE=NAME"
    )


def retry_flow(
    flow: Flow,
    via: Sequence[str],
    *,
    actor: str,
    reason: str | None,
    meta: dict[str, Any],
    warnings: list[str],
) -> dict[str, Any]:
    """Retry ``flow`` through the engine; return what happened (the JSON of one result).

    After-commit callbacks that fail (the retry itself committed) go to ``warnings``.
    """
    result: dict[str, Any] = {
        "id": flow.id,
        "type": flow.type_name,
        "outcome": "refused",
        "transition": None,
        "from": flow.state,
        "to": None,
        "message": "",
    }
    name, why = choose(flow, via)
    if name is None:
        result["message"] = why
        return result
    result["transition"] = name
    try:
        entry = flow.run(name, actor=actor, reason=reason, meta=meta)
    except InvalidTransitionError as exc:
        result["message"] = f"state changed meanwhile (now {exc.current!r}): {exc}"
    except GuardFailedError as exc:
        result["message"] = str(exc)
    except FlowNotFoundError as exc:
        result["message"] = f"{exc} (deleted meanwhile)"
    except CallbackError as exc:
        target = flow.graph().transition(name).target  # type: ignore[union-attr]
        result.update(outcome="retried", to=target)
        result["message"] = f"retried with {name}: {result['from']} -> {target}"
        warnings.extend(_callback_failures(exc))
    except FlowStateError as exc:
        result["message"] = str(exc)
    except Exception as exc:
        log.exception("flowstate retry: %s of %s #%s failed", name, flow.type_name, flow.id)
        result["outcome"] = "failed"
        result["message"] = f"{name} raised {type(exc).__name__}: {exc}"
    else:
        result.update(outcome="retried", to=entry.to_state)
        result["message"] = f"retried with {name}: {entry.from_state} -> {entry.to_state}"
    return result


def _callback_failures(exc: CallbackError) -> list[str]:
    return [f"{where}: {type(e).__name__}: {e}" for where, e in exc.failures]


def _by_ids(
    sess: Session,
    ids: Sequence[int],
    via: Sequence[str],
    actor: str,
    reason: str | None,
    warnings: list[str],
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for flow_id in dict.fromkeys(ids):
        row = sess.execute(select(flows).where(flows.c.id == flow_id)).first()
        cls = None if row is None else find_flow_type(row.type)
        if row is None or cls is None:
            results.append(
                {
                    "id": flow_id,
                    "type": None if row is None else row.type,
                    "outcome": "refused",
                    "transition": None,
                    "from": None if row is None else row.state,
                    "to": None,
                    "message": f"no flow #{flow_id}"
                    if row is None
                    else f"flow type {row.type!r} is not defined in this app",
                }
            )
            continue
        meta = {"cli": "retry"}
        results.append(
            retry_flow(cls(row), via, actor=actor, reason=reason, meta=meta, warnings=warnings)
        )
        if sess.in_transaction():
            sess.rollback()  # end the read transaction a refusal left open (nothing written)
    return results


def _bulk(
    sess: Session,
    cls: type[Flow],
    f: Any,
    limit: int,
    via: Sequence[str],
    actor: str,
    reason: str | None,
    warnings: list[str],
) -> list[dict[str, Any]]:
    if sess.in_transaction():
        sess.commit()
    results: list[dict[str, Any]] = []
    last_id = 0
    while len(results) < limit:
        size = min(BATCH, limit - len(results))
        try:
            with sess.begin():
                rows = queries.errored_batch(sess, cls.type_name, f, last_id, size)
                for row in rows:
                    # A savepoint per flow: whatever a refused or failing retry did is undone
                    # alone, the batch goes on.
                    savepoint = sess.begin_nested()
                    outcome = retry_flow(
                        to_flow(cls, row),
                        via,
                        actor=actor,
                        reason=reason,
                        meta={"cli": "bulk_retry"},
                        warnings=warnings,
                    )
                    if outcome["outcome"] == "retried":
                        savepoint.commit()
                    else:
                        savepoint.rollback()
                    results.append(outcome)
        except CallbackError as exc:  # raised after the batch committed
            warnings.extend(_callback_failures(exc))
        if len(rows) < size:
            break
        last_id = rows[-1].id
    return results


@click.command("retry")
@click.argument("flow_ids", nargs=-1, type=FLOW_ID, metavar="[ID]...")
@click.option("--type", "type_name", default=None, help="bulk: flows of this type")
@click.option("--errored", is_flag=True, help="bulk: errored flows (required with --type)")
@click.option("--state", "states", multiple=True, help="bulk: only this error state (repeat)")
@click.option("--prop", "props", multiple=True, metavar="PROP=VALUE", help="bulk: prop filter")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=100, show_default=True)
@click.option(
    "--transition", "via", multiple=True, metavar="[STATE=]NAME", help="which retry transition"
)
@click.option("--reason", default=None, help="recorded in each flow's history")
@click.option("--actor", default=None, help="recorded as who retried (default: the OS user)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@with_appcontext
def retry_command(
    flow_ids: tuple[int, ...],
    type_name: str | None,
    errored: bool,
    states: tuple[str, ...],
    props: tuple[str, ...],
    limit: int,
    via: tuple[str, ...],
    reason: str | None,
    actor: str | None,
    as_json: bool,
) -> None:
    """Retry errored flows by id, or those of --type T --errored (at most --limit)."""
    if flow_ids and (type_name or errored or states or props):
        raise click.UsageError("give flow ids, or --type T --errored with filters, not both")
    if not flow_ids and not (type_name and errored):
        raise click.UsageError("give flow ids, or --type T --errored (bulk)")
    if reason is not None and len(reason) > MAX_REASON:
        raise click.UsageError(f"--reason: at most {MAX_REASON} characters")
    reason = (reason or "").strip() or None
    if reason is None and current_app.config.get("FLOWSTATE_REQUIRE_REASON"):
        raise click.UsageError("--reason is required (FLOWSTATE_REQUIRE_REASON is set)")
    by = who(actor)
    sess = session()
    warnings: list[str] = []
    if flow_ids:
        results = _by_ids(sess, flow_ids, via, by, reason, warnings)
    else:
        cls = flow_type_option(type_name)
        assert cls is not None
        f = parse_filter(cls, states=states, errored=True, props=props).for_bulk()
        results = _bulk(sess, cls, f, limit, via, by, reason, warnings)
    retried = sum(1 for r in results if r["outcome"] == "retried")
    if as_json:
        emit(
            {
                "actor": by,
                "results": results,
                "retried": retried,
                "not_retried": len(results) - retried,
                "warnings": warnings,
            }
        )
    else:
        for r in results:
            label = "" if r["outcome"] == "retried" else f"NOT retried ({r['outcome']}): "
            say(f"#{r['id']} {r['type'] or '?'}: {label}{r['message']}")
        for w in warnings:
            say(f"warning: {w}", err=True)
        if not results:
            say(f"no errored {type_name} flows match", err=True)
        else:
            say(f"retried {retried} of {len(results)} flow(s) as {by}")
    if retried < len(results):
        raise SystemExit(1)
