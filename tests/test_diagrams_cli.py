"""``flask flowstate diagram TYPE``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

import flowstate_web.demo.sync_flow  # noqa: F401  (registers SyncThirdPartyApiFlow)
from flowstate_web.cli import flowstate_cli
from flowstate_web.diagrams import clear_cache
from flowstate_web.diagrams.cli import diagram_command

TYPE = "SyncThirdPartyApiFlow"


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def test_dot_to_stdout() -> None:
    result = CliRunner().invoke(diagram_command, [TYPE, "--format", "dot"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"digraph {TYPE} {{")
    assert 'id="state-failed_to_fetch_third_party_api"' in result.stdout
    assert "\u2007" not in result.stdout  # exports carry no reserved count line


def test_mermaid_to_stdout() -> None:
    result = CliRunner().invoke(diagram_command, [TYPE, "--format", "mermaid"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("stateDiagram-v2\n    [*] --> pending\n")


def test_svg_is_the_default_and_parses() -> None:
    result = CliRunner().invoke(diagram_command, [TYPE])
    assert result.exit_code == 0, result.output
    root = ET.fromstring(result.stdout_bytes)
    ids = {g.get("id") for g in root.iter("{http://www.w3.org/2000/svg}g")}
    assert {"state-pending", "state-completed", "edge-pick-pending"} <= ids


def test_png_to_file(tmp_path: Path) -> None:
    out = tmp_path / "flow.png"
    result = CliRunner().invoke(diagram_command, [TYPE, "--format", "png", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert result.stdout == ""
    assert f"wrote png diagram of {TYPE} to {out}" in result.stderr


def test_unknown_type_is_a_usage_error() -> None:
    result = CliRunner().invoke(diagram_command, ["NoSuchFlow"])
    assert result.exit_code == 2
    assert "no flow type 'NoSuchFlow'" in result.stderr
    assert TYPE in result.stderr


def test_missing_graphviz_is_a_clear_failure(tmp_path: Path) -> None:
    missing = tmp_path / "dot"
    result = CliRunner().invoke(diagram_command, [TYPE, "--dot-executable", str(missing)])
    assert result.exit_code == 1
    assert "apt-get install graphviz" in result.stderr
    assert result.stdout == ""


def test_attached_to_the_flowstate_group() -> None:
    result = CliRunner().invoke(flowstate_cli, ["diagram", TYPE, "--format", "dot"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"digraph {TYPE} {{")
