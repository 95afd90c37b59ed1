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
