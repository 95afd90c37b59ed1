"""Domain errors, shared by the queue, the schedules and every storage backend.

They say what went wrong in words a person can act on, and nothing about HTTP: api/errors.py
maps them to status codes, the CLI to exit codes.
"""

from __future__ import annotations


class LocalFlowError(Exception):
    """Base of every error LocalFlow raises on purpose."""


class QueueError(LocalFlowError):
    """A request the queue refuses: the caller can fix it (bad input, wrong state, unknown id)."""

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.field = field  # the request field at fault ("payload.env"), when there is one


class NotFound(QueueError):
    """No task (or schedule) with that id."""


class Conflict(QueueError):
    """The request contradicts the current state (cancel a finished task, reuse a key...)."""


class IdempotencyConflict(Conflict):
    """An idempotency key already used for a different request."""

    def __init__(self, key: str, task_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for a different request "
            f"(task {task_id}); use a new key for a new request"
        )
        self.key = key
        self.task_id = task_id


class InvalidTask(QueueError):
    """A task (or a list filter) that cannot be accepted; the message names the field."""


class InvalidSchedule(QueueError):
    """A schedule we refuse to store; `field` names the culprit (for forms), the message too."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message if message.startswith(field) else f"{field}: {message}")
        self.field = field


class ScheduleNotFound(NotFound):
    """No schedule with that id."""


class StorageError(LocalFlowError):
    """The storage backend could not do what was asked; nothing was changed."""


class StorageBusy(StorageError):
    """Another process held the database (write lock, row locks) longer than we wait: retry."""


class StorageFull(StorageError):
    """The disk (or the server's disk) is full: nothing was written."""


class StorageUnavailable(StorageError):
    """The database cannot be reached: server down, connection lost, wrong credentials,
    missing database, unreadable file. The message never contains a password."""


class SchemaNotReady(StorageError):
    """The database's schema is older than this LocalFlow: run `localflow migrate`."""


class SchemaTooNew(StorageError):
    """The database's schema is newer than this LocalFlow knows: upgrade LocalFlow."""


class BadDatabaseURL(LocalFlowError):
    """--db / LOCALFLOW_DB is neither a usable SQLite path nor a valid PostgreSQL URL."""
