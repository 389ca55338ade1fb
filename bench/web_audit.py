"""The web page as a person meets it: every view at 1280 and 390 px, what sticks out sideways and what
axe-core finds, by impact. Starts the embedded service (SQLite, local blobs, one worker), uploads the
digits CNN and its test data, runs an int8 job and a short `auto` job, then opens each view in Chromium.

    .venv/bin/python bench/web_audit.py [--out bench/out/web_audit.json] [--shots DIR]

Needs axe-core (`npm ci --prefix tests/js`; `make test` does it) and Chromium. Prints one line per view
and width; the figures are also written to --out."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.digits_example import write_digits  # noqa: E402
from tests.browser import WIDTHS, axe_violations, overflow  # noqa: E402
from tests.stack import Stack, upload, wait_job, wait_ready  # noqa: E402

KEY = "sqz_web_audit_key"


def jobs(stack: Stack, home: Path) -> dict[str, str]:
    model_path, data_path, _ = write_digits(home / "digits")
    with stack.client() as c:
        model = wait_ready(c, "models", upload(c, "models", model_path).json()["id"])
        data = wait_ready(c, "datasets", upload(c, "datasets", data_path).json()["id"])
        recipes = {
            "int8": {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]},
            "auto": {"steps": [{"method": "auto", "budget_minutes": 0.3, "max_accuracy_drop": 0.01}]},
        }
        ids = {}
        for name, recipe in recipes.items():
            body = {"model_id": model["id"], "dataset_id": data["id"], "recipe": recipe, "device": "cpu", "name": name}
            job = wait_job(c, c.post("/v1/jobs", json=body).json()["id"], timeout=600)
            assert job["status"] == "succeeded", job["error"]
            ids[name] = job["id"]
    return ids


def audit(url: str, ids: dict[str, str], shots: Path | None) -> dict[str, dict]:
    from playwright.sync_api import sync_playwright

    views = {
        "uploads": "#/",
        "new job": "#/new",
        "jobs": "#/jobs",
        **{f"job {n}": f"#/jobs/{i}" for n, i in ids.items()},
    }
    found = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + "/")
        page.fill("#api-key", KEY)
        page.click("form button[type=submit]")
        page.wait_for_selector("#nav:not([hidden])")
        for view, hash_ in views.items():
            page.goto(f"{url}/{hash_}")
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1500)  # the view renders after its requests
            for width, px in WIDTHS.items():
                page.set_viewport_size({"width": px, "height": 900})
                page.wait_for_timeout(300)
                if shots:
                    page.screenshot(path=str(shots / f"{view.replace(' ', '_')}_{width}.png"), full_page=True)
                impacts = Counter(v["impact"] for v in axe_violations(page))
                sticks_out = overflow(page)
                found[f"{view} {px}"] = {"overflow": sticks_out, "axe": dict(impacts)}
                axe = ", ".join(f"{n} {k}" for k, n in sorted(impacts.items())) or "none"
                print(f"{view:<10} {px:>5} px  sideways: {sticks_out[0] if sticks_out else 'none':<48} axe: {axe}")
        browser.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "web_audit.json")
    parser.add_argument("--shots", type=Path, default=None, help="save a screenshot of each view here")
    args = parser.parse_args()
    if args.shots:
        args.shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="squeeze-web-audit-") as home:
        stack = Stack(Path(home), {"SQUEEZE_BOOTSTRAP_API_KEY": KEY}, api_key=KEY)
        for key in ("SQUEEZE_DATABASE_URL", "SQUEEZE_BROKER_URL", "SQUEEZE_BLOB_DIR"):
            stack.env.pop(key, None)  # the embedded defaults under SQUEEZE_HOME
        try:
            stack.start_api(with_worker=True)
            found = audit(stack.url, jobs(stack, Path(home)), args.shots)
        finally:
            stack.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
