"""The agent's entry point: Hello, heartbeats, then the tasks the host's Start asks for.

/init starts it as root with `python3 -I -S` and sys.path = /opt/pyti + dist-packages,
and powers the machine off when it returns, whatever it returns.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from pyti.protocol import (
    PROTOCOL_VERSION,
    SNAPSHOT_MARKER,
    Cancel,
    Goodbye,
    Heartbeat,
    Hello,
    Start,
    TaskFinished,
    TaskStarted,
)
from pyti.protocol.blocking import GuestPort

from . import __version__, trace
from .port import find_port

TYPE_CHECKING = False  # not typing's: importing typing slows the boot under TCG
if TYPE_CHECKING:
    from typing import Any

HEARTBEAT_SECONDS = 2.0
GOODBYE_LINGER = 2.0
IMAGE_ID = "/opt/pyti/image_id"  # written by the image build
SETUP_DIR = "/mnt/setup"
WORK_DIR = "/home/pyti/work"
PYTI_UID = 1000  # the user images/customize.sh creates


def _print_exc() -> None:
    # traceback pulls in linecache and tokenize (~0.15 s under TCG): only when needed
    import traceback

    traceback.print_exc()


def _read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def image_id() -> str:
    return _read(IMAGE_ID, "unknown")[:128] or "unknown"


def hello() -> Hello:
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        agent_version=__version__,
        python_version="{}.{}.{}".format(*sys.version_info[:3]),
        image_id=image_id(),
        boot_id=_read("/proc/sys/kernel/random/boot_id", "unknown")[:128],
    )


def _heartbeat(port: GuestPort, stop: threading.Event) -> None:
    seq = 0
    while not stop.wait(HEARTBEAT_SECONDS):
        seq += 1
        try:
            port.send(Heartbeat(seq=seq))
        except Exception:  # the port is gone or closed: nothing left to beat for
            return


class _Mailbox:
    """Hands the host's Start (or None: cancelled or closed first) to the main thread once.

    (queue.Queue would do, but its import is paid on every boot under TCG.)
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._start: Start | None = None

    def put(self, start: Start | None) -> None:
        if not self._ready.is_set():
            self._start = start
            self._ready.set()

    def get(self) -> Start | None:
        self._ready.wait()
        return self._start


def _reader(
    port: GuestPort,
    starts: _Mailbox,
    cancelled: threading.Event,
    closed: threading.Event,
) -> None:
    """Host messages: Start goes to the main thread, Cancel sets the event, EOF ends it."""
    try:
        for message in port:
            if isinstance(message, Start):
                starts.put(message)
            elif isinstance(message, Cancel):
                cancelled.set()
                starts.put(None)
    except Exception:
        _print_exc()
    closed.set()
    cancelled.set()
    starts.put(None)


def load_manifest() -> Any:
    """The setup disk's manifest, or None without a setup disk."""
    path = os.path.join(SETUP_DIR, "manifest.cbor")
    if not os.path.exists(path):
        return None
    from pyti.protocol.manifest import SetupManifest

    with open(path, "rb") as f:
        return SetupManifest.from_cbor(f.read())


def _work_dir() -> str:
    os.makedirs(WORK_DIR, exist_ok=True)
    os.chown(WORK_DIR, PYTI_UID, PYTI_UID)
    return WORK_DIR


def _load_tasks() -> Any:
    """The tasks module, or None (then every task ends in "error")."""
    try:
        from . import tasks
    except ImportError:
        _print_exc()
        return None
    return tasks


def _context(tasks: Any, port: GuestPort, start: Start, cancelled: threading.Event) -> Any:
    from pathlib import Path

    return tasks.TaskContext(
        send=port.send,
        manifest=load_manifest(),
        setup_dir=Path(SETUP_DIR),
        work_dir=Path(_work_dir()),
        cancelled=cancelled,
        test_args=tuple(start.test_args),
    )


def run_tasks(port: GuestPort, start: Start, cancelled: threading.Event) -> str:
    """Run each task of `start` in order; return the Goodbye reason."""
    tasks = _load_tasks()
    context = None
    for name in start.tasks:
        if cancelled.is_set():
            return "cancelled"
        port.send(TaskStarted(task=name))
        began = time.monotonic()
        finished = None
        if tasks is not None:
            try:
                if context is None:
                    context = _context(tasks, port, start, cancelled)
                finished = tasks.run_task(name, context)
            except Exception:
                _print_exc()
        if not isinstance(finished, TaskFinished):
            duration = min(time.monotonic() - began, 1e9)
            finished = TaskFinished(task=name, outcome="error", exit_code=None, duration=duration)
        port.send(finished)
    return "cancelled" if cancelled.is_set() else "done"


def _host_connected(fd: int) -> bool:
    """Whether the host holds its end of the port (virtio-console says POLLHUP if not)."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return not any(events & select.POLLHUP for _, events in poller.poll(0))


def _warm_up() -> None:
    """Import the modules of the tasks and the per-run preparation (see _host_connected)."""
    try:
        import ctypes  # noqa: F401 - system.mount_setup
        import fcntl  # noqa: F401 - system.reseed, system.mount_setup

        import pyti.protocol.manifest  # noqa: F401

        from . import audit, metadata, quality, system, tasks  # noqa: F401
    except Exception:
        _print_exc()
    trace("warm")


def _prepare(start: Start) -> None:
    """The clock, the RNG and the setup disk for this run (see system.py). A failure is
    printed on the console; the tasks then fail on what is missing and say so."""
    from . import system

    try:
        system.prepare(start.clock, start.entropy)
    except Exception:
        _print_exc()
    trace("prepared")


def _protect_from_oom() -> None:
    # When package code exhausts memory, the kernel must kill it, not the agent.
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")
    except OSError:
        pass


def main() -> int:
    trace("imported")
    _protect_from_oom()
    fd = os.open(find_port(), os.O_RDWR | os.O_CLOEXEC)
    return serve(GuestPort(fd))


def serve(port: GuestPort) -> int:
    """The conversation: Hello, heartbeats, the tasks of Start, Goodbye; the exit status."""
    greeting = hello()
    if not _host_connected(port.fd):
        # Nobody listens: a host is saving this VM as a snapshot (a booting host connects
        # before the guest runs). Load now what every run imports, so that it is part of
        # the snapshot instead of being paid (~1 s under TCG) by each resumed run.
        _warm_up()
    # The snapshot point (docs/lifecycle.md): the host that makes a snapshot waits for this
    # line, with its end of the port left unconnected, so the write of Hello below blocks
    # in the kernel until a host connects: the snapshot's host never does; a restored
    # guest's host connects before it resumes, and Hello goes to it.
    print(SNAPSHOT_MARKER, file=sys.stderr, flush=True)
    port.send(greeting)
    trace("hello")
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(port, stop), daemon=True).start()
    cancelled = threading.Event()
    closed = threading.Event()
    starts = _Mailbox()
    reader = threading.Thread(target=_reader, args=(port, starts, cancelled, closed), daemon=True)
    reader.start()
    start = starts.get()
    if start is None:
        reason = "cancelled"
    else:
        _prepare(start)
        reason = run_tasks(port, start, cancelled)
    stop.set()
    try:
        port.send(Goodbye(reason=reason))
    except Exception:
        _print_exc()
        return 1
    # Power-off follows our exit at once and could drop frames still queued in the port;
    # the host closes its end once it has Goodbye, so wait (briefly) for that.
    closed.wait(GOODBYE_LINGER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
