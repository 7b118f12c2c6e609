"""Sample graphs shared by the diagram tests and ``bench/bench_diagrams.py``."""

from __future__ import annotations

from ..graph import ArtefactSpec, FlowGraph, StateSpec, TransitionSpec


def readme_example_graph() -> FlowGraph:
    """Return the graph of the README's ``SyncThirdPartyApiFlow``, built by hand."""
    t = TransitionSpec
    return FlowGraph(
        name="SyncThirdPartyApiFlow",
        states=(
            StateSpec("pending", initial=True),
            StateSpec("picked"),
            StateSpec("fetching_third_party_api"),
            StateSpec("fetched_third_party_api"),
            StateSpec("failed_to_fetch_third_party_api", error=True),
            StateSpec("saving_my_record"),
            StateSpec("saved_my_record"),
            StateSpec("failed_to_save_my_record", error=True),
            StateSpec("completed", final=True),
        ),
        transitions=(
            t("pick", ("pending",), "picked", after=("enqueue_fetch",)),
            t("start_third_party_api_request", ("picked",), "fetching_third_party_api"),
            t(
                "finish_third_party_api_request",
                ("fetching_third_party_api",),
                "fetched_third_party_api",
                persists="third_party_api_response",
                after=("enqueue_save",),
            ),
            t(
                "fail_third_party_api_request",
                ("fetching_third_party_api",),
                "failed_to_fetch_third_party_api",
            ),
            t(
                "retry_fetch",
                ("failed_to_fetch_third_party_api",),
                "picked",
                retry=True,
                after=("enqueue_fetch",),
            ),
            t(
                "start_record_save",
                ("fetched_third_party_api",),
                "saving_my_record",
                guard="has_response",
            ),
            t("finish_record_save", ("saving_my_record",), "saved_my_record", after=("complete",)),
            t("fail_record_save", ("saving_my_record",), "failed_to_save_my_record"),
            t(
                "retry_save",
                ("failed_to_save_my_record",),
                "fetched_third_party_api",
                retry=True,
                after=("enqueue_save",),
            ),
            t("complete", ("saved_my_record",), "completed"),
        ),
        artefacts=(ArtefactSpec("third_party_api_response", "dict[str, Any]"),),
    )


def large_graph(n_states: int = 50, n_transitions: int = 120) -> FlowGraph:
    """Return a deterministic graph of ``n_states`` states and ``n_transitions`` transitions.

    A chain ``s00 -> s01 -> ...`` reaches the final state; every seventh state is an error
    state with a retry back; the remaining transitions jump by a fixed stride.
    """
    names = [f"s{i:02d}" for i in range(n_states)]
    states = tuple(
        StateSpec(
            name,
            initial=i == 0,
            final=i == n_states - 1,
            error=i % 7 == 6 and i != n_states - 1,
        )
        for i, name in enumerate(names)
    )
    transitions: list[TransitionSpec] = [
        TransitionSpec(f"step_{i:02d}", (names[i],), names[i + 1]) for i in range(n_states - 1)
    ]
    k = 0
    while len(transitions) < n_transitions:
        src = k % (n_states - 1)
        is_retry = states[src].error and k < n_states
        dst = (src - 2) % n_states if is_retry else (src * 7 + 3 + k // n_states) % n_states
        transitions.append(
            TransitionSpec(
                f"jump_{k:03d}",
                (names[src],),
                names[dst],
                retry=is_retry,
                guard="may_jump" if k % 5 == 0 else None,
                persists="blob" if k % 9 == 0 else None,
            )
        )
        k += 1
    return FlowGraph(name="LargeFlow", states=states, transitions=tuple(transitions))
