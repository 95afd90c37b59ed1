"""`localflow submit | status | tasks | schedules | audit`: the REST API from a shell, via
localflow.client.

    localflow submit shell -- echo hi             # prints the new task's id
    localflow submit shell --wait -- make test    # waits; the exit status says how it ended
    localflow submit http --url http://127.0.0.1:8080/health
    localflow submit --json '{"type": "shell", "payload": {"command": "date"}}'
    localflow status 01J...  [--wait]
    localflow tasks [--status failed] [--type shell] | tasks cancel ID | tasks retry ID
    localflow schedules | schedules create --name N --cron '*/5 * * * *' shell -- date
    localflow schedules pause ID | resume ID | delete ID
    localflow audit [--action task.delete] [--target ID]   # who did what, newest first

The server is --server (or --url in status and tasks; in submit and schedules --url is an http
task's target),
else LOCALFLOW_URL, else http://127.0.0.1:8080; the token is LOCALFLOW_API_TOKEN (never a flag:
flags show in `ps`). `-o json` prints what the API answered, for scripts.

Exit status, a contract scripts may rely on:
    0  done (with --wait: the task succeeded)
    1  with --wait: the task failed
    2  usage or connection error: the command line was wrong, the server refused the request
       (4xx/5xx: a bad task, a wrong token, no such task) or could not be reached
    3  with --wait: the task was cancelled, or --wait-timeout passed before it finished (the
       task as last seen is printed; it may still finish later)
--wait does not poll: it long-polls GET /api/tasks/{id}?wait=, answered as the task finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from localflow.defaults import DEFAULT_URL
from shared.audit import ACTIONS, AuditEntry
from shared.durations import parse_duration
from shared.schedule_schemas import Schedule
from shared.schemas import Task

if TYPE_CHECKING:
    from localflow.client import Client, ClientError

# The exit statuses of the module docstring, by what happened.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED_OR_TIMEOUT = 0, 1, 2, 3
COMMANDS = ("submit", "status", "tasks", "schedules", "audit")
TASK_TYPES = ("shell", "http")


class UsageError(Exception):
    """The command line is wrong: exit 2 with the message."""


# -- parser ---------------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """Add the client commands to `localflow`'s subparsers."""
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--server", metavar="URL", help=f"LocalFlow's address [env LOCALFLOW_URL, "
                      f"default {DEFAULT_URL}]")
    conn.add_argument("-o", "--output", choices=("text", "json"), default="text",
                      help="text for people (default), json for scripts")
    conn.add_argument("--request-timeout", dest="http_timeout", type=_duration, default=30.0,
                      metavar="DURATION", help="how long one API request may take (30s)")
    url_alias = argparse.ArgumentParser(add_help=False)
    url_alias.add_argument("--url", dest="server", metavar="URL", help="same as --server")

    submit = commands.add_parser(
        "submit", parents=[conn], help="submit a task (client)",
        description="Submit a task: `submit shell -- CMD ARGS...`, `submit http --url URL`, "
        "or `submit --json '{...}'` with a whole task body. Prints the task id.",
    )
    _task_arguments(submit)
    _wait_arguments(submit)
    submit.set_defaults(client_run=_submit)

    status = commands.add_parser(
        "status", parents=[conn, url_alias], help="show a task (client)",
        description="Show one task; --wait waits until it succeeds, fails or is cancelled.",
    )
    status.add_argument("task_id", metavar="TASK_ID")
    _wait_arguments(status)
    status.set_defaults(client_run=_status)

    tasks = commands.add_parser(
        "tasks", parents=[conn, url_alias], help="list, cancel or retry tasks (client)",
        description="`tasks` lists (newest first); `tasks get|attempts|cancel|retry ID`.",
    )
    tasks.add_argument("action", nargs="?", default="list",
                       choices=("list", "get", "attempts", "cancel", "retry"))
    tasks.add_argument("task_id", nargs="?", metavar="TASK_ID")
    tasks.add_argument("--status", choices=("queued", "running", "succeeded", "failed",
                                            "cancelled"))
    tasks.add_argument("--type", dest="task_type", metavar="TYPE")
    tasks.add_argument("--queue", metavar="NAME", help="only this queue's tasks")
    tasks.add_argument("--limit", type=int, default=50, help="1 to 500 (default 50)")
    tasks.add_argument("--cursor", help="next_cursor of the previous page")
    tasks.set_defaults(client_run=_tasks)

    schedules = commands.add_parser(
        "schedules", parents=[conn], help="list and manage cron schedules (client)",
        description="`schedules` lists; `schedules get|pause|resume|delete ID`; `schedules "
        "create --name NAME --cron EXPR shell -- CMD ARGS...` (or http --url URL, or "
        "--json '{...}' with a whole schedule body).",
    )
    schedules.add_argument("action", nargs="?", default="list",
                           choices=("list", "get", "create", "pause", "resume", "delete"))
    schedules.add_argument("rest", nargs="*", metavar="ID | TYPE [-- CMD ARGS...]")
    schedules.add_argument("--name")
    schedules.add_argument("--cron", metavar="EXPR", help="5 fields, e.g. '*/5 * * * *'")
    schedules.add_argument("--timezone", metavar="TZ", help="IANA name (default UTC)")
    schedules.add_argument("--disabled", action="store_true", help="create it paused")
    schedules.add_argument("--queue", metavar="NAME",
                           help="the queue of the tasks it makes (default: default)")
    schedules.add_argument("--callback-url", metavar="URL",
                           help="each task it makes is POSTed there when it finishes, signed")
    schedules.add_argument("--json", dest="json_body", metavar="JSON",
                           help="the whole schedule body")
    _payload_arguments(schedules)
    schedules.set_defaults(client_run=_schedules)

    audit = commands.add_parser(
        "audit", parents=[conn], help="the audit trail of operator actions (client)",
        description="Who cancelled, retried, deleted or changed what, newest first "
        "(docs/audit.md).",
    )
    audit.add_argument("--action", choices=ACTIONS)
    audit.add_argument("--target", metavar="ID",
                       help="a task or schedule id, or a queue name")
    audit.add_argument("--limit", type=int, default=50, help="1 to 500 (default 50)")
    audit.add_argument("--cursor", help="next_cursor of the previous page")
    audit.set_defaults(client_run=_audit)


def _task_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("type", nargs="?", metavar="TYPE", help="shell or http (or any type, "
                   "with --payload)")
    p.add_argument("argv", nargs="*", metavar="CMD ARGS", help="shell: the command, after --")
    p.add_argument("--json", dest="json_body", metavar="JSON",
                   help="the whole task body, as POST /api/tasks takes it")
    _payload_arguments(p)
    p.add_argument("--priority", type=int, help="higher runs first (-1000..1000)")
    p.add_argument("--queue", metavar="NAME", help="the queue it goes to (default: default)")
    p.add_argument("--max-attempts", type=int, help="1..100")
    p.add_argument("--timeout", dest="task_timeout", type=_duration, metavar="DURATION",
                   help="per attempt, e.g. 30s or 5m")
    p.add_argument("--delay", type=_duration, metavar="DURATION",
                   help="run no sooner than this from now")
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="the same key and request again returns the first task")
    p.add_argument("--callback-url", metavar="URL",
                   help="POST the finished task there, signed (docs/webhooks.md)")


def _payload_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--payload", metavar="JSON", help="the payload as JSON (any type)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="shell: environment variable for the command (repeatable)")
    p.add_argument("--url", dest="target", metavar="URL", help="http: the URL to call")
    p.add_argument("--method", default=None, help="http: GET (default), POST, ...")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="http: request header (repeatable)")
    p.add_argument("--data", metavar="TEXT", help="http: request body")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:  # argparse shows the message only for ArgumentTypeError
        raise argparse.ArgumentTypeError(str(exc)) from None


def _wait_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true",
                   help="wait until the task finishes; exit 0 succeeded, 1 failed, 3 cancelled "
                   "or --wait-timeout passed (2: usage or connection error)")
    p.add_argument("--wait-timeout", type=_duration, metavar="DURATION",
                   help="give up waiting after this long (default: wait forever)")


# -- running --------------------------------------------------------------------------------


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """`submit shell --wait -- ls -l` -> (["submit", "shell", "--wait"], ["ls", "-l"]).

    argparse cannot take options between two positionals and then `--`; the words after
    `--` are a task's command, so they are set aside before parsing, whatever they look like.
    """
    argv = list(argv)
    if not argv or argv[0] not in COMMANDS or "--" not in argv:
        return argv, None
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def run(
    args: argparse.Namespace, command_words: Sequence[str] | None = None,
    extra: Sequence[str] = (),
) -> int:
    """Run a client command; returns the exit status. command_words: what came after `--`;
    extra: words argparse left over (positionals that came after options)."""
    unknown = [word for word in extra if word.startswith("-")]
    if unknown:
        print(f"localflow {args.command}: unrecognized arguments: {' '.join(unknown)}",
              file=sys.stderr)
        return 2
    words = [*extra, *(command_words or [])]
    if command_words is not None or extra:
        if args.command == "submit":
            args.argv = [*args.argv, *words]
        elif args.command == "schedules":
            args.rest = [*args.rest, *words]
        else:
            what = "after --" if command_words is not None else f"arguments: {' '.join(extra)}"
            print(f"localflow {args.command}: unexpected {what}", file=sys.stderr)
            return 2
    # Imported here: httpx (and what it pulls in) would otherwise load in every `localflow
    # api` and `localflow worker` process, which never use the client (~15 MB of RSS).
    from localflow.client import Client, ClientError, WaitTimeout

    url = args.server or os.environ.get("LOCALFLOW_URL") or DEFAULT_URL
    token = os.environ.get("LOCALFLOW_API_TOKEN") or None
    try:
        with Client(url, token, timeout=args.http_timeout, agent="cli") as client:
            return args.client_run(client, args)
    except UsageError as exc:
        print(f"localflow {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WaitTimeout as exc:
        _print(args, exc.task, _describe_task)
        print(f"localflow: {exc.detail}", file=sys.stderr)
        return EXIT_CANCELLED_OR_TIMEOUT
    except ClientError as exc:
        print(f"localflow: {_explain(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _explain(exc: ClientError) -> str:
    if exc.status is None:
        return exc.detail
    text = f"{exc.status} {exc.title}: {exc.detail}".replace(" : ", ": ")
    if exc.status == 401 and not os.environ.get("LOCALFLOW_API_TOKEN"):
        text += " (set LOCALFLOW_API_TOKEN)"
    return text


def _submit(client: Client, args: argparse.Namespace) -> int:
    task = client.submit(_task_body(args))
    if not args.wait:
        if args.output == "json":
            _print_json(task)
        else:
            print(task.id)
        return 0
    return _finish(client, args, task.id)


def _status(client: Client, args: argparse.Namespace) -> int:
    if args.wait:
        return _finish(client, args, args.task_id)
    _print(args, client.get(args.task_id), _describe_task)
    return 0


def _finish(client: Client, args: argparse.Namespace, task_id: str) -> int:
    task = client.wait(task_id, timeout=args.wait_timeout)
    _print(args, task, _describe_task)
    if task.status == "succeeded":
        return EXIT_OK
    return EXIT_FAILED if task.status == "failed" else EXIT_CANCELLED_OR_TIMEOUT


def _audit(client: Client, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500:
        raise UsageError("--limit must be between 1 and 500")
    page = client.audit(action=args.action, target=args.target, cursor=args.cursor,
                        limit=args.limit)
    if args.output == "json":
        _print_json(page)
    else:
        print(_audit_table(page.items))
        if page.next_cursor:
            print(f"(more: --cursor {page.next_cursor})")
    return 0


def _audit_table(entries: Sequence[AuditEntry]) -> str:
    if not entries:
        return "no entries"
    rows = [("WHEN", "ACTION", "TARGET", "THROUGH", "WHO")]
    rows += [(_when(e.at), e.action,
              e.target_id if e.target_id else f"{e.count} {e.target_kind}s (bulk)",
              e.channel, e.actor) for e in entries]
    return _table(rows)


def _tasks(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        if not 1 <= args.limit <= 500:
            raise UsageError("--limit must be between 1 and 500")
        page = client.list(status=args.status, type=args.task_type, cursor=args.cursor,
                           limit=args.limit, queue=args.queue)
        if args.output == "json":
            _print_json(page)
        else:
            print(_task_table(page.items))
            if page.next_cursor:
                print(f"(more: --cursor {page.next_cursor})")
        return 0
    if not args.task_id:
        raise UsageError(f"tasks {args.action} needs a TASK_ID")
    if args.action == "attempts":
        attempts = client.attempts(args.task_id)
        if args.output == "json":
            _print_json(attempts)
        else:
            for a in attempts:
                print(f"attempt {a.attempt}: {a.outcome or 'running'} "
                      f"({_when(a.started_at)} .. {_when(a.finished_at)}) {a.error or ''}".rstrip())
        return 0
    action: dict[str, Callable[[str], Task]] = {
        "get": client.get, "cancel": client.cancel, "retry": client.retry,
    }
    _print(args, action[args.action](args.task_id), _describe_task)
    return 0


def _schedules(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        items = client.schedules()
        if args.output == "json":
            _print_json(items)
        else:
            print(_schedule_table(items))
        return 0
    if args.action == "create":
        schedule = client.create_schedule(_schedule_body(args))
        _print(args, schedule, _describe_schedule)
        return 0
    if len(args.rest) != 1:
        raise UsageError(f"schedules {args.action} needs one schedule ID")
    schedule_id = args.rest[0]
    if args.action == "delete":
        client.delete_schedule(schedule_id)
        if args.output == "text":
            print(f"deleted schedule {schedule_id}")
        return 0
    if args.action == "get":
        schedule = client.get_schedule(schedule_id)
    else:
        schedule = client.update_schedule(schedule_id, {"enabled": args.action == "resume"})
    _print(args, schedule, _describe_schedule)
    return 0


# -- building bodies ------------------------------------------------------------------------


def _json_arg(text: str, flag: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{flag} is not valid JSON: {exc}") from None


def _payload(task_type: str, argv: Sequence[str], args: argparse.Namespace, target: str | None
             ) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if args.payload is not None:
        payload = _json_arg(args.payload, "--payload")
        if not isinstance(payload, dict):
            raise UsageError("--payload must be a JSON object")
    if task_type == "shell":
        if argv:
            payload["command"], payload["args"] = argv[0], list(argv[1:])
        elif "command" not in payload:
            raise UsageError("shell needs a command: localflow submit shell -- CMD ARGS...")
        if args.env:
            payload["env"] = {**payload.get("env", {}), **_pairs(args.env, "=", "--env")}
    elif task_type == "http":
        if argv:
            raise UsageError(f"http takes no command words ({' '.join(argv)}); the URL goes "
                             "in --url")
        if target:
            payload["url"] = target
        elif "url" not in payload:
            raise UsageError("http needs a URL: localflow submit http --url URL")
        if args.method:
            payload["method"] = args.method.upper()
        if args.header:
            payload["headers"] = {**payload.get("headers", {}),
                                  **_pairs(args.header, ":", "--header")}
        if args.data is not None:
            payload["body"] = args.data
    elif args.payload is None:
        raise UsageError(f"for task type {task_type!r} give the payload with --payload JSON")
    return payload


def _pairs(items: Sequence[str], sep: str, flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, found, value = item.partition(sep)
        if not found or not name.strip():
            raise UsageError(f"{flag} {item!r}: expected NAME{sep}VALUE")
        out[name.strip()] = value.strip() if sep == ":" else value
    return out


def _task_body(args: argparse.Namespace) -> dict[str, Any]:
    if args.json_body is not None:
        if args.type or args.argv:
            raise UsageError("give either --json with the whole task, or a TYPE, not both")
        body = _json_arg(args.json_body, "--json")
        if not isinstance(body, dict):
            raise UsageError("--json must be a JSON object like {\"type\": ..., \"payload\": ...}")
    elif not args.type:
        raise UsageError("what to submit? e.g. `localflow submit shell -- echo hi`, "
                         "`localflow submit http --url URL` or `localflow submit --json '{...}'`")
    else:
        body = {"type": args.type, "payload": _payload(args.type, args.argv, args, args.target)}
    options = {
        "priority": args.priority, "max_attempts": args.max_attempts,
        "timeout": args.task_timeout, "delay": args.delay,
        "idempotency_key": args.idempotency_key, "queue": args.queue,
        "callback_url": args.callback_url,
    }
    body.update({k: v for k, v in options.items() if v is not None})
    return body


def _schedule_body(args: argparse.Namespace) -> dict[str, Any]:
    if args.json_body is not None:
        body = _json_arg(args.json_body, "--json")
        if not isinstance(body, dict):
            raise UsageError("--json must be a JSON object")
    else:
        if not args.rest:
            raise UsageError("schedules create needs a TYPE: ... create --name N --cron EXPR "
                             "shell -- CMD ARGS (or http --target URL)")
        task_type, argv = args.rest[0], args.rest[1:]
        body = {"task_type": task_type, "payload": _payload(task_type, argv, args, args.target)}
    for flag, key, value in (("--name", "name", args.name), ("--cron", "cron_expr", args.cron),
                             ("--timezone", "timezone", args.timezone)):
        if value is not None:
            body[key] = value
        elif key in ("name", "cron_expr") and key not in body:
            raise UsageError(f"schedules create needs {flag}")
    if args.disabled:
        body["enabled"] = False
    if args.queue is not None:
        body["queue"] = args.queue
    if args.callback_url is not None:
        body["callback_url"] = args.callback_url
    return body


# -- output ---------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    print(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def _print(args: argparse.Namespace, value: Any, describe: Callable[[Any], str]) -> None:
    if args.output == "json":
        _print_json(value)
    else:
        print(describe(value))


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else "-"


def _describe_task(t: Task) -> str:
    lines = [
        f"task      {t.id}",
        f"type      {t.type}",
        f"status    {t.status}" + (" (cancel requested)" if t.cancel_requested and
                                   t.status == "running" else ""),
        f"attempts  {t.attempts} of {t.max_attempts}",
        f"created   {_when(t.created_at)}",
    ]
    if t.started_at:
        lines.append(f"started   {_when(t.started_at)}")
    if t.finished_at:
        lines.append(f"finished  {_when(t.finished_at)}")
    elif t.status == "queued":
        lines.append(f"runs at   {_when(t.run_at)}")
    if t.last_error:
        lines.append(f"error     {t.last_error}")
    result = t.result if isinstance(t.result, dict) else None
    if result:
        for key in ("exit_code", "status_code"):
            if key in result:
                lines.append(f"{key.replace('_', ' '):9} {result[key]}")
        for key in ("stdout", "stderr", "body"):
            text = result.get(key)
            if isinstance(text, str) and text:
                lines.append(f"{key}:")
                lines.extend("  " + line for line in text.rstrip("\n").splitlines())
    elif t.result is not None:
        lines.append(f"result    {json.dumps(t.result)}")
    return "\n".join(lines)


def _task_table(tasks: Sequence[Task]) -> str:
    if not tasks:
        return "no tasks"
    rows = [("ID", "STATUS", "TYPE", "ATTEMPTS", "CREATED")]
    rows += [(t.id, t.status, t.type, f"{t.attempts}/{t.max_attempts}", _when(t.created_at))
             for t in tasks]
    return _table(rows)


def _describe_schedule(s: Schedule) -> str:
    lines = [
        f"schedule  {s.id}",
        f"name      {s.name}",
        f"cron      {s.cron_expr} ({s.timezone})",
        f"task      {s.task_type} {json.dumps(s.payload)}",
        f"enabled   {'yes' if s.enabled else 'no (paused)'}",
        f"next      {_when(s.next_fire_at)}",
        f"last      {_when(s.last_fire_at)}"
        + (f" -> task {s.last_task_id} ({s.last_task_status})" if s.last_task_id else ""),
    ]
    return "\n".join(lines)


def _schedule_table(items: Sequence[Schedule]) -> str:
    if not items:
        return "no schedules"
    rows = [("ID", "NAME", "CRON", "TYPE", "ENABLED", "NEXT")]
    rows += [(s.id, s.name, s.cron_expr, s.task_type, "yes" if s.enabled else "no",
              _when(s.next_fire_at)) for s in items]
    return _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
