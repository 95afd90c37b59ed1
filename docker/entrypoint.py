"""Container entrypoint: make sure LocalFlow has an API token, then exec it.

In a container LocalFlow must listen beyond loopback to be reachable, and it refuses
to do that without a bearer token. Shipping a default token would hand every clone
the same secret, so the token comes from, in order:

1. LOCALFLOW_API_TOKEN, when set and not empty (e.g. from .env);
2. the file named by LOCALFLOW_API_TOKEN_FILE (a Docker secret, or the file made in 3);
3. a random token generated once into that file (mode 0600, on the data volume), so a
   fresh `docker compose up` is secure with no edits and the token survives restarts.

The token is never logged (logs travel further than the volume); the log says where it is.

Arguments that are not a LocalFlow subcommand (`python ...`, `sh`) run as given, so
one-off maintenance commands use the same image and volume.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

SUBCOMMANDS = {"serve", "api", "worker", "migrate"}


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


def main(argv: list[str]) -> None:
    args = argv or ["serve"]
    if args[0] in SUBCOMMANDS or args[0].startswith("-"):
        args = ["localflow", *args]
    if args[0] == "localflow" and not os.environ.get("LOCALFLOW_API_TOKEN"):
        token_file = os.environ.get("LOCALFLOW_API_TOKEN_FILE")
        if token_file:
            os.environ["LOCALFLOW_API_TOKEN"] = token_from_file(Path(token_file))
    os.execvp(args[0], args)  # noqa: S606 - replace this process; no shell involved


if __name__ == "__main__":
    main(sys.argv[1:])
