"""The JSON-aware diff the admin shows between consecutive artefact versions."""

from __future__ import annotations

from typing import Any

from flowstate_web.jsondiff import Change, diff, short


def kinds(old: Any, new: Any) -> list[tuple[str, str]]:
    return [(c.kind, c.path) for c in diff(old, new).changes]


def test_same_values_have_no_changes() -> None:
    value = {"a": [1, {"b": None}], "c": "x", "d": 1.5, "e": True}
    assert diff(value, value).empty
    assert diff(value, value).changes == ()
    assert diff({"n": 1}, {"n": 1.0}).empty  # the same JSON number


def test_added_removed_changed_keys_with_old_and_new_values() -> None:
    result = diff({"a": 1, "b": "x", "c": 3}, {"a": 2, "c": 3, "d": [1]})
    assert result.changes == (
        Change("changed", ".a", "1", "2"),
        Change("removed", ".b", '"x"', None),
        Change("added", ".d", None, "[1]"),
    )
    assert (result.count("added"), result.count("removed"), result.count("changed")) == (1, 1, 1)
    assert not result.truncated


def test_nested_paths_are_jq_style() -> None:
    old = {"order": {"items": [{"sku": "A", "qty": 1}], "odd key": {"x": 1}}}
    new = {"order": {"items": [{"sku": "A", "qty": 2}], "odd key": {"x": 2}}}
    assert kinds(old, new) == [
        ("changed", ".order.items[0].qty"),
        ("changed", '.order["odd key"].x'),
    ]
    assert kinds({"a b": 1}, {"a b": 2}) == [("changed", '.["a b"]')]


def test_type_changes_and_whole_value() -> None:
    assert kinds({"a": {"b": 1}}, {"a": [1]}) == [("changed", ".a")]
    assert kinds(1, "1") == [("changed", ".")]
    assert kinds({"flag": 1}, {"flag": True}) == [("changed", ".flag")]  # true is not 1
    assert kinds(None, {"a": 1}) == [("changed", ".")]


def test_arrays_align_equal_items() -> None:
    # An item inserted at the front is one addition, not a change at every index.
    assert kinds([1, 2, 3], [0, 1, 2, 3]) == [("added", "[0]")]
    assert kinds(["a", "b", "c"], ["a", "c"]) == [("removed", "[1]")]
    assert kinds([{"id": 1, "v": "x"}, {"id": 2}], [{"id": 1, "v": "y"}, {"id": 2}]) == [
        ("changed", "[0].v")
    ]
    assert kinds([1, 2], [1, 2, 3, 4]) == [("added", "[2]"), ("added", "[3]")]


def test_long_arrays_fall_back_to_index_by_index() -> None:
    old = list(range(600))
    new = [*range(600), 600]
    new[5] = -1
    assert kinds(old, new) == [("changed", "[5]"), ("added", "[600]")]


def test_output_is_bounded() -> None:
    old = {f"k{i}": i for i in range(1000)}
    new = {f"k{i}": i + 1 for i in range(1000)}
    result = diff(old, new, max_changes=10)
    assert len(result.changes) == 10
    assert result.truncated
    big = diff({"a": "x" * 10_000}, {"a": "y" * 10_000}, value_chars=50).changes[0]
    assert big.old is not None and big.new is not None
    assert len(big.old) == 50 and big.old.endswith("…")
    assert len(big.new) == 50


def test_deep_and_hostile_values_never_fail() -> None:
    deep_a: Any = 1
    deep_b: Any = 2
    for _ in range(2000):
        deep_a, deep_b = [deep_a], [deep_b]
    result = diff({"d": deep_a}, {"d": deep_b})
    assert len(result.changes) == 1
    assert result.changes[0].path.startswith(".d[0][0]")
    # Text UTF-8 cannot hold is shown escaped, never raised on.
    change = diff({"s": "\ud800"}, {"s": "ok"}).changes[0]
    assert change.old == '"\\ud800"'
    change.old.encode()
    assert short(float("nan")) == "NaN"
    assert diff({"n": float("nan")}, {"n": float("nan")}).empty


def test_to_dict_is_json_ready() -> None:
    assert diff({"a": 1}, {}).to_dict() == {
        "changes": [{"kind": "removed", "path": ".a", "old": "1", "new": None}],
        "truncated": False,
    }
