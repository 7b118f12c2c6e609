"""The flow type page: diagram, filters, search, keyset pagination, fragments."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from flowstate_web.models import flows

from .conftest import ADMIN, HX, errored_branchy
from .flows import BranchyFlow

PAGE = ADMIN + "/types/AdminBranchyFlow"
_IDS = re.compile(r'<tr id="flow-(\d+)"')


def ids(html: str) -> list[int]:
    return [int(i) for i in _IDS.findall(html)]


def test_rows_show_state_props_error_age_artefacts_and_retry(
    admin: Flask, web: FlaskClient
) -> None:
    plain = BranchyFlow.create(ref="plain")
    broken = errored_branchy("broken-one")

    html = web.get(PAGE).get_data(as_text=True)

    assert ids(html) == [broken.id, plain.id]  # newest first
    row = html[html.index(f'id="flow-{broken.id}"') :]
    row = row[: row.index("</tr>")]
    assert 'hx-target="this"' in row and 'hx-swap="outerHTML"' in row
    assert "fs-badge-error" in row
    assert "ref=broken-one" in row
    assert "upstream said no for broken-one" in row
    assert '<td class="fs-num">1</td>' in row  # one artefact (start persisted a report)
    assert 'value="retry_work"' in row and 'value="restart"' in row
    plain_row = html[html.index(f'id="flow-{plain.id}"') :]
    assert "Retry" not in plain_row[: plain_row.index("</tr>")]


def row_of(html: str, flow_id: int) -> str:
    row = html[html.index(f'id="flow-{flow_id}"') :]
    return row[: row.index("</tr>")]


def test_a_recovered_flow_does_not_show_its_old_error_as_current(
    admin: Flask, web: FlaskClient
) -> None:
    recovered = errored_branchy("recovered-one")
    recovered.run("retry_work")
    recovered.run("finish")
    still = errored_branchy("still-broken")
    html = web.get(PAGE).get_data(as_text=True)
    done = row_of(html, recovered.id)
    visible = re.sub(r"<[^>]*>", " ", done)  # the tooltip may keep it, the cell does not
    assert "upstream said no" not in visible
    assert "earlier error, recovered" in visible
    assert "upstream said no for still-broken" in row_of(html, still.id)
    assert "earlier error" not in row_of(html, still.id)


def test_diagram_with_counts_and_downloads(admin: Flask, web: FlaskClient) -> None:
    BranchyFlow.create(ref="a")
    html = web.get(PAGE).get_data(as_text=True)
    assert 'class="flowstate-diagram"' in html
    assert "<svg" in html
    for fmt in ("svg", "png", "dot", "mermaid"):
        assert f'href="/flows/types/AdminBranchyFlow/diagram.{fmt}"' in html


@pytest.mark.parametrize(
    ("fmt", "mimetype", "start"),
    [
        ("svg", "image/svg+xml", b"<"),
        ("png", "image/png", b"\x89PNG"),
        ("dot", "text/vnd.graphviz", b"digraph"),
        ("mermaid", "text/plain", b"stateDiagram-v2"),
    ],
)
def test_diagram_downloads(
    admin: Flask, web: FlaskClient, fmt: str, mimetype: str, start: bytes
) -> None:
    response = web.get(f"{PAGE}/diagram.{fmt}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.data.lstrip().startswith(start)
    assert "attachment" in response.headers["Content-Disposition"]


def test_diagram_download_unknown_format_is_404(admin: Flask, web: FlaskClient) -> None:
    assert web.get(f"{PAGE}/diagram.gif").status_code == 404


def test_diagram_fragment_polls_itself(admin: Flask, web: FlaskClient) -> None:
    html = web.get(f"{PAGE}/diagram").get_data(as_text=True)
    assert html.lstrip().startswith("<figure")
    assert 'hx-get="/flows/types/AdminBranchyFlow/diagram"' in html


def test_filter_by_state_and_errored(admin: Flask, web: FlaskClient) -> None:
    new = BranchyFlow.create(ref="n")
    broken = errored_branchy("b")
    working = BranchyFlow.create(ref="w")
    working.start()

    assert ids(web.get(PAGE + "?state=new").get_data(as_text=True)) == [new.id]
    both = web.get(PAGE + "?state=new&state=working").get_data(as_text=True)
    assert ids(both) == [working.id, new.id]
    assert ids(web.get(PAGE + "?errored=1").get_data(as_text=True)) == [broken.id]
    assert ids(web.get(PAGE + "?errored=0").get_data(as_text=True)) == [working.id, new.id]


def test_filter_by_created_and_updated_range(admin: Flask, web: FlaskClient) -> None:
    old = BranchyFlow.create(ref="old")
    recent = BranchyFlow.create(ref="recent")
    db = admin.extensions["sqlalchemy"]
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    db.session.execute(
        update(flows).where(flows.c.id == old.id).values(created_at=long_ago, updated_at=long_ago)
    )
    db.session.commit()
    cut = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")

    assert ids(web.get(f"{PAGE}?created_from={cut}").get_data(as_text=True)) == [recent.id]
    assert ids(web.get(f"{PAGE}?created_to={cut}").get_data(as_text=True)) == [old.id]
    assert ids(web.get(f"{PAGE}?updated_to=2020-06-01").get_data(as_text=True)) == [old.id]
    assert ids(web.get(f"{PAGE}?updated_from={cut}").get_data(as_text=True)) == [recent.id]


def test_search_by_id_and_by_prop(admin: Flask, web: FlaskClient) -> None:
    a = BranchyFlow.create(ref="alpha", count=7, ratio=1.5, urgent=True)
    b = BranchyFlow.create(ref="beta", count=8)

    assert ids(web.get(f"{PAGE}?q={a.id}").get_data(as_text=True)) == [a.id]
    assert ids(web.get(f"{PAGE}?q=%23{b.id}").get_data(as_text=True)) == [b.id]
    assert ids(web.get(f"{PAGE}?q=ref%3Dbeta").get_data(as_text=True)) == [b.id]
    assert ids(web.get(f"{PAGE}?q=count%3D7").get_data(as_text=True)) == [a.id]
    assert ids(web.get(f"{PAGE}?q=ratio%3D1.5").get_data(as_text=True)) == [a.id]
    assert ids(web.get(f"{PAGE}?q=urgent%3Dtrue").get_data(as_text=True)) == [a.id]
    assert ids(web.get(f"{PAGE}?q=urgent%3D0").get_data(as_text=True)) == [b.id]
    # A quote in the value is a value, not SQL.
    assert ids(web.get(f"{PAGE}?q=ref%3Dx%27%20OR%20%271%27%3D%271").get_data(as_text=True)) == []


def test_bare_value_searches_every_prop_and_the_id(admin: Flask, web: FlaskClient) -> None:
    a = BranchyFlow.create(ref="rec_8755cc56", count=7, ratio=2.5)
    b = BranchyFlow.create(ref="7", count=3)
    c = BranchyFlow.create(ref="other", count=0, ratio=7.0)
    BranchyFlow.create(ref="rec_8755cc5", count=70)  # close is not equal

    def found(q: str) -> list[int]:
        response = web.get(PAGE, query_string={"q": q})
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        return ids(response.get_data(as_text=True))

    assert found("rec_8755cc56") == [a.id]  # a string prop, without naming it
    assert found(" rec_8755cc56 ") == [a.id]
    assert found("7") == sorted([a.id, b.id, c.id], reverse=True)  # int, str and float props
    assert found("2.5") == [a.id]  # only the float prop can hold it
    assert found(str(b.id)) == [b.id]  # the flow id too
    assert found("nothing-like-it") == []
    assert found("abc==") == []  # base64-like: "abc=" is no prop name, so a bare value
    page = web.get(PAGE, query_string={"q": "rec_8755cc56"}).get_data(as_text=True)
    assert "1</b> matches the filter" in page


def test_search_on_sqlite_reads_a_bounded_number_of_rows(
    admin: Flask, web: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowstate_web.admin import queries

    old = BranchyFlow.create(ref="needle")
    newer = [BranchyFlow.create(ref=f"hay{i}") for i in range(3)]
    fresh = BranchyFlow.create(ref="needle")
    monkeypatch.setattr(queries, "SQLITE_SEARCH_LIMIT", 3)
    html = web.get(PAGE, query_string={"q": "needle"}).get_data(as_text=True)
    if admin.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        assert ids(html) == [fresh.id]  # the older match is past the newest 3
        assert "searched the newest 3 flows" in html, html
        # A flow id is still found however old.
        assert ids(web.get(PAGE, query_string={"q": str(old.id)}).get_data(as_text=True)) == [
            old.id
        ]
    else:  # the GIN index answers: never capped
        assert ids(html) == [fresh.id, old.id]
        assert "searched the newest" not in html
    assert newer


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("q=nope%3D1", "has no prop"),
        ("q=extra%3D1", "only scalar props"),
        ("q=count%3Dabc", "is a int"),
        ("q=ratio%3Dnan", "is a float"),
        ("q=%23abc", "flow id"),
        ("created_from=yesterday", "created_from"),
        ("updated_to=2024-13-01", "updated_to"),
        ("created_from=2024-02-01&created_to=2024-01-01", "is after"),
        ("errored=maybe", "errored"),
        ("before=abc", "page cursor"),
        ("after=-3", "page cursor"),
        ("before=5&after=2", "not both"),
        ("live=sometimes", "live"),
        ("q=" + "9" * 300, "at most"),
    ],
)
def test_malformed_filters_and_cursors_are_400(
    admin: Flask, web: FlaskClient, query: str, message: str
) -> None:
    response = web.get(f"{PAGE}?{query}")
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_keyset_pagination_walks_every_flow_once(
    make_admin: Callable[..., Flask],
) -> None:
    app = make_admin(FLOWSTATE_PAGE_SIZE=3)
    with app.app_context():
        made = [BranchyFlow.create(ref=f"f{i}").id for i in range(8)]
        web = app.test_client()
        seen: list[int] = []
        url = PAGE
        pages = 0
        while url:
            html = web.get(url).get_data(as_text=True)
            seen += ids(html)
            pages += 1
            older = re.search(r'href="([^"]+)" rel="next"', html)
            url = older.group(1).replace("&amp;", "&") if older else ""
        assert seen == sorted(made, reverse=True)
        assert pages == 3
        # And back: the "newer" link of the last page leads to the page before it.
        last = web.get(f"{PAGE}?before={seen[5]}").get_data(as_text=True)
        newer = re.search(r'href="([^"]+)" rel="prev"', last)
        assert newer is not None
        back = web.get(newer.group(1).replace("&amp;", "&")).get_data(as_text=True)
        assert ids(back) == seen[3:6]


def test_filters_survive_paging_and_live_refresh(
    make_admin: Callable[..., Flask],
) -> None:
    app = make_admin(FLOWSTATE_PAGE_SIZE=2)
    with app.app_context():
        for i in range(5):
            errored_branchy(f"e{i}")
        html = app.test_client().get(PAGE + "?errored=1&state=broken").get_data(as_text=True)
        poll = re.search(r'id="fs-list"[^>]*hx-get="([^"]+)"', html)
        assert poll is not None
        assert "errored=1" in poll.group(1) and "state=broken" in poll.group(1)
        older = re.search(r'href="([^"]+)" rel="next"', html)
        assert older is not None
        assert "errored=1" in older.group(1) and "before=" in older.group(1)


def test_htmx_request_gets_the_list_fragment(admin: Flask, web: FlaskClient) -> None:
    BranchyFlow.create(ref="a")
    part = web.get(PAGE + "?state=new", headers=HX)
    html = part.get_data(as_text=True)
    assert "<html" not in html and "fs-filters" not in html
    assert 'class="fs-table fs-flows"' in html
    assert "HX-Request" in part.headers["Vary"]


def test_unknown_type_is_404(admin: Flask, web: FlaskClient) -> None:
    response = web.get(ADMIN + "/types/NoSuchFlow")
    assert response.status_code == 404
    assert "No flow type" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("fmt", "mimetype"), [("dot", "text/vnd.graphviz"), ("mermaid", "text/plain")]
)
def test_text_downloads_name_their_charset_once(
    admin: Flask, web: FlaskClient, fmt: str, mimetype: str
) -> None:
    response = web.get(f"{PAGE}/diagram.{fmt}")
    assert response.headers["Content-Type"] == f"{mimetype}; charset=utf-8"
