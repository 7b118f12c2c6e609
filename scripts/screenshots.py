"""Take the docs' screenshots of a running admin (e.g. ``flowstate-web demo``) in Chromium.

    .venv/bin/flowstate-web demo --port 8765 &      # let it run a minute
    .venv/bin/python scripts/screenshots.py http://127.0.0.1:8765 --out docs/screenshots

Debian's ``/usr/bin/chromium`` through Playwright, headless; the demo is public (no login).
Each page is taken at 1440x900 (the file the docs show) and 1920x1080 (``-1920`` suffix,
for checking a wide window; not committed).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from urllib.request import urlopen

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
SIZES = {"": (1440, 900), "-1920": (1920, 1080)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the app's base URL, e.g. http://127.0.0.1:8765")
    parser.add_argument("--out", type=Path, default=Path("test-artifacts/screenshots"))
    parser.add_argument("--wide", action="store_true", help="also take the 1920x1080 copies")
    args = parser.parse_args()
    base = args.base.rstrip("/")
    html = urlopen(f"{base}/flows/types/SyncThirdPartyApiFlow?live=0").read().decode()  # noqa: S310
    ids = [int(i) for i in re.findall(r'<tr id="flow-(\d+)"', html)]
    errored = re.findall(r'<tr id="flow-(\d+)" class="fs-row fs-row-error"', html)
    detail = int(errored[0]) if errored else ids[0]
    pages = {
        "admin-overview": "/flows/",
        "demo-flow-type": "/flows/types/SyncThirdPartyApiFlow",
        "demo-flow-detail": f"/flows/types/SyncThirdPartyApiFlow/{detail}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for suffix, (width, height) in SIZES.items():
            if suffix and not args.wide:
                continue
            page = browser.new_page(viewport={"width": width, "height": height})
            for name, path in pages.items():
                page.goto(base + path)
                page.wait_for_load_state("networkidle")
                # The detail page whole (its history is the point); others as first seen.
                full = name == "demo-flow-detail"
                page.screenshot(path=str(args.out / f"{name}{suffix}.png"), full_page=full)
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
