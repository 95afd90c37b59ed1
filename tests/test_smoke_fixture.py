from tests import procs


def test_serve_runs_a_shell_task_end_to_end(client):
    body = {"type": "shell", "payload": {"command": "echo", "args": ["hi"]}}
    r = client.post("/api/tasks", json=body)
    assert r.status_code == 201, r.text
    task = procs.wait_for_status(client, r.json()["id"], {"succeeded", "failed"})
    assert task["status"] == "succeeded"
    assert task["result"]["stdout"] == "hi\n"
