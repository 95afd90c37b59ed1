"""What every handler shares: its context and the way it reports failure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class TaskFailed(Exception):
    """A failed attempt. `result` (exit code, output, status...) is kept for the person
    reading why it failed."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class HandlerContext:
    task_id: str
    attempt: int
    timeout: float  # seconds this attempt may take in all
    output_limit: int  # bytes kept of each output stream or response body


def clip(data: bytes, limit: int) -> str:
    """Bounded, printable output: the head of the stream, and a note of what was cut."""
    if len(data) <= limit:
        return data.decode("utf-8", errors="replace")
    kept = data[:limit].decode("utf-8", errors="replace")
    return f"{kept}\n... [{len(data) - limit} more bytes not kept]"
