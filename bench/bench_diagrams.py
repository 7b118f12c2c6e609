"""Time state-diagram rendering: a cold render (spawns dot) vs a cached page view.

A cached page view is what every admin page load or live-poll refresh costs: build the DOT
text, look the SVG up in the content-hash cache, rewrite it with the overlay.

Run from the repository root::

    .venv/bin/python bench/bench_diagrams.py --runs 20

Prints the median of ``--runs`` runs (cold renders use ``max(3, runs // 4)`` runs).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable

from flowstate_web.diagrams import (
    build_dot,
    clear_cache,
    overlay_counts,
    overlay_instance,
    render_svg,
)
from flowstate_web.diagrams._samples import large_graph, readme_example_graph
from flowstate_web.graph import FlowGraph


def median_ms(
    fn: Callable[[], object], runs: int, before: Callable[[], None] | None = None
) -> float:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def state_url(state: str) -> str:
    return f"/admin/flows/T?state={state}"


def bench(graph: FlowGraph, runs: int) -> dict[str, float]:
    counts = {name: i * 3 for i, name in enumerate(graph.state_names)}
    errored = {name: 1 for name in graph.error_states}
    traversed = {
        (t.name, t.sources[0], t.target): 1 + i % 3 for i, t in enumerate(graph.transitions[:12])
    }

    def cold() -> None:
        rendered = render_svg(build_dot(graph, state_url=state_url))
        assert rendered.svg is not None, rendered.error

    def type_page() -> None:
        svg = render_svg(build_dot(graph, state_url=state_url)).svg
        assert svg is not None
        overlay_counts(svg, counts, errored)

    def instance_page() -> None:
        svg = render_svg(build_dot(graph, state_url=state_url)).svg
        assert svg is not None
        overlay_instance(svg, current=graph.state_names[3], traversed=traversed)

    result = {"cold render": median_ms(cold, max(3, runs // 4), before=clear_cache)}
    cold()  # warm the cache
    result["cached type page"] = median_ms(type_page, runs)
    result["cached instance page"] = median_ms(instance_page, runs)
    result["build DOT only"] = median_ms(lambda: build_dot(graph, state_url=state_url), runs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    version = subprocess.run(["dot", "-V"], capture_output=True, text=True).stderr.strip()
    print(f"{version}; median of {args.runs} runs (cold: {max(3, args.runs // 4)})")
    graphs = [("README example (9 states, 10 transitions)", readme_example_graph()),
              ("large (50 states, 120 transitions)", large_graph())]  # fmt: skip
    for title, graph in graphs:
        print(f"\n{title}")
        for name, ms in bench(graph, args.runs).items():
            print(f"  {name:<22} {ms:9.2f} ms")


if __name__ == "__main__":
    main()
