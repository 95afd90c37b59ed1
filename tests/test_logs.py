"""Logs: a real `localflow serve` with LOCALFLOW_LOG_FORMAT=json writes one JSON object per line;
lines about a task carry its id, type and attempt, API lines a request id, and the API token
never appears."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from shared import logs
from tests import procs

TOKEN = "log-test-token-4f9c2e7a1b"
WRONG = "not-the-token-8d1e6b"
pytestmark = pytest.mark.e2e


def test_json_lines_carry_request_and_task_context_and_never_the_token(tmp_path):
    proc = procs.start("serve", tmp_path / "lf.db", env={
        "LOCALFLOW_API_TOKEN": TOKEN, "LOCALFLOW_ACCESS_LOG": "true",
    })
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(base_url=proc.url, headers=auth, timeout=10) as c:
            kept = c.get("/api/tasks", headers={"X-Request-ID": "client-req-42"})
            assert kept.status_code == 200
            assert kept.headers["x-request-id"] == "client-req-42"
            replaced = c.get("/api/tasks", headers={"X-Request-ID": "no spaces\tor tabs"})
            assert re.fullmatch(r"[0-9a-f]{16}", replaced.headers["x-request-id"])
            made = c.get("/health")
            assert re.fullmatch(r"[0-9a-f]{16}", made.headers["x-request-id"])
            assert made.headers["x-request-id"] != replaced.headers["x-request-id"]
            denied = c.get("/api/tasks", headers={"Authorization": f"Bearer {WRONG}"})
            assert denied.status_code == 401 and denied.headers["x-request-id"]

            failing = c.post("/api/tasks", json={
                "type": "shell", "payload": {"command": "false"}, "max_attempts": 1,
            }).json()["id"]
            # An http task whose own headers hold the token: a payload is a secret too.
            calling = c.post("/api/tasks", json={"type": "http", "payload": {
                "url": f"{proc.url}/api/tasks", "headers": {"Authorization": f"Bearer {TOKEN}"},
            }}).json()["id"]
            procs.wait_for_status(c, failing, {"failed"})
            procs.wait_for_status(c, calling, {"succeeded", "failed"})
    finally:
        assert proc.stop() == 0
    text = proc.log()
    assert TOKEN not in text and WRONG not in text

    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(e, dict) and {"event", "level", "timestamp"} <= e.keys()
               for e in lines)

    requests = [e for e in lines if e["event"] == "request"]
    assert requests and all(e.get("request_id") for e in requests)
    [kept_line] = [e for e in requests if e["request_id"] == "client-req-42"]
    assert kept_line["route"] == "/api/tasks" and kept_line["status"] == 200
    assert any(e["status"] == 401 for e in requests)
    assert all("no spaces" not in e["request_id"] for e in requests)

    about_tasks = [e for e in lines if "task_id" in e]
    assert all({"task_type", "attempt"} <= e.keys() for e in about_tasks)
    [failed] = [e for e in about_tasks if e["task_id"] == failing]
    # Its last attempt: someone should look, so a warning (a retry stays info).
    assert failed["event"] == "task failed" and failed["level"] == "warning"
    assert failed["task_type"] == "shell" and failed["attempt"] == 1
    # The API lines and the worker lines do not bleed into each other.
    assert not any("request_id" in e for e in about_tasks)


def test_redaction_by_key_nested_inline_and_by_value(monkeypatch):
    # What configure(secrets=[...]) sets; configure itself is left alone here because it
    # reconfigures structlog for the whole test session.
    monkeypatch.setattr(logs, "_secret_values", ("s3cret-value-123",))
    event = logs._redact(None, "info", {
        "event": "called with Bearer abc.def and s3cret-value-123",
        "Authorization": "Bearer xyz",
        "headers": {"authorization": "Basic dXNlcjpwYXNz", "accept": "text/plain"},
        "argv": ["curl", "-H", "X-Api-Key: s3cret-value-123"],
        "note": "nothing to hide",
    })
    assert event["event"] == "called with Bearer [redacted] and [redacted]"
    assert event["Authorization"] == "[redacted]"
    assert event["headers"] == {"authorization": "[redacted]", "accept": "text/plain"}
    assert event["argv"][2] == "X-Api-Key: [redacted]"
    assert event["note"] == "nothing to hide"
