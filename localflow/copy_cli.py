"""`localflow copy --from SOURCE --to TARGET`: move a LocalFlow database to another one,
typically a SQLite file to PostgreSQL (docs/scaling.md).

    localflow copy --from localflow.db --to postgresql://app:secret@db:5432/localflow

Both databases are migrated to the newest schema first (the source too: the copy moves
rows of one schema). Then workers, schedules and tasks (each with its attempts and webhook
deliveries) go over in
batches of --batch rows, paged by id, so memory stays bounded whatever the size; each batch
is one transaction on the target. Every column is kept: ids, statuses, timestamps, attempt
histories, idempotency keys, claim tokens and leases, schedule state (next and last fire) and
the (schedule, fire time) of every scheduled task, so cron's exactly-once holds across the
move. Attempt rows get new internal ids from the target (never shown; their order is kept).

Copy a stopped system. A task still `running` in the source is copied as running, with its
lease: to the target's workers it is the task of a worker that died, so once the lease runs
out they re-queue it (its attempt recorded as lost, the attempt counted), exactly as if that
worker had crashed. Nothing is lost and nothing is invented; but a source worker still running
it would finish it in the source only, so stop the source's workers first.

A non-empty target is refused unless --append: then rows already there (same id, idempotency
key or schedule fire) are skipped and counted, which also makes an interrupted copy safe to
run again. Exit status: 0 copied; 2 nothing copied (bad --from/--to, unreachable, refused);
1 stopped partway (what was copied stays: run again with --append to finish). No password
is ever printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared import logs, store
from shared.errors import BadDatabaseURL, StorageError
from shared.settings import Settings
from shared.store.base import TRANSFER_TABLES, Store

DEFAULT_BATCH = 200
MAX_BATCH = 10_000
PROGRESS_EVERY = 10_000  # rows of a table between two progress lines


class Refused(Exception):
    """Nothing was copied: one line for the user, exit 2."""


@dataclass
class Report:
    """What a copy did, per table."""

    copied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        (*TRANSFER_TABLES, "task_attempts", "webhook_deliveries"), 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRANSFER_TABLES, 0))
    running: int = 0  # tasks copied while `running` (see the module docstring)


def add_command(commands: Any) -> None:
    """Add `copy` to `localflow`'s subparsers."""
    sub = commands.add_parser(
        "copy", help="copy tasks, attempts and schedules to another database",
        description="Copy a LocalFlow database (tasks with their attempts, schedules, "
        "workers) into another, e.g. a SQLite file into PostgreSQL. Stop the source's "
        "workers first. See docs/scaling.md.",
    )
    sub.add_argument("--from", dest="source", required=True, metavar="DB",
                     help="the database to read: a SQLite file or a postgresql:// URL")
    sub.add_argument("--to", dest="target", required=True, metavar="DB",
                     help="the database to write: a postgresql:// URL or a SQLite file")
    sub.add_argument("--append", action="store_true",
                     help="copy into a target that already has data, skipping rows already "
                     "there (also: finish an interrupted copy)")
    sub.add_argument("--batch", type=_batch_size, default=DEFAULT_BATCH, metavar="N",
                     help=f"rows per transaction, 1..{MAX_BATCH} [default {DEFAULT_BATCH}]")
    sub.set_defaults(copy_run=run)


def _batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_BATCH}, not {value}")
    return value


def run(args: argparse.Namespace) -> int:
    """The `copy` command: returns the exit status."""
    logs.configure("auto", secrets=[store.password_of(args.source),
                                    store.password_of(args.target)])
    try:
        _check(args.source, args.target)
        report = asyncio.run(copy(args.source, args.target, batch=args.batch,
                                  append=args.append, progress=_progress))
    except (Refused, BadDatabaseURL) as exc:
        print(f"localflow copy: {exc}", file=sys.stderr)
        return 2
    except _Partial as exc:
        print(f"localflow copy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("localflow copy: interrupted; what was copied stays in the target: run the "
              "same command with --append to finish", file=sys.stderr)
        return 130
    print(f"copied {store.redact(args.source)} -> {store.redact(args.target)}")
    for line in summary(report):
        print(line)
    return 0


def _check(source: str, target: str) -> None:
    for flag, db in (("--from", source), ("--to", target)):
        try:
            store.check_db(db)
        except BadDatabaseURL as exc:
            raise Refused(str(exc).replace("--db", flag, 1)) from None
    if not store.is_postgres(source) and not os.path.isfile(source):
        # Opening a path that is not there would create an empty database and copy nothing.
        raise Refused(f"--from {source}: no such file")
    if _same(source, target):
        raise Refused("--from and --to are the same database")


def _same(a: str, b: str) -> bool:
    if store.is_postgres(a) or store.is_postgres(b):
        return store.redact(a) == store.redact(b)
    return os.path.realpath(a) == os.path.realpath(b)


class _Partial(Exception):
    """The copy stopped after changing the target."""


async def copy(
    source_db: str, target_db: str, *, batch: int = DEFAULT_BATCH, append: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> Report:
    """Copy source_db into target_db (see the module docstring); raises Refused when nothing
    was copied, _Partial when the target was changed before the failure."""
    source = await _open("--from", source_db)
    try:
        target = await _open("--to", target_db)
        try:
            return await _copy(source, target, batch=batch, append=append, progress=progress)
        finally:
            await target.close()
    finally:
        await source.close()


async def _open(flag: str, db: str) -> Store:
    try:
        return await store.open_store(Settings(db=db), migrate_first=True)
    except StorageError as exc:
        raise Refused(f"{flag}: {exc}") from None


async def _copy(
    source: Store, target: Store, *, batch: int, append: bool,
    progress: Callable[[str, int], None] | None,
) -> Report:
    try:
        held = await target.table_counts()
    except StorageError as exc:
        raise Refused(f"--to: {exc}") from None
    if not append and any(held.values()):
        there = ", ".join(f"{n} {table}" for table, n in held.items() if n)
        raise Refused(
            f"the target {target.describe()} is not empty ({there}): copy into an empty "
            "database, or pass --append to add to it (rows already there are skipped)"
        )
    report = Report()
    for table in TRANSFER_TABLES:
        after = ""
        while True:
            try:
                rows = await source.export_rows(table, after, batch)
                if not rows:
                    break
                done = await target.import_rows(table, rows)
            except StorageError as exc:
                copied = sum(report.copied.values())
                raise _Partial(
                    f"stopped while copying {table}: {exc}. {copied} rows were copied before "
                    "this; fix the cause and run the same command with --append to finish"
                ) from None
            after = rows[-1]["id"]
            before = report.copied[table]
            report.copied[table] += done.rows
            report.skipped[table] += done.skipped
            if table == "tasks":
                report.copied["task_attempts"] += done.attempts
                report.copied["webhook_deliveries"] += done.deliveries
                report.running += sum(1 for r in rows if r["status"] == "running")
            if progress is not None and (
                report.copied[table] // PROGRESS_EVERY > before // PROGRESS_EVERY
            ):
                progress(table, report.copied[table])
    return report


def _progress(table: str, copied: int) -> None:
    # A sign of life on stderr for long copies; the summary on stdout is what scripts read.
    print(f"localflow copy: {table}: {copied} so far", file=sys.stderr, flush=True)


def summary(report: Report) -> list[str]:
    """The lines `copy` prints after copying: one per table, then any warning."""
    lines = []
    for table, n in report.copied.items():
        skipped = report.skipped.get(table, 0)
        extra = f", {skipped} skipped (already in the target)" if skipped else ""
        lines.append(f"  {table}: {n} copied{extra}")
    if report.running:
        lines.append(
            f"note: {report.running} tasks were running in the source. They are copied as "
            "running; the target's workers re-queue them (attempt recorded as lost) when "
            "their lease runs out, as after a crash. Stop the source's workers before "
            "copying, or a task may also finish there."
        )
    return lines
