"""The type page's graph lint and the flow page's artefact diffs across retries."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from flowstate_web import Artefact, Flow, State, transition

from .conftest import ADMIN, HX, count_queries
from .flows import HOSTILE, BranchyFlow, HostileFlow


class LintedFlow(Flow, type_name="AdminLintedFlow"):
    """A graph with an error (a dead end) and a warning (a final state left)."""

    new = State(initial=True)
    parked = State()
    done = State(final=True)

    @transition(source=new, target=parked)
    def park(self) -> None:
        """Park forever."""

    @transition(source=new, target=done)
    def finish(self) -> None:
        """Finish."""

    @transition(source=done, target=new)
    def reopen(self) -> None:
        """Reopen."""


class Versions(Flow, type_name="AdminVersionedFlow"):
    """Write the same artefact again and again (a step retried)."""

    busy = State(initial=True)
    broken = State(error=True)
    done = State(final=True)
    result = Artefact(dict[str, Any])

    @transition(source=busy, target=busy, persists=result)
    def record(self, data: dict[str, Any]) -> dict[str, Any]:
        """Write a version."""
        return data

    @transition(source=busy, target=broken)
    def fail(self) -> None:
        """Fail."""

    @transition(source=broken, target=busy, retry=True)
    def again(self) -> None:
        """Retry."""

    @transition(source=busy, target=done)
    def finish(self) -> None:
        """Finish."""


def type_page(web: FlaskClient, name: str) -> str:
    response = web.get(f"{ADMIN}/types/{name}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def flow_page(web: FlaskClient, flow: Flow, **headers: str) -> str:
    response = web.get(f"{ADMIN}/types/{flow.type_name}/{flow.id}", headers=headers)
    assert response.status_code == 200
    return response.get_data(as_text=True)


# -- lint on the type page -------------------------------------------------------------------


def test_type_page_shows_the_lint_messages_of_its_type(admin: Flask, web: FlaskClient) -> None:
    html = type_page(web, "AdminLintedFlow")
    box = html[
        html.index('id="fs-lint"') - 80 : html.index("</details>", html.index('id="fs-lint"'))
    ]
    assert "fs-alert-error" in box and " open>" in box  # errors are shown unfolded
    assert "Graph lint: 1 error, 1 warning" in box
    assert "<code>FS102</code> <b>dead end</b>: state &#39;parked&#39; is neither final" in box
    assert "<code>FS104</code> <b>final state with transitions out</b>" in box
    warned = type_page(web, "AdminBranchyFlow")
    assert "Graph lint: 0 errors, 1 warning" in warned
    assert "fs-alert-warning" in warned and "error state &#39;stuck&#39; has no retry" in warned
    assert 'id="fs-lint"' not in type_page(web, "AdminSimpleRetryFlow")


def test_lint_messages_are_escaped(admin: Flask, web: FlaskClient) -> None:
    html = type_page(web, HostileFlow.type_name.replace("/", "%2F"))
    assert 'id="fs-lint"' in html
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)" in html


# -- artefact diffs on the flow page ---------------------------------------------------------


def versioned(*payloads: dict[str, Any]) -> Versions:
    flow = Versions.create()
    for data in payloads:
        flow.record(data)
    return flow


def test_each_later_version_shows_what_changed_since_the_previous(
    admin: Flask, web: FlaskClient
) -> None:
    flow = versioned(
        {"status": "timeout", "items": [{"sku": "A", "qty": 1}], "attempt": 1},
        {"status": "ok", "items": [{"sku": "A", "qty": 2}], "attempt": 2, "id": "tp-9"},
        {"status": "ok", "items": [{"sku": "A", "qty": 2}], "attempt": 2, "id": "tp-9"},
    )
    v1, v2, v3 = flow.result.versions()
    html = flow_page(web, flow)
    assert f'id="artefact-diff-{v1.id}"' not in html  # a first version has nothing to compare
    box = html[html.index(f'id="artefact-diff-{v2.id}"') :]
    box = box[: box.index("</details>")]
    # Next to the step that wrote v2, pointing at the step that wrote v1.
    step2 = html[html.index('id="step-2"') : html.index('id="step-1"')]
    assert f'id="artefact-diff-{v2.id}"' in step2
    assert "v2 since v1" in box and '<a href="#step-1"' in box
    assert "+1 added" in box and "\u22120 removed" in box and "~3 changed" in box
    rows = re.findall(r'<td class="fs-mono">([^<]+)</td>', box)
    assert rows == [".status", ".items[0].qty", ".attempt", ".id"]
    assert "&#34;timeout&#34;" in box and "&#34;ok&#34;" in box
    same = html[html.index(f'id="artefact-diff-{v3.id}"') :]
    assert "v3 since v2" in same[: same.index("</details>")]
    assert "identical" in same[: same.index("</details>")]
    # The htmx panel (live refresh, retry responses) carries the same widget.
    assert f'id="artefact-diff-{v2.id}"' in flow_page(web, flow, **HX)


def test_diffs_cost_no_statement(make_admin: Any) -> None:
    app = make_admin()
    with app.app_context():
        one = versioned({"a": 1})
        many = versioned(*({"a": i, "b": [i] * i} for i in range(6)))
        web = app.test_client()
        flow_page(web, one)
        with count_queries(app) as plain:
            flow_page(web, one)
        with count_queries(app) as diffs:
            html = flow_page(web, many)
        assert html.count('class="fs-artefact-diff"') == 5
        assert len(diffs) == len(plain)


def test_a_long_diff_is_cut_with_links_to_both_versions(admin: Flask, web: FlaskClient) -> None:
    flow = versioned({f"k{i}": i for i in range(300)}, {f"k{i}": -i for i in range(300)})
    v1, v2 = flow.result.versions()
    html = flow_page(web, flow)
    box = html[html.index(f'id="artefact-diff-{v2.id}"') :]
    box = box[: box.index("</details>")]
    assert box.count('<tr class="fs-diff-row-changed">') == 100
    assert "(and more)" in box
    assert "Only the first 100 changes are shown" in box
    assert f"/artefacts/{v1.id}.json" in box and f"/artefacts/{v2.id}.json" in box


def test_hostile_artefact_content_is_escaped_in_the_diff(admin: Flask, web: FlaskClient) -> None:
    flow = versioned({HOSTILE: 1, "v": HOSTILE}, {HOSTILE: 2, "v": "fine"})
    html = flow_page(web, flow)
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)" in html


def test_retry_response_keeps_the_diffs(admin: Flask, web: FlaskClient) -> None:
    flow = BranchyFlow.create(ref="diff")
    flow.start({"try": 1})
    flow.fail()
    flow.run("restart")
    flow.start({"try": 2})
    html = flow_page(web, flow)
    v2 = flow.report.versions()[1]
    box = html[html.index(f'id="artefact-diff-{v2.id}"') :]
    assert ".try" in box[: box.index("</details>")]
    assert "(step 1, <code>start</code>)" in box
