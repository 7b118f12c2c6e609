"""Each page runs a fixed number of SQL statements, whatever the number of rows it shows."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from .conftest import ADMIN, HX, count_queries, errored_branchy, errored_simple
from .flows import BranchyFlow


def statements(app: Flask, path: str, **headers: str) -> list[str]:
    web = app.test_client()
    web.get(path)  # warm-up: session cookie, diagram cache
    with count_queries(app) as seen:
        response = web.get(path, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return seen


def seeded(make_admin: Callable[..., Flask], n: int) -> tuple[Flask, int]:
    app = make_admin(FLOWSTATE_PAGE_SIZE=100)
    with app.app_context():
        flow = errored_branchy("seed")
        for i in range(n - 1):
            BranchyFlow.create(ref=f"r{i}").start({"i": i})
        for i in range(n):
            errored_simple(f"s{i}")
    return app, flow.id


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/types/AdminBranchyFlow",
        "/types/AdminBranchyFlow?errored=0&q=ref%3Dr1",
        "/types/AdminSimpleRetryFlow/bulk-retry",
        "/types/AdminBranchyFlow/diagram",
    ],
)
def test_statements_per_page_do_not_grow_with_rows(
    make_admin: Callable[..., Flask], path: str
) -> None:
    small, _ = seeded(make_admin, 5)
    few = statements(small, ADMIN + path)
    big, _ = seeded(make_admin, 50)
    many = statements(big, ADMIN + path)
    assert len(few) == len(many), (few, many)
    if big.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        # (SQLite's compiler always writes "LIMIT ? OFFSET ?", with an OFFSET of 0.)
        assert all("OFFSET" not in s.upper() for s in many)


def test_list_shows_all_rows_with_three_statements(make_admin: Callable[..., Flask]) -> None:
    app, _ = seeded(make_admin, 50)
    seen = statements(app, ADMIN + "/types/AdminBranchyFlow", **HX)
    assert len(seen) == 3  # counts, page, artefact counts
    assert sum("GROUP BY" in s.upper() for s in seen) == 2


def test_overview_counts_with_one_group_by(make_admin: Callable[..., Flask]) -> None:
    app, _ = seeded(make_admin, 5)
    seen = statements(app, ADMIN + "/", **HX)
    grouped = [s for s in seen if "GROUP BY" in s.upper()]
    assert len(grouped) == 1
    assert len(seen) == 2  # counts + oldest errored per type


def test_detail_page_statements_do_not_grow_with_history(
    make_admin: Callable[..., Flask],
) -> None:
    app = make_admin()
    with app.app_context():
        short = errored_branchy("short")
        long = errored_branchy("long")
        for _ in range(25):
            long.run("retry_work")
            long.run("fail")
    few = statements(app, f"{ADMIN}/types/AdminBranchyFlow/{short.id}")
    many = statements(app, f"{ADMIN}/types/AdminBranchyFlow/{long.id}")
    # The flow, its history, its artefacts; its hand-offs (unsent, recent sent) and the
    # transition that entered its state (for Re-dispatch).
    assert len(few) == len(many) == 6
