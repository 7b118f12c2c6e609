"""Take the docs' screenshots of a running admin (e.g. ``flowstate-web demo``) in Chromium.

    .venv/bin/flowstate-web demo --port 8765 &      # let it run a minute
    .venv/bin/python scripts/screenshots.py http://127.0.0.1:8765 --out docs/screenshots

Debian's ``/usr/bin/chromium`` through Playwright, headless; the demo is public (no login).
Each page is taken at 1440x900 (the file the docs show) and, with ``--wide``, 1920x1080
(``-1920`` suffix, for checking a wide window; not committed). ``demo-receipt-diff`` is the
page of a seeded order whose payment was declined, retried and authorised, with the diff
between its last two ``payment_receipt`` versions unfolded.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from urllib.request import urlopen

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
SIZES = {"": (1440, 900), "-1920": (1920, 1080)}
ORDERS = "/flows/types/OrderFulfilmentFlow"


def _get(url: str) -> str:
    with urlopen(url) as response:  # noqa: S310 - the URL the operator passed
        return str(response.read().decode())


def _ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="flow-(\d+)"', html)]


def retried_order(base: str) -> tuple[int, str]:
    """Return an order whose flow page shows a receipt diff, and the id of its last diff."""
    for state in ("delivered", "shipped", "picking", "backordered"):
        for flow_id in _ids(_get(f"{base}{ORDERS}?state={state}&live=0")):
            found = re.findall(r'id="(artefact-diff-\d+)"', _get(f"{base}{ORDERS}/{flow_id}"))
            if found:
                return flow_id, found[0]  # newest first: the authorisation's diff
    raise SystemExit("no order with several payment receipts: was the demo seeded?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the app's base URL, e.g. http://127.0.0.1:8765")
    parser.add_argument("--out", type=Path, default=Path("test-artifacts/screenshots"))
    parser.add_argument("--wide", action="store_true", help="also take the 1920x1080 copies")
    args = parser.parse_args()
    base = args.base.rstrip("/")
    html = _get(f"{base}/flows/types/SyncThirdPartyApiFlow?live=0")
    errored = re.findall(r'<tr id="flow-(\d+)" class="fs-row fs-row-error"', html)
    detail = int(errored[0]) if errored else _ids(html)[0]
    order, diff = retried_order(base)
    # name -> (path, whole page?, a <details> to unfold first)
    pages: dict[str, tuple[str, bool, str | None]] = {
        "admin-overview": ("/flows/", False, None),
        "demo-flow-type": ("/flows/types/SyncThirdPartyApiFlow", False, None),
        "demo-flow-detail": (f"/flows/types/SyncThirdPartyApiFlow/{detail}", True, None),
        "demo-receipt-diff": (f"{ORDERS}/{order}?live=0", True, f"#{diff}"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for suffix, (width, height) in SIZES.items():
            if suffix and not args.wide:
                continue
            page = browser.new_page(viewport={"width": width, "height": height})
            for name, (path, full, unfold) in pages.items():
                page.goto(base + path)
                page.wait_for_load_state("networkidle")
                if unfold:
                    page.locator(f"{unfold} > summary").click()
                    page.locator(f"{unfold} table").wait_for(state="visible")
                page.screenshot(path=str(args.out / f"{name}{suffix}.png"), full_page=full)
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
