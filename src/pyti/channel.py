"""The host's end of the guest channel: trio I/O, limits and timers over `Connection`.

`GuestChannel` reads frames from a trio stream (the virtio-serial port's socket) and
hands out messages. Whatever the guest does, the channel ends in exactly one
classified `ChannelEnd`; nothing the guest sends makes an exception escape:

    goodbye           the agent said Goodbye (the only clean end)
    eof               the stream ended (or broke) without Goodbye
    protocol-error    a frame broke the protocol (docs/protocol.md)
    version-mismatch  the agent speaks another protocol version (a stale image)
    limit-exceeded    frame rate, total bytes, or unknown-message count over its limit
    silence           no frame at all (heartbeats included) for `silence_timeout`
    no-progress       only heartbeats for `no_progress_timeout`: a hung test

Output chunks are also kept per (task, stream) as head + tail (`CappedLog`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from pyti.capped import CappedLog
from pyti.errors import (
    EnvironmentProblem,
    GuestCrashed,
    GuestLimitExceeded,
    GuestProtocolError,
    PytiError,
)
from pyti.protocol import (
    CLOSED,
    NEED_DATA,
    Connection,
    Heartbeat,
    Message,
    Output,
    ProtocolError,
    ProtocolVersionMismatch,
    Role,
    UnknownMessage,
)

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
READ_GRACE = 0.5  # seconds a read may always wait, even past a timer's deadline


class EndKind(enum.StrEnum):
    GOODBYE = "goodbye"
    EOF = "eof"
    PROTOCOL_ERROR = "protocol-error"
    VERSION_MISMATCH = "version-mismatch"
    LIMIT_EXCEEDED = "limit-exceeded"
    SILENCE = "silence"
    NO_PROGRESS = "no-progress"


@dataclass(frozen=True, kw_only=True)
class ChannelEnd:
    """How the channel ended; `detail` is one line for the user."""

    kind: EndKind
    detail: str

    @property
    def clean(self) -> bool:
        return self.kind is EndKind.GOODBYE

    def __bool__(self) -> bool:
        return self.clean

    def error(self) -> PytiError | None:
        """The pyti error this end stands for (None for Goodbye)."""
        text = f"{self.kind}: {self.detail}"
        match self.kind:
            case EndKind.GOODBYE:
                return None
            case EndKind.PROTOCOL_ERROR:
                return GuestProtocolError(text)
            case EndKind.VERSION_MISMATCH:
                # The agent's Hello comes from the image, before any package code runs:
                # a mismatch is a stale image on this host, not the package's doing.
                return EnvironmentProblem(self.detail)
            case EndKind.LIMIT_EXCEEDED | EndKind.NO_PROGRESS:
                return GuestLimitExceeded(text)
            case _:
                return GuestCrashed(text)


@dataclass(frozen=True, kw_only=True)
class ChannelLimits:
    """Per-connection limits. Timeouts are multiplied by `accel_factor` (e.g. >1 under TCG)."""

    max_frame_size: int = 1 << 20
    frames_per_second: float = 5_000.0  # token bucket refill rate
    burst: int = 20_000  # token bucket size
    max_total_bytes: int = 1 << 30  # everything the guest may send in one run
    max_unknown: int = 1_000  # frames of unknown type, skipped
    output_head: int = 1 << 20  # kept per (task, stream)
    output_tail: int = 1 << 20
    silence_timeout: float = 60.0
    no_progress_timeout: float = 300.0
    accel_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.frames_per_second <= 0 or self.burst < 1:
            raise ValueError("frames_per_second and burst must be positive")
        if self.accel_factor <= 0:
            raise ValueError("accel_factor must be positive")

    @property
    def silence(self) -> float:
        return self.silence_timeout * self.accel_factor

    @property
    def no_progress(self) -> float:
        return self.no_progress_timeout * self.accel_factor


class _Limited(Exception):
    """Internal: a limit was hit; becomes a ChannelEnd."""

    def __init__(self, kind: EndKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class GuestChannel:
    """Messages from the guest over `stream`; `async for message in channel`, then `.end`."""

    def __init__(
        self, stream: trio.abc.Stream, limits: ChannelLimits | None = None, *, name: str = ""
    ) -> None:
        self.limits = limits or ChannelLimits()
        self._stream = stream
        self._conn = Connection(Role.HOST, max_frame_size=self.limits.max_frame_size)
        self._send_lock = trio.Lock()
        self._log = log.getChild(name) if name else log
        self._end: ChannelEnd | None = None
        now = trio.current_time()
        self._last_frame = now
        self._last_progress = now
        self._tokens = float(self.limits.burst)
        self._tokens_at = now
        self._outputs: dict[tuple[str, str], CappedLog] = {}
        self.unknown = 0
        self.heartbeats = 0

    @property
    def end(self) -> ChannelEnd | None:
        """Set once the channel has ended; iteration stops right after."""
        return self._end

    @property
    def connection(self) -> Connection:
        return self._conn

    @property
    def outputs(self) -> Mapping[tuple[str, str], CappedLog]:
        return self._outputs

    def output(self, task: str, stream: str) -> bytes:
        """The kept output of one task's stream (head, omission marker, tail)."""
        capped = self._outputs.get((task, stream))
        return capped.getvalue() if capped else b""

    async def send(self, message: Message) -> bool:
        """Send Start or Cancel; False (and nothing sent) once the channel has ended."""
        if self._end is not None:
            self._log.debug("not sending %s: channel ended (%s)", type(message).__name__, self._end)
            return False
        frame = self._conn.send(message)  # our own misuse raises LocalProtocolError
        async with self._send_lock:
            try:
                await self._stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._finish(EndKind.EOF, f"the channel broke while sending: {exc!r}")
                return False
        return True

    def __aiter__(self) -> GuestChannel:
        return self

    async def __anext__(self) -> Message:
        message = await self.receive()
        if message is None:
            raise StopAsyncIteration
        return message

    async def receive(self) -> Message | None:
        """The next message, or None once the channel has ended (see `end`)."""
        if self._end is not None:
            return None
        try:
            message = await self._receive()
        except _Limited as limited:
            self._finish(limited.kind, limited.detail)
            return None
        except ProtocolVersionMismatch as exc:
            self._finish(EndKind.VERSION_MISMATCH, str(exc))
            return None
        except ProtocolError as exc:
            self._finish(EndKind.PROTOCOL_ERROR, str(exc))
            return None
        if message is None:
            if self._conn.goodbye is not None:
                self._finish(EndKind.GOODBYE, self._conn.goodbye.reason)
            else:
                self._finish(EndKind.EOF, "the guest closed the channel without Goodbye")
        return message

    async def _receive(self) -> Message | None:
        while True:
            if self._conn.goodbye is not None:
                return None  # Goodbye was handed out last time: nothing may follow
            event = self._conn.next_event()
            if event is CLOSED:
                return None
            if event is NEED_DATA:
                await self._read()
                continue
            self._count_frame()
            if isinstance(event, UnknownMessage):
                self.unknown += 1
                if self.unknown > self.limits.max_unknown:
                    raise _Limited(
                        EndKind.LIMIT_EXCEEDED,
                        f"more than {self.limits.max_unknown} frames of unknown type",
                    )
                self._log.debug("skipping unknown frame type %r", event.type)
                continue
            assert isinstance(event, Message)
            if isinstance(event, Heartbeat):
                self.heartbeats += 1
            else:
                self._last_progress = self._last_frame
            if isinstance(event, Output):
                self._keep_output(event)
            return event

    async def _read(self) -> None:
        limits = self.limits
        silence_at = self._last_frame + limits.silence
        stuck_at = self._last_progress + limits.no_progress
        data: bytes | bytearray | None = None
        # A deadline already past (the caller was slow between receives) would cancel the
        # read before it sees bytes that are waiting: give every read a short chance.
        deadline = max(min(silence_at, stuck_at), trio.current_time() + READ_GRACE)
        with trio.move_on_at(deadline):
            try:
                data = await self._stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._log.debug("stream broke: %r", exc)
                data = b""
        if data is None:
            if trio.current_time() >= silence_at:
                raise _Limited(EndKind.SILENCE, f"no frame for {limits.silence:g} s")
            raise _Limited(EndKind.NO_PROGRESS, f"no output or result for {limits.no_progress:g} s")
        self._conn.receive_data(data)
        if self._conn.bytes_received > limits.max_total_bytes:
            raise _Limited(
                EndKind.LIMIT_EXCEEDED, f"the guest sent more than {limits.max_total_bytes} bytes"
            )

    def _count_frame(self) -> None:
        """Token bucket: `burst` frames at once, `frames_per_second` sustained."""
        now = trio.current_time()
        self._last_frame = now
        limits = self.limits
        self._tokens = min(
            float(limits.burst), self._tokens + (now - self._tokens_at) * limits.frames_per_second
        )
        self._tokens_at = now
        if self._tokens < 1.0:
            raise _Limited(
                EndKind.LIMIT_EXCEEDED,
                f"more than {limits.frames_per_second:g} frames/s (burst {limits.burst}) sustained",
            )
        self._tokens -= 1.0

    def _keep_output(self, output: Output) -> None:
        key = (output.task, output.stream)
        capped = self._outputs.get(key)
        if capped is None:
            capped = self._outputs[key] = CappedLog(
                self.limits.output_head, self.limits.output_tail
            )
        capped.write(output.data)

    def _finish(self, kind: EndKind, detail: str) -> None:
        if self._end is None:
            self._end = ChannelEnd(kind=kind, detail=detail)
            level = logging.DEBUG if kind is EndKind.GOODBYE else logging.WARNING
            self._log.log(level, "channel ended: %s: %s", kind, detail)

    async def aclose(self) -> None:
        await self._stream.aclose()
