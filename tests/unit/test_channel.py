"""GuestChannel over trio memory streams; timers run on the autojump clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from pyti.channel import ChannelEnd, ChannelLimits, EndKind, GuestChannel
from pyti.errors import EnvironmentProblem, GuestCrashed, GuestLimitExceeded, GuestProtocolError
from pyti.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Connection,
    Goodbye,
    Heartbeat,
    Hello,
    Message,
    Output,
    Role,
    Start,
    TaskFinished,
    TaskStarted,
    TestResult,
)
from pyti.protocol.codec import encode_wire

HELLO = Hello(protocol_version=PROTOCOL_VERSION, agent_version="a", python_version="3.11",
              image_id="i", boot_id="b")  # fmt: skip
START = Start(run_id="r", tasks=("test",))


class FakeGuest:
    """The guest's side: its own Connection, writing frames to the memory stream."""

    def __init__(self, stream: trio.testing.MemorySendStream | trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = Connection(Role.GUEST)

    async def send(self, *messages: Message) -> None:
        await self.stream.send_all(b"".join(self.conn.send(m) for m in messages))

    async def raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def expect_start(self) -> Message:
        """Read the host's Start, so the guest may send task messages."""
        while True:
            event = self.conn.next_event()
            if isinstance(event, Message):
                return event
            self.conn.receive_data(await self.stream.receive_some(65536))  # type: ignore[union-attr]


GuestScript = Callable[[FakeGuest], Awaitable[None]]


async def run_channel(
    script: GuestScript, limits: ChannelLimits | None = None, *, start: bool = True
) -> tuple[list[Message], GuestChannel]:
    guest_stream, host_stream = trio.testing.memory_stream_pair()
    channel = GuestChannel(host_stream, limits)
    got: list[Message] = []
    # A fail-safe in (virtual) time: a broken timer must fail the test, not hang it.
    with trio.fail_after(3600):
        await _drive(script, channel, got, start=start, guest_stream=guest_stream)
    return got, channel


async def _drive(
    script: GuestScript,
    channel: GuestChannel,
    got: list[Message],
    *,
    start: bool,
    guest_stream: trio.abc.Stream,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(script, FakeGuest(guest_stream))
        async for message in channel:
            got.append(message)
            if start and isinstance(message, Hello):
                await channel.send(START)
        nursery.cancel_scope.cancel()  # the guest script may still be waiting


def the_end(channel: GuestChannel) -> ChannelEnd:
    assert channel.end is not None
    return channel.end


async def test_a_clean_run_ends_with_goodbye_and_keeps_output() -> None:
    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO)
        assert await g.expect_start() == START
        await g.send(
            TaskStarted(task="test"),
            Output(task="test", stream="stdout", data=b"collected 1 item\n"),
            TestResult(nodeid="t.py::test_a", outcome="passed", duration=0.1),
            Output(task="test", stream="stdout", data=b"1 passed\n"),
            TaskFinished(task="test", outcome="passed", exit_code=0, duration=1.0),
            Goodbye(),
        )

    got, channel = await run_channel(guest)
    assert [type(m).__name__ for m in got] == [
        "Hello", "TaskStarted", "Output", "TestResult", "Output", "TaskFinished", "Goodbye"
    ]  # fmt: skip
    end = the_end(channel)
    assert end == ChannelEnd(kind=EndKind.GOODBYE, detail="done")
    assert end.clean and bool(end) and end.error() is None
    assert channel.output("test", "stdout") == b"collected 1 item\n1 passed\n"
    assert channel.output("test", "stderr") == b""
    assert await channel.receive() is None
    assert not await channel.send(Cancel(reason="late"))


async def test_frames_after_goodbye_are_not_read() -> None:
    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO, Goodbye(reason="no setup disk"))
        await g.raw(b"\x00\x00\x00\x00")  # would be a protocol error if read

    got, channel = await run_channel(guest)
    assert the_end(channel) == ChannelEnd(kind=EndKind.GOODBYE, detail="no setup disk")
    assert got[-1] == Goodbye(reason="no setup disk")


async def test_eof_without_goodbye() -> None:
    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO)
        await g.stream.aclose()

    _, channel = await run_channel(guest)
    end = the_end(channel)
    assert end.kind is EndKind.EOF
    assert isinstance(end.error(), GuestCrashed)


async def test_garbage_is_a_protocol_error_end_not_an_exception() -> None:
    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO)
        await g.raw(b"\x00\x00\x00\x03\xc1\x00\x00")

    got, channel = await run_channel(guest)
    assert got == [HELLO]
    end = the_end(channel)
    assert end.kind is EndKind.PROTOCOL_ERROR
    assert isinstance(end.error(), GuestProtocolError)


async def test_a_frame_over_the_cap_is_a_protocol_error() -> None:
    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO)
        await g.raw((1025).to_bytes(4, "big"))

    _, channel = await run_channel(guest, ChannelLimits(max_frame_size=1024))
    assert the_end(channel).kind is EndKind.PROTOCOL_ERROR
    assert "exceeds" in the_end(channel).detail


async def test_version_mismatch_is_its_own_end() -> None:
    async def guest(g: FakeGuest) -> None:
        await g.raw(encode_wire({"type": "hello", "protocol_version": PROTOCOL_VERSION + 1}))

    got, channel = await run_channel(guest)
    assert got == []
    end = the_end(channel)
    assert end.kind is EndKind.VERSION_MISMATCH
    assert isinstance(end.error(), EnvironmentProblem)
    assert "rebuild the image" in str(end.error())


async def test_silence_ends_the_channel_after_the_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO)
        await trio.sleep_forever()

    t0 = trio.current_time()
    _, channel = await run_channel(guest)
    assert the_end(channel).kind is EndKind.SILENCE
    assert trio.current_time() - t0 == pytest.approx(60.0)
    assert isinstance(the_end(channel).error(), GuestCrashed)


async def test_accel_factor_scales_the_timers(autojump_clock: trio.abc.Clock) -> None:
    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO)
        await trio.sleep_forever()

    t0 = trio.current_time()
    _, channel = await run_channel(guest, ChannelLimits(accel_factor=3.0))
    assert the_end(channel).kind is EndKind.SILENCE
    assert trio.current_time() - t0 == pytest.approx(180.0)


async def heartbeating(g: FakeGuest, *, output_at: float | None = None) -> None:
    await g.send(HELLO)
    await g.expect_start()
    await g.send(TaskStarted(task="test"))
    t0 = trio.current_time()
    seq = 0
    while True:
        await trio.sleep(5)
        seq += 1
        await g.send(Heartbeat(seq=seq))
        if output_at is not None and trio.current_time() - t0 >= output_at:
            await g.send(Output(task="test", stream="stdout", data=b"."))
            output_at = None


async def test_heartbeats_keep_silence_away_but_not_no_progress(
    autojump_clock: trio.abc.Clock,
) -> None:
    t0 = trio.current_time()
    got, channel = await run_channel(heartbeating)
    assert the_end(channel).kind is EndKind.NO_PROGRESS
    assert isinstance(the_end(channel).error(), GuestLimitExceeded)
    # Progress last came with TaskStarted at t0; no-progress is 300 s after it.
    assert trio.current_time() - t0 == pytest.approx(300.0)
    assert channel.heartbeats == sum(isinstance(m, Heartbeat) for m in got) >= 59


async def test_output_resets_the_no_progress_timer(autojump_clock: trio.abc.Clock) -> None:
    async def guest(g: FakeGuest) -> None:
        await heartbeating(g, output_at=200)

    t0 = trio.current_time()
    _, channel = await run_channel(guest)
    assert the_end(channel).kind is EndKind.NO_PROGRESS
    assert trio.current_time() - t0 == pytest.approx(500.0)


async def test_token_bucket_allows_the_burst_exactly(autojump_clock: trio.abc.Clock) -> None:
    limits = ChannelLimits(frames_per_second=1.0, burst=10)

    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO, *(Heartbeat(seq=i) for i in range(9)))  # 10 frames: the burst
        await trio.sleep(1.0)  # one token back
        await g.send(Heartbeat(seq=9), Goodbye())  # the second frame has no token

    got, channel = await run_channel(guest, limits)
    assert the_end(channel).kind is EndKind.LIMIT_EXCEEDED
    assert got[-1] == Heartbeat(seq=9)


async def test_token_bucket_refills_at_the_rate(autojump_clock: trio.abc.Clock) -> None:
    limits = ChannelLimits(frames_per_second=1.0, burst=10)

    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO, *(Heartbeat(seq=i) for i in range(9)))
        await trio.sleep(2.0)
        await g.send(Heartbeat(seq=9), Goodbye())

    _, channel = await run_channel(guest, limits)
    assert the_end(channel).kind is EndKind.GOODBYE


@pytest.mark.parametrize(("extra", "kind"), [(0, EndKind.GOODBYE), (1, EndKind.LIMIT_EXCEEDED)])
async def test_total_bytes_limit_at_the_edge(extra: int, kind: EndKind) -> None:
    frames = Connection(Role.GUEST)
    total = len(frames.send(HELLO)) + len(frames.send(Goodbye()))

    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO)
        await g.send(Goodbye())

    _, channel = await run_channel(guest, ChannelLimits(max_total_bytes=total - extra))
    assert the_end(channel).kind is kind


@pytest.mark.parametrize(("count", "kind"), [(3, EndKind.GOODBYE), (4, EndKind.LIMIT_EXCEEDED)])
async def test_unknown_frames_are_skipped_up_to_the_limit(count: int, kind: EndKind) -> None:
    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO)
        for _ in range(count):
            await g.raw(encode_wire({"type": "telemetry", "load": 1.5}))
        await g.send(Goodbye())

    got, channel = await run_channel(guest, ChannelLimits(max_unknown=3))
    assert the_end(channel).kind is kind
    assert all(not isinstance(m, dict) for m in got)
    assert channel.unknown == count


async def test_output_is_capped_per_task_and_stream() -> None:
    limits = ChannelLimits(output_head=4, output_tail=3)

    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO)
        await g.expect_start()
        await g.send(TaskStarted(task="test"))
        for chunk in (b"0123", b"4567", b"89ab"):
            await g.send(Output(task="test", stream="stderr", data=chunk))
        await g.send(Goodbye())

    _, channel = await run_channel(guest, limits)
    assert channel.output("test", "stderr") == b"0123\n[... 5 bytes omitted ...]\n9ab"
    assert channel.outputs[("test", "stderr")].total == 12


async def test_the_guest_receives_start_from_the_channel() -> None:
    seen: list[Message] = []

    async def guest(g: FakeGuest) -> None:
        await g.send(HELLO)
        seen.append(await g.expect_start())
        await g.send(Goodbye())

    await run_channel(guest)
    assert seen == [START]


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        ChannelLimits(accel_factor=0)
    with pytest.raises(ValueError):
        ChannelLimits(burst=0)
    assert ChannelLimits(accel_factor=2.0).silence == 120.0
    assert ChannelLimits(accel_factor=2.0).no_progress == 600.0


async def test_a_slow_consumer_is_not_mistaken_for_a_silent_guest(
    autojump_clock: trio.abc.Clock,
) -> None:
    guest_stream, host_stream = trio.testing.memory_stream_pair()
    channel = GuestChannel(host_stream)
    guest = FakeGuest(guest_stream)
    await guest.send(HELLO)
    assert await channel.receive() == HELLO
    await guest.send(Heartbeat(seq=1))  # waits in the stream, not yet read
    await trio.sleep(120)  # the host was busy, past the silence deadline
    assert await channel.receive() == Heartbeat(seq=1)
    assert channel.end is None
