"""VM lifecycle: start to READY, host memory per VM, guest-to-host throughput.

    python bench/bench_machine.py [--boots 3] [--mib 100] [--runs 2] [--tb-size 64 16]

- start -> READY: host wall time from `Machine.run` (VM dir, QEMU spawn, QMP, `cont`) to the
  agent's Hello decoded by `pyti.channel.GuestChannel` (bookworm image, -accel tcg).
- RSS at READY: QEMU's VmRSS from /proc, with -m 512M, cold and resumed from a snapshot
  (pyti.snapshot), for QEMU's default TCG translation
  buffer and for `tb-size` (MiB); plus this host process's own RSS (pyti's share).
- throughput: the guest `cat`s a file of prepared CBOR frames (Hello, Start-ed task,
  64 KiB Output frames, Goodbye) from a squashfs disk into the virtserialport; the host
  decodes it with `GuestChannel` (codec, limits, output cap). The guest side is busybox, not
  the agent (the agent has no bulk mode), so this is the port plus the host's decode path.
  The same with raw bytes (`dd` of zeros, host only counts) gives the port alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from pyti import snapshot
from pyti.channel import ChannelLimits, GuestChannel
from pyti.deadlines import Deadlines
from pyti.image import ensure_image
from pyti.machine import End, Machine, MachineConfig
from pyti.protocol import (
    PROTOCOL_VERSION,
    Connection,
    Goodbye,
    Hello,
    Output,
    Role,
    Start,
    TaskFinished,
    TaskStarted,
)

CHUNK = 64 * 1024 - 64  # Output data per frame: a frame stays under 64 KiB
RSS_TARGET_MB = 150
THROUGHPUT_TARGET = 150e6

# PID 1 is the initramfs's busybox: mount, load the modules, send a file, then idle (powering
# off at once could drop bytes still queued in the port; the host stops the VM when done).
# (The kernel hands the words after "--" to init; quotes keep the script one argument.)
GUEST_SCRIPT = (
    "/bin/busybox --install -s /bin; mount -t proc p /proc; mount -t sysfs s /sys; "
    "mount -t devtmpfs d /dev; while read m; do insmod /lib/modules/$m; done "
    "< /lib/modules/load.order; while [ ! -e /dev/vport0p1 ] || [ ! -b /dev/vdb ]; "
    "do usleep 10000; done; mkdir /m; mount -t squashfs -o ro /dev/vdb /m; {send}; "
    "sleep 100000"
)
# Copied to a tmpfs first (reading the disk under TCG would be timed too), then written in
# 64 KiB writes like the agent's frames (busybox cat writes 4 KiB at a time: ~half the rate).
SEND_FRAMES = (
    "mkdir /t; mount -t tmpfs -o size=300m t /t; cp /m/frames.bin /t/; echo go > /dev/console; "
    "dd if=/t/frames.bin of=/dev/vport0p1 bs=64k 2>/dev/null"
)
SEND_RAW = "dd if=/dev/zero of=/dev/vport0p1 bs=64k count={count} 2>/dev/null"


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """From /proc/PID/status: VmRSS (all), RssAnon (this VM's own), RssFile (shareable)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def frames_file(path: Path, mib: int) -> int:
    """Write what an agent streaming `mib` MiB of test output would send; return its size."""
    host, guest = Connection(Role.HOST), Connection(Role.GUEST)
    hello = Hello(
        protocol_version=PROTOCOL_VERSION,
        agent_version="bench",
        python_version="3.11.2",
        image_id="bench",
        boot_id="bench",
    )
    data = os.urandom(CHUNK)
    with path.open("wb") as out:
        frame = guest.send(hello)
        out.write(frame)
        host.receive_data(frame)
        host.next_event()
        guest.receive_data(host.send(Start(run_id="bench", tasks=("test",))))
        guest.next_event()
        out.write(guest.send(TaskStarted(task="test")))
        for _ in range(mib * 1024 * 1024 // CHUNK):
            out.write(guest.send(Output(task="test", stream="stdout", data=data)))
        finished = TaskFinished(task="test", outcome="passed", exit_code=0, duration=1.0)
        out.write(guest.send(finished))
        out.write(guest.send(Goodbye()))
    return path.stat().st_size


def squashfs(source: Path, target: Path) -> Path:
    argv = ["mksquashfs", str(source), str(target), "-noappend", "-comp", "lz4", "-quiet"]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return target


def bench_config(image: Any, **changes: Any) -> MachineConfig:
    deadlines = Deadlines(boot=60, soft_stop=0.1)  # the bench guests ignore ACPI power-off
    base: dict[str, Any] = {"memory_mb": 512, "accel": "tcg", "deadlines": deadlines}
    return MachineConfig.from_image(image, **(base | changes))


async def boot_to_ready(
    image: Any, tb_size: int | None, resume: bool = False
) -> tuple[float, float, float, float]:
    """Seconds to READY, QEMU's RSS and RssAnon at READY (MB), this process's RSS (MB).

    `resume`: from the shape's saved VM (pyti.snapshot, made first if missing), as runs do.
    """
    config = bench_config(image, tb_size_mb=tb_size)
    if resume:
        saved = await snapshot.ensure(config)
        assert saved is not None, "no snapshot could be made"
        config = dataclasses.replace(config, restore=saved)
    async with trio.open_nursery() as nursery:
        machine = Machine(config)
        await nursery.start(machine.run)
        channel = GuestChannel(machine.port, ChannelLimits(accel_factor=4))
        message = await channel.receive()
        assert isinstance(message, Hello), (message, channel.end)
        machine.mark_ready()
        assert machine.pid is not None and machine._started_at is not None
        ready = trio.current_time() - machine._started_at
        qemu_rss = rss_mb(machine.pid)
        qemu_anon = rss_mb(machine.pid, "RssAnon")
        own_rss = rss_mb(os.getpid())
        await channel.send(snapshot.fresh_start("bench", ()))
        machine.mark_running()
        async for _ in channel:
            pass
        await machine.shutdown()
    return ready, qemu_rss, qemu_anon, own_rss


async def throughput(image: Any, disk: Path, send: str, expect: int) -> tuple[float, float]:
    """(bytes/s from the first frame after Hello to Goodbye, QEMU peak RSS MB)."""
    script = GUEST_SCRIPT.format(send=send)
    config = bench_config(
        image, setup_disk=disk, extra_cmdline=f'rdinit=/bin/busybox -- sh -c "{script}"'
    )
    peak = 0.0
    async with trio.open_nursery() as nursery:
        machine = Machine(config)
        await nursery.start(machine.run)
        assert machine.pid is not None
        if send.startswith("dd"):
            first = None
            total = 0
            while total < expect:
                data = await machine.port.receive_some(1 << 16)
                if not data:
                    break
                if first is None:
                    first = time.perf_counter()
                total += len(data)
            elapsed = time.perf_counter() - (first or time.perf_counter())
            peak = rss_mb(machine.pid)
            await machine.shutdown(End.STOPPED, "benchmark done")
        else:
            limits = ChannelLimits(accel_factor=4, max_total_bytes=4 << 30)
            channel = GuestChannel(machine.port, limits)
            first = None
            total = 0
            async for message in channel:
                if isinstance(message, Hello):
                    await channel.send(Start(run_id="bench", tasks=("test",)))
                    first = time.perf_counter()
                elif isinstance(message, Output):
                    total += len(message.data)
            assert channel.end is not None and channel.end.kind == "goodbye", channel.end
            elapsed = time.perf_counter() - (first or time.perf_counter())
            peak = (
                rss_mb(machine.pid)
                if machine.pid and Path(f"/proc/{machine.pid}").exists()
                else peak
            )
        await machine.shutdown()
    return total / elapsed if elapsed > 0 else float("nan"), peak


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--tb-size", type=int, nargs="*", default=[64, 16])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    image = ensure_image("bookworm")
    print(f"image {image.name}, load average {os.getloadavg()[0]:.1f}")
    ok = True
    met_rss = False

    rows = [(False, None), (True, None), *((True, size) for size in args.tb_size)]
    for resume, tb_size in rows:
        readies, rsses, anons, owns = [], [], [], []
        for _ in range(args.boots):
            ready, qemu_rss, qemu_anon, own_rss = await boot_to_ready(image, tb_size, resume)
            readies.append(ready)
            rsses.append(qemu_rss)
            anons.append(qemu_anon)
            owns.append(own_rss)
        label = f"tb-size={tb_size}" if tb_size else "tb-size default"
        label += ", resumed from a snapshot" if resume else ", cold boot"
        print(
            f"start->READY ({label}, -m 512M, {args.boots} boots): min {min(readies):.2f} s, "
            f"median {statistics.median(readies):.2f} s; QEMU RSS at READY: median "
            f"{statistics.median(rsses):.0f} MB (max {max(rsses):.0f}), of it anonymous "
            f"{statistics.median(anons):.0f} MB; "
            f"host process RSS {statistics.median(owns):.0f} MB"
        )
        if statistics.median(rsses) <= RSS_TARGET_MB:
            met_rss = True

    if not met_rss:
        print(f"RSS target <= {RSS_TARGET_MB} MB at READY: NOT met")
        ok = False
    with tempfile.TemporaryDirectory(prefix="pyti-bench-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        size = frames_file(src / "frames.bin", args.mib)
        disk = squashfs(src, Path(tmp) / "frames.sqfs")
        payload = args.mib * 1024 * 1024 // CHUNK * CHUNK
        rates, raw_rates, peaks = [], [], []
        for _ in range(args.runs):
            rate, peak = await throughput(image, disk, SEND_FRAMES, size)
            rates.append(rate)
            peaks.append(peak)
            count = args.mib * 16
            rate, _ = await throughput(image, disk, SEND_RAW.format(count=count), count << 16)
            raw_rates.append(rate)
        print(
            f"guest->host through codec+channel ({payload / 1e6:.0f} MB of Output data in "
            f"{size / 1e6:.0f} MB of frames): min {min(rates) / 1e6:.0f} MB/s, median "
            f"{statistics.median(rates) / 1e6:.0f} MB/s (target >= "
            f"{THROUGHPUT_TARGET / 1e6:.0f}); QEMU RSS after: {max(peaks):.0f} MB"
        )
        print(
            f"guest->host raw port (dd of {args.mib} MiB, host only counts): median "
            f"{statistics.median(raw_rates) / 1e6:.0f} MB/s"
        )
        if statistics.median(rates) < THROUGHPUT_TARGET:
            ok = False
    print("targets met" if ok else "targets NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
