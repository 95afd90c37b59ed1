"""Container entrypoint: run LocalFlow as the right user, with an API token where one is needed.

In a container LocalFlow must listen beyond loopback to be reachable, and it refuses
to do that without a bearer token. Shipping a default token would hand every clone
the same secret, so the token comes from, in order:

1. LOCALFLOW_API_TOKEN, when set and not empty (e.g. from .env);
2. the file named by LOCALFLOW_API_TOKEN_FILE (a Docker secret, or the file made in 3);
3. a random token generated once into that file (mode 0600, on the data volume), so a
   fresh `docker compose up` is secure with no edits and the token survives restarts.

The token is never logged (logs travel further than the volume); the log says where it is.
Only `api` and `serve` get it: the worker needs no token (issue 11 item 9), and a secret the
worker's container never holds cannot leak to the programs its tasks run.

Users. The image runs as `localflow` (LOCALFLOW_CONTAINER_USER). Started as root instead (the
compose file does this for the worker), this entrypoint:
- with LOCALFLOW_TASK_USER set and a command that runs tasks (`worker`, `serve`): stays root
  only to start, and stop, task programs as that user (capabilities SETUID, SETGID, KILL; no
  exec, which would lose them), and does all its file work as `localflow` (setfsuid/setfsgid),
  so the database keeps its owner and root's file powers are gone. Task programs cannot read
  the worker's environment or memory, the token file, nor write the database.
- otherwise: becomes `localflow` for good before anything else.

Arguments that are not a LocalFlow subcommand (`python ...`, `sh`) run as given, so
one-off maintenance commands use the same image and volume.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import secrets
import sys
from pathlib import Path

SUBCOMMANDS = {"serve", "api", "worker", "migrate"}
TOKEN_COMMANDS = {"serve", "api"}  # they serve HTTP behind the token
TASK_COMMANDS = {"serve", "worker"}  # they run task programs


def log(message: str) -> None:
    print(f"localflow-entrypoint: {message}", file=sys.stderr, flush=True)


def token_from_file(path: Path) -> str:
    """Read the token at path, creating it first if nobody has yet."""
    if not path.exists():
        # Write a private temp file, then link it into place: link() fails if the
        # token appeared meanwhile (api and worker starting together), so exactly one
        # token wins and nobody ever reads a half-written file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)
            log(
                f"generated an API token in {path}; read it with "
                f"`docker compose exec api cat {path}` or set LOCALFLOW_API_TOKEN"
            )
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    token = path.read_text().strip()
    if not token:
        raise SystemExit(f"localflow-entrypoint: {path} is empty; delete it or write a token")
    return token


def become(name: str, *, keep_root: bool = False) -> None:
    """Switch to user `name` for good, or (keep_root) for file access only."""
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise SystemExit(
            f"localflow-entrypoint: no user {name!r} (LOCALFLOW_CONTAINER_USER)"
        ) from None
    os.setgroups([])
    if not keep_root:
        os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
        os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
        return
    # Per thread, and reset by exec: set now, while this is the only thread, and run
    # LocalFlow in this process. Threads started later inherit it.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setfsgid(user.pw_gid)
    libc.setfsuid(user.pw_uid)
    if libc.setfsuid(-1) != user.pw_uid:  # setfsuid(-1) fails and returns the current one
        raise SystemExit(f"localflow-entrypoint: could not switch file access to {name}")


def main(argv: list[str]) -> None:
    args = argv or ["serve"]
    if args[0] in SUBCOMMANDS or args[0].startswith("-"):
        args = ["localflow", *args]
    command = args[1] if args[0] == "localflow" and len(args) > 1 else ""
    in_process = False
    if os.geteuid() == 0 and args[0] == "localflow":  # `sh` & co. run as given
        user = os.environ.get("LOCALFLOW_CONTAINER_USER") or "localflow"
        in_process = bool(os.environ.get("LOCALFLOW_TASK_USER")) and command in TASK_COMMANDS
        become(user, keep_root=in_process)
    if command in TOKEN_COMMANDS and not os.environ.get("LOCALFLOW_API_TOKEN"):
        token_file = os.environ.get("LOCALFLOW_API_TOKEN_FILE")
        if token_file:
            os.environ["LOCALFLOW_API_TOKEN"] = token_from_file(Path(token_file))
    if command == "worker":
        for name in ("LOCALFLOW_API_TOKEN", "LOCALFLOW_API_TOKEN_FILE"):
            os.environ.pop(name, None)
    if in_process:
        from localflow.cli import main as localflow

        raise SystemExit(localflow(args[1:]))
    os.execvp(args[0], args)  # noqa: S606 - replace this process; no shell involved


if __name__ == "__main__":
    main(sys.argv[1:])
