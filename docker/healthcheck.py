"""Docker HEALTHCHECK: exit 0 when a LocalFlow /health endpoint in this container says 200.

The image runs `api` (health on LOCALFLOW_ADDR), `worker` (health on its
LOCALFLOW_METRICS_ADDR) or `serve` (both). Rather than guess the role, probe the
configured addresses in turn; only this container's own processes answer on its
loopback. Standard library only: the slim image has no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.request

DEFAULTS = {"LOCALFLOW_ADDR": "127.0.0.1:8080", "LOCALFLOW_METRICS_ADDR": "127.0.0.1:9091"}


def health_url(addr: str) -> str:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    # A wildcard bind is reached through loopback from inside the container.
    if host in ("", "0.0.0.0"):  # noqa: S104 - comparing, not binding
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - http to self
            return response.status == 200
    except OSError:
        return False


def main() -> int:
    urls = [health_url(os.environ.get(var) or default) for var, default in DEFAULTS.items()]
    if any(healthy(url) for url in urls):
        return 0
    print(f"unhealthy: no 200 from {', '.join(urls)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
