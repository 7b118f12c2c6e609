"""``flask flowstate diagram TYPE``: print or save a flow type's state diagram."""

from __future__ import annotations

from pathlib import Path

import click

from .dot import build_dot
from .mermaid import to_mermaid
from .rendering import DEFAULT_EXECUTABLE, DEFAULT_TIMEOUT, render


@click.command("diagram")
@click.argument("flow_type", metavar="TYPE")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["svg", "png", "dot", "mermaid"]),
    default="svg",
    show_default=True,
    help="svg/png run Graphviz; dot/mermaid print the diagram's source text.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="write to this file instead of standard output",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="seconds to let Graphviz run",
)
@click.option(
    "--dot-executable",
    default=DEFAULT_EXECUTABLE,
    show_default=True,
    help="path of Graphviz's dot",
)
def diagram_command(
    flow_type: str, fmt: str, output: Path | None, timeout: float, dot_executable: str
) -> None:
    """Print the state diagram of flow type TYPE (or write it to --output)."""
    from flowstate_web.errors import UnknownFlowTypeError
    from flowstate_web.registry import get_flow_type

    try:
        graph = get_flow_type(flow_type).graph()
    except UnknownFlowTypeError as exc:
        raise click.BadParameter(str(exc), param_hint="TYPE") from None
    if fmt == "mermaid":
        data = to_mermaid(graph).encode("utf-8")
    else:
        dot_source = build_dot(graph, reserve_count_line=False)
        if fmt == "dot":
            data = dot_source.encode("utf-8")
        else:
            result = render(dot_source, fmt, timeout=timeout, executable=dot_executable)
            if result.data is None:
                raise click.ClickException(result.error or "Graphviz failed")
            data = result.data
    if output is None:
        click.echo(data, nl=False)  # bytes go to the binary stream, unmodified
    else:
        output.write_bytes(data)
        click.echo(f"wrote {fmt} diagram of {flow_type} to {output}", err=True)
