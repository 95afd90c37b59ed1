"""Who task programs run as, and what they can see of the worker.

A task program runs with the worker's user id unless told otherwise, and a process can read
the files and, through /proc/<pid>/environ and /proc/<pid>/mem, the secrets of any process of
its own user. Two defences, both here:

- `protect_process()`: the worker process marks itself non-dumpable (prctl PR_SET_DUMPABLE 0).
  Its /proc entries then belong to root and ptrace-style access (environ, mem, attaching a
  debugger) needs CAP_SYS_PTRACE, so a same-user task can no longer read its environment. It
  does not stop such a task from reading the user's files or writing the database.
- `TaskUser` (`LOCALFLOW_TASK_USER` / `--task-user`): when LocalFlow starts as root, every
  task program is switched to this unprivileged user in the child, before exec
  (setgroups, setgid, setuid: all three, so no supplementary group of the worker survives).
  It then cannot read the worker's /proc entries, the token file, nor open the database
  (private files of the worker's user) for writing.

A worker may run with its effective uid dropped to an ordinary user while its saved uid stays
0 (docker/entrypoint.py does this, so the database and its files belong to that user): the
child regains root from the saved uid just long enough to switch to the task user. In the child
the switch happens first, before anything else in a preexec function: changing credentials
clears a parent-death signal set earlier (prctl(2)).
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import sys
from collections.abc import Callable
from dataclasses import dataclass

PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class TaskUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def resolve(cls, spec: str) -> TaskUser:
        """A user name or numeric uid, as in /etc/passwd; ValueError naming what is wrong."""
        try:
            entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
        except (KeyError, OverflowError):
            raise ValueError(f"no such user {spec!r} (LOCALFLOW_TASK_USER)") from None
        if entry.pw_uid == 0:
            raise ValueError(f"LOCALFLOW_TASK_USER={spec} is root: that separates nothing")
        groups = tuple(g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)

    def switch(self) -> None:
        """In the child, before exec: become this user for good. Raises if we may not."""
        if os.geteuid() != 0:
            os.seteuid(0)  # allowed when the saved uid is root; PermissionError otherwise
        os.setgroups(list(self.groups))
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)


def can_switch() -> bool:
    """Whether this process may start children as another user: any of its uids is root."""
    return 0 in os.getresuid()


def task_user_from(spec: str) -> TaskUser | None:
    """The settings' task user, checked; None when unset. ValueError says what to change."""
    if not spec:
        return None
    user = TaskUser.resolve(spec)
    if not can_switch():
        raise ValueError(
            f"LOCALFLOW_TASK_USER={spec} needs LocalFlow to start as root (it switches each task "
            f"program to that user); this process runs as uid {os.getuid()}: start it as root "
            "or leave LOCALFLOW_TASK_USER empty"
        )
    return user


def preexec(
    user: TaskUser | None, then: Callable[[], None] | None = None
) -> Callable[[], None] | None:
    """The preexec_fn for create_subprocess_exec: switch to `user`, then run `then` (other
    child set-up, which must come after a credential change). None when there is nothing to
    do. A preexec function rather than `user=`/`group=`: uvloop ignores those arguments."""
    if user is None:
        return then

    def child() -> None:
        user.switch()
        if then is not None:
            then()

    return child


def protect_process() -> bool:
    """Make this process non-dumpable (see the module doc). False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
