"""QMP for a trio program: qemu.qmp's asyncio `QMPClient` bridged with trio-asyncio.

Why trio-asyncio and not the legacy synchronous client in `trio.to_thread`: QEMU's events
(SHUTDOWN, GUEST_PANICKED) arrive whenever they happen, and the sync client can only wait for
them by parking a thread in a blocking read for the VM's whole life, which trio cannot cancel.
Under trio-asyncio the client runs on an asyncio loop that is itself a trio task: commands and
the event wait are ordinary cancellable awaits, and no thread is involved. (qemu.qmp 0.0.6 runs
under trio-asyncio 0.16 with trio 0.35 without warnings; tests/e2e/test_machine_qmp.py checks.)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import trio
import trio_asyncio
from qemu.qmp import EventListener, QMPClient

from pyti.errors import QemuFailed

log = logging.getLogger(__name__)
# qemu.qmp logs a QEMU that dies during the handshake as ERROR; pyti reports that itself,
# with QEMU's own words (pyti.machine), so the library's lines would only be noise.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

CONNECT_RETRY = 5.0  # seconds to keep retrying a refused connect

# Only these are queued: the guest can make QEMU emit others (RTC_CHANGE, ...) at will.
WATCHED_EVENTS = ("SHUTDOWN", "GUEST_PANICKED", "RESET", "STOP", "RESUME")
DISCONNECT_TIMEOUT = 2.0


class Qmp:
    """A connected QMP session; made by `open_qmp`."""

    def __init__(self, client: Any, listener: Any, loop: Any) -> None:
        self._client = client
        self._listener = listener
        # Named explicitly: a caller's task need not run inside the loop's context (a
        # snapshot is saved from a task that is not a child of open_qmp's block).
        self._loop = loop

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None) -> object:
        try:
            return await trio_asyncio.aio_as_trio(self._client.execute, loop=self._loop)(
                command, dict(arguments) if arguments else None
            )
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise QemuFailed(f"QMP {command} failed: {exc}", returncode=None, log=None) from exc

    async def next_event(self) -> dict[str, Any]:
        """The next watched event, e.g. {"event": "SHUTDOWN", "data": {...}, ...}."""
        event = await trio_asyncio.aio_as_trio(self._listener.get, loop=self._loop)()
        return dict(event)


def _refused(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is a refused connection."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "Connection refused" in str(exc)


@contextlib.asynccontextmanager
async def open_qmp(socket_path: Path, *, name: str = "pyti") -> AsyncIterator[Qmp]:
    """Connect to QEMU's QMP socket (QEMU listens); disconnect on exit, even when cancelled."""
    failure: Exception | None = None
    async with trio_asyncio.open_loop() as loop:
        client = QMPClient(name)
        listener = EventListener(names=WATCHED_EVENTS)
        client.register_listener(listener)
        # QEMU creates the socket file at bind() and accepts at listen(): on a busy host
        # a connect can land in between and be refused, so retry for a short while.
        deadline = trio.current_time() + CONNECT_RETRY
        while True:
            try:
                await trio_asyncio.aio_as_trio(client.connect)(str(socket_path))
            except Exception as exc:
                if _refused(exc) and trio.current_time() < deadline:
                    await trio.sleep(0.01)
                    continue
                failure = exc  # raised below, outside the loop's nursery: a plain error
            break
        if failure is None:
            try:
                yield Qmp(client, listener, loop)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(DISCONNECT_TIMEOUT):
                    try:
                        await trio_asyncio.aio_as_trio(client.disconnect)()
                    except Exception as exc:  # EOF after QEMU quit is the normal case
                        log.debug("QMP disconnect: %r", exc)
    if failure is not None:
        message = f"cannot connect to QMP at {socket_path}: {failure}"
        raise QemuFailed(message, returncode=None, log=None) from failure
