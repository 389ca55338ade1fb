"""Pipelines and `auto` through the service, on PostgreSQL + Redis + a real Celery worker: a failing later
step keeps the earlier artifacts, the search's front and every candidate are stored, progress shows the
candidate and the front, and cancelling keeps what was found."""

from __future__ import annotations

from tests.stack import sha256_of, wait_for, wait_job

from .test_service_e2e import submit


def test_a_failing_later_step_fails_the_job_and_keeps_the_earlier_artifact(prod_stack, ready_digits):
    model, dataset = ready_digits
    recipe = {
        "steps": [
            {"method": "prune", "kind": "structured", "sparsity": 0.5},
            {"method": "distill", "student": {"arch": "resnet18"}, "epochs": 1},
        ]
    }
    with prod_stack.client() as c:
        done = wait_job(c, submit(c, model, dataset, recipe)["id"])
        assert done["status"] == "failed"
        assert done["error"]["message"].startswith("step 2 (distill) failed")
        assert "the artifact of step 1 is kept" in done["error"]["message"]
        [pruned] = done["artifacts"]
        assert pruned["method"] == "prune" and pruned["step_index"] == 1
        assert done["results"]["steps"][0]["artifact_id"] == pruned["id"]
        r = c.get(pruned["download_url"])
        assert r.status_code == 200 and sha256_of(r.content) == pruned["sha256"]


def test_auto_stores_the_front_and_every_candidate(prod_stack, ready_digits):
    model, dataset = ready_digits
    recipe = {"steps": [{"method": "auto", "budget_minutes": 0.75, "techniques": ["quantize", "prune"]}]}
    with prod_stack.client() as c:
        done = wait_job(c, submit(c, model, dataset, recipe)["id"], timeout=400)
        assert done["status"] == "succeeded", done["error"]
        step = done["results"]["steps"][0]
        artifacts = {a["id"]: a for a in done["artifacts"]}
        assert {m["artifact_id"] for m in step["front"]} == set(artifacts)
        assert step["recommended"] == done["results"]["final"]["artifact_id"] in artifacts
        measured = [a for cand in step["search"]["candidates"] for a in cand.get("artifacts", [])]
        assert {a["artifact"] for a in measured if a["on_front"]} == set(artifacts)
        for artifact in artifacts.values():
            r = c.get(artifact["download_url"])
            assert r.status_code == 200 and sha256_of(r.content) == artifact["sha256"]
    rows = prod_stack.sql("SELECT count(*) FROM measurements WHERE job_id = %s AND role = 'candidate'", done["id"])
    assert rows[0][0] == len(measured)
    events = prod_stack.sql("SELECT kind, data FROM job_events WHERE job_id = %s ORDER BY id", done["id"])
    assert any(kind == "stage" and "candidate c01" in data["stage"] for kind, data in events)
    fronts = [data["front"] for kind, data in events if kind == "front"]
    assert fronts and all(row["speedup_b1"] for row in fronts[-1])


def test_cancelling_a_search_keeps_what_it_found(prod_stack, ready_digits):
    model, dataset = ready_digits
    recipe = {"steps": [{"method": "auto", "budget_minutes": 30}]}
    with prod_stack.client() as c:
        job = submit(c, model, dataset, recipe)
        running = wait_for(
            c, f"/v1/jobs/{job['id']}", lambda b: (b.get("results") or {}).get("partial") is True, timeout=300
        )
        assert "candidate c" in running["stage"]
        assert running["results"]["steps"][0]["front"], running["results"]
        assert c.post(f"/v1/jobs/{job['id']}/cancel").status_code in (200, 202)
        done = wait_job(c, job["id"])
        assert done["status"] == "cancelled"
        step = done["results"]["steps"][0]
        assert step["front"] and done["artifacts"]
        assert {m["artifact_id"] for m in step["front"]} == {a["id"] for a in done["artifacts"]}
        for artifact in done["artifacts"]:
            r = c.get(artifact["download_url"])
            assert r.status_code == 200 and sha256_of(r.content) == artifact["sha256"]


def test_recipes_that_cannot_run_are_refused_at_submission(prod_stack, ready_digits):
    model, dataset = ready_digits
    cases = [
        ([{"method": "auto"}, {"method": "export", "format": "onnx"}], "auto is a whole search and comes alone"),
        ([{"method": "quantize", "scheme": "int8_static"}, {"method": "prune", "kind": "structured"}], "prune before"),
        (
            [
                {"method": "quantize", "scheme": "int8_dynamic"},
                {"method": "distill", "student": {"derive": {"width": 0.5}}},
            ],
            "distil first, then quantize",
        ),
        ([{"method": "auto", "budget_minutes": 1000}], "does not fit this service's job time limit"),
        ([{"method": "auto", "objective": "speed"}], "objective"),
    ]
    with prod_stack.client() as c:
        for steps, reason in cases:
            r = c.post(
                "/v1/jobs",
                json={"model_id": model["id"], "dataset_id": dataset["id"], "recipe": {"steps": steps}},
            )
            assert r.status_code == 422, (steps, r.text)
            assert r.json()["error"]["code"] == "invalid_recipe" and reason in r.json()["error"]["message"], r.text
