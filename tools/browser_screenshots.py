"""Take the study browser's screenshots shown in the README (docs/browser-*.png) with Debian's chromium.

Usage: ``python tools/browser_screenshots.py [--out docs]``

Starts a server on a throwaway database, loads the browser tests' data set (tests/e2e/browser_data.py: generated
studies and pydicom's DICOMDIR test set), and photographs the worklist, a study and the overview at 1280×800, and the
worklist on a 390-pixel-wide phone screen.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.e2e.browser_data import VIEWER, load_browser_data  # noqa: E402
from tests.e2e.server import running_server  # noqa: E402

WORKLIST = "modality=CT,MR&from=2024-01-01&to=2025-12-31"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as folder,
        running_server(f"sqlite:///{folder}/shots.db", extra=("--viewer-url", VIEWER)) as server,
    ):
        data = load_browser_data(server.base, Path(folder))
        app = server.base.removesuffix("/baseR4") + "/app/"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            shots = [
                ("browser-worklist.png", f"#/?{WORKLIST}", "table.worklist", 1280, 800),
                ("browser-study.png", f"#/study/{data.featured_study}", "ol.history", 1280, 800),
                ("browser-overview.png", "#/overview?month=2025-12", ".chart", 1280, 800),
                ("browser-phone.png", "#/", "table.worklist", 390, 844),
            ]
            for name, hash_, ready, width, height in shots:
                context = browser.new_context(
                    viewport={"width": width, "height": height}, timezone_id="Europe/Paris", locale="en-GB"
                )
                page = context.new_page()
                page.goto(app + hash_)
                page.wait_for_selector(ready)
                if name == "browser-study.png":
                    page.click('button[data-series="0"]')
                    page.wait_for_selector("table.instance-list")
                page.screenshot(path=str(args.out / name))
                context.close()
                print(f"wrote {args.out / name}")
            browser.close()


if __name__ == "__main__":
    main()
