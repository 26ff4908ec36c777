"""Mutation fuzzing of the codec: any exception other than ProtocolError is a bug.

    uv run --frozen python bench/fuzz_codec.py [--count N] [--seed S]

A plain loop (Hypothesis is too slow for a million inputs): take a valid guest stream
or frame from a seeded corpus, mutate it (bit flips, random and "interesting" bytes,
inserts, deletes, truncation, duplicated spans, edited length headers, CBOR headers
that claim huge or odd items), feed it to a host `Connection` (answering Hello with
Start, so the later state checks run too) and drain it. Reports executions per second.
On a failure it prints the input as hex and the traceback, and exits 1.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pyti.protocol import (
    CLOSED,
    NEED_DATA,
    PROTOCOL_VERSION,
    Connection,
    Finding,
    Goodbye,
    Heartbeat,
    Hello,
    Message,
    Metadata,
    Output,
    ProtocolError,
    Role,
    Start,
    TaskFinished,
    TaskStarted,
    TestResult,
)
from pyti.protocol.codec import decode_body, encode_wire

START = Start(run_id="fuzz", tasks=("metadata", "install", "test"))
HELLO = Hello(protocol_version=PROTOCOL_VERSION, agent_version="0.1", python_version="3.11.2",
              image_id="img", boot_id="boot")  # fmt: skip

# Initial bytes that make CBOR decoders work hard or misbehave: huge definite lengths,
# tags, indefinite lengths, breaks, undefined, floats, reserved values.
INTERESTING = bytes([0x9B, 0xBB, 0x5B, 0x7B, 0x9A, 0xBA, 0x5A, 0x7A, 0xC1, 0xC2, 0xD8, 0xD9,
                     0xDB, 0x9F, 0xBF, 0x5F, 0x7F, 0xFF, 0xF7, 0xF9, 0xFB, 0x1C, 0x00, 0x80,
                     0xA0, 0x60, 0x40, 0x17, 0x18, 0x3B])  # fmt: skip
HEADER_VALUES = (0, 1, 2, 3, 4, 0x7F, 0x80, 0xFFFF, 1 << 20, (1 << 20) + 1, 0x7FFFFFFF,
                 0xFFFFFFFF)  # fmt: skip


def conversation() -> list[Message]:
    return [
        HELLO,
        Heartbeat(seq=0),
        TaskStarted(task="metadata"),
        Metadata(name="pkg", version="1.0", metadata=b"Metadata-Version: 2.1\nName: pkg\n"),
        TaskFinished(task="metadata", outcome="passed", exit_code=0, duration=0.5),
        TaskStarted(task="test"),
        Output(task="test", stream="stdout", data=b"collected 2 items\n"),
        TestResult(nodeid="t.py::test_a", outcome="passed", duration=0.01),
        TestResult(nodeid="t.py::test_b[x]", outcome="failed", duration=1.5, report="E  assert"),
        Finding(kind="network", detail="connect 10.0.2.2:80 refused", task="test"),
        TaskFinished(task="test", outcome="failed", exit_code=1, duration=2.0,
                     counts={"passed": 1, "failed": 1}),
        Goodbye(),
    ]  # fmt: skip


def corpus() -> list[bytes]:
    """Seeds: the whole stream, each prefix-valid stream, and odd but valid frames."""
    guest = Connection(Role.GUEST)
    frames = [guest.send(HELLO)]
    host = Connection(Role.HOST)
    host.receive_data(frames[0])
    host.next_event()
    guest.receive_data(host.send(START))
    guest.next_event()
    frames += [guest.send(m) for m in conversation()[1:]]
    seeds = [b"".join(frames[: i + 1]) for i in range(len(frames))]
    seeds.append(frames[0] + encode_wire({"type": "telemetry", "values": [1, 2.5, None, True]}))
    seeds.append(frames[0] + encode_wire({"type": "heartbeat", "seq": 1, "extra": {"a": b"x"}}))
    return seeds


def _flip(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data))
    data[at] ^= 1 << rng.randrange(8)


def _set_byte(rng: random.Random, data: bytearray) -> None:
    data[rng.randrange(len(data))] = rng.randrange(256)


def _interesting(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data))
    data[at : at + 1] = bytes([rng.choice(INTERESTING)]) + b"\xff" * rng.choice((0, 1, 2, 4, 8))


def _insert(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data) + 1)
    data[at:at] = rng.randbytes(rng.randrange(1, 9))


def _delete(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data))
    del data[at : at + rng.randrange(1, 9)]


def _truncate(rng: random.Random, data: bytearray) -> None:
    del data[rng.randrange(len(data)) :]


def _duplicate(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data))
    span = data[at : at + rng.randrange(1, 64)]
    where = rng.randrange(len(data) + 1)
    data[where:where] = span


def _length_header(rng: random.Random, data: bytearray) -> None:
    """Rewrite the 4-byte length of the frame that starts at a random frame boundary."""
    starts = []
    pos = 0
    while pos + 4 <= len(data) and len(starts) < 64:
        starts.append(pos)
        pos += 4 + struct.unpack_from(">I", data, pos)[0]
    if not starts:
        return
    at = rng.choice(starts)
    (old,) = struct.unpack_from(">I", data, at)
    value = rng.choice((*HEADER_VALUES, old - 1, old + 1, old * 2)) & 0xFFFFFFFF
    struct.pack_into(">I", data, at, value)


MUTATORS: tuple[Callable[[random.Random, bytearray], None], ...] = (
    _flip, _set_byte, _interesting, _interesting, _insert, _delete, _truncate, _duplicate,
    _length_header, _length_header,
)  # fmt: skip


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        if not data:
            break
        rng.choice(MUTATORS)(rng, data)
    return bytes(data)


def feed(data: bytes, rng: random.Random) -> str:
    """Run one input through a host Connection; returns how it ended."""
    host = Connection(Role.HOST, max_frame_size=1 << 16)
    if rng.random() < 0.5:
        host.receive_data(data)
    else:  # split at random points: chunking must not matter
        pos = 0
        while pos < len(data):
            step = rng.randrange(1, 64)
            host.receive_data(data[pos : pos + step])
            pos += step
    host.receive_data(b"")
    try:
        while (event := host.next_event()) not in (NEED_DATA, CLOSED):
            if isinstance(event, Hello):
                host.send(START)
    except ProtocolError:
        return "protocol-error"
    return "closed"


def feed_body(data: bytes) -> str:
    """The CBOR layer alone: a frame body straight into the scan, cbor2 and validation."""
    try:
        decode_body(data[4:] if len(data) > 4 else data)
    except ProtocolError:
        return "protocol-error"
    return "decoded"


@dataclass
class FuzzReport:
    count: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    failure: str | None = None

    @property
    def execs_per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def fuzz(count: int, seed: int = 0) -> FuzzReport:
    rng = random.Random(seed)
    seeds = corpus()
    report = FuzzReport()
    start = time.perf_counter()
    for i in range(count):
        data = mutate(rng, rng.choice(seeds))
        try:
            outcome = feed(data, rng) if i % 2 else feed_body(data)
        except Exception:
            report.failure = f"input #{i} (seed {seed}): {data.hex()}\n{traceback.format_exc()}"
            break
        report.outcomes[outcome] += 1
        report.count += 1
    report.seconds = time.perf_counter() - start
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = fuzz(args.count, args.seed)
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(report.outcomes.items()))
    print(
        f"{report.count:,} inputs in {report.seconds:.1f} s = "
        f"{report.execs_per_second:,.0f} execs/s ({outcomes})"
    )
    if report.failure:
        print(f"FAILURE (an exception other than ProtocolError) at {report.failure}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
