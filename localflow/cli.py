"""`localflow serve | api | worker | migrate`: flags from shared.settings.FIELDS, each also an
environment variable; a flag wins over its variable."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import uvloop

import localflow.lean  # noqa: F401  # first: keeps rich out before structlog loads
from localflow import client_cli, copy_cli
from shared import logs, store
from shared.errors import BadDatabaseURL, StorageError
from shared.settings import FIELDS, Settings, is_loopback, settings_from
from shared.tokens import weakness
from worker.task_identity import task_user_from

_COMMANDS = {
    "serve": "API, worker and scheduler in one process (the embedded default)",
    "api": "the HTTP API and dashboard only",
    "worker": "the worker pool and cron scheduler only",
    "migrate": "bring the database schema up to date and exit",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localflow",
        description="LocalFlow: a durable local task queue with a worker pool, cron "
        "schedules, a REST API and a dashboard.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        for field in FIELDS:
            if not field.flag:
                continue
            # The seed's Go flags are spelled -addr; accept that spelling too.
            names = (field.option, "-" + field.option.lstrip("-"))
            if field.parse.__name__ == "_parse_bool":
                sub.add_argument(
                    *names, dest=field.name, action="store_true", default=None,
                    help=f"{field.help} [env {field.env}]",
                )
            else:
                default = getattr(Settings(), field.name)
                sub.add_argument(
                    *names, dest=field.name, type=_argparse_type(field.parse),
                    metavar=field.name.upper(),
                    help=f"{field.help} [env {field.env}, default {default}]",
                )
    client_cli.add_commands(commands)  # submit, status, tasks, schedules, audit: the API
    copy_cli.add_command(commands)  # copy: one database into another
    return parser


def _argparse_type(parse):  # argparse shows ValueError messages only for ArgumentTypeError
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv, command_words = client_cli.split_command(sys.argv[1:] if argv is None else argv)
    # Known args only: argparse cannot take a positional after options that follow another
    # positional (`schedules create --name N shell`); the client commands place the rest.
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "client_run"):
        return client_cli.run(args, command_words, extra)
    if hasattr(args, "copy_run") and not extra:
        return copy_cli.run(args)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("serve", "api") and getattr(args, "metrics_addr", None) is not None:
        # Accepting it and doing nothing would leave someone scraping a port nobody opens.
        # (LOCALFLOW_METRICS_ADDR is ignored here: one environment may serve every service.)
        parser.error(
            f"--metrics-addr is for `localflow worker` only; `{args.command}` serves "
            + ("its worker's metrics on the API's /metrics at --addr" if args.command == "serve"
               else "/metrics at --addr")
        )
    overrides = {f.name: getattr(args, f.name, None) for f in FIELDS}
    try:
        settings = settings_from(os.environ, overrides)
        host, _ = settings.host_port
    except ValueError as exc:
        parser.error(str(exc))
    logs.configure(settings.log_format,
                   secrets=[settings.api_token, settings.metrics_token,
                            settings.webhook_secret, store.password_of(settings.db)])
    try:
        store.check_db(settings.db)
    except BadDatabaseURL as exc:
        return _say(settings, str(exc))

    try:
        return _run_command(args.command, settings, host)
    except (BadDatabaseURL, StorageError) as exc:
        # Unreachable server, wrong credentials, a newer schema, a disk full: one line, no
        # traceback; the message names the database without its password.
        return _say(settings, str(exc), 2)


def _say(settings: Settings, message: str, code: int = 2, level: str = "error") -> int:
    """One start-up line on stderr: a JSON object with --log-format json (so a log pipeline
    reads it like every other line), else plain text. Returns `code`, the exit status."""
    logs.startup_line(settings.log_format, level, message)
    return code


def _run_command(command: str, settings: Settings, host: str) -> int:
    if command == "migrate":
        version = asyncio.run(store.migrate(settings))
        print(f"{store.redact(settings.db)}: schema version {version}")
        return 0

    refused = _refuse_weak_tokens(command, settings) or _refuse_task_user(command, settings)
    if refused:
        return refused
    serves_http = command in ("serve", "api")
    if serves_http and not is_loopback(host) and not settings.api_token and not settings.insecure:
        return _say(
            settings,
            f"refusing to listen on {settings.addr} without an API token: anyone who "
            "can reach it could run commands on this machine. Set LOCALFLOW_API_TOKEN, or listen "
            "on 127.0.0.1, or pass --insecure if the network is yours alone.",
        )
    if serves_http and not is_loopback(host) and not settings.api_token:
        _say(settings,
             f"WARNING: listening on {settings.addr} without an API token (--insecure): "
             "anyone who can reach it can run commands on this machine.", level="warning")

    if command == "worker" and settings.api_token:
        _say(settings,
             "WARNING: the worker does not use LOCALFLOW_API_TOKEN (its /metrics takes "
             "LOCALFLOW_METRICS_TOKEN); remove it from the worker's environment, where it is one "
             "more copy of the secret near task programs.", level="warning")

    from localflow.runtime import StartupFailed, run  # imported late: `migrate` needs none
    from shared.gil import hand_over_sooner

    if serves_http:  # the API's writer thread waits less for the GIL (shared/gil.py)
        hand_over_sooner()
    # uvloop: a faster event loop for the HTTP server and the worker's many small awaits.
    try:
        uvloop.run(run(settings, api=serves_http, worker=command in ("serve", "worker")))
    except StartupFailed as exc:
        return _say(settings, str(exc), 1)
    return 0


def _refuse_weak_tokens(command: str, settings: Settings) -> int:
    """Exit status 2 with one line when a token this command uses is weak, unless --insecure."""
    tokens = {"serve": [("LOCALFLOW_API_TOKEN", settings.api_token)],
              "api": [("LOCALFLOW_API_TOKEN", settings.api_token)],
              "worker": [("LOCALFLOW_METRICS_TOKEN", settings.metrics_token)]}
    for env, token in tokens.get(command, []):
        why = weakness(token) if token else None
        if why is None:
            continue
        if settings.insecure:
            _say(settings, f"WARNING: {env} is weak: it {why} (accepted with --insecure)",
                 level="warning")
            continue
        return _say(
            settings,
            f"refusing to start: {env} {why}; anyone who can reach the port may guess "
            "a weak token. Make one with `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`, or pass --insecure.",
        )
    return 0


def _refuse_task_user(command: str, settings: Settings) -> int:
    if command not in ("serve", "worker"):
        return 0
    try:
        task_user_from(settings.task_user)
    except ValueError as exc:
        return _say(settings, f"refusing to start: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
