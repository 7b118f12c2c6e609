"""Mermaid stateDiagram-v2 text generated from the graph."""

from __future__ import annotations

import os
import re
from pathlib import Path

from flowstate_web.diagrams import mermaid_ids, to_mermaid
from flowstate_web.diagrams._samples import large_graph, readme_example_graph
from flowstate_web.graph import FlowGraph, StateSpec, TransitionSpec

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    # FLOWSTATE_REGEN_GOLDEN=1 rewrites the file (see tests/test_diagrams_dot.py).
    path = GOLDEN / name
    if os.environ.get("FLOWSTATE_REGEN_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden file"


def test_readme_mermaid_matches_golden() -> None:
    text = to_mermaid(readme_example_graph())
    check_golden("readme_flow.mmd", text)
    assert text.startswith("stateDiagram-v2\n")
    assert "    [*] --> pending\n" in text
    assert "    completed --> [*]\n" in text
    assert (
        "    fetched_third_party_api --> saving_my_record: start_record_save [has_response]\n"
        in text
    )


def test_deterministic() -> None:
    assert to_mermaid(readme_example_graph()) == to_mermaid(readme_example_graph())
    assert to_mermaid(large_graph()) == to_mermaid(large_graph())


def test_unsafe_names_get_safe_ids_and_labels() -> None:
    names = ["end", "with space", 'q"uote', "état", "state_2", "9lives", "ok"]
    graph = FlowGraph(
        "M",
        tuple(StateSpec(n, initial=i == 0, final=n == "ok") for i, n in enumerate(names)),
        tuple(
            TransitionSpec(f"go: #{i}; <&>", (names[i],), names[i + 1])
            for i in range(len(names) - 1)
        ),
    )
    ids = mermaid_ids(graph)
    assert ids["ok"] == "ok"
    assert ids["state_2"] == "state_2"
    assert len(set(ids.values())) == len(names)
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", i) for i in ids.values())
    assert ids["end"] != "end"
    assert ids["state_2"] not in {ids[n] for n in names if n != "state_2"}
    text = to_mermaid(graph)
    assert f'    state "with space" as {ids["with space"]}\n' in text
    assert f'    state "q#34;uote" as {ids[chr(113) + chr(34) + "uote"]}\n' in text
    assert f"    [*] --> {ids['end']}\n" in text
    assert f"    {ids['end']} --> {ids['with space']}: go#58; #35;0#59; #60;#38;#62;\n" in text
    for line in text.splitlines()[1:]:
        label = line.split(": ", 1)[1] if " --> " in line and ": " in line else ""
        assert not re.search(r'["<>&:]', label), line  # specials become #NN; codes
    assert "end -->" not in text.replace(f"{ids['end']} -->", "")
