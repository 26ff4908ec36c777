"""Codec throughput on one core: TestResult frames and 64 KiB Output frames.

    uv run --frozen python bench/bench_codec.py [--seconds S] [--check]

encode = the guest's `Connection.send` (state checks, CBOR, header) of prepared messages;
decode = the host's `Connection.receive_data` in 64 KiB reads plus `next_event` until
NEED_DATA (header and cap check, the CBOR safety scan, cbor2, validation, state checks).
The two run on different machines (guest and host), so each must beat the target alone.
Targets (issue 3): 100,000 TestResult frames/s and 500 MB/s of Output frames.
`--check` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
import types
from collections.abc import Callable

import cbor2

from pyti.protocol import (
    NEED_DATA,
    Connection,
    Hello,
    Message,
    Output,
    Role,
    Start,
    TaskStarted,
    TestResult,
)

READ_SIZE = 64 * 1024
HELLO = Hello(protocol_version=1, agent_version="0.1.0", python_version="3.11.2",
              image_id="bookworm-0123456789ab", boot_id="3f2c9a7e-5b1d-4c8e-9f00")  # fmt: skip


def guest_in_task() -> tuple[Connection, bytes]:
    """A guest connection inside the "test" task, and the bytes that got it there."""
    guest = Connection(Role.GUEST)
    host = Connection(Role.HOST)
    head = guest.send(HELLO)
    host.receive_data(head)
    host.next_event()
    guest.receive_data(host.send(Start(run_id="bench", tasks=("test",))))
    guest.next_event()
    head += guest.send(TaskStarted(task="test"))
    return guest, head


def test_results(n: int) -> list[Message]:
    return [
        TestResult(nodeid=f"tests/test_module.py::TestClass::test_case[param-{i}]",
                   outcome="passed" if i % 10 else "failed", duration=0.001 * (i % 97),
                   report="" if i % 10 else "assert 1 == 2\n  where 1 = f()")
        for i in range(n)
    ]  # fmt: skip


def outputs(n: int) -> list[Message]:
    chunk = bytes(range(256)) * 256  # 64 KiB
    return [Output(task="test", stream="stdout", data=chunk) for _ in range(n)]


def timed(fn: Callable[[], int], seconds: float) -> tuple[int, float]:
    """Repeat `fn` (which returns its item count) for about `seconds`; (items, CPU seconds).

    CPU time of this thread, not wall time: the figure is per CPU-second of one core,
    and other jobs on a shared host do not halve it.
    """
    fn()  # warm up
    items = 0
    start = time.thread_time()
    while (elapsed := time.thread_time() - start) < seconds:
        items += fn()
    return items, elapsed


def bench_encode(batch: list[Message], seconds: float) -> tuple[int, float, int]:
    guest, _ = guest_in_task()
    size = len(b"".join(guest.send(m) for m in batch))

    def run() -> int:
        for message in batch:
            guest.send(message)
        return len(batch)

    items, elapsed = timed(run, seconds)
    return items, elapsed, size * items // len(batch)


def bench_decode(batch: list[Message], seconds: float) -> tuple[int, float, int]:
    guest, head = guest_in_task()
    stream = b"".join(guest.send(m) for m in batch)
    reads = [stream[i : i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]
    host = Connection(Role.HOST)
    host.receive_data(head[: len(head)])
    while host.next_event() is not NEED_DATA:
        if host.hello is not None and host.start is None:
            host.send(Start(run_id="bench", tasks=("test",)))

    def run() -> int:
        got = 0
        for data in reads:
            host.receive_data(data)
            while host.next_event() is not NEED_DATA:
                got += 1
        assert got == len(batch), got
        return got

    items, elapsed = timed(run, seconds)
    return items, elapsed, len(stream) * items // len(batch)


def cbor2_flavour() -> str:
    pure = isinstance(cbor2.loads, types.FunctionType)
    return f"cbor2 {importlib.metadata.version('cbor2')} ({'pure Python' if pure else 'native'})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU s per case (default 2)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    print(
        f"Python {sys.version.split()[0]}, {cbor2_flavour()}, one core, "
        f"{args.seconds:g} CPU-s per case, load average {os.getloadavg()[0]:.1f}"
    )
    cases = [
        ("TestResult", "encode", bench_encode, test_results(1000), 100_000, "frames/s"),
        ("TestResult", "decode", bench_decode, test_results(1000), 100_000, "frames/s"),
        ("Output 64 KiB", "encode", bench_encode, outputs(32), 500e6, "B/s"),
        ("Output 64 KiB", "decode", bench_decode, outputs(32), 500e6, "B/s"),
    ]
    columns = f"| {'frame':<13} | {'side':<6} | {'frames/s':>10} | {'MB/s':>8} | {'us/frame':>8}"
    print(f"{columns} | target |")
    print(f"|{'-' * 15}|{'-' * 8}|{'-' * 12}|{'-' * 10}|{'-' * 10}|--------|")
    missed = []
    for frame, side, fn, batch, target, unit in cases:
        items, elapsed, size = fn(batch, args.seconds)
        rate = items / elapsed
        mbps = size / elapsed
        value = rate if unit == "frames/s" else mbps
        ok = value >= target
        shown = f"{target / 1e3:.0f}k/s" if unit == "frames/s" else f"{target / 1e6:.0f}MB/s"
        print(
            f"| {frame:<13} | {side:<6} | {rate:>10,.0f} | {mbps / 1e6:>8,.0f} | "
            f"{1e6 / rate:>8.2f} | {'ok' if ok else 'MISS'} {shown} |"
        )
        if not ok:
            missed.append(f"{frame} {side}")
    if missed and args.check:
        print(f"missed: {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
