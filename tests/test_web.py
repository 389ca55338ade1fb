"""The web page in a real browser (Debian's Chromium, headless, driven by Playwright) against the real
service on PostgreSQL + Redis with a worker: sign in, upload, build a recipe, watch the job, read the
table and the plots, download. A failing browser test leaves a screenshot in tests/out/screenshots/.
Plus the session's security: HttpOnly cookie, CSRF on writes, login CSRF, no file outside static/."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.browser import AXE, WIDTHS, axe_serious, overflow
from tests.conftest import PROD_KEY

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).parent / "out" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@contextlib.contextmanager
def screenshot_on_failure(page, name: str):
    try:
        yield
    except BaseException:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot: {path}")
        raise


def test_sign_in_upload_submit_watch_and_download(prod_stack, browser, cnn_pt2, digits_npz, tmp_path):
    from playwright.sync_api import expect

    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with screenshot_on_failure(page, "web_flow"):
        page.goto(prod_stack.url + "/")
        # a wrong key is refused, with the reason on the page
        page.get_by_label("API key").fill("sqz_not_a_key")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert").filter(has_text="not valid")).to_be_visible()
        page.get_by_label("API key").fill(PROD_KEY)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("link", name="New job")).to_be_visible()
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["squeeze_key"]["httpOnly"] and cookies["squeeze_key"]["sameSite"] == "Strict"

        # uploads, with their progress and their inspection result
        page.set_input_files("#models-file", str(cnn_pt2))
        page.fill("#models-name", "web-cnn")
        page.get_by_role("button", name="Upload model").click()
        expect(page.locator("#models-table tr", has_text="web-cnn").locator(".badge")).to_have_text(
            "ready", timeout=60_000
        )
        page.set_input_files("#datasets-file", str(digits_npz))
        page.fill("#datasets-name", "web-digits")
        page.get_by_role("button", name="Upload dataset").click()
        expect(page.locator("#datasets-table tr", has_text="web-digits").locator(".badge")).to_have_text(
            "ready", timeout=60_000
        )
        bad = tmp_path / "model.pkl"
        bad.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
        page.set_input_files("#models-file", str(bad))
        page.get_by_role("button", name="Upload model").click()
        expect(page.locator("#upload-models .error")).to_contain_text("pickle")

        # the recipe builder, one click from the goal form: a form from the catalogue; the server's refusal
        # lands next to the field and beside Submit
        page.get_by_role("link", name="New job").click()
        page.get_by_role("button", name=re.compile("Build the recipe yourself")).click()
        for select, name in (("#job-model", "web-cnn"), ("#job-dataset", "web-digits")):
            page.select_option(select, page.locator(f"{select} option", has_text=name).first.get_attribute("value"))
        page.locator("#job-more summary").click()
        page.select_option("#job-device", "cpu")
        page.locator("#step0-scheme").select_option("int8_dynamic")
        page.select_option("#add-method", "prune")
        page.get_by_role("button", name="Add step").click()
        page.locator("#step1-kind").select_option("unstructured")
        page.fill("#step1-sparsity", "1")
        page.get_by_role("button", name="Submit job").click()
        expect(page.locator("#step1-sparsity-error")).to_contain_text("less than 1")
        expect(page.locator("#step1-sparsity")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#job-error")).to_contain_text("step 2")
        expect(page.locator("#step1-sparsity")).to_be_focused()
        page.fill("#step1-sparsity", "0.5")
        page.get_by_role("button", name="Submit job").click()
        expect(page.locator("fieldset[data-step='1'] .error").last).to_contain_text("prune before quantizing")
        page.get_by_role("button", name="Remove step 2").click()
        page.fill("#job-name", "web-int8")
        page.get_by_role("button", name="Submit job").click()

        # the job page follows the job over SSE to its end, then shows the table, the plots and downloads
        expect(page).to_have_url(re.compile(r"#/jobs/job_"), timeout=10_000)
        job_id = page.url.rsplit("/", 1)[-1]
        expect(page.locator("#job-status .badge")).to_have_text("succeeded", timeout=300_000)
        expect(page.locator("#job-progress")).to_have_js_property("value", 1)
        rows = page.locator("table.results tbody tr:not(.details)")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("original")
        expect(rows.nth(1)).to_contain_text("quantize int8_dynamic")
        expect(rows.nth(1)).to_contain_text("accuracy")
        expect(page.locator("#result-summary")).to_contain_text("Result:")
        # a row's facts fold out below it
        rows.nth(1).get_by_role("button", name=re.compile("details")).click()
        expect(page.locator("tr.details").nth(1)).to_be_visible()
        expect(page.locator("tr.details").nth(1)).to_contain_text("latency, batch 1")
        # each speedup with its 95 % interval beneath it, as the report gives it
        with prod_stack.client() as c:
            ci = c.get(f"/v1/jobs/{job_id}").json()["results"]["final"]["speedup_ci95"]
        expect(rows.nth(1).locator(".interval").first).to_have_text(f"{ci['b1'][0]:.2f}–{ci['b1'][1]:.2f}")
        expect(page.locator("svg.plot")).to_have_count(2)
        expect(page.locator("svg.plot circle")).to_have_count(4)
        expect(page.locator("svg.plot .point-label").first).to_have_text("original")
        page.locator("summary", has_text="Log").click()
        expect(page.locator("#job-log li").first).to_be_visible()
        with page.expect_download() as download:
            page.locator("table.results").get_by_role("link", name=re.compile("Download pt2")).click()
        saved = tmp_path / "artifact.pt2"
        download.value.save_as(saved)
        with prod_stack.client() as c:
            artifact = c.get(f"/v1/jobs/{job_id}").json()["artifacts"][0]
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == artifact["sha256"]

        # the jobs list shows it; signing out ends the session
        page.get_by_role("link", name="Jobs", exact=True).click()
        expect(page.locator("#jobs-table")).to_contain_text("web-int8")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("API key")).to_be_visible()
    assert errors == [], errors
    context.close()


def open_job_page(page, url: str, job_id: str) -> None:
    page.goto(url + "/")
    page.get_by_label("API key").fill(PROD_KEY)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{url}/#/jobs/{job_id}")


def test_cancel_from_the_job_page(prod_stack, browser, ready_digits):
    from playwright.sync_api import expect

    model, dataset = ready_digits
    with prod_stack.client() as c:
        # long enough to be running when the button is pressed
        recipe = {"steps": [{"method": "distill", "student": {"derive": {"width": 0.5}}, "epochs": 400}]}
        job = c.post(
            "/v1/jobs", json={"model_id": model["id"], "dataset_id": dataset["id"], "recipe": recipe, "device": "cpu"}
        ).json()
    context = browser.new_context()
    page = context.new_page()
    with screenshot_on_failure(page, "web_cancel"):
        open_job_page(page, prod_stack.url, job["id"])
        expect(page.locator("#job-stage")).to_contain_text("epoch", timeout=120_000)
        # a job without a name is headed by its full id: on a phone it wraps, nothing scrolls sideways
        page.set_viewport_size({"width": WIDTHS["phone"], "height": 900})
        expect(page.get_by_role("heading", name=f"Job {job['id']}")).to_be_visible()
        assert overflow(page) == []
        page.get_by_role("button", name="Cancel job").click()
        expect(page.locator("#job-status .badge")).to_have_text("cancelled", timeout=60_000)
        expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    context.close()


def test_a_job_page_shows_how_pruning_ratios_were_chosen(prod_stack, browser, ready_digits):
    """`scope: sensitivity`: the job page folds out each channel group's measured error at every ratio tried
    and the ratio it got, as the report's details.allocation has them; at phone width nothing overflows."""
    from playwright.sync_api import expect

    from tests.stack import wait_job

    model, dataset = ready_digits
    recipe = {"steps": [{"method": "prune", "kind": "structured", "sparsity": 0.4, "scope": "sensitivity"}]}
    with prod_stack.client() as c:
        job = c.post(
            "/v1/jobs", json={"model_id": model["id"], "dataset_id": dataset["id"], "recipe": recipe, "device": "cpu"}
        ).json()
        done = wait_job(c, job["id"], timeout=300)
    assert done["status"] == "succeeded", done
    allocation = done["results"]["steps"][0]["details"]["allocation"]
    context = browser.new_context()
    page = context.new_page()
    with screenshot_on_failure(page, "web_allocation"):
        open_job_page(page, prod_stack.url, job["id"])
        summary = page.locator("details.allocation summary")
        expect(summary).to_contain_text(allocation["achieved"], timeout=60_000)
        summary.click()
        rows = page.locator("table.allocation-table tbody tr")
        expect(rows).to_have_count(len(allocation["groups"]))
        for i, group in enumerate(allocation["groups"]):
            expect(rows.nth(i).locator("th")).to_have_text(group["layer"])
            expect(rows.nth(i).locator("td").last).to_have_text(f"{round(group['ratio'] * 100)} %")
            shown = float(rows.nth(i).locator("td").first.inner_text())
            assert abs(shown - group["errors"][0]) <= 0.0006, (shown, group)
        page.set_viewport_size({"width": WIDTHS["phone"], "height": 900})
        assert overflow(page) == []
    context.close()


def check_view(page, name: str, width: str, report: dict) -> None:
    """Every view at both widths: no sideways scrolling, no serious accessibility violation, a screenshot."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}_{width}.png"), full_page=True)
    report[f"{name} {width}"] = {"overflow": overflow(page), "axe": axe_serious(page)}


def test_the_simple_path_to_an_auto_job_at_1280_and_390_px(prod_stack, browser, ready_digits):
    """Sign in, say the goal (faster, within 1 point), get an auto job's front with the recommendation
    first; every view at 1280 and 390 px without sideways scrolling, scanned by axe-core, screenshotted."""
    from playwright.sync_api import expect

    if not AXE.is_file():
        pytest.fail("axe-core is not installed: npm ci --prefix tests/js (make test does it)")
    model, dataset = ready_digits
    report: dict[str, dict] = {}
    context = browser.new_context(viewport={"width": WIDTHS["desktop"], "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with screenshot_on_failure(page, "web_simple_path"):
        page.goto(prod_stack.url + "/")
        for width, px in WIDTHS.items():
            page.set_viewport_size({"width": px, "height": 900})
            check_view(page, "signin", width, report)
        page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
        page.get_by_label("API key").fill(PROD_KEY)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#models-table")).to_contain_text(model["name"])
        for width, px in WIDTHS.items():
            page.set_viewport_size({"width": px, "height": 900})
            check_view(page, "uploads", width, report)

        # the New job page opens on the goal, with the newest dataset picked
        page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
        page.get_by_role("link", name="New job").click()
        expect(page.get_by_role("radio", name="faster", exact=True)).to_be_checked()
        assert page.locator("#job-dataset").input_value() != ""
        expect(page.locator("#goal-plan")).to_contain_text("within 1 point.")
        for width, px in WIDTHS.items():
            page.set_viewport_size({"width": px, "height": 900})
            check_view(page, "new_job_goal", width, report)
        page.get_by_role("button", name=re.compile("Build the recipe yourself")).click()
        expect(page.locator("fieldset.step")).to_have_count(1)
        expect(page.locator("#step0-more summary")).to_contain_text("More options")
        for width, px in WIDTHS.items():
            page.set_viewport_size({"width": px, "height": 900})
            check_view(page, "new_job_recipe", width, report)
        page.get_by_role("button", name=re.compile("Back to the simple form")).click()
        page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
        # a refusal is shown at the field and beside Submit
        page.fill("#goal-drop", "0")
        page.get_by_role("button", name="Submit job").click()
        expect(page.locator("#goal-drop-error")).to_be_visible()
        expect(page.locator("#job-error")).to_contain_text("between 0.1 and 50")
        page.fill("#goal-drop", "1")
        page.fill("#goal-budget", "0.3")
        page.select_option("#job-model", model["id"])
        page.select_option("#job-dataset", dataset["id"])
        page.locator("#job-more summary").click()
        page.select_option("#job-device", "cpu")
        page.fill("#job-name", "web-auto")
        page.get_by_role("button", name="Submit job").click()

        expect(page).to_have_url(re.compile(r"#/jobs/job_"), timeout=10_000)
        job_id = page.url.rsplit("/", 1)[-1]
        with prod_stack.client() as c:
            submitted = c.get(f"/v1/jobs/{job_id}").json()
        step = submitted["recipe"]["steps"][0]
        assert (step["method"], step["objective"], step["max_accuracy_drop"]) == ("auto", "latency", 0.01), step
        expect(page.locator("#job-status .badge")).to_have_text("succeeded", timeout=400_000)
        with prod_stack.client() as c:
            done = c.get(f"/v1/jobs/{job_id}").json()
        result = done["results"]["steps"][0]

        # the recommendation, with why, is the first thing the results show
        first = page.locator("#job-results > div > *").first
        expect(first).to_have_id("result-summary")
        expect(first).to_contain_text("Recommended:")
        expect(first).to_contain_text(result["recommendation_reason"][:40])
        expect(first.get_by_role("link", name=re.compile("Download"))).to_have_count(1)
        table = page.locator("table.results").first
        for member in result["front"]:
            expect(table).to_contain_text(member["details"]["label"])
        expect(table.locator("tr.recommended")).to_have_count(1)
        expect(table.get_by_role("link", name=re.compile("Download"))).to_have_count(len(result["front"]))
        assert " on onnxruntime on onnxruntime" not in table.inner_text()
        search = page.locator("details.candidates")
        expect(search).to_contain_text(f"Search: {len(result['search']['candidates'])} candidates")
        search.locator("summary").click()
        expect(search.locator("tbody tr").first).to_contain_text("c01")
        # the plots name the table's rows, and mark the original
        expect(page.locator("svg.plot").first.locator(".point-label")).to_have_count(len(result["front"]) + 1)
        expect(page.locator("ol.legend li")).to_have_count(len(result["front"]))
        for width, px in WIDTHS.items():
            page.set_viewport_size({"width": px, "height": 900})
            check_view(page, "job", width, report)
        # on a phone each row is a card: the header row is out of the flow, every cell says what it is
        assert (
            page.locator("table.results").first.locator("thead").evaluate("e => getComputedStyle(e).position")
            == "absolute"
        )
        cell = table.locator("tbody tr:not(.details)").nth(1).locator("td[data-label='verdict']")
        assert "verdict" in cell.evaluate("e => getComputedStyle(e, '::before').content")

        # the jobs list tells jobs apart and filters by status
        page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
        page.get_by_role("link", name="Jobs", exact=True).click()
        row = page.locator("#jobs-table tbody tr", has_text="web-auto")
        expect(row).to_contain_text("auto: latency, accuracy within 1 pt")
        expect(row).to_contain_text(model["name"])
        expect(row.locator("td[data-label='size ×']")).to_have_text(f"{done['results']['final']['size_ratio']:.2f}x")
        page.select_option("#jobs-status", "failed")
        expect(page.locator("#jobs-table tbody tr", has_text="web-auto")).to_have_count(0)
        page.select_option("#jobs-status", "succeeded")
        expect(row).to_be_visible()
        page.get_by_role("button", name="speedup b1").click()
        sorted_by = page.locator("#jobs-table th[aria-sort]")
        expect(sorted_by).to_have_text(re.compile("speedup b1"))
        expect(sorted_by).to_have_attribute("aria-sort", "descending")
        expect(page.get_by_role("button", name="speedup b1")).to_be_focused()  # focus survives the redraw
        for width, px in WIDTHS.items():
            page.set_viewport_size({"width": px, "height": 900})
            check_view(page, "jobs", width, report)
    context.close()
    (SHOTS / "report.json").write_text(json.dumps(report, indent=1))
    problems = {view: found for view, found in report.items() if found["overflow"] or found["axe"]}
    assert problems == {}, json.dumps(problems, indent=1)
    assert errors == [], errors


def test_session_cookie_csrf_and_static_files(prod_stack):
    with httpx.Client(base_url=prod_stack.url, timeout=30) as c:
        page = c.get("/")
        assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/ui/static/app.js").status_code == 200
        assert c.get("/ui/static/..%2F..%2Fconfig.py").status_code == 404
        assert c.get("/ui/session").json() == {"tenant": None}
        wrong = c.post("/ui/session", data={"api_key": "sqz_wrong"})
        assert wrong.status_code == 303 and wrong.headers["location"] == "/?signin=failed"
        forged = c.post("/ui/session", data={"api_key": PROD_KEY}, headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
        ok = c.post("/ui/session", data={"api_key": PROD_KEY})
        assert ok.status_code == 303
        set_cookie = ok.headers.get_list("set-cookie")
        key_cookie = next(h for h in set_cookie if h.startswith("squeeze_key="))
        assert "HttpOnly" in key_cookie and "SameSite=strict" in key_cookie
        assert c.get("/ui/session").json()["tenant"] == "default"
        assert c.get("/v1/jobs").status_code == 200  # reads need no token
        body = {"model_id": "mdl_nope", "recipe": {"steps": [{"method": "export", "format": "pt2"}]}}
        refused = c.post("/v1/jobs", json=body)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
        allowed = c.post("/v1/jobs", json=body, headers={"X-CSRF-Token": c.cookies["squeeze_csrf"]})
        assert allowed.status_code == 404  # past the CSRF check: the model does not exist
        assert c.post("/ui/session/delete").status_code == 403
        assert c.post("/ui/session/delete", headers={"X-CSRF-Token": c.cookies["squeeze_csrf"]}).status_code == 204
