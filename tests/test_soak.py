"""The chaos soak (bench/soak.py): a 60-second run in CI, and its checker caught in the act."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from bench import soak
from tests.procs import REPO


@pytest.mark.soak
@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_sixty_seconds_of_kills_lose_nothing_acknowledged():
    env = {**os.environ, "SOAK_SECONDS": os.environ.get("SOAK_SECONDS", "60")}
    proc = subprocess.run([sys.executable, "bench/soak.py"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=840)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert "violations       0" in proc.stdout
    kills = [int(n) for n in re.findall(r"(?:api|worker\d) (\d+)", proc.stdout)]
    assert sum(kills) > 0, "the soak killed nothing"
    assert "integrity_check  ok" in proc.stdout


def task(task_id: str, key: str, status: str = "succeeded", attempts: int = 1) -> dict:
    return {"id": task_id, "idempotency_key": key, "status": status, "attempts": attempts}


def test_the_checker_reports_what_went_wrong():
    ledger = soak.Ledger(sent={"k1", "k2", "k3", "k4"},
                         acked={"k1": "T1", "k2": "T2", "k3": "T3"})
    found = [
        task("T1", "k1"),                      # fine
        task("T3", "k3", status="queued"),     # stuck (and not succeeded)
        task("T4", "k4"), task("T5", "k4"),    # one key, two tasks
        task("T6", "stranger"),                # nobody asked for it
    ]                                          # T2 was acknowledged and is gone
    violations, numbers = soak.check(ledger, found, http=None)  # type: ignore[arg-type]
    text = "\n".join(violations)
    assert "acknowledged task T2 (k2) does not exist" in text
    assert "acknowledged task T3 (k3) is queued" in text
    assert "key 'k4' has 2 tasks" in text
    assert "key 'stranger' the client never sent" in text
    assert "1 task(s) still queued or running" in text
    assert "counts do not add up" in text
    assert numbers["by_status"] == {"succeeded": 4, "queued": 1}
    assert soak.check(soak.Ledger(sent={"k1"}, acked={"k1": "T1"}), [task("T1", "k1")],
                      http=None)[0] == []  # type: ignore[arg-type]
