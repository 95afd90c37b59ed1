"""The OpenAPI document describes every operation and error answer, and schemathesis, run against
a live server with it and every check it has, finds no 5xx and no answer that contradicts it.

The server under fuzz is `localflow api` only: no worker, so nothing schemathesis invents (a shell
task running a random program) is ever executed. It has a token, so the auth paths are exercised
(schemathesis's ignored_auth check sends requests without it and expects them refused).
"""

from __future__ import annotations

import json
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
# Every check runs (`--checks all`). Two answers are allowed beyond schemathesis's defaults:
# - 412 for any request with If-Match: a made-up one is well formed and simply not the current
#   version, as a made-up id is a 404; and the precondition is decided before the body is
#   read (RFC 9110 13.2.1), so a schema-violating body with a stale If-Match is refused by 412.
# - 422 for schema-valid bodies of the four operations whose rules a schema cannot state: the
#   command must exist on the server, the cron expression must be one that fires, the timezone
#   a real IANA name, the URL one the policy allows (shared/policy.py). Everything a schema can
#   state is in the document (bounds, run_at xor delay, payload shape per task type).
# - 413 for any body past the 1 MiB limit (api/app.py MAX_BODY_BYTES; documented as 413 on every
#   operation with a body): OpenAPI cannot state a limit on a body's bytes, so schemathesis
#   sometimes sends one, valid or not (a 262,000-character name of "\u00de" escapes, 1.5 MB, was
#   answered 413 and reported as ST201 "schema-violating request accepted").
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", 401, 403, 404, 409, 412, 413, 429]

[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 412, 413, 415, 422, 428, 429]

[[operations]]
include-operation-id = ["ApiTasksSubmit", "ApiTasksBatchSubmitBatch", "ApiSchedulesCreate",
                        "ApiSchedulesScheduleIdUpdate", "ApiQueuesNameUpdateQueue"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", 401, 403, 404, 409, 412,
                                                     413, 422, 429]
"""
# The error titles schemathesis gives an exception raised inside itself or Hypothesis, as
# opposed to what the server did (Network Error, Unresponsive Operation, Schema Error ...).
TOOL_ERRORS = {"Runtime Error"}


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[procs.Proc]:
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    # schemathesis sends far more than 10 wrong tokens a minute from one address (its
    # ignored_auth check); past the throttle's limit they would get 429, which that check
    # does not expect. The throttle has its own tests (tests/test_auth.py).
    proc = procs.start("api", db, env={"LOCALFLOW_API_TOKEN": TOKEN,
                                       "LOCALFLOW_AUTH_FAILURES": "1000000"})
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


def _fuzz(live: procs.Proc, workdir: Path) -> tuple[str, dict | None]:
    """One schemathesis run: its output, and its JSON report (None if it wrote none)."""
    workdir.mkdir()
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    argv = [
        _schemathesis(), "--config-file", str(config), "run", f"{live.url}/schema/openapi.json",
        "--header", f"Authorization: Bearer {TOKEN}",
        "--checks", "all",
        "--max-time", str(FUZZ_SECONDS),
        # One worker: with two, Hypothesis parses source (ast.parse) in two threads at once, and
        # CPython 3.11 keeps the AST constructor's recursion depth in per-interpreter state, so
        # the threads corrupt each other's count: "SystemError: AST constructor recursion depth
        # mismatch" (python/cpython#106905), more likely the busier the machine. It crashed the
        # tool, never touched the server.
        "--workers", "1",
        # GET /api/tasks/{id} long-polls with ?wait= up to 60 s, and this server has no worker
        # to finish anything: a generated wait past the request timeout reads as a network
        # error. Its answers (404, 304, wait) are covered by tests/test_task_wait.py and
        # tests/test_http_semantics.py.
        "--exclude-operation-id", "ApiTasksTaskIdGetTask",
        "--request-timeout", "10",
        "--max-failures", "20",
        "--suppress-health-check", "all",
        "--report", "json", "--report-dir", str(workdir / "report"),
    ]
    try:
        run = subprocess.run(
            argv, cwd=workdir, capture_output=True, text=True, timeout=FUZZ_SECONDS + 180,
            env={**os.environ, "NO_COLOR": "1"},
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis ran past its budget:\n{exc.stdout}\n{exc.stderr}")
    reports = sorted((workdir / "report").glob("json-*.json"))
    report = json.loads(reports[-1].read_text()) if reports else None
    return run.stdout + run.stderr, report


def tool_crash(output: str, report: dict | None) -> str | None:
    """Why schemathesis itself failed (not the server, not a check), or None."""
    if report is None:
        lines = [line for line in output.splitlines() if line.strip()]
        return lines[-1] if lines else "no output and no report"
    crashed = [e["title"] for e in report.get("errors", []) if e["title"] in TOOL_ERRORS]
    return ", ".join(crashed) or None


def test_schemathesis_finds_no_server_error_and_no_schema_violation(live, tmp_path):
    # A crash of the tool is neither LocalFlow's failure nor a pass: run again (a fresh seed),
    # and if it crashes again, fail saying so, with its output.
    for attempt in (1, 2):
        output, report = _fuzz(live, tmp_path / f"run{attempt}")
        crash = tool_crash(output, report)
        if crash is None:
            break
        print(f"schemathesis crashed (attempt {attempt}): {crash}\n{output[-5000:]}")
    else:
        pytest.fail(
            f"schemathesis itself crashed twice ({crash}): a tool failure, not a LocalFlow "
            f"one, but nothing was verified.\n{output[-20000:]}"
        )
    assert report is not None
    assert report["failures"] == [] and report["errors"] == [], output[-20000:]
    # It really ran: every operation, with generated cases.
    assert report["operations"]["tested"] == report["operations"]["selected"] > 0, output
    assert report["test_cases"]["generated"] > 0, output
    assert report["exit_code"] == 0, output[-20000:]
    assert TOKEN not in live.log()  # and the token it sent was never logged


def test_a_tool_crash_is_told_apart_from_a_failure():
    """The classifier above, on the shapes schemathesis really produces."""
    ast_crash = "Traceback ...\nSystemError: AST constructor recursion depth mismatch (before=1)"
    assert tool_crash(ast_crash, None) == ast_crash.splitlines()[-1]
    assert tool_crash("", {"errors": [{"title": "Runtime Error", "count": 1}],
                           "failures": []}) == "Runtime Error"
    assert tool_crash("", {"errors": [{"title": "Network Error", "count": 3}],
                           "failures": []}) is None
    assert tool_crash("", {"errors": [], "failures": [{"code": "ST202"}]}) is None
