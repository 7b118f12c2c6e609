"""The wheel: it carries templates, static files and migrations, and the app starts from it.

The wheel is built from this checkout and installed (``--no-deps``) in a fresh virtualenv;
its dependencies come from the current environment's site-packages through a ``.pth`` line,
so the test needs no network. The editable install's path hook is *not* processed there, so
``flowstate_web`` is imported from the wheel (asserted).
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests import _proc

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("templates", "static", "migrations")


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    return _proc.run(cmd, cwd=cwd, env=env).stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--disable-pip-version-check", "-q", "-w", out, ROOT,
        cwd=out,
    )  # fmt: skip
    [built] = out.glob("flowstate_web-*.whl")
    return built


def shipped_files() -> set[str]:
    """Return every file of the checkout's shipped directories, as a wheel would name it."""
    names = set()
    for top in SHIPPED:
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                names.add(f"flowstate_web/_data/{path.relative_to(ROOT).as_posix()}")
    return names


@pytest.mark.slow
def test_wheel_contains_templates_static_and_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "flowstate_web/_data/migrations/env.py" in names
    assert "flowstate_web/_data/migrations/alembic.ini" in names
    assert any(n.startswith("flowstate_web/_data/migrations/versions/") for n in names)
    assert any(n.startswith("flowstate_web/_data/templates/flowstate/") for n in names)
    assert any(n.startswith("flowstate_web/_data/static/flowstate/") for n in names)
    missing = shipped_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    for module in ("app.py", "cli_main.py", "__main__.py", "demo/tasks.py"):
        assert f"flowstate_web/{module}" in names, module


@pytest.mark.slow
def test_app_starts_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(
        python, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
        "-q", wheel, cwd=tmp_path,
    )  # fmt: skip
    purelib = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
    ).strip()
    (Path(purelib) / "_deps_from_dev_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    script = tmp_path / "start.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, re, sys
            import flowstate_web
            from flowstate_web._resources import resource_dir
            from flowstate_web.app import create_app, db
            from sqlalchemy import inspect

            app = create_app({
                "TESTING": True,
                "FLOWSTATE_INSTANCE_PATH": sys.argv[1],
                "FLOWSTATE_ADMIN_PASSWORD": "pw",
                "FLOWSTATE_DEMO": True,
            })
            with app.app_context():
                tables = sorted(inspect(db.engine).get_table_names())
            client = app.test_client()
            login = client.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
            client.post("/login", data={"csrf_token": token, "password": "pw"})
            overview = client.get("/flows/")
            print(json.dumps({
                "package": flowstate_web.__file__,
                "migrations": str(resource_dir("migrations")),
                "templates": str(resource_dir("templates")),
                "tables": tables,
                "login": login.status_code,
                "overview": overview.status_code,
                "overview_has_demo": "OrderFulfilmentFlow" in overview.text,
            }))
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWSTATE_", "PYTHON"))}
    out = run(python, script, tmp_path / "instance", cwd=tmp_path, env=env)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["package"].startswith(str(venv)), result["package"]
    assert result["migrations"].startswith(str(venv))
    assert result["templates"].startswith(str(venv))
    assert {"flowstate_flows", "flowstate_transitions", "flowstate_artefacts"} <= set(
        result["tables"]
    )
    assert result["login"] == 200
    assert result["overview"] == 200
    assert result["overview_has_demo"]


@pytest.mark.slow
def test_python_m_flowstate_web_runs_the_cli(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTATE_")}
    out = run(sys.executable, "-m", "flowstate_web", "serve", "--help", cwd=tmp_path, env=env)
    for flag in ("--host", "--port", "--demo", "--public", "--debug"):
        assert flag in out
