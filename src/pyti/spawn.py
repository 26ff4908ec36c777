"""Start a child (QEMU) that dies with pyti, and wait for it under trio.

`PR_SET_PDEATHSIG` sends the child a signal when its parent *thread* exits, not its parent
process. trio's `run_process` forks from a cached worker thread that exits after about 10 s
idle, which would kill a longer-lived QEMU early. So every child is forked by one dedicated
daemon thread that lives exactly as long as the pyti process: when pyti dies, even by
`kill -9`, that thread dies with it and the kernel sends SIGKILL to every QEMU it started.

The exit is awaited through a pidfd (what trio itself uses on Linux), so no thread waits.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

import trio

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PR_SET_THP_DISABLE = 41
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int

_jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _serve() -> None:
    while True:
        _jobs.get()()


def _submit(job: Callable[[], None]) -> None:
    global _spawner  # noqa: PLW0603 - one thread per process, started on first use
    with _spawner_lock:
        if _spawner is None:
            _spawner = threading.Thread(target=_serve, name="pyti-spawner", daemon=True)
            _spawner.start()
    _jobs.put(job)


def _die_with_parent(parent: int, huge_pages: bool) -> None:
    """Runs in the child between fork and exec: only async-signal-safe work."""
    if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(126)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(126)
    if not huge_pages:  # inherited across execve; a kernel without it just keeps THP
        _prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0)


class OwnedProcess:
    """A started child; `wait()` is cancellable and may be called by several tasks."""

    def __init__(self, popen: subprocess.Popen[bytes], pidfd: int) -> None:
        self._popen = popen
        self._pidfd: int | None = pidfd
        self._lock = trio.Lock()

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        async with self._lock:
            if self._popen.returncode is None:
                assert self._pidfd is not None
                await trio.lowlevel.wait_readable(self._pidfd)
                self._popen.wait()
        self._close_pidfd()
        return self._popen.returncode

    def poll(self) -> int | None:
        return self._popen.poll()

    def send_signal(self, sig: int) -> None:
        # Popen.send_signal does nothing once the child is reaped, so a recycled pid is safe.
        self._popen.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None and self._popen.returncode is not None:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    async def aclose(self) -> None:
        """Kill (if still running) and reap; idempotent, safe under cancellation."""
        if self._popen.returncode is None:
            self.kill()
            with trio.CancelScope(shield=True):
                await self.wait()
        self._close_pidfd()


async def spawn(
    argv: Sequence[str],
    *,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = subprocess.DEVNULL,
    pass_fds: Sequence[int] = (),
    huge_pages: bool = True,
) -> OwnedProcess:
    """Fork `argv` from the spawner thread, in its own session (Ctrl-C reaches pyti only).

    `huge_pages=False` disables transparent huge pages for the child (PR_SET_THP_DISABLE).
    """
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    result: list[subprocess.Popen[bytes]] = []
    error: list[BaseException] = []
    parent = os.getpid()

    def job() -> None:
        try:
            result.append(
                subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    pass_fds=tuple(pass_fds),
                    start_new_session=True,
                    preexec_fn=lambda: _die_with_parent(parent, huge_pages),  # noqa: PLW1509
                )
            )
        except BaseException as exc:  # handed back to the trio task
            error.append(exc)
        finally:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

    _submit(job)
    # Shielded: once the job is queued the child will exist, and nobody else would reap it.
    with trio.CancelScope(shield=True):
        await done.wait()
    if error:
        raise error[0]
    popen = result[0]
    try:
        pidfd = os.pidfd_open(popen.pid)
    except BaseException:
        popen.kill()
        popen.wait()
        raise
    process = OwnedProcess(popen, pidfd)
    log.debug("started pid %d: %s", popen.pid, argv[0])
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
    except BaseException:
        await process.aclose()
        raise
    return process
