"""``flask flowstate bulk-retry`` (a canary bulk run to completion) and ``remap``.

``bulk-retry`` stores the same run as the admin's "Start canary run" (or resumes one with
``--run ID``, e.g. a run started in the admin) and advances it until it is done, stopped or
paused, printing each change of status; the admin shows its progress meanwhile. Exit status:
0 done, 1 stopped (by the refail threshold or an operator) or paused, 2 usage errors.

``remap`` moves the flows of a type out of an undeclared state into a declared one
(:mod:`flowstate_web.remap`); ``--dry-run`` only counts them. Exit status 0, 2 on usage
errors (an unknown type, a declared source state, an undeclared target).
"""

from __future__ import annotations

from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from . import remap as remapping
from .admin import bulk_runs
from .admin.settings import DEFAULTS, Settings
from .cli_ops import emit, flow_type_option, parse_filter, say, session
from .cli_retry import MAX_REASON, who


def _reason(reason: str | None) -> str | None:
    if reason is not None and len(reason) > MAX_REASON:
        raise click.UsageError(f"--reason: at most {MAX_REASON} characters")
    found = (reason or "").strip() or None
    if found is None and current_app.config.get("FLOWSTATE_REQUIRE_REASON"):
        raise click.UsageError("--reason is required (FLOWSTATE_REQUIRE_REASON is set)")
    return found


def _run_document(run: bulk_runs.Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "type": run.type,
        "status": run.status,
        "stop_reason": run.stop_reason,
        "retried": run.retried,
        "skipped": run.skipped,
        "failed": run.failed,
        "refailed": run.refailed,
        "settled": run.settled,
        "canary_ids": run.canary_ids,
        "reasons": run.reasons,
    }


@click.command("bulk-retry")
@click.option("--type", "type_name", default=None, help="flow type (to start a run)")
@click.option("--state", "states", multiple=True, help="only this error state (repeat)")
@click.option("--prop", "props", multiple=True, metavar="PROP=VALUE", help="prop filter")
@click.option(
    "--transition", "via", multiple=True, metavar="STATE=NAME", help="retry transition of a state"
)
@click.option(
    "--canary", type=click.IntRange(1, bulk_runs.MAX_CANARY), default=10, show_default=True
)
@click.option("--wait", type=click.FloatRange(0, 86400), default=60.0, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(0, 10000),
    default=5.0,
    show_default=True,
    help="flows/s; 0: none",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 100, min_open=True),
    default=50.0,
    show_default=True,
    help="stop above this % failing again",
)
@click.option("--run", "run_id", type=click.IntRange(min=1), default=None, help="resume run ID")
@click.option("--poll", type=click.FloatRange(0.01, 60), default=1.0, show_default=True)
@click.option("--reason", default=None, help="recorded in each flow's history")
@click.option("--actor", default=None, help="recorded as who retried (default: the OS user)")
@click.option("--json", "as_json", is_flag=True, help="print the final run as JSON")
@with_appcontext
def bulk_retry_command(
    type_name: str | None,
    states: tuple[str, ...],
    props: tuple[str, ...],
    via: tuple[str, ...],
    canary: int,
    wait: float,
    rate: float,
    threshold: float,
    run_id: int | None,
    poll: float,
    reason: str | None,
    actor: str | None,
    as_json: bool,
) -> None:
    """Retry errored flows of --type with a canary, at --rate, stopping on refails."""
    sess = session()
    batch = Settings.from_config({**DEFAULTS, **current_app.config}).bulk_batch_size
    if run_id is None:
        if not type_name:
            raise click.UsageError("give --type T (a new run) or --run ID (resume one)")
        cls = flow_type_option(type_name)
        assert cls is not None
        f = parse_filter(cls, states=states, errored=True, props=props).for_bulk()
        chosen: dict[str, str] = {}
        for item in via:
            state, sep, name = item.partition("=")
            if not sep or name not in {t.name for t in cls.graph().retry_transitions_from(state)}:
                raise click.UsageError(f"--transition {item[:80]!r}: not STATE=<retry of STATE>")
            chosen[state] = name
        try:
            run = bulk_runs.start(
                sess,
                cls,
                f,
                chosen=chosen,
                actor=who(actor),
                reason=_reason(reason),
                canary=canary,
                wait_seconds=wait,
                rate=rate,
                threshold=threshold / 100,
            )
        except bulk_runs.RunError as exc:
            raise click.UsageError(str(exc)) from None
    else:
        try:
            run = bulk_runs.get(sess, run_id)
        except bulk_runs.RunError as exc:
            raise click.UsageError(str(exc)) from None
        if run.status == "paused":
            run = bulk_runs.control(sess, run.id, "resume", who(actor))
    seen = [""]

    def report(r: bulk_runs.Run) -> None:
        if as_json or r.status == seen[0]:
            return
        seen[0] = r.status
        say(
            f"run #{r.id} {r.type}: {r.status}; retried {r.retried}, skipped {r.skipped},"
            f" failed {r.failed}, failed again {r.refailed} of {r.settled}"
            + (f"; {r.stop_reason}" if r.stop_reason else "")
        )

    if not as_json:
        say(f"run #{run.id} {run.type}: started by {run.actor}")
    try:
        run = bulk_runs.drive(sess, run.id, batch_size=batch, poll=poll, on_step=report)
    except bulk_runs.RunError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        emit(_run_document(run))
    else:
        say(
            f"run #{run.id}: {run.status}; retried {run.retried}, skipped {run.skipped},"
            f" failed {run.failed}, failed again {run.refailed} of {run.settled}"
        )
    if run.status != "done":
        raise SystemExit(1)


@click.command("remap")
@click.option("--type", "type_name", required=True, help="flow type")
@click.option("--from", "source", required=True, help="the undeclared state")
@click.option("--to", "target", required=True, help="a declared state")
@click.option("--dry-run", is_flag=True, help="only count the flows it would move")
@click.option("--batch-size", type=click.IntRange(1, 10000), default=500, show_default=True)
@click.option("--reason", default=None, help="recorded in each flow's history")
@click.option("--actor", default=None, help="recorded as who remapped (default: the OS user)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@with_appcontext
def remap_command(
    type_name: str,
    source: str,
    target: str,
    dry_run: bool,
    batch_size: int,
    reason: str | None,
    actor: str | None,
    as_json: bool,
) -> None:
    """Move flows of --type from an undeclared state --from to a declared state --to."""
    try:
        plan = remapping.plan(type_name, source, target)
    except remapping.RemapError as exc:
        raise click.UsageError(str(exc)) from None
    sess = session()
    if dry_run:
        n = remapping.count(plan, sess)
        if as_json:
            emit({"type": type_name, "from": source, "to": target, "would_move": n})
        else:
            say(f"would move {n} {type_name} flow(s) from {source!r} to {target!r}")
        return
    by, why = who(actor), _reason(reason)
    moved, _ = remapping.run(plan, actor=by, reason=why, session=sess, batch_size=batch_size)
    if as_json:
        emit({"type": type_name, "from": source, "to": target, "moved": moved, "actor": by})
    else:
        say(f"moved {moved} {type_name} flow(s) from {source!r} to {target!r} as {by}")
