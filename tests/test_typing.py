"""User code is checked by ``mypy --strict``: props and transitions are typed, not ``Any``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api", reason="mypy is a dev dependency")

USER_CODE = """
from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow

def use(flow: SyncThirdPartyApiFlow) -> None:
    reveal_type(flow.my_record_id)
    reveal_type(flow.third_party_api_response.latest())
    reveal_type(flow.pick())
    wrong: int = flow.third_party_id
    flow.finish_third_party_api_request("not a dict")
    flow.third_party_id = "tp-9"
    flow.third_party_id = 9
    flow.state = "completed"
    flow.third_party_idd = "typo"
    reveal_type(flow.completed_at)
"""


def test_mypy_strict_sees_real_types(tmp_path: Path) -> None:
    path = tmp_path / "user_code.py"
    path.write_text(USER_CODE)
    out, err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(path)]
    )
    assert status == 1, out + err
    revealed = re.findall(r'Revealed type is "([^"]+)"', out.replace("builtins.", ""))
    assert revealed == [
        "str",
        "dict[str, Any] | None",
        "flowstate_web.records.HistoryEntry",
        "datetime.datetime | None",
    ]
    assert (
        'Incompatible types in assignment (expression has type "str", variable has type "int")'
        in out
    )
    assert 'Argument 1 has incompatible type "str"; expected "dict[str, Any]"' in out
    # Props are typed on assignment too; row attributes are read-only; typos are caught.
    assert (
        'Incompatible types in assignment (expression has type "int", variable has type "str")'
        in out
    )
    assert 'expression has type "str", variable has type "Never"' in out
    assert 'has no attribute "third_party_idd"' in out
    assert out.count("error:") == 5, out
