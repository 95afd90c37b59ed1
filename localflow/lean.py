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



# Installed in the development venv only (tests, tools), absent from the image, and imported by
# the API's libraries whenever they can be: Litestar adds its pydantic and attrs plugins
# (`Litestar._get_default_plugins`) and reads annotated_types' constraints (litestar/typing.py).
# LocalFlow's API uses none of them (msgspec only). (greenlet, which structlog loads when it can,
# is dev-only too, but structlog is imported with localflow.cli, before a command is known.)
DEV_ONLY = ("pydantic", "attr", "attrs", "annotated_types")


def keep_dev_only_out() -> None:
    """Called by localflow/runtime.py before it imports the API (`localflow api|serve`).

    Together ~10 MB of a development API process (pydantic and pydantic-core the most), so a
    development API measured what a deployed one does not. Each library treats the missing
    import as "not installed", as in the image (Litestar raises MissingDependencyException
    where it adds the plugins and catches it, and falls back where it reads constraints).

    Only here, not at import: a test process imports localflow.cli too, and some tests use
    pydantic (generated OpenAPI clients); a process that has already imported one keeps it.
    """
    for name in DEV_ONLY:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # import -> ImportError
