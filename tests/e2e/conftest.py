"""Browser fixtures: Debian's Chromium driven by Playwright, and a live admin server.

The server is the standalone app (``flowstate_web.app.create_app``) with a login, served by
waitress on 127.0.0.1 (an ephemeral port) from a background thread, on a SQLite file in
``tmp_path`` (or the session's PostgreSQL database). Its flows are seeded through the real
transitions: errors are raised, caught, and the fail transition is called from ``except``.

Chromium: ``/usr/bin/chromium`` (``FLOWSTATE_E2E_CHROMIUM`` overrides). Without it (or
without Playwright) the browser tests are skipped, saying why; with ``CI`` set they fail.
No browser is ever downloaded.
"""

from __future__ import annotations

import http.client
import importlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select, text

from flowstate_web.demo.orders_flow import OrderFulfilmentFlow
from flowstate_web.demo.sync_flow import SyncThirdPartyApiFlow
from flowstate_web.models import metadata, outbox

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        FloatRect,
        Page,
        Playwright,
    )

CHROMIUM = os.environ.get("FLOWSTATE_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
IN_CI = bool(os.environ.get("CI"))
ROOT = Path(__file__).resolve().parents[2]
#: Screenshots of every run (gitignored); the README's copies live in docs/screenshots/.
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "e2e-secret-password"
OPERATOR = "e2e-operator"
#: Live refresh interval of the served admin: long, so a page only polls when a test
#: fast-forwards the browser's fake clock (no race between a poll and a click).
POLL_SECONDS = 600
FLOW_MODULES = ["flowstate_web.demo.sync_flow", "flowstate_web.demo.orders_flow"]
#: Collects every page's Content-Security-Policy violations (the page cannot hide them).
CSP_SPY = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline'));
});
"""


try:
    importlib.import_module("playwright.sync_api")
except ImportError as exc:  # pragma: no cover - dev dependencies always include it
    if IN_CI:
        raise
    # The test modules import Playwright: without it, they are not collected, and the
    # session header says so (outside CI only).
    collect_ignore_glob = ["test_*.py"]
    _MISSING = f"browser tests not collected: playwright is not installed ({exc})"

    def pytest_report_header() -> str:
        return _MISSING


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI requires the browser tests to run)")
    pytest.skip(reason)


# -- browser ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """Start Playwright's driver once per session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not installed: {exc}")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Launch Debian's headless Chromium once per session."""
    try:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
    except Exception as exc:
        _unavailable(f"Chromium at {CHROMIUM} failed to start: {exc}")
    yield browser
    browser.close()


@dataclass
class PageLog:
    """What a browser context reported: console errors, page errors, failed requests."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.console_errors.append(f"{msg.text} ({msg.location.get('url', '?')})")

    def attach(self, page: Page) -> None:
        page.on("console", self.on_console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    def problems(self) -> list[str]:
        """Return every console and page error (the pages name their own icon)."""
        return [*self.console_errors, *self.page_errors]


@pytest.fixture
def page_log() -> PageLog:
    """Return the console/page errors of the test's browser context."""
    return PageLog()


@pytest.fixture
def context(browser: Browser, page_log: PageLog) -> Iterator[BrowserContext]:
    """Return a fresh browser context (own cookies) that spies on CSP violations."""
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
    ctx.set_default_timeout(10_000)
    ctx.add_init_script(CSP_SPY)
    ctx.on("page", page_log.attach)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """Return a new tab in the test's context."""
    return context.new_page()


def csp_violations(page: Page) -> list[str]:
    """Return the CSP violations the current document reported so far."""
    found: list[str] = page.evaluate("window.__cspViolations || []")
    return found


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under ``test-artifacts/screenshots/`` and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # A short page is cut below its content instead of padded to the viewport's height.
    bottom: float = page.evaluate("document.body.getBoundingClientRect().bottom")
    size = page.viewport_size or {"width": 1440, "height": 1000}
    if bottom + 24 < size["height"]:
        clip: FloatRect = {"x": 0, "y": 0, "width": size["width"], "height": bottom + 24}
        page.screenshot(path=str(path), clip=clip)
    else:
        page.screenshot(path=str(path), full_page=True)
    return path


# -- seeded data --------------------------------------------------------------------------


class FakeApiError(TimeoutError):
    """What the seeded third-party calls raise."""


@dataclass
class Seeded:
    """Ids of the seeded flows, by role."""

    completed: list[int] = field(default_factory=list)
    fetch_failed: list[int] = field(default_factory=list)
    save_failed: list[int] = field(default_factory=list)
    orders_delivered: list[int] = field(default_factory=list)
    label_failed: list[int] = field(default_factory=list)
    in_progress: list[int] = field(default_factory=list)


def _fetch(flow: SyncThirdPartyApiFlow, fail: bool) -> None:
    """The fetch job, as the README writes it: start, call, finish or fail from ``except``."""
    flow.start_third_party_api_request()
    try:
        if fail:
            raise FakeApiError(f"GET /records/{flow.third_party_id} timed out after 30s")
        flow.finish_third_party_api_request({"id": flow.third_party_id, "name": "Widget"})
    except FakeApiError:
        flow.fail_third_party_api_request()


def seed_flows(completed: int = 3, fetch_failed: int = 2, save_failed: int = 1) -> Seeded:
    """Create flows through the real transitions (inside an app context)."""
    out = Seeded()
    for i in range(completed + fetch_failed + save_failed):
        flow = SyncThirdPartyApiFlow.create(my_record_id=f"rec-{i}", third_party_id=f"crm-{i}")
        flow.pick()
        if i < completed:
            _fetch(flow, fail=False)
            flow.start_record_save()
            flow.finish_record_save()  # hands complete_flow off; done here instead
            flow.complete()
            out.completed.append(flow.id)
        elif i < completed + fetch_failed:
            _fetch(flow, fail=True)
            out.fetch_failed.append(flow.id)
        else:
            _fetch(flow, fail=False)
            flow.start_record_save()
            try:
                raise PermissionError(f"records table is read-only (record {flow.my_record_id})")
            except PermissionError:
                flow.fail_record_save()
            out.save_failed.append(flow.id)
    # Flows still on their way, so the overview and the diagrams show every kind of state.
    waiting = SyncThirdPartyApiFlow.create(my_record_id="rec-waiting", third_party_id="crm-w")
    picked = SyncThirdPartyApiFlow.create(my_record_id="rec-picked", third_party_id="crm-p")
    picked.pick()
    fetching = SyncThirdPartyApiFlow.create(my_record_id="rec-fetching", third_party_id="crm-f")
    fetching.pick()
    fetching.start_third_party_api_request()
    out.in_progress += [waiting.id, picked.id, fetching.id]
    for i in range(6):
        order = OrderFulfilmentFlow.create(
            order_ref=f"ORD-{1000 + i}", sku="MUG-BLUE", quantity=1 + i % 3, amount_cents=1299
        )
        order.start_payment()
        if i == 5:
            try:
                raise ValueError("card declined: insufficient funds")
            except ValueError:
                order.decline_payment({"status": "declined", "decline_code": "insufficient_funds"})
            continue
        order.authorise_payment({"provider": "test", "auth": f"A{i}"})
        order.start_picking()
        if i == 1:
            order.mark_backordered()  # after commit: enqueues the restock job
            continue
        order.start_label()
        if i == 0:
            try:
                raise ConnectionError("carrier API refused the label: address incomplete")
            except ConnectionError:
                order.fail_label()
            out.label_failed.append(order.id)
        else:
            order.ship({"carrier": "test", "tracking": f"T{i}"})
            if i < 4:
                order.deliver()
                out.orders_delivered.append(order.id)
    return out


# -- live server --------------------------------------------------------------------------


@dataclass
class LiveServer:
    """A running admin: its base URL, app, seeded flows and the jobs its retries handed off."""

    url: str
    app: Flask
    seeded: Seeded
    #: The last outbox row written while seeding.
    outbox_after: int

    @property
    def enqueued(self) -> list[tuple[str, int]]:
        """Return the hand-offs written since seeding, oldest first: (job, flow id)."""
        from flowstate_web.app import db

        with self.app.app_context():
            q = (
                select(outbox.c.job, outbox.c.flow_id)
                .where(outbox.c.id > self.outbox_after)
                .order_by(outbox.c.id)
            )
            rows = [(str(j), int(f)) for j, f in db.session.execute(q).all()]
            db.session.remove()
        return rows

    def admin(self, path: str = "/") -> str:
        """Return the absolute URL of ``path`` under the admin's prefix."""
        return f"{self.url}/flows{path}"

    def login(self, page: Page, path: str = "/") -> None:
        """Log ``page`` in through the login form, landing on admin ``path``."""
        page.goto(f"{self.url}/login?next=/flows{path}")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(re.escape(f"/flows{path.split('?')[0]}")))


class _Server:
    """waitress on 127.0.0.1:0 in a thread, stopped from inside its own event loop."""

    def __init__(self, app: Flask) -> None:
        from waitress.server import create_server

        self.server: Any = create_server(app, host="127.0.0.1", port=0, threads=4)
        self.port: int = self.server.effective_port
        self.thread = threading.Thread(target=self.server.run, name="e2e-waitress", daemon=True)

    def start(self) -> None:
        self.thread.start()
        _wait_until_serving("127.0.0.1", self.port)

    def stop(self) -> None:
        from waitress import wasyncore

        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        # close_all empties the socket map (server socket, trigger, keep-alive channels);
        # run inside the loop thread via the trigger, the loop then ends by itself.
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))
        self.thread.join(timeout=10)
        if self.thread.is_alive():
            raise RuntimeError("waitress did not stop within 10s")


def _wait_until_serving(host: str, port: int, timeout: float = 10.0) -> None:
    """Return once the server answers an HTTP request (polls by connecting, never sleeps)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, port, timeout=1)
        try:
            conn.request("GET", "/login")
            if conn.getresponse().status < 500:
                return
        except OSError as exc:
            last = exc
        finally:
            conn.close()
    raise RuntimeError(f"server on {host}:{port} not answering after {timeout}s: {last}")


def _reset_postgres(url: str) -> None:
    """Drop the engine's tables and Alembic's version table (the standalone migrates)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Return a factory of live admin servers (stopped after the test)."""
    from flowstate_web.app import create_app, db

    started: list[tuple[_Server, Flask, str | None]] = []

    def factory(database_url: str | None = None, **config: Any) -> LiveServer:
        if database_url and database_url.startswith("postgresql"):
            _reset_postgres(database_url)
        settings: dict[str, Any] = {
            "SECRET_KEY": "e2e",
            "FLOWSTATE_INSTANCE_PATH": str(tmp_path / f"instance{len(started)}"),
            "FLOWSTATE_ADMIN_PASSWORD": PASSWORD,
            "FLOWSTATE_ADMIN_USERNAME": OPERATOR,
            "FLOWSTATE_FLOW_MODULES": FLOW_MODULES,
            "FLOWSTATE_POLL_SECONDS": POLL_SECONDS,
        }
        if database_url:
            settings["FLOWSTATE_DATABASE_URL"] = database_url
        app = create_app({**settings, **config})
        with app.app_context():
            seeded = seed_flows()
            # What seeding handed off is not the tests' business.
            after = db.session.execute(select(func.max(outbox.c.id))).scalar() or 0
            db.session.remove()
        server = _Server(app)
        started.append((server, app, database_url))
        server.start()
        return LiveServer(
            url=f"http://127.0.0.1:{server.port}", app=app, seeded=seeded, outbox_after=after
        )

    yield factory
    for server, app, url in started:
        server.stop()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        if url and url.startswith("postgresql"):
            _reset_postgres(url)


@pytest.fixture
def live_server(make_server: Callable[..., LiveServer]) -> LiveServer:
    """Return a live admin on a SQLite file with seeded flows."""
    return make_server()


def sync_detail(server: LiveServer, flow_id: int) -> str:
    """Return the admin path of SyncThirdPartyApiFlow #flow_id."""
    return f"/types/{SyncThirdPartyApiFlow.type_name}/{flow_id}"


def flow_state(server: LiveServer, flow_id: int) -> tuple[str, str | None]:
    """Return (state, actor of its latest transition) of a sync flow, read by the engine."""
    with server.app.app_context():
        from flowstate_web.app import db

        flow = SyncThirdPartyApiFlow.get(flow_id)
        history = flow.history()
        db.session.remove()
    return flow.state, history[-1].actor if history else None
