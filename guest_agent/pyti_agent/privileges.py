"""Run package-facing subprocesses as the unprivileged user `pyti`, killably.

Everything that runs package code (builds, tests, the metadata hook) goes
through `run`: it drops to uid/gid 1000 when the agent is root, starts with a
clean environment, gets its own process group (so a test that forks cannot
outlive the task), and streams stdout/stderr to a callback in chunks. On
cancel or timeout the whole group is killed, then reaped.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PYTI_UID = 1000
PYTI_GID = 1000
CHUNK = 64 << 10
COALESCE = 0.1
POLL = 0.02
# What a killed group gets between SIGTERM and SIGKILL.
KILL_GRACE = 2.0
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

OnOutput = Callable[[str, bytes], None]


@dataclass(frozen=True)
class User:
    """Whom to run as; `None` fields mean: stay as the agent (tests on the host)."""

    uid: int | None
    gid: int | None

    @classmethod
    def pyti(cls) -> User:
        # Only root can switch; an agent run unprivileged (unit tests) stays itself.
        if os.geteuid() == 0:
            return cls(uid=PYTI_UID, gid=PYTI_GID)
        return cls(uid=None, gid=None)


@dataclass(frozen=True)
class RunResult:
    returncode: int | None
    duration: float
    timed_out: bool = False
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.cancelled


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: nothing of the agent's leaks into package code."""
    env = {
        "HOME": str(home),
        "PATH": DEFAULT_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "USER": "pyti",
        "LOGNAME": "pyti",
        "TMPDIR": "/tmp",
    }
    if extra:
        env.update(extra)
    return env


def chown_tree(path: Path, user: User) -> None:
    """Hand a directory the agent made (as root) to the pyti user."""
    if user.uid is None or user.gid is None:
        return
    os.lchown(path, user.uid, user.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), user.uid, user.gid)


def read_capped(path: Path, limit: int) -> bytes:
    """Read a file the pyti user could have planted, as root, carefully: no symlink as
    the last component, no FIFO or device (O_NONBLOCK, regular files only), at most
    `limit` bytes (a longer file raises OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        chunks = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(f"{path} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text_capped(path: Path, limit: int = 1 << 20) -> str:
    return read_capped(path, limit).decode("utf-8", "replace")


def as_user(user: User, action: Callable[[], None]) -> None:
    """Run `action` (file work in pyti's directories) with pyti's rights.

    A forked child drops to the user, so a symlink pyti planted cannot redirect a
    root write, and a bug in what `action` checks cannot reach beyond pyti's files.
    No exec: a fork costs milliseconds where an interpreter start costs a second under
    TCG. A failure raises OSError with the child's exception text.
    """
    if user.uid is None or user.gid is None:
        action()
        return
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the agent
        code = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            action()
            code = 0
        except BaseException as exc:
            os.write(write_fd, f"{type(exc).__name__}: {exc}".encode(errors="replace")[:4096])
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        message = os.read(read_fd, 4096).decode(errors="replace")
    finally:
        os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(message or f"the child as uid {user.uid} failed")


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL it; returns once the leader has exited.

    The leader is left unreaped (the caller reaps it), so the group id stays ours.
    """
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        end = time.monotonic() + grace
        while time.monotonic() < end:
            if _exited(proc.pid):
                return
            time.sleep(POLL)


def _pump(stream_name: str, pipe: IO[bytes], on_output: OnOutput) -> None:
    # Programs often write a few bytes at a time (uv writes token by token): gather
    # what arrives within COALESCE seconds into one chunk, so the host gets a few
    # frames per second instead of one per write.
    fd = pipe.fileno()
    while True:
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            return
        if not data:
            return
        deadline = time.monotonic() + COALESCE
        eof = False
        while len(data) < CHUNK:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                break
            try:
                more = os.read(fd, CHUNK - len(data))
            except OSError:
                more = b""
            if not more:
                eof = True
                break
            data += more
        on_output(stream_name, data)
        if eof:
            return


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (WNOWAIT)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def run(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    on_output: OnOutput,
    cancelled: threading.Event,
    user: User | None = None,
    timeout: float | None = None,
    pass_fds: Sequence[int] = (),
) -> RunResult:
    """Run argv to completion (or cancel/timeout), streaming its output."""
    user = user if user is not None else User.pyti()
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own session and process group: killpg reaches all of it
        pass_fds=tuple(pass_fds),
        user=user.uid,
        group=user.gid,
        extra_groups=[] if user.gid is not None else None,
        umask=0o022,
    )
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(name, pipe, on_output), daemon=True)
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for pump in pumps:
        pump.start()
    timed_out = was_cancelled = False
    deadline = None if timeout is None else start + timeout
    while not _exited(proc.pid):
        if cancelled.is_set():
            was_cancelled = True
        elif deadline is not None and time.monotonic() > deadline:
            timed_out = True
        if was_cancelled or timed_out:
            kill_group(proc)
            break
        time.sleep(POLL)
    # The leader has exited but is not reaped yet, so its pid (= the group id) cannot
    # have been reused: kill what is left of the group, daemonised leftovers that
    # would otherwise hold the pipes open and hang the agent.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pump in pumps:
        pump.join(timeout=5.0)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    returncode = proc.wait()
    return RunResult(
        returncode=None if (was_cancelled or timed_out) else returncode,
        duration=time.monotonic() - start,
        timed_out=timed_out,
        cancelled=was_cancelled,
    )
