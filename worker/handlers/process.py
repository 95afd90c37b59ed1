"""Run one program for a task: its own process group, stdio and no other descriptor, output
read as it comes into bounded buffers, the whole group killed on timeout or cancel.

Not asyncio's create_subprocess_exec: under uvloop (what `localflow` runs) the child inherits
duplicates of its output pipes and other descriptors, so a background process that redirected
its own stdout still held the task's pipe open until the timeout. subprocess.Popen closes every
descriptor above 2 between fork and exec, in C, and works the same under any event loop. The
exit is awaited through a pidfd (a thread on kernels without one), the pipes through the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from worker.handlers.base import WatchOutput
from worker.handlers.output import HeadTail

_CHUNK = 64 * 1024
_READS_PER_WAKEUP = 16  # at most 1 MiB per stream per loop iteration: other tasks get turns
_KILL_WAIT = 5.0  # seconds to wait for a killed group to let go of its pipes


@dataclass
class Finished:
    pid: int
    returncode: int | None  # None: still running when it was killed for its timeout
    stdout: str
    stderr: str
    timed_out: bool


async def run_program(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str, seconds: float, keep: int,
    preexec: Callable[[], None] | None = None, watch: WatchOutput | None = None,
) -> Finished:
    """Run argv to its end (the program exited and its output pipes closed), for at most
    `seconds`; keep `keep` bytes of each output stream; `watch` gets the two buffers (stdout,
    stderr) before the program starts, to read their tail while it runs.
    Raises OSError if it cannot be started; on cancellation the group is killed first."""
    loop = asyncio.get_running_loop()
    out, err = HeadTail(keep), HeadTail(keep)
    if watch is not None:
        watch(out, err)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        # Blocks for the fork and exec only (vfork: about a millisecond), as uvloop's spawn does.
        proc = subprocess.Popen(  # noqa: ASYNC220
            list(argv), stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, env=dict(env),
            cwd=cwd, close_fds=True, preexec_fn=preexec,  # e.g. switch to the task user
            start_new_session=True,  # its own process group, so we can kill all it started
        )
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    readers = [_PipeReader(loop, out_r, out), _PipeReader(loop, err_r, err)]
    exited = _ExitWatch(loop, proc)
    done = asyncio.gather(exited.future, *(r.eof for r in readers))
    timed_out = False
    try:
        try:
            await asyncio.wait_for(asyncio.shield(done), seconds)
        except TimeoutError:
            timed_out = True
            await _kill_group(proc, done)
        except asyncio.CancelledError:
            await _kill_group(proc, done)  # cancelled by a person, or the worker is stopping
            raise
    finally:
        # Synchronous, so it runs however we leave: the descriptors are closed and every future
        # `done` gathers is resolved (none can fail), so nothing is left pending.
        for r in readers:
            r.close()
        exited.close()
    return Finished(proc.pid, proc.returncode, out.text(), err.text(), timed_out)


async def _kill_group(proc: subprocess.Popen[bytes], done: asyncio.Future[object]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    # Reap it and read what it wrote last; a process that left the group (setsid) may hold the
    # pipes open for ever, so this wait is bounded.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(done), _KILL_WAIT)


class _PipeReader:
    """Reads a pipe as data arrives, into a bounded buffer; `eof` resolves when it closes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, sink: HeadTail) -> None:
        self.loop, self.fd, self.sink = loop, fd, sink
        self.eof: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)
        self._open = True

    def _readable(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                data = os.read(self.fd, _CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            self.sink.add(data)

    def close(self) -> None:
        if self._open:
            self._open = False
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
        if not self.eof.done():
            self.eof.set_result(None)


class _ExitWatch:
    """Resolves `future` once the process has exited, and reaps it (sets its returncode)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> None:
        self.loop, self.proc = loop, proc
        self.future: asyncio.Future[None] = loop.create_future()
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(proc.pid)
        except OSError:  # a kernel before 5.3, or a seccomp profile that refuses it
            threading.Thread(target=self._wait_in_thread, daemon=True,
                             name=f"wait-{proc.pid}").start()
            return
        loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        self.proc.wait()  # it has exited: this does not block
        self.close()

    def _wait_in_thread(self) -> None:
        self.proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def close(self) -> None:
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._resolve()
