"""Every query LocalFlow runs lives in a .sql file here, one folder per dialect
(shared/sql/sqlite/, shared/sql/postgres/), in named blocks, loaded once.

A block starts with a line `-- name: some_name` and runs to the next such line.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_HEADER = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip().rstrip(";")
    return queries


@cache
def load(dialect: str, module: str) -> dict[str, str]:
    return parse((Path(__file__).parent / dialect / f"{module}.sql").read_text())


class Queries:
    """Attribute access to one file's queries: Q.claim is the text of `-- name: claim` in
    shared/sql/<dialect>/<module>.sql."""

    def __init__(self, dialect: str, module: str) -> None:
        self._queries = load(dialect, module)

    def __getattr__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r}") from None
