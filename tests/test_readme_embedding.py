"""The README's "Using it in your Flask app" code, run as written on SQLite and PostgreSQL.

The section's Python blocks are concatenated into a module and imported; nothing in them is
edited for the test, so the README cannot drift from what works.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from flask import Flask
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm.exc import DetachedInstanceError

from flowstate_web import InvalidTransitionError

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_code() -> str:
    """Return the Python blocks of the README's embedding section, in order."""
    text = README.read_text()
    section = text.split("## Using it in your Flask app", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]  # up to its first subsection
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the section shows the set-up and the transaction example"
    return "\n\n".join(blocks)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """Import the README's code once (its flow type registers once per process)."""
    name = f"readme_embedding_{uuid.uuid4().hex[:8]}"
    path = tmp_path_factory.mktemp("readme") / f"{name}.py"
    path.write_text(readme_code())
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)


@pytest.fixture
def app(example: ModuleType, empty_db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.setenv("DATABASE_URL", empty_db_url)
    monkeypatch.setenv("SECRET_KEY", "readme-secret")
    app: Flask = example.create_app()
    app.config["TESTING"] = True
    with app.app_context():
        example.db.create_all()
        yield app
        example.db.session.remove()
        example.db.engine.dispose()


def _invoice_with_flow(example: ModuleType) -> tuple[int, int]:
    db = example.db
    invoice = example.Invoice()
    db.session.add(invoice)
    db.session.flush()
    invoice_id = invoice.id  # read before the commit expires it (the README's pitfall)
    db.session.commit()
    flow = example.InvoiceFlow.create(invoice_id=invoice_id)
    assert not db.session().in_transaction()
    return invoice_id, flow.id


def test_transition_and_model_change_commit_together(app: Flask, example: ModuleType) -> None:
    db = example.db
    invoice_id, flow_id = _invoice_with_flow(example)
    assert example.send_invoice(flow_id) == "sent"
    db.session.remove()
    assert db.session.get(example.Invoice, invoice_id).status == "sent"
    assert example.InvoiceFlow.get(flow_id).state == "sent"
    # A second send is refused by the flow, and the model change beside it is rolled back.
    db.session.get(example.Invoice, invoice_id).status = "draft"
    db.session.commit()
    db.session.remove()
    with pytest.raises(InvalidTransitionError):
        example.send_invoice(flow_id)
    db.session.remove()
    assert db.session.get(example.Invoice, invoice_id).status == "draft"
    assert len(example.InvoiceFlow.get(flow_id).history()) == 1


def test_the_expired_attribute_pitfall_is_as_documented(app: Flask, example: ModuleType) -> None:
    db = example.db
    _, flow_id = _invoice_with_flow(example)
    with db.session.begin():
        flow = example.InvoiceFlow.get(flow_id)
        invoice = db.session.get_one(example.Invoice, flow.invoice_id)
        invoice.status = "sent"
        flow.send()
    assert not db.session().in_transaction()
    assert flow.state == "sent"  # the flow object holds plain values: safe
    assert not db.session().in_transaction()
    assert invoice.status == "sent"  # expired: a SELECT, which begins a transaction...
    assert db.session().in_transaction()
    with pytest.raises(InvalidRequestError, match="already begun"), db.session.begin():
        pass  # ...so the next block fails
    db.session.commit()  # the documented way out
    with db.session.begin():
        pass
    db.session.close()
    with pytest.raises(DetachedInstanceError):
        _ = invoice.status


def test_the_hooks_and_cookie_settings(app: Flask, example: ModuleType) -> None:
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    client = app.test_client()
    assert client.get("/admin/flows/").status_code == 403
    with client.session_transaction() as sess:
        sess["role"] = "admin"
        sess["email"] = "ops@example.com"
    page = client.get("/admin/flows/")
    assert page.status_code == 200
    assert ">ops@example.com</span>" in page.text.split("</header>")[0]
    cookie = client.get_cookie("session")
    assert cookie is not None and cookie.same_site == "Lax" and cookie.http_only
