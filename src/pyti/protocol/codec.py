"""Sans-I/O framing and safe CBOR for the guest <-> host channel.

A frame is a 4-byte big-endian length, then exactly one CBOR data item: a map with a
"type" key (see messages.py). `Connection` is fed bytes and hands out events; it never
does I/O, so the host's trio adapter and the guest's blocking adapter share it.

Safety: before cbor2 sees a frame, `check_cbor` walks its item headers and refuses
tags, indefinite lengths, simple values other than false/true/null, non-text map keys,
nesting deeper than `max_depth`, trailing bytes, and any length that claims more items
or bytes than the frame still holds. So a 9-byte frame cannot make cbor2 allocate
2**32 list slots, and behaviour does not depend on which cbor2 the guest carries
(bookworm 5.4.6, trixie 5.6.5, host 6.x).

Imports only the standard library and cbor2: this package is copied into the guest.
"""

from __future__ import annotations

import enum
import struct

import cbor2

from .messages import (
    GUEST_TO_HOST,
    HOST_TO_GUEST,
    PROTOCOL_VERSION,
    Goodbye,
    Hello,
    Message,
    Metadata,
    Output,
    ProtocolError,
    Start,
    TaskFinished,
    TaskStarted,
    TestResult,
    UnknownMessage,
    from_wire,
    to_wire,
)

TYPE_CHECKING = False  # not typing's: see messages.py
if TYPE_CHECKING:
    from typing import Any, Final

DEFAULT_MAX_FRAME_SIZE: Final = 1 << 20
DEFAULT_MAX_DEPTH: Final = 4  # frame map -> counts map / args array; room for one more level
HEADER: Final = struct.Struct(">I")


class LocalProtocolError(ProtocolError):
    """This side misused the connection (sent a message its role or state forbids)."""


class ProtocolVersionMismatch(ProtocolError):
    """The guest's Hello names a protocol version this host does not speak."""

    def __init__(self, theirs: int, ours: int) -> None:
        super().__init__(
            f"guest speaks protocol version {theirs}, this host speaks {ours}; "
            "rebuild the image with this pyti (pyti image build --force)"
        )
        self.theirs = theirs
        self.ours = ours


class Role(enum.Enum):
    HOST = "host"
    GUEST = "guest"


class Signal(enum.Enum):
    NEED_DATA = "need-data"  # feed more bytes with receive_data()
    CLOSED = "closed"  # the peer ended the stream cleanly between frames


NEED_DATA: Final = Signal.NEED_DATA
CLOSED: Final = Signal.CLOSED

Event = Message | UnknownMessage | Signal


def _refuse_tag(decoder: object, tag: object) -> object:
    # Unreachable after check_cbor; kept so cbor2 itself refuses tags if the scan is bypassed.
    raise ProtocolError("CBOR tags are not allowed")


# The scan's action for each initial byte (major type << 5 | additional info), so the
# per-item work is one table lookup. Wide forms (+_WIDE) read a 1/2/4/8-byte argument.
_SKIP, _STR, _ARRAY, _MAP, _BAD = range(5)
_WIDE = 8


def _action(initial: int) -> tuple[int, int]:
    major, info = initial >> 5, initial & 0x1F
    if info > 27 or major == 6:
        return _BAD, 0  # indefinite lengths, reserved infos, tags
    width = 1 << (info - 24) if info >= 24 else 0
    if major == 7:
        if info in (20, 21, 22):  # false, true, null
            return _SKIP, 0
        if info in (25, 26, 27):  # half, single, double float
            return _SKIP + _WIDE, width
        return _BAD, 0  # undefined and other simple values
    kind = _SKIP if major <= 1 else _STR if major <= 3 else _ARRAY if major == 4 else _MAP
    return (kind + _WIDE, width) if width else (kind, info)


_ACTIONS: Final = tuple(_action(initial) for initial in range(256))


def _refusal(initial: int) -> str:
    major, info = initial >> 5, initial & 0x1F
    if major == 6:
        return "CBOR tags are not allowed"
    if info == 31:
        return "indefinite-length CBOR items are not allowed"
    if info > 27:
        return "reserved CBOR additional information"
    return f"CBOR simple value {info} is not allowed"


def check_cbor(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> None:  # noqa: PLR0912
    """Raise ProtocolError unless `data` is exactly one CBOR item in pyti's safe subset.

    Cost is one step per item header; string bodies are skipped, not read. One flat
    loop on purpose: it runs for every frame, and calls cost more than branches.
    """
    end = len(data)
    pos = 0
    pending = 1  # items still to read in the current container (or the top level)
    is_map = False  # the current container is a map: every other item is a key
    stack: list[tuple[int, bool]] = []
    actions = _ACTIONS
    while True:
        while pending == 0:
            if not stack:
                if pos != end:
                    raise ProtocolError(f"{end - pos} trailing bytes after the CBOR item")
                return
            pending, is_map = stack.pop()
        if pos >= end:
            raise ProtocolError("truncated CBOR item")
        initial = data[pos]
        # In a map, an even count of pending items means a key comes next.
        if is_map and not pending & 1 and not 0x60 <= initial <= 0x7B:
            raise ProtocolError("CBOR map keys must be text strings")
        pos += 1
        pending -= 1
        code, arg = actions[initial]
        if code == _SKIP:
            continue
        if code == _BAD:
            raise ProtocolError(_refusal(initial))
        if code >= _WIDE:
            if pos + arg > end:
                raise ProtocolError("truncated CBOR item header")
            if code == _SKIP + _WIDE:
                pos += arg
                continue
            width = arg
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
            code -= _WIDE
        if code == _STR:
            if arg > end - pos:
                raise ProtocolError("CBOR string is longer than its frame")
            pos += arg
            continue
        count = arg * 2 if code == _MAP else arg
        # Every item takes at least one byte: a count larger than what is left is a
        # lie, refused before anything is allocated for it.
        if count > end - pos:
            raise ProtocolError("CBOR container claims more items than its frame holds")
        if count:
            if len(stack) >= max_depth:
                raise ProtocolError(f"CBOR nesting deeper than {max_depth}")
            stack.append((pending, is_map))
            pending = count
            is_map = code == _MAP


def load_body(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> object:
    """The CBOR item of one frame body (without its length header), safely decoded."""
    check_cbor(body, max_depth)
    try:
        return cbor2.loads(body, tag_hook=_refuse_tag)
    except ProtocolError:
        raise
    except Exception as exc:  # invalid UTF-8 and the like; the scan passed the structure
        raise ProtocolError(f"CBOR does not decode: {exc}") from None


def decode_body(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Message | UnknownMessage:
    """Decode one frame body (without its length header) into a message."""
    return from_wire(load_body(body, max_depth), len(body))


def _check_version(wire: object) -> None:
    # Before field validation: a Hello from another protocol version may have other
    # fields, and must still end as a version mismatch, not a generic protocol error.
    # The "type" and "protocol_version" keys of Hello are frozen for all versions.
    if type(wire) is dict and wire.get("type") == Hello.TYPE:
        version = wire.get("protocol_version")
        if type(version) is int and version != PROTOCOL_VERSION:
            raise ProtocolVersionMismatch(version, PROTOCOL_VERSION)


def encode(message: Message) -> bytes:
    """One frame: the length header and the CBOR body (no state checks; see Connection)."""
    body = cbor2.dumps(to_wire(message))
    return HEADER.pack(len(body)) + body


class _Conversation:
    """Which message may come when; one object checks both directions.

    Guest: Hello first, then any of its messages; task messages only inside the task
    that is open (TaskStarted .. TaskFinished), tasks only from Start, each once;
    nothing after Goodbye. Host: Start once after Hello, Cancel any time after Hello.
    """

    def __init__(self) -> None:
        self.hello: Hello | None = None
        self.start: Start | None = None
        self.cancelled = False
        self.open_task: str | None = None
        self.done_tasks: set[str] = set()
        self.goodbye: Goodbye | None = None

    def check(self, message: Message | UnknownMessage, sender: Role) -> str | None:
        """The reason `message` from `sender` is out of order now, or None after recording it."""
        if sender is Role.GUEST:
            # Fast paths for the frames that come by the thousand; an open task implies
            # Hello and Start were seen, and no Goodbye yet.
            kind = type(message)
            if kind is TestResult and self.open_task is not None:
                return None
            if kind is Output and self.open_task is not None:
                assert isinstance(message, Output)
                if message.task == self.open_task:
                    return None
            return self._from_guest(message)
        if type(message) not in HOST_TO_GUEST and type(message) is not UnknownMessage:
            return f"{type(message).__name__} cannot come from the host"
        if self.hello is None:
            return f"{type(message).__name__} before the guest's Hello"
        if isinstance(message, UnknownMessage):  # a newer host; the guest skips it
            return None
        if type(message) is Start:
            if self.start is not None:
                return "a second Start"
            self.start = message
        else:
            self.cancelled = True
        return None

    def _from_guest(self, message: Message | UnknownMessage) -> str | None:
        kind = type(message)
        if kind is not UnknownMessage and kind not in GUEST_TO_HOST:
            return f"{kind.__name__} cannot come from the guest"
        if self.goodbye is not None:
            return f"{kind.__name__} after Goodbye"
        if self.hello is None:
            return self._first(message)
        if isinstance(message, Hello):
            return "a second Hello"
        if isinstance(message, TaskStarted):
            return self._task_started(message)
        return self._in_task(message)

    def _first(self, message: Message | UnknownMessage) -> str | None:
        if not isinstance(message, Hello):
            return f"{type(message).__name__} before Hello"
        if message.protocol_version != PROTOCOL_VERSION:
            raise ProtocolVersionMismatch(message.protocol_version, PROTOCOL_VERSION)
        self.hello = message
        return None

    def _in_task(self, message: Message | UnknownMessage) -> str | None:
        if isinstance(message, TaskFinished):
            if message.task != self.open_task:
                return f"TaskFinished for {message.task!r} while {self.open_task!r} is open"
            self.done_tasks.add(message.task)
            self.open_task = None
        elif isinstance(message, Output):
            if message.task != self.open_task:
                return f"Output for {message.task!r} while {self.open_task!r} is open"
        elif isinstance(message, TestResult | Metadata) and self.open_task is None:
            return f"{type(message).__name__} outside a task"
        elif isinstance(message, Goodbye):
            self.goodbye = message
            self.open_task = None  # Goodbye ends an open task too (the fast paths rely on it)
        return None

    def _task_started(self, message: TaskStarted) -> str | None:
        if self.start is None:
            return "TaskStarted before Start"
        if self.open_task is not None:
            return f"TaskStarted while task {self.open_task!r} is open"
        if message.task not in self.start.tasks or message.task in self.done_tasks:
            return f"task {message.task!r} was not asked for, or already ran"
        self.open_task = message.task
        return None


class Connection:
    """One end of the channel. Feed `receive_data`, drain `next_event`, frame with `send`.

    Any ProtocolError (from the peer's bytes, or a LocalProtocolError from our own
    misuse) kills the connection: every later call raises ProtocolError.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        if not 16 <= max_frame_size <= 0xFFFFFFFF:
            raise ValueError("max_frame_size must be in [16, 2**32 - 1]")
        self.role = role
        self.max_frame_size = max_frame_size
        self.max_depth = max_depth
        self._peer = Role.GUEST if role is Role.HOST else Role.HOST
        self._buffer = bytearray()
        self._eof = False
        self._error: ProtocolError | None = None
        self._conversation = _Conversation()
        self.frames_received = 0
        self.bytes_received = 0

    # What the conversation has seen so far (read-only views for the adapters).
    @property
    def hello(self) -> Hello | None:
        return self._conversation.hello

    @property
    def start(self) -> Start | None:
        return self._conversation.start

    @property
    def goodbye(self) -> Goodbye | None:
        return self._conversation.goodbye

    @property
    def cancelled(self) -> bool:
        return self._conversation.cancelled

    @property
    def open_task(self) -> str | None:
        return self._conversation.open_task

    @property
    def dead(self) -> bool:
        return self._error is not None

    def _raise_if_dead(self) -> None:
        if self._error is not None:
            raise ProtocolError(f"connection is dead after: {self._error}") from self._error

    def _die(self, error: ProtocolError) -> ProtocolError:
        self._error = error
        self._buffer = bytearray()
        return error

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes from the peer; b"" means the stream ended (repeating it is harmless)."""
        self._raise_if_dead()
        if self._eof and data:
            raise self._die(LocalProtocolError("receive_data after the end of the stream"))
        if data:
            self._buffer += data
            self.bytes_received += len(data)
        else:
            self._eof = True

    def next_event(self) -> Event:
        """The next message, UnknownMessage, NEED_DATA, or CLOSED (clean end of stream)."""
        self._raise_if_dead()
        try:
            return self._next_event()
        except ProtocolError as exc:
            raise self._die(exc) from None

    def _next_event(self) -> Event:
        buffer = self._buffer
        if len(buffer) < 4:
            if not self._eof:
                return NEED_DATA
            if buffer:
                raise ProtocolError("stream ended inside a frame header")
            return CLOSED
        (size,) = HEADER.unpack_from(buffer)
        # Checked on the header alone, before the body is awaited or anything allocated.
        if size == 0:
            raise ProtocolError("empty frame")
        if size > self.max_frame_size:
            raise ProtocolError(f"frame of {size} bytes exceeds the {self.max_frame_size} cap")
        if len(buffer) < 4 + size:
            if self._eof:
                raise ProtocolError("stream ended inside a frame")
            return NEED_DATA
        body = bytes(buffer[4 : 4 + size])
        del buffer[: 4 + size]  # bytearray drops a prefix in O(1)
        wire = load_body(body, self.max_depth)
        if self.role is Role.HOST and self._conversation.hello is None:
            _check_version(wire)
        message = from_wire(wire, size)
        reason = self._conversation.check(message, self._peer)
        if reason is not None:
            raise ProtocolError(f"out of order: {reason}")
        self.frames_received += 1
        return message

    def send(self, message: Message) -> bytes:
        """The frame for `message`, after checking our role and the conversation state."""
        self._raise_if_dead()
        try:
            if not isinstance(message, Message):
                raise LocalProtocolError(f"cannot send {type(message).__name__}")
            frame = encode(message)
            if len(frame) - 4 > self.max_frame_size:
                raise LocalProtocolError(
                    f"{type(message).__name__} frame of {len(frame) - 4} bytes exceeds the cap"
                )
            reason = self._conversation.check(message, self.role)
        except ProtocolError as exc:
            error = exc if isinstance(exc, LocalProtocolError) else LocalProtocolError(str(exc))
            raise self._die(error) from None
        if reason is not None:
            raise self._die(LocalProtocolError(f"out of order: {reason}"))
        return frame


def encode_wire(wire: dict[str, Any]) -> bytes:
    """A frame from a raw map, for tests and the fuzzer (no validation at all)."""
    body = cbor2.dumps(wire)
    return HEADER.pack(len(body)) + body
