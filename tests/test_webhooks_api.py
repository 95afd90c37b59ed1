"""Webhook fields through the in-process API (tests/inproc.py, a real SQLite file): the
batch names the item whose callback_url is refused and stores none; an idempotency key
covers the callback_url; the deliveries sub-resource 404s for an unknown task; the system
page never shows the secret."""

from __future__ import annotations

from pathlib import Path

from tests.inproc import serving

SECRET = "inproc-webhook-secret-6d1c2b"
ENV = {"LOCALFLOW_WEBHOOK_SECRET": SECRET}


def shell(**fields: object) -> dict:
    return {"type": "shell", "payload": {"command": "true"}, **fields}


def test_webhook_fields_over_the_api(tmp_path: Path):
    with serving(tmp_path / "lf.db", ENV, worker=False) as api:
        r = api.post("/api/tasks/batch", json={"tasks": [
            shell(callback_url="https://example.com/a"),
            shell(callback_url="http://169.254.169.254/latest")]})
        assert r.status_code == 422, r.text
        assert "tasks[1].callback_url" in r.text
        assert api.get("/api/tasks").json()["items"] == []

        first = api.post("/api/tasks", json=shell(
            callback_url="https://example.com/a", idempotency_key="k1"))
        assert first.status_code == 201 and first.json()["callback_url"] == "https://example.com/a"
        again = api.post("/api/tasks", json=shell(
            callback_url="https://example.com/a", idempotency_key="k1"))
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        other = api.post("/api/tasks", json=shell(
            callback_url="https://example.com/b", idempotency_key="k1"))
        assert other.status_code == 409, other.text

        task_id = first.json()["id"]
        assert api.get(f"/api/tasks/{task_id}/deliveries").json() == []
        missing = api.get("/api/tasks/01J0000000000000000000000Z/deliveries")
        assert missing.status_code == 404

        page = api.get("/dashboard/system")
        assert page.status_code == 200
        assert SECRET not in page.text and "webhook_secret" in page.text
