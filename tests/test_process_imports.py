"""What each process loads: memory (RSS) is mostly imported modules, so a `localflow worker`
imports no HTTP server, framework or templates, and nothing loads the profiler, the HTTP
client or the template engine until it is used (issue 10: API <= 60 MB, worker <= 50 MB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# A fresh interpreter per check: this test process has imported everything already.
_PROBE = """
import json, sys
SETUP
print(json.dumps(sorted({name.split(".")[0] for name, m in sys.modules.items() if m is not None})))
"""


def loaded_after(setup: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.replace("SETUP", setup)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_worker_command_imports_no_web_stack() -> None:
    # What `localflow worker` imports before it runs (localflow/cli.py, then runtime.run).
    loaded = loaded_after("import localflow.cli, localflow.runtime")
    assert "localflow" in loaded and "worker" in loaded  # the probe did import them
    heavy = {"litestar", "uvicorn", "jinja2", "pyinstrument", "httpx", "httpcore", "pydantic",
             "psycopg", "rich", "pygments"}
    assert loaded & heavy == set()


def test_the_api_loads_no_profiler_or_http_client_until_used() -> None:
    # `localflow api` starts in localflow.cli, which keeps rich out (localflow/lean.py).
    setup = """
import localflow.cli
import asyncio, os, tempfile
from shared.settings import settings_from
from localflow.runtime import open_queue
from localflow.http_server import serve_api
from api.app import create_app

async def build(debug):
    d = tempfile.mkdtemp()
    s = settings_from({}, {"db": os.path.join(d, "x.db"), "debug": debug})
    q = await open_queue(s)
    create_app(q, s)
    await q.store.close()

asyncio.run(build(DEBUG))
"""
    plain = loaded_after(setup.replace("DEBUG", "False"))
    assert "litestar" in plain and "uvicorn" in plain  # the app was built
    # Jinja loads with the first dashboard page (api/lazy_templates.py; the dashboard's tests
    # render every page).
    unused = {"pyinstrument", "httpx", "httpcore", "psycopg", "jinja2", "rich", "pygments"}
    assert unused & plain == set()
    assert "pyinstrument" in loaded_after(setup.replace("DEBUG", "True"))


@pytest.mark.parametrize(("payload", "loads_httpx"), [
    ({"command": "true"}, False),
    ({"url": "http://127.0.0.1:9/x"}, True),
])
def test_httpx_loads_with_the_first_http_task_checked(payload: dict, loads_httpx: bool) -> None:
    kind = "http" if "url" in payload else "shell"
    setup = f"""
from shared.policy import Policy
from shared.schemas import validate_payload
from shared.settings import Settings
Policy.from_settings(Settings()).check({kind!r}, validate_payload({kind!r}, {payload!r}))
"""
    assert ("httpx" in loaded_after(setup)) is loads_httpx


@pytest.mark.e2e  # a real `localflow api` process
def test_the_api_process_leaves_development_only_libraries_out(db_path) -> None:
    # Litestar loads pydantic (~10 MB) and attrs whenever they can be imported; the
    # development venv has them, the image does not. `localflow api` keeps them out
    # (localflow/lean.py), so the API measures the same in both; its OpenAPI document (built
    # by Litestar) still answers.
    import pydantic  # noqa: F401  # importable here: the check below means something

    from tests import procs

    api = procs.start("api", db_path)
    try:
        maps = Path(f"/proc/{api.popen.pid}/maps").read_text()
        assert "pydantic_core" not in maps  # its compiled core: loaded with pydantic
        import httpx

        doc = httpx.get(f"{api.url}/schema/openapi.json", timeout=30)
        assert doc.status_code == 200, doc.text[:300]
        assert "/api/tasks" in doc.json()["paths"]
        assert "msgspec" in maps  # a map of the API process (msgspec is a compiled module)
    finally:
        assert api.stop() == 0, api.log()


def test_the_api_alone_imports_no_worker_side_or_cron_libraries() -> None:
    # What `localflow api` imports (localflow/cli.py, runtime.run with api only, the app): no
    # worker pool, handlers, scheduler or deliverer (localflow/runtime.py imports them only
    # for `worker` and `serve`), no croniter (shared/cron.py: with the first expression
    # parsed) and no cron-descriptor (the dashboard: with the first schedule shown). ~1.2 MB
    # of the API's memory (bench/README.md, "Session 4: API memory").
    probe = """
import json, sys
import localflow.cli
import asyncio, os, tempfile
from shared.settings import settings_from
from localflow.runtime import open_queue
from localflow.http_server import serve_api
from api.app import create_app

async def build():
    d = tempfile.mkdtemp()
    s = settings_from({}, {"db": os.path.join(d, "x.db")})
    q = await open_queue(s)
    create_app(q, s)
    await q.store.close()

asyncio.run(build())
print(json.dumps(sorted(name for name, m in sys.modules.items() if m is not None)))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert {"api.app", "shared.cron", "shared.schedules"} <= loaded  # the probe built the app
    worker_side = {"worker.pool", "worker.scheduler", "worker.handlers", "worker.webhooks",
                   "worker.health_server", "worker.metrics", "croniter", "cron_descriptor",
                   "dateutil"}
    assert loaded & worker_side == set()


def test_cron_loads_croniter_with_the_first_expression() -> None:
    setup = """
from shared import cron
assert "croniter" not in sys.modules
cron.parse("*/5 * * * *").next_after(0.0)
"""
    assert "croniter" in loaded_after(setup)
