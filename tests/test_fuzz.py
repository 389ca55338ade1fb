"""Every route of the OpenAPI schema fuzzed by schemathesis against the real API process on PostgreSQL and
Redis, with a valid key and without one: no 5xx ever, and every error in the documented shape
`{"error": {"code", "message"}}` without a server path in it."""

from __future__ import annotations

import re

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
