"""The shipped migrations through the real CLI: upgrade, downgrade, upgrade again, no drift."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests._proc import run

FLOWSTATE_TABLES = {
    "flowstate_flows",
    "flowstate_transitions",
    "flowstate_artefacts",
    "flowstate_state_counts",
    "flowstate_outbox",
}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def url(empty_db_url: str) -> str:
    """Return an empty database of this test alone (SQLite and PostgreSQL)."""
    return empty_db_url


def flask_db(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``flask --app flowstate_web.app db <args>`` with automatic migration turned off."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWSTATE_") and k not in {"DATABASE_URL", "SECRET_KEY"}
    }
    env |= {
        "FLOWSTATE_DATABASE_URL": url,
        "FLOWSTATE_INSTANCE_PATH": str(tmp_path / "instance"),
        "FLOWSTATE_ADMIN_PASSWORD": "cli",
        "FLOWSTATE_AUTO_MIGRATE": "0",
    }
    cmd = [sys.executable, "-m", "flask", "--app", "flowstate_web.app", "db", *args]
    return run(cmd, cwd=tmp_path, env=env, timeout=120)


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("select version_num from alembic_version")).scalar()
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_and_no_drift(url: str, tmp_path: Path) -> None:
    assert not tables(url) & FLOWSTATE_TABLES

    flask_db(url, tmp_path, "upgrade")
    assert tables(url) >= FLOWSTATE_TABLES
    assert revision(url) == "0012_bulk_runs"
    check = flask_db(url, tmp_path, "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr

    flask_db(url, tmp_path, "downgrade", "base")
    assert not tables(url) & FLOWSTATE_TABLES
    assert revision(url) is None

    flask_db(url, tmp_path, "upgrade")
    assert tables(url) >= FLOWSTATE_TABLES
    again = flask_db(url, tmp_path, "check")
    assert "No new upgrade operations detected" in again.stdout + again.stderr


def test_the_cli_uses_the_shipped_migrations_directory(url: str, tmp_path: Path) -> None:
    heads = flask_db(url, tmp_path, "heads")
    assert "0012_bulk_runs (head)" in heads.stdout
    assert not (tmp_path / "migrations").exists()  # nothing looked for ./migrations
