"""Rendering DOT with Graphviz: SVG structure, the cache, failures, the template partial."""

from __future__ import annotations

import re
import stat
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from flowstate_web.diagrams import (
    DiagramView,
    build_dot,
    cache_size,
    clear_cache,
    diagram_view,
    edge_dom_id,
    render,
    render_svg,
    state_dom_id,
)
from flowstate_web.diagrams import rendering as render_module
from flowstate_web.diagrams._samples import large_graph, readme_example_graph

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"
NO_CSP = re.compile(r"<script|<[^>]*\sstyle=", re.IGNORECASE)  # breaks a strict CSP


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record every command the renderer spawns (still running it)."""
    calls: list[list[str]] = []
    real = render_module._run_dot

    def counting(
        cmd: list[str], source: bytes, timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        calls.append(cmd)
        return real(cmd, source, timeout)

    monkeypatch.setattr(render_module, "_run_dot", counting)
    return calls


def groups(svg: str, css_class: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {
        g.get("id", ""): g for g in root.iter(f"{SVG}g") if css_class in g.get("class", "").split()
    }


def test_readme_svg_has_ids_classes_and_links() -> None:
    graph = readme_example_graph()
    result = render_svg(build_dot(graph, state_url=lambda s: f"/flows?state={s}&n=1"))
    assert result.error is None
    assert result.svg is not None
    assert result.svg.startswith("<svg")
    assert "<?xml" not in result.svg
    assert "<!DOCTYPE" not in result.svg
    nodes = groups(result.svg, "state")
    assert set(nodes) == {state_dom_id(s) for s in graph.state_names}
    assert "state-error" in nodes[state_dom_id("failed_to_save_my_record")].get("class", "")
    assert "state-final" in nodes[state_dom_id("completed")].get("class", "")
    assert len(nodes[state_dom_id("completed")].findall(f".//{SVG}path")) == 2  # peripheries
    link = next(nodes[state_dom_id("picked")].iter(f"{SVG}a"))
    assert link.get(f"{XLINK}href") == "/flows?state=picked&n=1"
    assert link.get("target") == "_top"
    edges = groups(result.svg, "transition")
    assert set(edges) == {edge_dom_id(t.name, t.sources[0]) for t in graph.transitions}
    assert set(groups(result.svg, "retry")) == {
        edge_dom_id("retry_fetch", "failed_to_fetch_third_party_api"),
        edge_dom_id("retry_save", "failed_to_save_my_record"),
    }
    assert "initial-marker" in groups(result.svg, "node")
    assert " style=" not in result.svg  # strict CSP: no inline style attributes


def test_second_render_and_page_views_spawn_no_process(spawned: list[list[str]]) -> None:
    graph = readme_example_graph()
    first = render_svg(build_dot(graph))
    assert len(spawned) == 1
    assert first.svg is not None
    again = render_svg(build_dot(readme_example_graph()))
    assert again.svg == first.svg
    for n in range(3):  # page views with live counts and an instance path
        view = diagram_view(graph, counts={"picked": n + 1})
        assert view.svg is not None
        diagram_view(graph, current="picked", traversed={("pick", "pending", "picked"): 1})
    assert len(spawned) == 1
    render_svg(build_dot(large_graph()))
    assert len(spawned) == 2
    assert cache_size() == 2


def test_png_bytes_for_downloads(spawned: list[list[str]]) -> None:
    dot = build_dot(readme_example_graph())
    png = render(dot, "png")
    assert png.error is None
    assert png.data is not None
    assert png.data.startswith(b"\x89PNG\r\n\x1a\n")
    render(dot, "png")
    assert [c[-1] for c in spawned] == ["-Tpng"]
    with pytest.raises(ValueError, match="unsupported diagram format"):
        render(dot, "pdf")


def test_missing_dot_gives_install_hint_and_source(
    tmp_path: Path, spawned: list[list[str]]
) -> None:
    dot = build_dot(readme_example_graph())
    missing = tmp_path / "no-such-dot"
    result = render_svg(dot, executable=missing)
    assert result.svg is None
    assert result.error is not None
    assert "apt-get install graphviz" in result.error
    assert "brew install graphviz" in result.error
    assert str(missing) in result.error
    assert result.dot_source == dot
    png = render(dot, "png", executable=missing)
    assert png.data is None
    assert "apt-get install graphviz" in (png.error or "")
    render_svg(dot, executable=missing)  # not cached: installing Graphviz takes effect at once
    assert len(spawned) == 3


def fake_dot(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-dot"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_timeout_gives_error_result_and_is_cached(tmp_path: Path, spawned: list[list[str]]) -> None:
    slow = fake_dot(tmp_path, "exec sleep 30")
    dot = build_dot(readme_example_graph())
    result = render_svg(dot, timeout=0.2, executable=slow)
    assert result.svg is None
    assert "did not finish within 0.2 s" in (result.error or "")
    assert result.dot_source == dot
    render_svg(dot, timeout=0.2, executable=slow)
    assert len(spawned) == 1  # a polling page does not start a slow dot every time


def test_tiny_timeout_on_large_graph_with_real_dot() -> None:
    result = render_svg(build_dot(large_graph()), timeout=0.0001)
    assert result.svg is None
    assert "did not finish" in (result.error or "")


def test_non_zero_exit_gives_stderr() -> None:
    result = render_svg("digraph { a -> ")
    assert result.svg is None
    assert result.error is not None
    assert "exited with" in result.error
    assert "syntax error" in result.error
    failing = render("digraph { a -> ", "png")
    assert failing.data is None
    assert "exited with" in (failing.error or "")


def test_large_graph_renders_within_timeout() -> None:
    graph = large_graph()
    assert (len(graph.states), len(graph.transitions)) == (50, 120)
    result = render_svg(build_dot(graph), timeout=10.0)
    assert result.error is None
    assert result.svg is not None
    assert len(groups(result.svg, "state")) == 50
    assert len(groups(result.svg, "transition")) == 120


def test_cold_cache_under_concurrency_spawns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real = render_module._run_dot
    calls: list[int] = []
    entered = threading.Event()
    release = threading.Event()

    def slow(cmd: list[str], source: bytes, timeout: float) -> subprocess.CompletedProcess[bytes]:
        calls.append(1)
        entered.set()
        release.wait(10)
        return real(cmd, source, timeout)

    monkeypatch.setattr(render_module, "_run_dot", slow)
    dot = build_dot(readme_example_graph())
    results: list[str | None] = []
    start = threading.Barrier(8)

    def page_view() -> None:
        start.wait(10)
        results.append(render_svg(dot).svg)

    threads = [threading.Thread(target=page_view) for _ in range(8)]
    for t in threads:
        t.start()
    assert entered.wait(10)
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert len(results) == 8
    assert len(set(results)) == 1
    assert results[0] is not None


def render_partial(view: DiagramView) -> str:
    env = Environment(
        loader=FileSystemLoader(ROOT / "templates"), autoescape=True, undefined=StrictUndefined
    )
    return env.get_template("flowstate/_diagram.html").render(diagram=view)


def test_partial_inlines_svg() -> None:
    view = diagram_view(
        readme_example_graph(),
        download_urls={"svg": "/d.svg?a=1&b=2", "png": "/d.png"},
        poll_url="/poll",
    )
    html = render_partial(view)
    assert isinstance(view.svg, Markup)
    assert '<figure class="flowstate-diagram" id="flowstate-diagram"' in html
    assert 'hx-get="/poll"' in html
    assert 'hx-swap="outerHTML"' in html
    assert "<svg" in html
    assert re.search(r'id="state(-|&#45;)pending"', html)
    assert 'href="/d.svg?a=1&amp;b=2"' in html
    assert not NO_CSP.search(html)
    assert "<details" not in html


def test_partial_shows_error_and_escaped_source(tmp_path: Path) -> None:
    view = diagram_view(readme_example_graph(), executable=tmp_path / "missing-dot")
    assert view.svg is None
    html = render_partial(view)
    assert "apt-get install graphviz" in html
    assert "<details" in html
    assert "DOT source" in html
    assert "digraph SyncThirdPartyApiFlow {" in html
    assert "id=&#34;state-pending&#34;" in html  # escaped, not live markup
    assert "hx-get" not in html
    assert not NO_CSP.search(html)


def test_stylesheet_covers_overlay_classes() -> None:
    css = (ROOT / "static" / "flowstate" / "diagram.css").read_text()
    for selector in (".current", ".visited", ".state-error", ".has-errored", ".errored-count"):
        assert selector in css
