"""Every route of the OpenAPI schema fuzzed by schemathesis against the real API process on PostgreSQL and
Redis, with a valid key and without one: no 5xx ever, and every error in the documented shape
`{"error": {"code", "message"}}` without a server path in it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis import openapi
from schemathesis.generation import GenerationMode

FUZZ_KEY = "sqz_fuzz_key_0123456789"
SERVER_PATH = re.compile(r"(/work/|/tmp/|/var/|/root/|/home/|site-packages|\.py\b)")
EXAMPLES = 30  # per route and key state, valid and invalid requests mixed: about a minute in all


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory):
    """The API alone (uploads are queued for a worker that never comes, so fuzzed uploads cost nothing)."""
    from tests.stack import Stack, create_pg_database, drop_pg_database, pg_url, redis_db_url

    database = create_pg_database()
    home = tmp_path_factory.mktemp("fuzz")
    stack = Stack(
        home,
        {
            "SQUEEZE_DATABASE_URL": pg_url(database),
            "SQUEEZE_BROKER_URL": redis_db_url(14),
            "SQUEEZE_BOOTSTRAP_API_KEY": FUZZ_KEY,
        },
        api_key=FUZZ_KEY,
    )
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()
        drop_pg_database(database)


@pytest.fixture(scope="module")
def api_schema(fuzz_stack):
    return openapi.from_url(f"{fuzz_stack.url}/openapi.json")


FUZZED = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), database=None)


def fuzz(schema, stack, headers, extra_check=None) -> dict:
    """Every operation's strategy drawn EXAMPLES times (schemathesis' Python API, without its pytest plugin,
    whose lazy loader does not run under this pytest); returns how many cases each status got."""
    statuses: dict[int, int] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        # valid requests by the schema, and requests that break it (wrong types, missing fields, bad JSON)
        strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

        @given(case=strategy)
        @FUZZED
        def run(case):
            response = check(case, stack, headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if extra_check:
                extra_check(case, response)

        run()
    assert operations >= 15, operations  # the whole API, not a schema that failed to load
    return statuses


def test_with_a_key_no_route_answers_5xx(api_schema, fuzz_stack):
    statuses = fuzz(api_schema, fuzz_stack, {"Authorization": f"Bearer {FUZZ_KEY}"})
    print("with a key:", sum(statuses.values()), "cases,", dict(sorted(statuses.items())))
    assert any(200 <= s < 300 for s in statuses), statuses  # some requests were valid enough to succeed


def test_without_a_key_every_api_route_refuses_cleanly(api_schema, fuzz_stack):
    def refused(case, response):
        if case.path.startswith("/v1/") and case.path != "/v1/methods":
            assert response.status_code in (400, 401, 404, 405, 413, 415, 422, 429), (case.path, response.status_code)

    statuses = fuzz(api_schema, fuzz_stack, {"Authorization": ""}, refused)
    print("without a key:", sum(statuses.values()), "cases,", dict(sorted(statuses.items())))


def check(case, stack, headers):
    response = case.call(base_url=stack.url, headers=headers, timeout=30)
    where = f"{case.method} {case.formatted_path}"
    # /readyz says 503 by design here: this stack has no worker (test_service_ops checks it turns 200 with one)
    ready_probe = case.path == "/readyz" and response.status_code == 503
    assert response.status_code < 500 or ready_probe, f"{where}: {response.status_code} {response.text[:500]}"
    content_type = response.headers.get("content-type") or ""
    content_type = content_type[0] if isinstance(content_type, list) else content_type  # schemathesis' own Response
    if response.status_code >= 400 and content_type.startswith("application/json") and not ready_probe:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), (where, body)
        assert not SERVER_PATH.search(body["error"]["message"]), (where, body)
    return response


SCHEMATHESIS_CONFIG = Path(__file__).parent / "schemathesis" / "schemathesis.toml"


def test_every_check_of_schemathesis_holds(fuzz_stack, tmp_path):
    """`schemathesis run` with all its checks (status codes, content types, response schemas and headers,
    405 with Allow, negative data refused, ...), 25 examples an operation over its examples, coverage,
    fuzzing and stateful phases: 0 failures. The exceptions the schema cannot express are listed, with
    why, in tests/schemathesis/schemathesis.toml."""
    cli = Path(sys.executable).with_name("schemathesis")
    out = subprocess.run(
        [str(cli), "--config-file", str(SCHEMATHESIS_CONFIG), "run", f"{fuzz_stack.url}/openapi.json",
         "--max-examples", "25", "--seed", "1", "--header", f"Authorization: Bearer {FUZZ_KEY}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"},
    )
    summary = out.stdout[-3000:]
    assert out.returncode == 0 and " passed" in summary and "failure" not in summary, out.stdout[-12000:]


def test_generated_clients_cover_every_operation(fuzz_stack, tmp_path):
    """openapi-python-client and datamodel-code-generator, run on the live schema, generate a complete, typed
    client: no warning, no operation skipped, the recipe's every step type a class."""
    schema_path = tmp_path / "openapi.json"
    schema_path.write_text(httpx.get(f"{fuzz_stack.url}/openapi.json", timeout=30).text)
    schema = json.loads(schema_path.read_text())
    generator = Path(sys.executable).with_name("openapi-python-client")
    out = subprocess.run(
        [str(generator), "generate", "--path", str(schema_path), "--meta", "none", "--output-path", "client"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Warning" not in out.stdout + out.stderr, out.stdout + out.stderr
    client = tmp_path / "client"
    generated = {p.stem for p in (client / "api").rglob("*.py") if p.stem != "__init__"}
    # the generator names a module after its operation id, runs of '_' folded
    operations = {re.sub("_+", "_", op["operationId"]) for path in schema["paths"].values() for op in path.values()}
    assert operations == generated, (operations - generated, generated - operations)
    models = {p.stem for p in (client / "models").glob("*.py")}
    assert {"job_in", "recipe", "quantize_int_8_static", "prune", "report", "model_info"} <= models, models
    # the client it wrote imports, and reads a real answer of the API into its typed models
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from client import AuthenticatedClient\n"
        "from client.api.methods import list_methods_v1_methods_get\n"
        "from client.api.jobs import submit_job_v1_jobs_post\n"
        "from client.models import JobIn, ErrorResponse\n"
        "c = AuthenticatedClient(base_url=sys.argv[2], token=sys.argv[3])\n"
        "body = JobIn.from_dict({'model_id': 'mdl_none', 'recipe': {'steps': [{'method': 'quantize', "
        "'scheme': 'int8_static', 'runtime': 'onnxruntime'}]}})\n"
        "answer = submit_job_v1_jobs_post.sync(client=c, body=body)\n"
        "assert isinstance(answer, ErrorResponse) and answer.error.code.value == 'not_found', answer\n"
        "print('ok')\n"
    )
    ran = subprocess.run([sys.executable, "-c", code, str(tmp_path), fuzz_stack.url, FUZZ_KEY],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and "ok" in ran.stdout, ran.stdout + ran.stderr
    # datamodel-code-generator reads the same schema into pydantic models
    datamodel = Path(sys.executable).with_name("datamodel-codegen")
    out = subprocess.run(
        [str(datamodel), "--input", str(schema_path), "--input-file-type", "openapi", "--output",
         str(tmp_path / "models.py"), "--output-model-type", "pydantic_v2.BaseModel"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ran = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import models; "
                          "print(models.JobIn, models.Report, models.Recipe)", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-3000:]


def test_the_vocabulary_is_published_as_enums(fuzz_stack):
    """Job and upload states, verdicts, runtimes, error codes and auto's candidate statuses reach OpenAPI as
    enums with exactly the vocabulary module's values (contract/vocabulary.py), so generated clients type them."""
    from workers.compression.contract import vocabulary as v

    schemas = httpx.get(f"{fuzz_stack.url}/openapi.json").json()["components"]["schemas"]
    for enum in (v.JobStatus, v.UploadStatus, v.Verdict, v.Runtime, v.CandidateStatus, v.ApiErrorCode):
        assert enum.__name__ in schemas, enum.__name__
        assert schemas[enum.__name__]["enum"] == [e.value for e in enum], enum.__name__
