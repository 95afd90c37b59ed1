"""The OpenAPI document describes every operation and error answer, and schemathesis, run against
a live server with it, finds no 5xx and no answer that contradicts it.

The server under fuzz is `localflow api` only: no worker, so nothing schemathesis invents (a shell
task running a random program) is ever executed. It has a token, so the auth paths are exercised
(schemathesis's ignored_auth check sends requests without it and expects them refused).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import procs

pytestmark = pytest.mark.e2e

TOKEN = "fuzz-token-0c9d3b"
# Seconds schemathesis may spend in all (its phases repeat until the budget is spent).
FUZZ_SECONDS = int(os.environ.get("LOCALFLOW_FUZZ_SECONDS", "45"))
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance,negative_data_rejection,"
    "missing_required_header,ignored_auth,use_after_free,ensure_resource_availability"
)
# Left out, on purpose: positive_data_acceptance (a schema-valid task of type "0" is rightly a
# 422: the schema keeps `type` a string so the error can list the known types) and
# allow_header_conformance (Litestar's automatic OPTIONS answers list OPTIONS itself).


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[procs.Proc]:
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    proc = procs.start("api", db, env={"LOCALFLOW_API_TOKEN": TOKEN})
    yield proc
    proc.stop()


def _schema(live: procs.Proc) -> dict:
    r = httpx.get(f"{live.url}/schema/openapi.json", timeout=10)
    assert r.status_code == 200
    return r.json()


def test_openapi_lists_every_task_operation_with_its_errors(live):
    schema = _schema(live)
    operations = {
        (method.upper(), path): op
        for path, item in schema["paths"].items()
        for method, op in item.items()
    }
    expected = {
        ("POST", "/api/tasks"), ("GET", "/api/tasks"), ("POST", "/api/tasks/batch"),
        ("GET", "/api/tasks/{task_id}"), ("DELETE", "/api/tasks/{task_id}"),
        ("GET", "/api/tasks/{task_id}/attempts"), ("POST", "/api/tasks/{task_id}/cancel"),
        ("POST", "/api/tasks/{task_id}/retry"),
    }
    assert expected <= operations.keys()
    for key, op in operations.items():
        responses = op["responses"]
        errors = {code for code in responses if code.startswith(("4", "5"))}
        assert "500" in errors, key
        for code in errors:
            # /health answers 503 in its own shape (status + error), for probes, not problem+json.
            media = "application/json" if (key, code) == (("GET", "/health"), "503") else \
                "application/problem+json"
            assert media in responses[code]["content"], (key, code)
        if key[1] != "/health":
            assert op["security"] == [{"bearerAuth": []}], key
            assert {"401", "403"} <= errors, key
        if "{" in key[1]:
            assert "404" in errors, key
        if "requestBody" in op:
            assert {"400", "413", "415", "422"} <= errors, key
    submit = operations[("POST", "/api/tasks")]
    assert "409" in submit["responses"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header"
               for p in submit["parameters"])
    assert "security" not in operations[("GET", "/health")]


def _schemathesis() -> str:
    found = Path(sys.executable).with_name("schemathesis")
    if found.exists():
        return str(found)
    path = shutil.which("schemathesis")
    if path is None:
        pytest.skip("the schemathesis command is not installed (uv sync --dev)")
    return path


def test_schemathesis_finds_no_server_error_and_no_schema_violation(live, tmp_path):
    argv = [
        _schemathesis(), "run", f"{live.url}/schema/openapi.json",
        "--header", f"Authorization: Bearer {TOKEN}",
        "--checks", CHECKS,
        "--max-time", str(FUZZ_SECONDS),
        "--workers", "2",
        "--request-timeout", "10",
        "--max-failures", "20",
        "--suppress-health-check", "all",
    ]
    try:
        run = subprocess.run(
            argv, cwd=tmp_path, capture_output=True, text=True, timeout=FUZZ_SECONDS + 120,
            env={**os.environ, "NO_COLOR": "1"},
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis ran past its budget:\n{exc.stdout}\n{exc.stderr}")
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20000:]
    assert "generated" in report  # it really ran cases
    assert TOKEN not in live.log()  # and the token it sent was never logged
