"""``flowstate-web serve`` prints the admin's URL: where the admin is mounted, not ``/``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from flowstate_web import cli_main


@pytest.mark.parametrize(("prefix", "path"), [(None, "/flows/"), ("/ops/flows", "/ops/flows/")])
def test_startup_prints_the_admin_url(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefix: str | None,
    path: str,
) -> None:
    for key in list(os.environ):
        if key.startswith("FLOWSTATE_") or key in {"DATABASE_URL", "SECRET_KEY"}:
            monkeypatch.delenv(key)
    monkeypatch.setenv("FLOWSTATE_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("FLOWSTATE_ADMIN_PASSWORD", "a-long-enough-password-123")
    if prefix:
        monkeypatch.setenv("FLOWSTATE_URL_PREFIX", prefix)
    served: list[Any] = []
    monkeypatch.setattr(cli_main, "_serve", lambda app, *a, **kw: served.append(app) or 0)
    assert cli_main.main(["serve", "--port", "8123"]) == 0
    assert served
    assert f"admin at http://127.0.0.1:8123{path}\n" in capsys.readouterr().out
