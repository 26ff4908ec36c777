"""Connection: framing, chunking, the conversation state machine, and dying on errors."""

from __future__ import annotations

import struct

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyti.protocol import (
    CLOSED,
    NEED_DATA,
    PROTOCOL_VERSION,
    Cancel,
    Connection,
    Event,
    Finding,
    Goodbye,
    Heartbeat,
    Hello,
    LocalProtocolError,
    Message,
    Metadata,
    Output,
    ProtocolError,
    ProtocolVersionMismatch,
    Role,
    Start,
    TaskFinished,
    TaskStarted,
    TestResult,
    UnknownMessage,
    encode,
)
from pyti.protocol.codec import encode_wire

HELLO = Hello(protocol_version=PROTOCOL_VERSION, agent_version="0.1", python_version="3.11.2",
              image_id="bookworm-1", boot_id="b-1")  # fmt: skip
START = Start(run_id="run-1", tasks=("install", "test"))


def a_run() -> list[Message]:
    """A whole guest conversation, as the guest sends it."""
    return [
        HELLO,
        Heartbeat(seq=0),
        TaskStarted(task="install"),
        Output(task="install", stream="stdout", data=b"Installing...\n"),
        TaskFinished(task="install", outcome="passed", exit_code=0, duration=2.5),
        TaskStarted(task="test"),
        Finding(kind="network", detail="connect to 1.1.1.1:443 refused", task="test"),
        TestResult(nodeid="t.py::test_a", outcome="passed", duration=0.01),
        TestResult(nodeid="t.py::test_b", outcome="failed", duration=0.02, report="assert 1"),
        Output(task="test", stream="stderr", data=bytes(range(256))),
        Heartbeat(seq=1),
        TaskFinished(task="test", outcome="failed", exit_code=1, duration=3.0,
                     counts={"passed": 1, "failed": 1}),
        Goodbye(),
    ]  # fmt: skip


def guest_bytes(messages: list[Message]) -> bytes:
    """Frames for `messages`, sent by a guest that received START after its Hello."""
    guest = Connection(Role.GUEST)
    out = [guest.send(messages[0])]
    host = Connection(Role.HOST)
    host.receive_data(out[0])
    host.next_event()
    guest.receive_data(host.send(START))
    assert guest.next_event() == START
    out += [guest.send(msg) for msg in messages[1:]]
    return b"".join(out)


def started_host() -> Connection:
    host = Connection(Role.HOST)
    host.receive_data(encode_frame(HELLO))
    assert host.next_event() == HELLO
    host.send(START)
    return host


def encode_frame(message: Message) -> bytes:
    return encode(message)


def drain(conn: Connection, *, start_on_hello: bool = False) -> list[Event]:
    """Every event available now; sends START right after Hello like the host does."""
    events: list[Event] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if event is CLOSED:
            break
        if start_on_hello and isinstance(event, Hello):
            conn.send(START)
    return events


def test_a_whole_run_in_one_chunk() -> None:
    host = Connection(Role.HOST)
    host.receive_data(guest_bytes(a_run()))
    host.receive_data(b"")
    assert drain(host, start_on_hello=True) == [*a_run(), CLOSED]
    assert host.goodbye == Goodbye()
    assert host.frames_received == len(a_run())


@given(st.lists(st.integers(1, 300), min_size=1, max_size=50))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    data = guest_bytes(a_run())
    host = Connection(Role.HOST)
    events: list[Event] = []
    pos = 0
    i = 0
    while pos < len(data):
        size = cuts[i % len(cuts)]
        host.receive_data(data[pos : pos + size])
        pos += size
        i += 1
        events += drain(host, start_on_hello=True)
    host.receive_data(b"")
    events += drain(host)
    assert events == [*a_run(), CLOSED]


def test_one_byte_at_a_time() -> None:
    data = guest_bytes(a_run())
    host = Connection(Role.HOST)
    events: list[Event] = []
    for byte in data:
        host.receive_data(bytes([byte]))
        events += drain(host, start_on_hello=True)
    assert events == a_run()


def test_eof_without_goodbye_is_closed_but_no_goodbye() -> None:
    host = Connection(Role.HOST)
    host.receive_data(encode_frame(HELLO) + b"")
    host.receive_data(b"")
    assert drain(host) == [HELLO, CLOSED]
    assert host.goodbye is None


@pytest.mark.parametrize("tail", [b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x05\xa0"])
def test_eof_inside_a_frame_is_a_protocol_error(tail: bytes) -> None:
    host = Connection(Role.HOST)
    host.receive_data(encode_frame(HELLO) + tail)
    host.receive_data(b"")
    assert host.next_event() == HELLO
    with pytest.raises(ProtocolError, match="stream ended inside"):
        host.next_event()


def test_frame_size_cap_is_inclusive_and_checked_on_the_header_alone() -> None:
    body = cbor2.dumps({"type": "goodbye", "reason": "x" * 100})
    at_cap = Connection(Role.GUEST, max_frame_size=len(body))
    over_cap = Connection(Role.GUEST, max_frame_size=len(body) - 1)
    # Only the header is fed: the oversized frame is refused before its body arrives.
    over_cap.receive_data(struct.pack(">I", len(body)))
    with pytest.raises(ProtocolError, match="exceeds"):
        over_cap.next_event()
    at_cap.receive_data(struct.pack(">I", len(body)))
    assert at_cap.next_event() is NEED_DATA


def test_a_header_claiming_4_gib_fails_at_once() -> None:
    host = Connection(Role.HOST)
    host.receive_data(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError, match="exceeds"):
        host.next_event()


def test_an_empty_frame_is_a_protocol_error() -> None:
    host = Connection(Role.HOST)
    host.receive_data(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError, match="empty"):
        host.next_event()


def test_trailing_bytes_inside_a_frame_are_a_protocol_error() -> None:
    body = cbor2.dumps(HELLO_WIRE) + b"\x00"
    host = Connection(Role.HOST)
    host.receive_data(struct.pack(">I", len(body)) + body)
    with pytest.raises(ProtocolError, match="trailing"):
        host.next_event()


HELLO_WIRE = {"type": "hello", "protocol_version": PROTOCOL_VERSION, "agent_version": "a",
              "python_version": "3", "image_id": "i", "boot_id": "b"}  # fmt: skip


def test_after_an_error_every_call_raises() -> None:
    host = Connection(Role.HOST)
    host.receive_data(b"\x00\x00\x00\x00" + encode_frame(HELLO))
    with pytest.raises(ProtocolError):
        host.next_event()
    assert host.dead
    with pytest.raises(ProtocolError, match="dead"):
        host.next_event()
    with pytest.raises(ProtocolError, match="dead"):
        host.receive_data(b"more")
    with pytest.raises(ProtocolError, match="dead"):
        host.send(Cancel(reason="x"))


def test_receive_data_after_eof_is_a_local_error() -> None:
    host = Connection(Role.HOST)
    host.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        host.receive_data(b"x")


def test_version_mismatch_is_its_own_error_even_with_unknown_fields() -> None:
    # A future Hello may carry other fields; the version check comes first.
    wire = {"type": "hello", "protocol_version": PROTOCOL_VERSION + 1, "capabilities": ["x"]}
    host = Connection(Role.HOST)
    host.receive_data(encode_wire(wire))
    with pytest.raises(ProtocolVersionMismatch) as info:
        host.next_event()
    assert (info.value.theirs, info.value.ours) == (PROTOCOL_VERSION + 1, PROTOCOL_VERSION)
    assert "rebuild the image" in str(info.value)


def test_unknown_types_are_passed_up_after_hello_only() -> None:
    host = Connection(Role.HOST)
    host.receive_data(encode_frame(HELLO) + encode_wire({"type": "telemetry", "cpu": 3}))
    assert host.next_event() == HELLO
    event = host.next_event()
    assert isinstance(event, UnknownMessage)
    assert event.type == "telemetry"
    fresh = Connection(Role.HOST)
    fresh.receive_data(encode_wire({"type": "telemetry"}))
    with pytest.raises(ProtocolError, match="before Hello"):
        fresh.next_event()


def feed_host(messages: list[Message], *, started: bool = True) -> Connection:
    host = started_host() if started else Connection(Role.HOST)
    if not started:
        host.receive_data(encode_frame(HELLO))
        host.next_event()
    for msg in messages:
        host.receive_data(encode_frame(msg))
    return host


@pytest.mark.parametrize(
    ("messages", "started", "reason"),
    [
        ([HELLO], True, "second Hello"),
        ([TaskStarted(task="test")], False, "before Start"),
        ([TaskStarted(task="quality")], True, "not asked for"),
        ([TaskStarted(task="test"), TaskStarted(task="install")], True, "is open"),
        ([TaskStarted(task="test"), TaskFinished(task="test", outcome="passed", exit_code=0,
          duration=1.0), TaskStarted(task="test")], True, "already ran"),
        ([TestResult(nodeid="a", outcome="passed", duration=0.0)], True, "outside a task"),
        ([Metadata(name="a", version="1", metadata=b"")], True, "outside a task"),
        ([Output(task="test", stream="stdout", data=b"x")], True, "while None is open"),
        ([TaskStarted(task="install"), Output(task="test", stream="stdout", data=b"x")], True,
         "is open"),
        ([TaskFinished(task="test", outcome="passed", exit_code=0, duration=1.0)], True,
         "TaskFinished"),
        ([Goodbye(), Heartbeat(seq=1)], True, "after Goodbye"),
        ([TaskStarted(task="test"), Goodbye(),
          TestResult(nodeid="a", outcome="passed", duration=0.0)], True, "after Goodbye"),
        ([TaskStarted(task="test"), Goodbye(),
          Output(task="test", stream="stdout", data=b"x")], True, "after Goodbye"),
    ],
)  # fmt: skip
def test_out_of_order_guest_messages(messages: list[Message], started: bool, reason: str) -> None:
    host = feed_host(messages, started=started)
    with pytest.raises(ProtocolError, match=reason):
        drain(host)


def test_the_first_guest_message_must_be_hello() -> None:
    host = Connection(Role.HOST)
    host.receive_data(encode_frame(Heartbeat(seq=0)))
    with pytest.raises(ProtocolError, match="before Hello"):
        host.next_event()


def test_heartbeat_finding_and_goodbye_are_fine_before_start() -> None:
    host = feed_host([Heartbeat(seq=0), Finding(kind="no-setup-disk", detail=""), Goodbye()],
                     started=False)  # fmt: skip
    host.receive_data(b"")
    assert [type(e) for e in drain(host)] == [Heartbeat, Finding, Goodbye, type(CLOSED)]


@pytest.mark.parametrize("message", [START, Cancel(reason="x")])
def test_host_refuses_host_messages_from_the_guest(message: Message) -> None:
    host = feed_host([message], started=False)
    with pytest.raises(ProtocolError, match="cannot come from the guest"):
        host.next_event()


def test_host_can_send_only_start_and_cancel_and_only_after_hello() -> None:
    host = Connection(Role.HOST)
    with pytest.raises(LocalProtocolError, match="before the guest's Hello"):
        host.send(START)
    host = feed_host([], started=False)
    with pytest.raises(LocalProtocolError, match="cannot come from the host"):
        host.send(Heartbeat(seq=1))
    host = feed_host([], started=False)
    host.send(START)
    host.send(Cancel(reason="timeout"))
    assert host.cancelled
    with pytest.raises(LocalProtocolError, match="second Start"):
        host.send(START)


def test_guest_must_say_hello_first_and_cannot_send_start() -> None:
    guest = Connection(Role.GUEST)
    with pytest.raises(LocalProtocolError, match="before Hello"):
        guest.send(Heartbeat(seq=0))
    guest = Connection(Role.GUEST)
    guest.send(HELLO)
    with pytest.raises(LocalProtocolError, match="cannot come from the guest"):
        guest.send(START)


def test_guest_refuses_a_start_before_its_hello() -> None:
    guest = Connection(Role.GUEST)
    guest.receive_data(encode_frame(START))
    with pytest.raises(ProtocolError, match="before the guest's Hello"):
        guest.next_event()


def test_guest_may_not_start_a_task_the_host_did_not_ask_for() -> None:
    guest = Connection(Role.GUEST)
    guest.send(HELLO)
    guest.receive_data(encode_frame(Start(run_id="r", tasks=("install",))))
    assert isinstance(guest.next_event(), Start)
    with pytest.raises(LocalProtocolError, match="not asked for"):
        guest.send(TaskStarted(task="test"))


def test_send_refuses_a_frame_over_the_cap() -> None:
    guest = Connection(Role.GUEST, max_frame_size=128)
    guest.send(HELLO)
    with pytest.raises(LocalProtocolError, match="exceeds"):
        guest.send(Goodbye(reason="x" * 200))


def test_send_refuses_non_messages() -> None:
    guest = Connection(Role.GUEST)
    with pytest.raises(LocalProtocolError):
        guest.send(UnknownMessage(type="x", size=1))  # type: ignore[arg-type]


def test_max_frame_size_must_be_sane() -> None:
    with pytest.raises(ValueError):
        Connection(Role.HOST, max_frame_size=1 << 32)
    with pytest.raises(ValueError):
        Connection(Role.HOST, max_frame_size=0)
