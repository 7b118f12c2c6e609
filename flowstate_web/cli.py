"""``flask flowstate ...`` commands."""

from __future__ import annotations

from datetime import timedelta

import click
from flask.cli import with_appcontext

from . import counters
from ._executor import now, prune_completed
from .registry import flow_types


@click.group("flowstate")
def flowstate_cli() -> None:
    """Inspect and maintain flows."""


@flowstate_cli.command("types")
@with_appcontext
def types_command() -> None:
    """List the registered flow types."""
    for name, cls in flow_types().items():
        g = cls.graph()
        click.echo(f"{name}: {len(g.states)} states, {len(g.transitions)} transitions")


@flowstate_cli.command("prune")
@click.option("--days", type=click.FloatRange(min=0), required=True, help="age of completion")
@click.option("--type", "flow_type", default=None, help="only this flow type")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True)
@with_appcontext
def prune_command(days: float, flow_type: str | None, batch_size: int) -> None:
    """Delete flows completed more than --days ago, in batches."""
    n = prune_completed(now() - timedelta(days=days), flow_type=flow_type, batch_size=batch_size)
    click.echo(f"pruned {n} completed flow(s)")


@flowstate_cli.command("recount")
@with_appcontext
def recount_command() -> None:
    """Rebuild the per-state counters from the flows table (after installing them, or to repair)."""
    from flask import current_app

    session = current_app.extensions["flowstate"].db.session()
    n = counters.recount(session)
    click.echo(f"counted {n} flow(s)")
    if not counters.installed(session.connection()):
        click.echo(
            "warning: the counter triggers are not installed on this database, so the counts"
            " will drift again and the admin keeps scanning: add install_counters(op) to a"
            " migration (see docs/admin.md, Counts at scale)",
            err=True,
        )
        session.rollback()


@flowstate_cli.command("sweep")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="flows per transaction",
)
@with_appcontext
def sweep_command(limit: int) -> None:
    """Fail stalled flows of states that declare on_timeout (run it periodically)."""
    from .timeouts import sweep

    total = 0
    while True:
        n = sweep(limit=limit)
        total += n
        if n < limit:
            break
    click.echo(f"failed {total} stalled flow(s)")


def _attach_optional() -> None:
    try:
        from .diagrams.cli import diagram_command
    except ImportError:  # pragma: no cover - the diagrams package ships with us
        return
    flowstate_cli.add_command(diagram_command, "diagram")


_attach_optional()


def _attach_ops() -> None:
    from .cli_bulk import bulk_retry_command, remap_command
    from .cli_ops import lint_command, list_command, show_command
    from .cli_retry import retry_command

    for command in (list_command, show_command, retry_command, lint_command):
        flowstate_cli.add_command(command)
    flowstate_cli.add_command(bulk_retry_command)
    flowstate_cli.add_command(remap_command)


_attach_ops()
