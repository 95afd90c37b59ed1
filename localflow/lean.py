"""Keeps `rich` (and the pygments it loads) out of a `localflow` process: ~3 MB of memory.

structlog imports rich whenever it is installed (Litestar depends on it, so it always is), to
pretty-print exceptions in the console renderer. LocalFlow's logging never uses that:
shared/logs.py turns every exception into plain text (`format_exc_info`, then `_redact` scrubs
that text) before any renderer sees it, so console and JSON lines are the same without rich.
Nothing else a `localflow` process runs needs rich: Litestar's and httpx's command-line tools
(which do) are not run from here, and httpx already treats a missing rich as "no CLI".

Imported by localflow/cli.py before anything that imports structlog; a process that has already
imported rich (a test run, say) keeps it.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # `import rich` -> ImportError


def keep_pydantic_out() -> None:
    """Called by localflow/runtime.py before it imports the API (`localflow api|serve`).

    Litestar adds its pydantic plugins to every app whenever pydantic can be imported
    (`Litestar._get_default_plugins`), importing pydantic and pydantic-core: ~10 MB of an API
    process's memory. LocalFlow's API uses msgspec only; pydantic is a development dependency
    (absent from the image), so this changes nothing where LocalFlow is deployed and makes a
    development API process measure what a deployed one does. Litestar treats the missing
    import as "no pydantic" (MissingDependencyException, caught where it adds the plugins).

    Only here, not at import: a test process imports localflow.cli too, and some tests use
    pydantic (generated OpenAPI clients); a process that has already imported it keeps it.
    """
    sys.modules.setdefault("pydantic", None)  # type: ignore[arg-type]
