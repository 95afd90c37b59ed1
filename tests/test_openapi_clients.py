"""The OpenAPI document as the tools users point at it read it: a validator, openapi-python-client
and datamodel-codegen, each run on the live /schema/openapi.json of a real `localflow api`.

The generated client is imported and used against that server without a token (the loopback
default), including the idempotent replay's 200. Generators make one type per concept: one
TaskStatus enum (not one per field), one MaxAttempts (not MaxAttempts1..5).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from tests import procs

pytestmark = pytest.mark.e2e

TOKEN = "clients-token-5b1f0e9a7c"
BIN = Path(sys.executable).parent
# What openapi-python-client makes of the document: one module per model. Two health shapes
# are inline on purpose (they are /health's own, not API resources).
CLIENT_MODELS = {
    "attempt", "fire_times", "health_health_response_200", "health_health_response_503",
    "http_payload", "http_payload_headers", "http_method", "problem", "problem_field",
    "schedule", "schedule_create", "schedule_create_payload", "schedule_missed",
    "schedule_overlap", "schedule_update", "schedule_update_payload", "shell_payload",
    "shell_payload_env", "task", "task_batch", "task_batch_result", "task_create",
    "task_create_payload", "task_output", "task_page", "task_status", "task_type",
    "queue_info", "queue_info_counts", "queue_update",
    "audit_entry", "audit_entry_action", "audit_entry_channel", "audit_entry_target_kind",
    "audit_entry_details", "audit_page", "api_audit_list_audit_action",
    "delivery", "delivery_state", "delivery_try",
}
# What datamodel-codegen makes of it: named components, plus Arg (a shell argument's bound).
DATAMODEL_CLASSES = {
    "Attempt", "FireTimes", "ProblemField", "Problem", "Arg", "HttpMethod", "HttpPayload",
    "TaskType", "TaskStatus", "MaxAttempts", "Priority", "Seconds", "ScheduleOverlap",
    "ScheduleMissed", "Schedule", "ScheduleCreate", "ScheduleUpdate", "ShellPayload", "Task",
    "TaskBatch", "TaskBatchResult", "TaskCreate", "TaskOutput", "TaskPage",
    "QueueInfo", "QueueUpdate", "QueueConcurrency",
    "AuditEntry", "AuditPage", "Action", "Channel", "TargetKind",
    "Delivery", "State", "DeliveryTry",  # State: a delivery's state (pending, delivered, failed)
}


def _serve(tmp_path_factory, env: dict[str, str] | None = None) -> Iterator[procs.Proc]:
    proc = procs.start("api", tmp_path_factory.mktemp("clients") / "c.db", env=env)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory) -> Iterator[procs.Proc]:
    yield from _serve(tmp_path_factory)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory) -> Iterator[procs.Proc]:
    yield from _serve(tmp_path_factory, {"LOCALFLOW_API_TOKEN": TOKEN})


def _document(server: procs.Proc) -> dict:
    r = httpx.get(f"{server.url}/schema/openapi.json", timeout=30)
    assert r.status_code == 200
    return r.json()


def _operations(doc: dict) -> dict[tuple[str, str], dict]:
    return {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }


def test_the_document_validates(open_server, token_server):
    for server in (open_server, token_server):
        validate(_document(server))


def test_auth_is_described_as_configured(open_server, token_server):
    for key, op in _operations(_document(open_server)).items():
        assert "security" not in op, key  # a tokenless server asks nobody for a token
        assert not {"401", "403"} & op["responses"].keys(), key
    for key, op in _operations(_document(token_server)).items():
        if key[1] == "/health":
            assert "security" not in op
        else:
            assert op["security"] == [{"bearerAuth": []}], key
            assert {"401", "403"} <= op["responses"].keys(), key


def test_submit_documents_the_replay_200_and_location(open_server):
    responses = _operations(_document(open_server))[("POST", "/api/tasks")]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Task"
    }
    assert responses["201"]["headers"]["Location"]["required"] is True


def _validator(doc: dict, component: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{component}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("body", [
    {"type": "shell", "payload": {"command": "echo"}},
    {"type": "shell", "payload": {"command": "echo"}, "timeout": 0},
    {"type": "shell", "payload": {"command": "echo"}, "timeout": 0.5},
    {"type": "shell", "payload": {"command": "echo"}, "delay": 5,
     "run_at": "2030-01-01T00:00:00Z"},
    {"type": "shell", "payload": {"command": "echo"}, "delay": 5, "run_at": None},
    {"type": "shell", "payload": {"command": "echo"}, "max_attempts": 0},
    {"type": "shell", "payload": {"command": "echo"}, "priority": 1001},
    {"type": "shell", "payload": {"cmd": "echo"}},
    {"type": "ftp", "payload": {"command": "echo"}},
])
def test_document_and_server_agree_on_a_task(open_server, body):
    """The schema accepts what the server accepts and refuses what it refuses (issue 11 #15:
    `timeout: 0` and `run_at` with `delay` were valid in the document, 422 at the server)."""
    schema_ok = _validator(_document(open_server), "TaskCreate").is_valid(body)
    r = httpx.post(f"{open_server.url}/api/tasks", json=body, timeout=30)
    assert r.status_code in (201, 422), r.text
    assert schema_ok == (r.status_code == 201), (body, r.text)


def _run(argv: list[str], cwd: Path) -> None:
    # The generators format their output with ruff: find it beside this interpreter.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Warning" not in run.stdout + run.stderr, run.stdout + run.stderr


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (uv sync --dev)")
    return str(path)


@pytest.fixture
def generated_client(open_server, tmp_path) -> Iterator[object]:
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(_document(open_server)))
    package = "localflow_generated_client"
    _run([_tool("openapi-python-client"), "generate", "--path", str(spec), "--meta", "none",
          "--output-path", str(tmp_path / package)], tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(package)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.split(".")[0] == package]:
            del sys.modules[name]


def test_openapi_python_client_submits_replays_and_lists_without_a_token(
    open_server, generated_client
):
    pkg = generated_client.__name__
    models_dir = Path(generated_client.__file__).parent / "models"
    models = {p.stem for p in models_dir.glob("*.py")} - {"__init__"}
    assert models == CLIENT_MODELS
    assert [m for m in models if "status" in m] == ["task_status"]  # one enum per concept

    submit = importlib.import_module(f"{pkg}.api.tasks.api_tasks_submit")
    list_tasks = importlib.import_module(f"{pkg}.api.tasks.api_tasks_list_tasks")
    get_task = importlib.import_module(f"{pkg}.api.tasks.api_tasks_task_id_get_task")
    m = importlib.import_module(f"{pkg}.models")

    client = generated_client.Client(base_url=open_server.url, raise_on_unexpected_status=True)
    body = m.TaskCreate.from_dict({"type": "shell", "payload": {"command": "echo"},
                                   "idempotency_key": "generated-client-1", "max_attempts": 2})
    first = submit.sync_detailed(client=client, body=body)
    assert first.status_code == 201
    assert isinstance(first.parsed, m.Task)
    assert first.headers["location"] == f"/api/tasks/{first.parsed.id}"
    again = submit.sync_detailed(client=client, body=body)
    assert again.status_code == 200  # the replay, a documented answer: no UnexpectedStatus
    assert isinstance(again.parsed, m.Task) and again.parsed.id == first.parsed.id

    page = list_tasks.sync(client=client, status=m.TaskStatus.QUEUED)
    assert isinstance(page, m.TaskPage)
    assert first.parsed.id in [t.id for t in page.items]
    assert page.items[0].status is m.TaskStatus.QUEUED

    got = get_task.sync_detailed(client=client, task_id=first.parsed.id)
    assert got.status_code == 200 and got.parsed.max_attempts == 2
    assert got.headers["etag"].startswith('"')


def test_datamodel_codegen_makes_one_class_per_concept(open_server, tmp_path):
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(_document(open_server)))
    out = tmp_path / "models.py"
    env_argv = [_tool("datamodel-codegen"), "--input", str(spec), "--input-file-type", "openapi",
                "--output", str(out), "--output-model-type", "pydantic_v2.BaseModel",
                "--formatters", "ruff-format"]
    run = subprocess.run(env_argv, capture_output=True, text=True, timeout=300, env={
        **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    assert run.returncode == 0, run.stderr
    assert "numbered collisions" not in run.stderr, run.stderr
    classes = re.findall(r"^class (\w+)\(", out.read_text(), re.MULTILINE)
    assert len(classes) == len(set(classes))
    assert set(classes) == DATAMODEL_CLASSES
    assert not [c for c in classes if re.search(r"\d$", c)]  # no MaxAttempts1...5
    spec_ = importlib.util.spec_from_file_location("localflow_generated_models", out)
    module = importlib.util.module_from_spec(spec_)
    sys.modules[spec_.name] = module  # pydantic resolves the annotations through it
    try:
        spec_.loader.exec_module(module)
        statuses = {s.value for s in module.TaskStatus}
        assert statuses == {"queued", "running", "succeeded", "failed", "cancelled"}
        # The constrained types carry the server's bounds.
        with pytest.raises(ValueError, match="greater than 0"):
            module.Seconds(0)
        with pytest.raises(ValueError, match="less than or equal to 100"):
            module.MaxAttempts(101)
        task = module.TaskCreate(type="shell", payload={"command": "echo"}, max_attempts=3)
        assert task.max_attempts.root == 3 and task.type is module.TaskType.shell
    finally:
        del sys.modules[spec_.name]
