"""``flask flowstate ...`` commands."""

from __future__ import annotations

import importlib
from datetime import timedelta
from typing import ClassVar

import click
from flask.cli import with_appcontext

from . import counters
from ._executor import now, prune_completed
from .errors import PayloadValidationError
from .registry import flow_types


class _Commands(click.Group):
    """The ``flowstate`` group; the operator commands are imported when first asked for.

    They read the admin's filters and queries, and an app with ``FLOWSTATE_ADMIN=False``
    must not import the admin just because the group is registered.
    """

    #: name -> (module under flowstate_web, attribute)
    LAZY: ClassVar[dict[str, tuple[str, str]]] = {
        "bulk-retry": ("cli_bulk", "bulk_retry_command"),
        "diagram": ("diagrams.cli", "diagram_command"),
        "lint": ("cli_ops", "lint_command"),
        "list": ("cli_ops", "list_command"),
        "remap": ("cli_bulk", "remap_command"),
        "retry": ("cli_retry", "retry_command"),
        "show": ("cli_ops", "show_command"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.LAZY:
            module, attr = self.LAZY[cmd_name]
            command = getattr(importlib.import_module(f"flowstate_web.{module}"), attr)
            self.add_command(command, cmd_name)
        return command


@click.group("flowstate", cls=_Commands)
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
    try:
        n = prune_completed(
            now() - timedelta(days=days), flow_type=flow_type, batch_size=batch_size
        )
    except PayloadValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--type") from None
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
    """Fail stalled flows of states that declare on_timeout (run it periodically).

    Exit status: 0 when every timeout action ran; 1 when one raised (those flows are
    rolled back alone and listed on stderr; the rest are swept all the same).
    """
    from .sweeper import sweep_all

    report = sweep_all(limit=limit)
    click.echo(f"failed {report.timed_out} stalled flow(s)")
    if report.failed:
        lines = [
            f"error: the on_timeout transition of {report.failed} stalled flow(s) raised;"
            " they stay where they were:",
            *(f"  {failure}" for failure in report.failures),
        ]
        if report.failed > len(report.failures):
            lines.append(f"  ... and {report.failed - len(report.failures)} more")
        for line in lines:  # exception text may hold lone surrogates: shown escaped
            click.echo(line.encode("utf-8", "backslashreplace").decode("utf-8"), err=True)
        raise SystemExit(1)


@flowstate_cli.command("relay")
@click.option("--loop", is_flag=True, help="keep relaying every --interval seconds")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@with_appcontext
def relay_command(loop: bool, interval: float) -> None:
    """Re-send job hand-offs still unsent past FLOWSTATE_OUTBOX_RELAY_DELAY."""
    from flask.cli import ScriptInfo

    from .relay import relay_app
    from .worker import periodic_loop

    if not loop:
        click.echo(f"re-sent {relay_app()} hand-off(s)")
        return
    app = click.get_current_context().ensure_object(ScriptInfo).load_app()
    click.echo(f"relaying every {interval:g}s (Ctrl+C stops)")
    periodic_loop(app, interval)


@flowstate_cli.command("rollup")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="history rows per transaction",
)
@click.option(
    "--retention-days",
    type=click.FloatRange(min=1),
    default=8,
    show_default=True,
    help="keep hourly figures this long (the 7 d window needs 7)",
)
@with_appcontext
def rollup_command(limit: int, retention_days: float) -> None:
    """Roll new history rows up for the heat map and metrics (run it every minute or so)."""
    from . import rollup

    total = 0
    while True:
        n = rollup.run(limit=limit, retention=timedelta(days=retention_days))
        total += n
        if n < limit:
            break
    click.echo(f"rolled up {total} history row(s)")
