"""The messages between the guest agent and the host: frozen, keyword-only, validated.

Messages are records (see `_Record`): frozen, keyword-only, slotted classes declared with
annotations like dataclasses, without the dataclasses module. Every message validates its
fields in `__post_init__` (types, ranges, lengths), so an object that exists is a message
the other side accepts. A violation raises `InvalidMessage`, a `ProtocolError` (and a
`ValueError`, for callers that build messages).

This module is copied into the guest image: it imports only the standard library, and
little of it (no typing, dataclasses, inspect or re at run time).
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping

# Not `typing.TYPE_CHECKING`: importing typing costs the guest's boot ~0.1 s under TCG,
# and mypy honours any constant of this name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, dataclass_transform
else:

    def dataclass_transform(**_options):  # typing's; only type checkers read it
        return lambda cls: cls


PROTOCOL_VERSION = 1

# The console line the agent prints at its snapshot point, just before Hello; the host that
# saves a VM waits for it (pyti.snapshot). On the console, not the port: at that point the
# port has no host by design.
SNAPSHOT_MARKER = "pyti-agent: ready for Hello"

TASK_NAMES = frozenset({"metadata", "install", "test", "quality"})
TASK_OUTCOMES = frozenset(
    {"passed", "failed", "no-tests", "install-failed", "build-failed", "error", "skipped"}
)
TEST_OUTCOMES = frozenset({"passed", "failed", "error", "skipped", "xfailed", "xpassed"})
STREAMS = frozenset({"stdout", "stderr"})

# Field caps. The frame cap (1 MiB by default) bounds everything anyway; these keep
# single fields sane so the store and the renderer never meet a 1 MiB node id.
MAX_SHORT = 128  # versions, ids, kinds, stream and task names
MAX_NAME = 256  # package names and versions
MAX_NODEID = 4096
MAX_REASON = 1024
MAX_DETAIL = 8192
MAX_REPORT = 64 * 1024  # characters of a test's failure report, truncated by the sender
MAX_CHUNK = 256 * 1024  # bytes of one Output chunk
MAX_METADATA = 512 * 1024  # bytes of a core metadata file
MAX_ARGS = 256
MAX_ARG = 4096
MAX_TASKS = 16
MAX_COUNTS = 32
MAX_INT = (1 << 63) - 1
MAX_DURATION = 1e9  # seconds; anything larger is a broken clock, not a slow test
MAX_CLOCK = 1e11  # seconds since the epoch (year ~5100)
MAX_ENTROPY = 512  # bytes


class ProtocolError(Exception):
    """The byte stream or a message broke the protocol; the connection is dead afterwards."""


class InvalidMessage(ProtocolError, ValueError):
    """A message field has the wrong type, range or length."""


def truncate_text(text: str, limit: int) -> str:
    """Keep the head and tail of `text` within `limit` characters (for `TestResult.report`).

    The middle becomes "[... N characters omitted ...]", N counting exactly what was cut.
    """
    if len(text) <= limit:
        return text
    keep = limit
    for _ in range(3):  # the note's width depends on N, which depends on the note's width
        note = f"\n[... {len(text) - keep} characters omitted ...]\n"
        keep = max(limit - len(note), 0)
    note = f"\n[... {len(text) - keep} characters omitted ...]\n"
    if len(note) > limit:  # a limit too small for any note: plain cut
        return text[:limit]
    head = keep // 2 + keep % 2
    tail = keep - head
    return text[:head] + note + (text[len(text) - tail :] if tail else "")


def clean_text(text: str) -> str:
    """`text` made encodable as UTF-8: lone surrogates (from surrogateescape'd file names
    or JSON) become visible escapes such as "\\udcff". Messages refuse them otherwise."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _str(name: str, value: object, limit: int, *, empty: bool = True) -> None:
    if type(value) is not str:
        raise InvalidMessage(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise InvalidMessage(f"{name} is longer than {limit} characters")
    if not empty and not value:
        raise InvalidMessage(f"{name} must not be empty")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidMessage(
                f"{name} has lone surrogates; pass it through clean_text"
            ) from None


def _choice(name: str, value: object, choices: frozenset[str]) -> None:
    if type(value) is not str or value not in choices:
        raise InvalidMessage(f"{name} must be one of {sorted(choices)}, not {value!r:.80}")


def _token(name: str, value: object, *, empty: bool = False) -> None:
    """A short lowercase identifier such as a finding kind: [a-z0-9-]."""
    _str(name, value, MAX_SHORT, empty=empty)
    assert isinstance(value, str)
    if value.strip("abcdefghijklmnopqrstuvwxyz0123456789-"):
        raise InvalidMessage(f"{name} must use only a-z, 0-9 and '-', not {value!r:.80}")


def _int(name: str, value: object, low: int, high: int) -> None:
    if type(value) is not int:
        raise InvalidMessage(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidMessage(f"{name} must be in [{low}, {high}], not {value}")


def _bytes(name: str, value: object, limit: int) -> None:
    if type(value) is not bytes:
        raise InvalidMessage(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) > limit:
        raise InvalidMessage(f"{name} is longer than {limit} bytes")


def _duration(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if type(value) is int:  # a peer may encode 0.0 as 0; keep the field a float
        value = float(value)
        object.__setattr__(obj, name, value)
    if type(value) is not float:
        raise InvalidMessage(f"{name} must be a number, not {type(value).__name__}")
    if not (math.isfinite(value) and 0.0 <= value <= MAX_DURATION):
        raise InvalidMessage(f"{name} must be finite and in [0, {MAX_DURATION:g}], not {value}")


def _str_tuple(obj: object, name: str, max_items: int, item_limit: int) -> tuple[str, ...]:
    value = getattr(obj, name)
    if type(value) not in (tuple, list):
        raise InvalidMessage(f"{name} must be a sequence of strings, not {type(value).__name__}")
    if len(value) > max_items:
        raise InvalidMessage(f"{name} has more than {max_items} items")
    for item in value:
        _str(f"{name} item", item, item_limit)
    result = tuple(value)
    object.__setattr__(obj, name, result)
    return result


# Records instead of dataclasses. The guest imports this module on its boot path, where
# (Python 3.11 under TCG, measured with -X importtime) importing dataclasses cost 126 ms
# (it pulls in inspect, dis, ast, tokenize, linecache) and creating the message classes,
# all @dataclass(frozen=True, kw_only=True, slots=True), another ~98 ms, because
# dataclasses exec()s generated source for every method. A record class is built by a
# metaclass (`__slots__` must be in the namespace when the class is created) and shares
# one generic implementation of each method, so creating one costs almost nothing.
# PEP 681's dataclass_transform tells mypy the same story: keyword-only and frozen.

_REQUIRED: Any = object()  # the "default" of a field without one
_new = object.__new__
_setattr = object.__setattr__


class FrozenInstanceError(AttributeError):
    """Assigning to or deleting a field of a record (as `dataclasses.FrozenInstanceError`)."""


@dataclass_transform(kw_only_default=True, frozen_default=True)
class _RecordType(type):
    """The metaclass of records: the annotations of a class body are its fields.

    Fields are the inherited ones, then the class's own in declaration order; a value
    assigned in the body is the field's default (immutable: it is shared). An annotation
    is always a field: records use no ClassVar, and a class constant goes unannotated.
    """

    _fields: tuple[str, ...]
    _defaults: dict[str, Any]  # field -> its default or _REQUIRED, in field order

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> _RecordType:
        defaults: dict[str, Any] = {}
        for base in bases:
            defaults.update(getattr(base, "_defaults", {}))
        annotations = namespace.get("__annotations__", {})
        namespace["__slots__"] = tuple(field for field in annotations if field not in defaults)
        for field in annotations:
            defaults[field] = namespace.pop(field, _REQUIRED)
        cls = super().__new__(mcs, name, bases, namespace)
        cls._fields = tuple(defaults)
        cls._defaults = defaults
        return cls


def _fill(record: _Record, values: dict[str, Any]) -> None:
    """Set the fields of a new record from `values` (other keys are ignored), then check it."""
    defaults = type(record)._defaults
    for field, default in defaults.items():
        value = values.get(field, default)
        if value is _REQUIRED:
            missing = [f for f, d in defaults.items() if d is _REQUIRED and f not in values]
            raise TypeError(
                f"{type(record).__qualname__}() missing required keyword argument"
                f"{'s' * (len(missing) > 1)}: {', '.join(map(repr, missing))}"
            )
        _setattr(record, field, value)
    record.__post_init__()


class _Record(metaclass=_RecordType):
    """Base class of records: frozen, keyword-only, slotted, compared by type and fields."""

    def __init__(self, **kwargs: Any) -> None:
        defaults = type(self)._defaults
        if not kwargs.keys() <= defaults.keys():
            unknown = [name for name in kwargs if name not in defaults]
            raise TypeError(
                f"{type(self).__qualname__}() got unexpected keyword argument"
                f"{'s' * (len(unknown) > 1)}: {', '.join(map(repr, unknown))}"
            )
        _fill(self, kwargs)

    def __post_init__(self) -> None:
        """Validate (and normalise, with `object.__setattr__`) the fields; a no-op here."""

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, field) for field in type(self)._fields])

    def __repr__(self) -> str:
        fields = ", ".join(f"{field}={getattr(self, field)!r}" for field in type(self)._fields)
        return f"{type(self).__qualname__}({fields})"

    # Out of mypy's sight, as a dataclass's generated __eq__ is: mypy's --strict-equality
    # only checks classes without a custom __eq__ (it flags Hello(...) == Goodbye()).
    if not TYPE_CHECKING:

        def __eq__(self, other):
            if type(other) is not type(self):
                return NotImplemented
            return self._values() == other._values()

    def __hash__(self) -> int:  # equal records have equal fields, so equal hashes
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    # copy and pickle: the default would restore the fields with setattr, which refuses.
    def __getstate__(self) -> tuple[Any, ...]:
        return self._values()

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for field, value in zip(type(self)._fields, state, strict=True):
            _setattr(self, field, value)


class Message(_Record):
    """Base class of every message; `TYPE` is the wire name in the frame's "type" key."""

    TYPE = ""


class Hello(Message):
    """Guest to host, always the first frame: who is talking."""

    TYPE = "hello"
    protocol_version: int
    agent_version: str
    python_version: str
    image_id: str
    boot_id: str

    def __post_init__(self) -> None:
        _int("protocol_version", self.protocol_version, 0, MAX_INT)
        _str("agent_version", self.agent_version, MAX_SHORT)
        _str("python_version", self.python_version, MAX_SHORT)
        _str("image_id", self.image_id, MAX_SHORT)
        _str("boot_id", self.boot_id, MAX_SHORT)


class Start(Message):
    """Host to guest, once, after Hello: run these tasks in this order."""

    TYPE = "start"
    run_id: str
    tasks: tuple[str, ...]
    test_args: tuple[str, ...] = ()
    # For a guest resumed from a snapshot (docs/lifecycle.md): the host's wall clock
    # (seconds since the epoch; 0 = leave the guest's) and fresh entropy for its CRNG.
    clock: float = 0.0
    entropy: bytes = b""

    def __post_init__(self) -> None:
        _str("run_id", self.run_id, MAX_SHORT, empty=False)
        tasks = _str_tuple(self, "tasks", MAX_TASKS, MAX_SHORT)
        for task in tasks:
            _choice("task", task, TASK_NAMES)
        if len(set(tasks)) != len(tasks):
            raise InvalidMessage("tasks must not repeat")
        _str_tuple(self, "test_args", MAX_ARGS, MAX_ARG)
        clock = self.clock
        if type(clock) is int:  # a peer may encode a whole number as an integer
            clock = float(clock)
            object.__setattr__(self, "clock", clock)
        if type(clock) is not float or not (math.isfinite(clock) and 0.0 <= clock <= MAX_CLOCK):
            raise InvalidMessage(f"clock must be a finite number in [0, {MAX_CLOCK:g}]")
        _bytes("entropy", self.entropy, MAX_ENTROPY)


class Cancel(Message):
    """Host to guest: stop the current task and say Goodbye."""

    TYPE = "cancel"
    reason: str

    def __post_init__(self) -> None:
        _str("reason", self.reason, MAX_REASON)


class TaskStarted(Message):
    TYPE = "task-started"
    task: str

    def __post_init__(self) -> None:
        _choice("task", self.task, TASK_NAMES)


class Metadata(Message):
    """A package's prepared core metadata (METADATA or PKG-INFO), raw bytes."""

    TYPE = "metadata"
    name: str
    version: str
    metadata: bytes

    def __post_init__(self) -> None:
        _str("name", self.name, MAX_NAME)
        _str("version", self.version, MAX_NAME)
        _bytes("metadata", self.metadata, MAX_METADATA)


class TestResult(Message):
    """One test's outcome; `report` is truncated by the sender (see `truncate_text`)."""

    __test__ = False  # not a pytest test class
    TYPE = "test-result"
    nodeid: str
    outcome: str
    duration: float
    report: str = ""

    def __post_init__(self) -> None:
        # The hottest message (one per test): one expression for the valid case; the
        # checks below run only to convert an int duration or to name what is wrong.
        nodeid, outcome, duration, report = self.nodeid, self.outcome, self.duration, self.report
        if (
            type(nodeid) is str
            and 0 < len(nodeid) <= MAX_NODEID
            and type(outcome) is str
            and outcome in TEST_OUTCOMES
            and type(duration) is float
            and 0.0 <= duration <= MAX_DURATION  # False for NaN; inf is over the cap
            and type(report) is str
            and len(report) <= MAX_REPORT
            and nodeid.isascii()  # otherwise the UTF-8 check below
            and report.isascii()
        ):
            return
        _str("nodeid", nodeid, MAX_NODEID, empty=False)
        _choice("outcome", outcome, TEST_OUTCOMES)
        _duration(self, "duration")
        _str("report", report, MAX_REPORT)


class Output(Message):
    """A chunk of a task's stdout or stderr, raw bytes (not necessarily valid UTF-8)."""

    TYPE = "output"
    task: str
    stream: str
    data: bytes

    def __post_init__(self) -> None:
        task, stream, data = self.task, self.stream, self.data
        if (
            type(task) is str
            and task in TASK_NAMES
            and type(stream) is str
            and stream in STREAMS
            and type(data) is bytes
            and len(data) <= MAX_CHUNK
        ):
            return
        _choice("task", task, TASK_NAMES)
        _choice("stream", stream, STREAMS)
        _bytes("data", data, MAX_CHUNK)


class Finding(Message):
    """Something the guest noticed, e.g. kind "network" for a refused connect."""

    TYPE = "finding"
    kind: str
    detail: str
    task: str = ""

    def __post_init__(self) -> None:
        _token("kind", self.kind)
        _str("detail", self.detail, MAX_DETAIL)
        if self.task != "":
            _choice("task", self.task, TASK_NAMES)


class TaskFinished(Message):
    TYPE = "task-finished"
    task: str
    outcome: str
    exit_code: int | None
    duration: float
    counts: Mapping[str, int] = types.MappingProxyType({})

    def __post_init__(self) -> None:
        _choice("task", self.task, TASK_NAMES)
        _choice("outcome", self.outcome, TASK_OUTCOMES)
        if self.exit_code is not None:
            _int("exit_code", self.exit_code, -(1 << 31), (1 << 31) - 1)
        _duration(self, "duration")
        counts = self.counts
        if not isinstance(counts, Mapping):
            raise InvalidMessage(f"counts must be a mapping, not {type(counts).__name__}")
        if len(counts) > MAX_COUNTS:
            raise InvalidMessage(f"counts has more than {MAX_COUNTS} entries")
        for key, number in counts.items():
            _token("counts key", key)
            _int("counts value", number, 0, MAX_INT)
        # A read-only copy: the record is frozen, its mapping should be too.
        object.__setattr__(self, "counts", types.MappingProxyType(dict(counts)))


class Heartbeat(Message):
    """Guest to host every few seconds, from the agent's own thread: "still alive"."""

    TYPE = "heartbeat"
    seq: int

    def __post_init__(self) -> None:
        _int("seq", self.seq, 0, MAX_INT)


class Goodbye(Message):
    """Guest to host, last frame: the agent is done and the guest powers off."""

    TYPE = "goodbye"
    reason: str = "done"

    def __post_init__(self) -> None:
        _str("reason", self.reason, MAX_REASON)


class UnknownMessage(_Record):
    """A frame whose "type" this side does not know (a newer peer); counted and skipped.

    Not a `Message`: it cannot be sent.
    """

    type: str
    size: int


HOST_TO_GUEST: tuple[type[Message], ...] = (Start, Cancel)
GUEST_TO_HOST: tuple[type[Message], ...] = (
    Hello,
    TaskStarted,
    Metadata,
    TestResult,
    Output,
    Finding,
    TaskFinished,
    Heartbeat,
    Goodbye,
)
MESSAGE_TYPES: dict[str, type[Message]] = {cls.TYPE: cls for cls in HOST_TO_GUEST + GUEST_TO_HOST}


def to_wire(message: Message) -> dict[str, Any]:
    """The CBOR map of a message: {"type": ..., field: value, ...}."""
    cls = type(message)
    wire: dict[str, Any] = {"type": cls.TYPE}
    for name in cls._fields:
        value = getattr(message, name)
        if isinstance(value, types.MappingProxyType):
            value = dict(value)
        wire[name] = value
    return wire


def from_wire(wire: object, size: int = 0) -> Message | UnknownMessage:
    """Build a message from a decoded CBOR map. Unknown fields are ignored.

    A known type with a missing or invalid field raises `InvalidMessage`; an unknown type
    gives `UnknownMessage` (the caller decides how many it tolerates).
    """
    if type(wire) is not dict:
        raise InvalidMessage(f"a frame must hold a map, not {type(wire).__name__}")
    kind = wire.get("type")
    if type(kind) is not str:
        raise InvalidMessage('a frame must have a string "type"')
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        _str("type", kind, MAX_SHORT, empty=False)
        return UnknownMessage(type=kind, size=size)
    # As cls(**fields_in_wire), without building that dict and checking its keys.
    message: Message = _new(cls)
    try:
        _fill(message, wire)
    except TypeError as exc:  # a required field is missing
        raise InvalidMessage(f"{kind}: {exc}") from None
    return message
