"""The benchmark script runs end to end in its tiny mode and produces every number.

No speed is asserted (that would fail on a busy machine, not on slow code): only that each
measurement ran against real processes and came back as a positive number.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import pg

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def _no_postgres() -> str | None:
    """Why the bench's PostgreSQL half cannot run here (it then says so), or None."""
    try:
        pg._bin_dir()
        pg._as_user()
    except pg.Unavailable as exc:
        return str(exc)
    return None


def test_quick_bench_produces_every_number(tmp_path: Path) -> None:
    no_pg = _no_postgres()
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--slots", "8", "--processes", "1", "2",
         "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
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
    # (e) the API's memory right after the loads and once idle (bench/localflow_side.py).
    assert lf["submit"]["api_rss_mb_after"] > 0 and lf["submit"]["api_rss_mb_idle"] > 0
    assert "(e) memory (RSS)" in proc.stdout and "s after (a)" in proc.stdout

    (e2e,) = lf["end_to_end"]
    assert e2e["slots"] == 8 and e2e["tasks"] == 300 and e2e["tasks_per_s"] > 0
    # The same 8 slots as two worker processes of 4 (--split 2, the default).
    split = lf["end_to_end_split"]
    assert (split["processes"], split["slots_per_process"], split["tasks"]) == (2, 4, 300)
    assert sum(split["per_process"]) == 300 and split["tasks_per_s"] > 0
    assert "(b) LocalFlow end to end, 8 slots as 2 processes" in proc.stdout

    pickup = lf["pickup"]
    assert pickup["tasks"] == 20
    assert 0 < pickup["from_created_ms"]["p50"] <= pickup["from_created_ms"]["max"]

    assert lf["idle"]["percent_of_one_core"] >= 0 and lf["idle"]["seconds"] > 0

    (run,) = huey["runs"]
    assert run["workers"] == 8 and run["enqueue_per_s"] > 0 and run["tasks_per_s"] > 0
    assert set(out["ratios"]) >= {"a_http_single_vs_huey_enqueue", "b_end_to_end_8_slots_vs_huey",
                                  "b_end_to_end_8_slots_split_vs_huey"}

    # (e) scale-out: 1 and 2 worker processes on one SQLite file, then on one PostgreSQL.
    pg_out = out["postgres"]
    scales = [lf["scale_out"]] + ([] if no_pg else [pg_out["scale_out"]])
    for scale in scales:
        assert [e["processes"] for e in scale] == [1, 2]
        for e in scale:
            assert e["tasks"] == 200 and e["tasks_per_s"] > 0
            assert sum(e["per_process"]) == 200 and len(e["per_process"]) == e["processes"]
    if no_pg:
        assert no_pg in pg_out["skipped"]
    else:
        # PostgreSQL with its durability on, as SQLite runs with synchronous=FULL.
        assert pg_out["server"]["fsync"] == "on" and pg_out["server"]["throwaway_cluster"]
        single, batch = pg_out["submit"]["single"], pg_out["submit"]["batch"]
        assert single["tasks_per_s"] > 0 and single["errors"] == 0
        assert single["ok"] <= single["tasks_in_db"] <= single["ok"] + 64
        assert batch["tasks_per_s"] > 0 and batch["errors"] == 0
        assert "(e) PostgreSQL, 2 worker processes" in proc.stdout
        # Every URL in the results is shown without its password.
        assert not re.search(r"postgres(ql)?://[^/@\s]*:[^/@\s]*@", written.read_text())

    assert "(a) LocalFlow POST /api/tasks" in proc.stdout  # the table was printed
