"""The benchmark script runs end to end in its tiny mode and produces every number.

No speed is asserted (that would fail on a busy machine, not on slow code): only that each
measurement ran against real processes and came back as a positive number.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def test_quick_bench_produces_every_number(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--slots", "8", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (written,) = tmp_path.glob("bench-*-quick.json")
    out = json.loads(written.read_text())
    lf, huey = out["localflow"], out["huey"]

    single = lf["submit"]["single"]
    assert single["tasks_per_s"] > 0 and single["errors"] == 0
    # Every 2xx answer is a stored task (a request in flight when wrk stops may add one more).
    assert single["ok"] <= single["tasks_in_db"] <= single["ok"] + 64
    assert single["tool"] == ("wrk" if shutil.which("wrk") else "httpx (wrk not installed)")
    batch = lf["submit"]["batch"]
    assert "skipped" in batch or batch["tasks_per_s"] > 0

    (e2e,) = lf["end_to_end"]
    assert e2e["slots"] == 8 and e2e["tasks"] == 300 and e2e["tasks_per_s"] > 0

    pickup = lf["pickup"]
    assert pickup["tasks"] == 20
    assert 0 < pickup["from_created_ms"]["p50"] <= pickup["from_created_ms"]["max"]

    assert lf["idle"]["percent_of_one_core"] >= 0 and lf["idle"]["seconds"] > 0

    (run,) = huey["runs"]
    assert run["workers"] == 8 and run["enqueue_per_s"] > 0 and run["tasks_per_s"] > 0
    assert set(out["ratios"]) >= {"a_http_single_vs_huey_enqueue", "b_end_to_end_8_slots_vs_huey"}

    assert "(a) LocalFlow POST /api/tasks" in proc.stdout  # the table was printed
