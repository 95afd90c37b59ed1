"""Task processes die with their worker, however the worker dies (SIGKILL, OOM killer, crash).

Why not PR_SET_PDEATHSIG: it reaches only the direct child (not the rest of its process group),
fires when the *thread* that forked exits rather than the process, must be set by Python code
between fork and exec (unsafe in a threaded process; it also makes uvloop and subprocess give up
vfork), and is lost if the parent dies before it is set. Instead, one small guard process per
worker process (this file, run as a script: standard library only):

- The worker starts it with a pipe on its stdin and writes nothing. The kernel closes the
  worker's end when the worker exits, in any way, so the guard reads end-of-file exactly then.
- Every task program gets LOCALFLOW_TASK_GUARD=<this worker's marker> in its environment, set
  at spawn (no window in which a process runs unmarked), and passes it on to what it starts.
- On end-of-file the guard finds every process carrying the marker (/proc/<pid>/environ),
  SIGKILLs its process group and the process itself, and repeats until none is left. A
  grandchild that left the group (setsid, a double-forking daemon) still carries the marker.

What still escapes: a process that both leaves the task's process group and replaces its
environment (exec with a clean one) or runs as another user; and anything the task asked
another service to start (a systemd unit, a container, an `at` job). See docs/security.md.

A normal stop does not involve the guard: the worker stops its tasks itself, then exits, and
the guard then finds nothing to kill.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

ENV = "LOCALFLOW_TASK_GUARD"


class OrphanGuard:
    """The worker's side: starts the guard when the first task needs it, again if it died."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self.marker = f"{self._pid}-{secrets.token_hex(8)}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None  # our end of its stdin: a raw fd, held until we exit

    def env(self) -> dict[str, str]:
        """The variable a task program must carry; the guard is running when this returns."""
        if self._proc is None or self._proc.poll() is not None:
            if self._pipe is not None:
                os.close(self._pipe)  # the dead one's
            reader, self._pipe = os.pipe()  # both ends close-on-exec: no task inherits ours
            try:
                self._proc = subprocess.Popen(
                    # -I -S: no user site, no PYTHON* variables, no site-packages: this file.
                    [sys.executable, "-I", "-S", os.path.abspath(__file__), self.marker],
                    stdin=reader,
                    stdout=subprocess.DEVNULL,
                    env={},  # the worker's variables (its API token, say) are not its business
                    close_fds=True,  # nothing of the worker's either: no socket, no database
                    # Outside the terminal's process group: Ctrl-C stops the worker (which
                    # stops its tasks), not the guard before it.
                    start_new_session=True,
                )
            finally:
                os.close(reader)
        return {ENV: self.marker}


_guard: OrphanGuard | None = None


def task_env() -> dict[str, str]:
    """The marker variable for a task program of this process (one guard per process)."""
    global _guard
    if _guard is None or _guard._pid != os.getpid():  # a forked child is a new worker
        _guard = OrphanGuard()
    return _guard.env()


# -- the guard process -------------------------------------------------------------------


def marked(needle: bytes, me: int) -> list[tuple[int, int]]:
    """(pid, process group) of every process whose environment holds `needle`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = b"\0" + f.read()
            if needle in environ:
                found.append((int(entry), os.getpgid(int(entry))))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def kill_marked(marker: str, rounds: int = 100) -> int:
    """SIGKILL every marked process and its process group until none is left (a process may
    fork while we look). Returns how many marked processes were found."""
    needle = f"\0{ENV}={marker}\0".encode()
    me, my_group = os.getpid(), os.getpgrp()
    seen: set[int] = set()
    for _ in range(rounds):
        found = marked(needle, me)
        if not found:
            break
        for pid, group in found:
            seen.add(pid)
            if group > 1 and group != my_group:
                with contextlib.suppress(OSError):
                    os.killpg(group, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)  # let the kernel finish them before looking again
    return len(seen)


def main(argv: list[str]) -> int:
    marker = argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while os.read(0, 4096):  # the worker writes nothing: this returns when it exits
        pass
    killed = kill_marked(marker)
    if killed:  # one JSON line (readable in a terminal too), on the worker's own stderr
        print(json.dumps({
            "event": "worker exited with task processes running; killed them",
            "level": "warning", "logger": "localflow.task_guard",
            "timestamp": datetime.now(UTC).isoformat(), "worker_pid": int(marker.split("-")[0]),
            "killed": killed,
        }), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
