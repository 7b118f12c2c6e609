"""Hostile input to every route, route parameter, query parameter and form field: never a 5xx.

Routes come from ``app.url_map``, and the query parameters and form fields a route reads are
recorded while it answers a valid request (a ``MultiDict`` that notes every key looked up),
so a new route or a new parameter is fuzzed without touching this file. A route parameter
with no known valid value fails the test, asking for one.

Runs against the standalone app (logged in, and logged out) and a host app with the admin
mounted, each on SQLite and PostgreSQL.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask, Request
from flask.testing import FlaskClient
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.routing import Rule

from flowstate_web._tx import resolve_session
from flowstate_web.admin import bulk_runs
from flowstate_web.admin.filters import ListFilter
from flowstate_web.app import create_app, db

from .admin.flows import BranchyFlow

#: (label, percent-encoded value): what every parameter gets, one at a time.
HOSTILE: tuple[tuple[str, str], ...] = (
    ("NUL", quote("a\x00b", safe="")),
    ("CRLF", quote("x\r\nSet-Cookie: a=b", safe="")),
    ("10k chars", "A" * 10_000),
    ("invalid UTF-8", "%FF%FE%C3%28"),
    ("lone surrogate", "%ED%A0%80"),
    ("2**63", "9223372036854775808"),
    ("huge integer", "9" * 40),
    ("negative", "-1"),
    ("markup", quote('"><script>alert(1)</script>', safe="")),
    ("prop search with NUL", quote("ref=\x00", safe="")),
    ("empty", ""),
)
#: Form keys a route reads by iterating the form (not by name): fuzzed too.
HX = {"HX-Request": "true"}
ITERATED_KEYS = ("via:broken", "via:" + quote("\x00", safe=""))


class _Seen:
    keys: set[str] = set()  # noqa: RUF012 - reset by each recording


class RecordingDict(ImmutableMultiDict[str, str]):
    """A request's args/form that notes every key the app looks up."""

    def __getitem__(self, key: str) -> str:
        _Seen.keys.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None, type: Any = None) -> Any:
        _Seen.keys.add(key)
        return super().get(key, default, type)

    def getlist(self, key: str, type: Any = None) -> Any:
        _Seen.keys.add(key)
        return super().getlist(key, type)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            _Seen.keys.add(key)
        return super().__contains__(key)


class RecordingRequest(Request):
    parameter_storage_class = RecordingDict


@dataclass
class Report:
    """What was sent and what went wrong."""

    sent: int = 0
    failures: list[str] = field(default_factory=list)
    routes: set[str] = field(default_factory=set)

    def check(self, what: str, send: Callable[[], Any]) -> None:
        self.sent += 1
        try:
            response = send()
        except Exception as exc:  # TESTING propagates exceptions: that is a 500
            self.failures.append(f"{what}: raised {type(exc).__name__}: {str(exc)[:200]}")
            return
        if response.status_code >= 500:
            body = response.get_data(as_text=True)[:200].replace("\n", " ")
            self.failures.append(f"{what}: {response.status_code} {body}")
        response.close()


def _path(rule: Rule, values: dict[str, str]) -> str:
    """Return ``rule`` with its arguments replaced by already-encoded ``values``."""

    def sub(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return re.sub(r"<(?:[^>:]+:)?([^>]+)>", sub, rule.rule)


def _send(
    client: FlaskClient,
    rule: Rule,
    method: str,
    after_post: Callable[[], None],
    path: dict[str, str],
    pairs: list[tuple[str, str]],
    hx: bool,
) -> Any:
    url = _path(rule, path)
    body = _encode(pairs)
    headers = HX if hx else {}
    if method == "GET":
        return client.get(url + ("?" + body if body else ""), headers=headers)
    try:
        return client.open(
            url,
            method=method,
            data=body.encode("ascii"),
            content_type="application/x-www-form-urlencoded",
            headers=headers,
        )
    finally:
        after_post()


def _encode(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={v}" for k, v in pairs)


def fuzz(
    app: Flask,
    client: FlaskClient,
    valid: dict[str, str],
    form: Callable[[Rule], dict[str, str]],
    report: Report,
    *,
    only: Callable[[Rule], bool] = lambda rule: True,
    after_post: Callable[[], None] = lambda: None,
) -> None:
    """Send every hostile value to every parameter of every route of ``app`` through ``client``.

    ``valid`` holds a valid value of each route argument; ``form(rule)`` the valid form of a
    POST (CSRF token included); ``after_post()`` puts the data back after each POST (so each
    retry meets an errored flow and its fields reach the engine).
    """
    app.request_class = RecordingRequest
    for rule in app.url_map.iter_rules():
        if not only(rule):
            continue
        missing = [a for a in rule.arguments if a not in valid]
        assert not missing, f"{rule.rule}: give the fuzz test a valid value for {missing}"
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            report.routes.add(f"{method} {rule.rule}")
            base_form = form(rule) if method == "POST" else {}
            base_path = {a: quote(valid[a], safe="") for a in rule.arguments}

            send = functools.partial(_send, client, rule, method, after_post)
            base_pairs = [(k, quote(v, safe="")) for k, v in base_form.items()]
            _Seen.keys = set()
            for hx in (False, True):  # htmx requests take other paths (partials, seq=...)
                report.check(
                    f"{method} {rule.rule} (valid, hx={hx})",
                    functools.partial(send, base_path, base_pairs, hx),
                )
            keys = sorted(
                _Seen.keys | set(base_form) | (set(ITERATED_KEYS) if base_form else set())
            )
            for (label, value), hx in itertools.product(HOSTILE, (False, True)):
                for arg in rule.arguments:
                    path = base_path | {arg: value}
                    report.check(
                        f"{method} {rule.rule} <{arg}>={label} hx={hx}",
                        functools.partial(send, path, base_pairs, hx),
                    )
                for key in keys:
                    pairs = [(k, v) for k, v in base_pairs if k != key] + [(key, value)]
                    report.check(
                        f"{method} {rule.rule} {key}={label} hx={hx}",
                        functools.partial(send, base_path, pairs, hx),
                    )


def _break_again(app: Flask, flow_id: str) -> Callable[[], None]:
    """Return a function that puts flow ``flow_id`` back into its error state."""

    def reset() -> None:
        with app.app_context():
            flow = BranchyFlow.get(int(flow_id))
            if flow.state == "new":
                flow.start()
            if flow.state == "working":
                flow.fail()

    return reset


def _seed() -> dict[str, str]:
    flow = BranchyFlow.create(ref="fuzz", count=3)
    flow.start({"n": 1})
    try:
        raise ValueError("fuzz failure")
    except ValueError:
        flow.fail()
    artefact = flow.latest_artefact("report")
    assert artefact is not None
    run = bulk_runs.start(
        resolve_session(None), BranchyFlow, ListFilter(), chosen={}, actor="f", reason=None
    )
    return {
        "run_id": str(run.id),
        "action": "pause",
        "type_name": BranchyFlow.type_name,
        "flow_id": str(flow.id),
        "artefact_id": str(artefact.id),
        "fmt": "dot",
        "filename": "flowstate/admin.css",
    }


def _csrf(html: str) -> str:
    found = re.search(r'(?:name="csrf_token" value|name="csrf-token" content)="([^"]+)"', html)
    assert found, html[:300]
    return found.group(1)


# -- the standalone app ------------------------------------------------------------------------


@pytest.fixture
def standalone(
    empty_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    for key in list(os.environ):
        if key.startswith("FLOWSTATE_") or key in {"DATABASE_URL", "SECRET_KEY"}:
            monkeypatch.delenv(key)
    app = create_app(
        {
            "TESTING": True,
            "FLOWSTATE_INSTANCE_PATH": str(tmp_path / "instance"),
            "FLOWSTATE_DATABASE_URL": empty_db_url,
            "FLOWSTATE_ADMIN_PASSWORD": "s3cret",
            "FLOWSTATE_FLOW_MODULES": "tests.admin.flows",
            "FLOWSTATE_LOGIN_LIMIT": "100000 per minute",
            "FLOWSTATE_LOGIN_GLOBAL_LIMIT": "100000 per minute",
        }
    )
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_no_5xx_on_hostile_input_standalone(standalone: Flask) -> None:
    with standalone.app_context():
        valid = _seed()
    report = Report()
    anonymous = standalone.test_client()
    token = _csrf(anonymous.get("/login").text)
    fuzz(
        standalone,
        anonymous,
        valid,
        lambda rule: {"csrf_token": token, "password": "nope", "next": "/flows/"},
        report,
        only=lambda rule: rule.endpoint.startswith("standalone."),
    )
    client = standalone.test_client()
    token = _csrf(client.get("/login").text)
    r = client.post("/login", data={"csrf_token": token, "password": "s3cret"})
    assert r.status_code == 303

    def form(rule: Rule) -> dict[str, str]:
        token = _csrf(client.get("/flows/").text)
        if rule.endpoint == "standalone.login":
            return {"csrf_token": token, "password": "s3cret", "next": "/flows/"}
        if rule.endpoint == "standalone.logout":
            return {"csrf_token": "not-sent-to-keep-the-login"}
        return {"csrf_token": token, "transition": "retry_work", "widget": "row", "reason": "fuzz"}

    fuzz(
        standalone,
        client,
        valid,
        form,
        report,
        after_post=_break_again(standalone, valid["flow_id"]),
    )
    assert client.get("/flows/").status_code == 200  # still logged in: the fuzz reached the admin
    assert report.sent > 1600, report.sent
    assert "GET /flows/types/<type_name>/<flow_id>/artefacts/<int:artefact_id>" in {
        r.replace("(max=9223372036854775807)", "") for r in report.routes
    }
    assert not report.failures, "\n".join(report.failures)


# -- a host app with the admin mounted ---------------------------------------------------------


def test_no_5xx_on_hostile_input_host_admin(make_app: Callable[..., Flask]) -> None:
    app = make_app(FLOWSTATE_ADMIN=True)
    ext = app.extensions["flowstate"]
    ext.access_check(lambda: True)
    ext.actor_loader(lambda: "fuzzer")
    with app.app_context():
        valid = _seed()
    client = app.test_client()
    token = _csrf(client.get("/flows/").text)
    report = Report()
    fuzz(
        app,
        client,
        valid,
        lambda rule: {"csrf_token": token, "transition": "retry_work", "reason": "fuzz"},
        report,
        after_post=_break_again(app, valid["flow_id"]),
    )
    assert report.sent > 1000, report.sent
    assert not report.failures, "\n".join(report.failures)
