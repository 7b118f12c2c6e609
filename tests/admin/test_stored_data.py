"""The admin never fails because of stored data.

Rows written before the engine's boundary existed (here: by raw SQL) may hold what the engine
now refuses: lone surrogates and NUL escapes in JSON, JSON nested ~1000 deep, 10 MB values,
NaN or invalid JSON text (SQLite). Every page still renders as HTML, bounded in size, with
what cannot be shown replaced or cut with a visible marker.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text
from sqlalchemy.exc import DataError

from .conftest import ADMIN, HX

TYPE = "AdminBranchyFlow"
BIG = 10 * 1024 * 1024
#: No admin page may come near the size of a stored value.
MAX_PAGE = 1_500_000


def deep_json(depth: int) -> str:
    return "[" * depth + '"bottom"' + "]" * depth


def _json_param(db: SQLAlchemy) -> str:
    # On PostgreSQL the JSON text goes in as text and is cast by the server (json keeps the
    # text as given, like a row written before the boundary).
    return "CAST(:{} AS json)" if db.engine.dialect.name == "postgresql" else ":{}"


def insert_flow(
    db: SQLAlchemy,
    props: str,
    *,
    state: str = "broken",
    errored: bool = True,
    error_message: str | None = None,
) -> int:
    """Insert a flow row by raw SQL with ``props`` as JSON text; return its id."""
    now = datetime.now(UTC)
    j = _json_param(db)
    row = db.session.execute(
        text(
            "INSERT INTO flowstate_flows (type, state, errored, seq, props, created_at,"
            " updated_at, state_entered_at, last_errored_at, last_error_type,"
            " last_error_message) VALUES (:type, :state, :errored, 2, "
            + j.format("props")
            + ", :now, :now, :now, :now, 'ValueError', :msg) RETURNING id"
        ),
        {
            "type": TYPE,
            "state": state,
            "errored": errored,
            "props": props,
            "now": now,
            "msg": error_message,
        },
    ).scalar_one()
    return int(row)


def insert_history(
    db: SQLAlchemy,
    flow_id: int,
    *,
    meta: str | None = None,
    payload: str | None = None,
    big_text: str | None = None,
) -> None:
    """Insert start (with an artefact holding ``payload``) and fail rows by raw SQL."""
    now = datetime.now(UTC)
    j = _json_param(db)
    values = (
        "(:flow_id, :seq, :name, :src, :dst, :now, :actor, :reason, :etype, :emsg, :etb, "
        + j.format("meta")
        + ")"
    )
    insert = text(
        "INSERT INTO flowstate_transitions (flow_id, seq, name, from_state, to_state,"
        " created_at, actor, reason, error_type, error_message, error_traceback, meta)"
        f" VALUES {values} RETURNING id"
    )
    start = db.session.execute(
        insert,
        {
            "flow_id": flow_id,
            "seq": 1,
            "name": "start",
            "src": "new",
            "dst": "working",
            "now": now,
            "actor": big_text,
            "reason": big_text,
            "etype": None,
            "emsg": None,
            "etb": None,
            "meta": meta,
        },
    ).scalar_one()
    db.session.execute(
        insert,
        {
            "flow_id": flow_id,
            "seq": 2,
            "name": "fail",
            "src": "working",
            "dst": "broken",
            "now": now,
            "actor": None,
            "reason": big_text,
            "etype": "ValueError",
            "emsg": big_text,
            "etb": big_text,
            "meta": meta,
        },
    )
    if payload is not None:
        db.session.execute(
            text(
                "INSERT INTO flowstate_artefacts (flow_id, transition_id, name, payload,"
                " created_at) VALUES (:flow_id, :tid, 'report', " + j.format("payload") + ", :now)"
            ),
            {"flow_id": flow_id, "tid": start, "payload": payload, "now": now},
        )


def artefact_ids(db: SQLAlchemy, flow_id: int) -> list[int]:
    rows = db.session.execute(
        text("SELECT id FROM flowstate_artefacts WHERE flow_id = :f ORDER BY id"), {"f": flow_id}
    )
    return [int(r[0]) for r in rows]


def pages(db: SQLAlchemy, flow_id: int) -> list[tuple[str, dict[str, str]]]:
    """Return every admin page that shows this flow (full page and htmx partial)."""
    base = f"{ADMIN}/types/{TYPE}"
    out = [
        (f"{ADMIN}/", {}),
        (f"{ADMIN}/", HX),
        (base, {}),
        (base, HX),
        (f"{base}?errored=1", {}),
        (f"{base}/diagram", {}),
        (f"{base}/bulk-retry?errored=1", {}),
        (f"{base}/{flow_id}", {}),
        (f"{base}/{flow_id}", HX),
    ]
    out += [(f"{base}/{flow_id}/artefacts/{a}", {}) for a in artefact_ids(db, flow_id)]
    return out


def check_pages(web: FlaskClient, db: SQLAlchemy, flow_id: int) -> dict[str, str]:
    """Load every page; each must be a bounded HTML 200. Return the flow page's HTML."""
    db.session.commit()
    found: dict[str, str] = {}
    for path, headers in pages(db, flow_id):
        response = web.get(path, headers=headers)
        body = response.get_data()
        assert response.status_code == 200, (path, body[:2000])
        assert response.mimetype == "text/html", path
        assert len(body) < MAX_PAGE, (path, len(body))
        html = body.decode("utf-8")  # strict: the page is valid UTF-8
        assert "\x00" not in html, path
        found.setdefault(path, html)
    return found


def flow_page(found: dict[str, str], flow_id: int) -> str:
    return found[f"{ADMIN}/types/{TYPE}/{flow_id}"]


@pytest.fixture
def db(admin: Flask) -> SQLAlchemy:
    ext: SQLAlchemy = admin.extensions["sqlalchemy"]
    return ext


def test_lone_surrogates_and_nul_escapes_in_json(
    admin: Flask, web: FlaskClient, db: SQLAlchemy
) -> None:
    # PostgreSQL's json accepts a lone surrogate escape (at the start of a string) and \u0000,
    # but the props' jsonb index refuses both: there only artefacts and meta can hold them.
    props = '{"ref": "\\ud800", "extra": {"\\udc80": "nul \\u0000 here"}}'
    pg = db.engine.dialect.name == "postgresql"
    if pg:
        props = '{"ref": "plain"}'
    flow_id = insert_flow(db, props)
    insert_history(
        db,
        flow_id,
        meta='{"who": "\\ud83d"}',
        payload='{"a": "\\udc80 surrogate", "b": "\\u0000"}',
    )
    found = check_pages(web, db, flow_id)
    page = flow_page(found, flow_id)
    if not pg:
        assert "&#34;\ufffd&#34;" in page or '"\ufffd"' in page
        assert "nul \ufffd here" in page
        assert "ref=\ufffd" in found[f"{ADMIN}/types/{TYPE}"]
    artefact = next(v for k, v in found.items() if "/artefacts/" in k)
    assert "\ufffd surrogate" in artefact


@pytest.mark.parametrize("depth", [980, 1000, 5000])
def test_deeply_nested_json(admin: Flask, web: FlaskClient, db: SQLAlchemy, depth: int) -> None:
    flow_id = insert_flow(db, '{"ref": "deep", "extra": ' + deep_json(depth) + "}")
    insert_history(db, flow_id, meta='{"m": ' + deep_json(depth) + "}", payload=deep_json(depth))
    found = check_pages(web, db, flow_id)
    page = flow_page(found, flow_id)
    assert "deep" in page
    assert "…" in page  # the structure is cut with a visible marker


def test_ten_megabyte_values(admin: Flask, web: FlaskClient, db: SQLAlchemy) -> None:
    huge = "h" * BIG
    flow_id = insert_flow(
        db,
        json.dumps({"ref": "big-" + "p" * BIG, "extra": {"k": huge}}),
        error_message="E" * BIG,
    )
    insert_history(
        db,
        flow_id,
        meta=json.dumps({"m": huge}),
        payload=json.dumps({"data": huge, "tail": "THE-END"}),
        big_text="T" * BIG if db.engine.dialect.name == "sqlite" else "T" * 200,
    )
    found = check_pages(web, db, flow_id)
    page = flow_page(found, flow_id)
    assert "big-ppp" in page
    assert "characters]" in page or "cut" in page


def test_nan_and_invalid_json_text(admin: Flask, web: FlaskClient, db: SQLAlchemy) -> None:
    if db.engine.dialect.name == "postgresql":
        # PostgreSQL's json type refuses such text itself: no page can meet it there.
        for bad in ('{"ratio": NaN}', '{"ref": "broken json", '):
            with pytest.raises(DataError, match="invalid input syntax for type json"):
                insert_flow(db, bad)
            db.session.rollback()
        return
    nan_id = insert_flow(db, '{"ref": "nan", "ratio": NaN, "count": Infinity}')
    insert_history(db, nan_id, meta='{"x": NaN}', payload='{"y": -Infinity}')
    found = check_pages(web, db, nan_id)
    assert "NaN" in flow_page(found, nan_id)

    bad_id = insert_flow(db, '{"ref": "broken json", ')
    insert_history(db, bad_id, meta="{nope", payload='{"unterminated": "')
    found = check_pages(web, db, bad_id)
    page = flow_page(found, bad_id)
    assert "not valid JSON" in page
    assert "broken json" in page  # the stored text is shown, cut


def test_flow_with_unreadable_props_is_listed_among_good_ones(
    admin: Flask, web: FlaskClient, db: SQLAlchemy
) -> None:
    good = insert_flow(db, '{"ref": "good-one"}')
    deep = insert_flow(db, '{"ref": "deep", "extra": ' + deep_json(3000) + "}")
    db.session.commit()
    html = web.get(f"{ADMIN}/types/{TYPE}").get_data(as_text=True)
    assert f"#{good}" in html and "good-one" in html
    assert f"#{deep}" in html


def test_huge_artefact_page_is_capped_and_the_raw_json_downloads(
    admin: Flask, web: FlaskClient, db: SQLAlchemy
) -> None:
    from .flows import BranchyFlow

    payload = {"rows": [{"i": i, "pad": "x" * 1000} for i in range(10_000)], "tail": "THE-END"}
    flow = BranchyFlow.create(ref="huge")
    flow.start(payload)
    entry = flow.latest_artefact("report")
    assert entry is not None
    page = web.get(f"{ADMIN}/types/{TYPE}/{flow.id}/artefacts/{entry.id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert len(page.data) < 400_000
    assert "Shown up to 262.1 kB of 10.2 MB (pretty-printed)" in html
    assert "THE-END" not in html
    assert f"/artefacts/{entry.id}.json" in html

    raw = web.get(f"{ADMIN}/types/{TYPE}/{flow.id}/artefacts/{entry.id}.json")
    assert raw.status_code == 200
    assert raw.mimetype == "application/json"
    assert raw.is_streamed
    disposition = raw.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert f"AdminBranchyFlow-{flow.id}-report-{entry.id}.json" in disposition
    assert json.loads(raw.get_data()) == payload

    # The flow page previews it without reading it whole.
    detail = web.get(f"{ADMIN}/types/{TYPE}/{flow.id}")
    assert detail.status_code == 200 and len(detail.data) < 200_000
    assert "Truncated at 4.1 kB of 10.2 MB" in detail.get_data(as_text=True)


def test_raw_json_download_is_access_controlled(make_admin: Any) -> None:
    from .flows import BranchyFlow

    app = make_admin(access=False)
    with app.app_context():
        flow = BranchyFlow.create(ref="secret")
        flow.start({"secret": True})
        entry = flow.latest_artefact("report")
        assert entry is not None
        web = app.test_client()
        base = f"{ADMIN}/types/{TYPE}/{flow.id}/artefacts/{entry.id}"
        for path in (base, base + ".json"):
            response = web.get(path)
            assert response.status_code == 403
            assert b"secret" not in response.data


# -- the admin's writes meet the same boundary ---------------------------------------------


def _retry(web: FlaskClient, flow_id: int, **fields: str) -> Any:
    from .conftest import csrf_token

    data = {"transition": "retry_work", "csrf_token": csrf_token(web), **fields}
    return web.post(f"{ADMIN}/types/{TYPE}/{flow_id}/retry", data=data, headers=HX)


def test_retry_and_bulk_refuse_an_unstorable_reason_with_400(
    admin: Flask, web: FlaskClient
) -> None:
    from .conftest import csrf_token, errored_branchy
    from .flows import BranchyFlow

    flow = errored_branchy("nul-reason")
    response = _retry(web, flow.id, reason="because\x00")
    assert response.status_code == 400
    assert "reason: contains a NUL character" in response.get_data(as_text=True)
    data = {"csrf_token": csrf_token(web), "via:broken": "retry_work", "reason": "x\x00"}
    bulk = web.post(f"{ADMIN}/types/{TYPE}/bulk-retry", data=data)
    assert bulk.status_code == 400
    assert BranchyFlow.get(flow.id).state == "broken"


def test_an_actor_the_engine_cannot_store_is_reported_not_a_500(
    make_admin: Any,
) -> None:
    from .conftest import csrf_token, errored_branchy
    from .flows import BranchyFlow

    app = make_admin(actor="ops\x00")
    with app.app_context():
        flow = errored_branchy("long-actor")
        web = app.test_client()
        response = _retry(web, flow.id)
        assert response.status_code == 409
        assert "actor: string &#39;ops\\x00&#39; contains a NUL" in response.get_data(as_text=True)
        data = {"csrf_token": csrf_token(web), "via:broken": "retry_work"}
        html = web.post(f"{ADMIN}/types/{TYPE}/bulk-retry", data=data).get_data(as_text=True)
        assert '<b class="fs-failed">1</b>' in html
        assert "contains a NUL character" in html
        assert BranchyFlow.get(flow.id).state == "broken"


def test_retry_posts_on_unreadable_rows_report_them(
    admin: Flask, web: FlaskClient, db: SQLAlchemy, caplog: pytest.LogCaptureFixture
) -> None:
    from .conftest import csrf_token

    flow_id = insert_flow(db, '{"ref": "deep", "extra": ' + deep_json(3000) + "}")
    insert_history(db, flow_id)
    db.session.commit()
    # The engine cannot load this row to run a transition: the retry says so in the panel
    # (the admin's status for a transition that raised), and the panel itself renders.
    response = _retry(web, flow_id)
    html = response.get_data(as_text=True)
    assert "Not retried: retry_work raised" in html and "RecursionError" in html
    assert f'id="flow-{flow_id}"' in html
    data = {"csrf_token": csrf_token(web), "via:broken": "retry_work"}
    bulk = web.post(f"{ADMIN}/types/{TYPE}/bulk-retry", data=data)
    assert bulk.status_code == 200, bulk.get_data(as_text=True)[:2000]
    assert '<b class="fs-failed">1</b>' in bulk.get_data(as_text=True)


def test_prop_search_skips_rows_sqlite_cannot_read_as_json(
    admin: Flask, web: FlaskClient, db: SQLAlchemy
) -> None:
    good = insert_flow(db, '{"ref": "x", "count": 3}')
    if db.engine.dialect.name == "sqlite":
        insert_flow(db, '{"ref": "broken json", ')
        insert_flow(db, '{"ref": "x", "ratio": NaN}')
    db.session.commit()
    for q in ("ref=x", "count=3"):
        response = web.get(f"{ADMIN}/types/{TYPE}", query_string={"q": q})
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        assert f'id="flow-{good}"' in html
        assert html.count('<tr id="flow-') == 1


# -- the admin's rendering helpers (no database) -------------------------------------------


def test_render_json_is_bounded_and_marks_what_it_cuts() -> None:
    from flowstate_web.admin.present import render_json
    from flowstate_web.admin.stored import decode

    deep: Any = "bottom"
    for _ in range(900):
        deep = [deep]
    shown = render_json(deep, max_depth=5)
    assert not shown.truncated
    assert "[… 1 items]" in shown.text and "bottom" not in shown.text
    big = render_json({"data": "x" * 10_000_000}, budget=1000)
    assert big.truncated and len(big.text) == 1000
    odd = render_json({"k\ud800": ["\x00", float("nan"), float("inf")]}, indent=None)
    assert odd.text == '{"k\ufffd": ["\ufffd", NaN, Infinity]}'
    assert render_json(decode("{oops")).text.startswith("⚠ not valid JSON: {oops")
    assert render_json(decode("[" * 5000 + "]" * 5000)).text.startswith(
        "⚠ nested too deep to read: [[["
    )


def test_clip_and_props_summary() -> None:
    from flowstate_web.admin.present import clip, props_summary

    assert clip(None) == "" and clip("a\x00") == "a\ufffd"
    assert clip("E" * 100_000, 60).endswith("… [cut at 60 of 100,000 characters]")
    summary = props_summary({"ref": "r" * 10_000_000, "n": 1})
    assert len(summary) == 90 and summary.endswith("…")
    assert props_summary({"a\ud800": "\x00", "b": [1]}) == "a\ufffd=\ufffd, b=[1]"


def test_nul_in_text_columns(admin: Flask, web: FlaskClient, db: SQLAlchemy) -> None:
    if db.engine.dialect.name == "postgresql":
        # PostgreSQL's text cannot hold NUL at all: no page can meet it there.
        with pytest.raises(DataError, match="NUL"):
            insert_flow(db, '{"ref": "n"}', error_message="bad \x00 text")
        db.session.rollback()
        return
    flow_id = insert_flow(db, '{"ref": "n"}', error_message="last \x00 error")
    insert_history(db, flow_id, payload='{"a": 1}', big_text="who \x00 why")
    found = check_pages(web, db, flow_id)
    page = flow_page(found, flow_id)
    assert "last \ufffd error" in page and "who \ufffd why" in page
    assert "last \ufffd error" in found[f"{ADMIN}/types/{TYPE}"]


def test_render_json_exact_budget_is_not_cut() -> None:
    from flowstate_web.admin.present import pretty, render_json

    assert render_json([1, 2], budget=len("[\n  1,\n  2\n]")) == render_json([1, 2])
    assert not render_json([1, 2], budget=len("[\n  1,\n  2\n]")).truncated
    assert render_json([1, 2], budget=5).truncated
    assert pretty({"a": "b" * 100}, 20).endswith("… (cut at 20 B)")
