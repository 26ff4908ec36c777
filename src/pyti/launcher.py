"""Booting an image for its own sake: to Hello and back (image tests, the boot benchmark).

A thin layer over `pyti.machine`: the same hardened VM lifecycle `pyti run` uses (QMP,
classified ends, capped console, no orphans), with a conversation that only reads
Hello, sends an empty Start and waits for Goodbye; or, for benchmarks and debugging,
a guest script run in place of the agent.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trio

from pyti import accel, snapshot
from pyti.deadlines import Deadlines
from pyti.errors import GuestCrashed, QemuFailed
from pyti.image import Image
from pyti.machine import End, Machine, MachineConfig, open_machine
from pyti.protocol import CLOSED, NEED_DATA, Connection, Goodbye, Hello, Role

log = logging.getLogger(__name__)

SCRATCH_MB = 2048  # sparse: costs only what the guest writes
T = TypeVar("T")
Conversation = Callable[[Machine], Awaitable[T]]


@dataclass(frozen=True)
class BootResult:
    hello: Hello
    seconds_to_hello: float  # QEMU start -> Hello decoded on the host
    cpu_to_hello: float | None  # QEMU's CPU seconds (user + system) by then: load-independent
    seconds_total: float  # QEMU start -> QEMU exited after Goodbye
    goodbye: Goodbye | None
    console: bytes
    restored: bool = False  # resumed from a snapshot (pyti.snapshot) instead of booted


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used (from /proc), None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run_vm(
    image: Image,
    conversation: Conversation[T],
    *,
    setup_disk: Path | None,
    memory_mb: int,
    extra_cmdline: str,
    timeout: float,
    snapshots: bool = False,
) -> tuple[T, float, bytes, bool]:
    """Run one VM until it powers off: (what `conversation` returned, seconds, console,
    whether it was resumed from a snapshot)."""
    chosen = accel.choose("auto", kernel=image.kernel, initrd=image.initrd)
    config = MachineConfig.from_image(
        image,
        setup_disk=setup_disk,
        accel=chosen.accel,
        memory_mb=memory_mb,
        scratch_mb=SCRATCH_MB,
        extra_cmdline=extra_cmdline,
        deadlines=Deadlines(boot=timeout, total=timeout),
        name="boot",
    )
    if snapshots:
        config = dataclasses.replace(config, restore=await snapshot.ensure(config))
    with trio.move_on_after(timeout) as scope:
        async with open_machine(config) as machine:
            result = await conversation(machine)
    ended = machine.result
    if scope.cancelled_caught or ended is None:
        raise GuestCrashed(f"the guest did not finish within {timeout} s")
    if ended.end is End.QEMU_CRASH:
        raise QemuFailed(ended.detail, returncode=ended.returncode, log=ended.log_path)
    if ended.end is not End.NORMAL:
        tail = ended.console[-2000:]
        raise GuestCrashed(f"the guest ended {ended.end.value}: {ended.detail}; console: {tail}")
    return result, ended.wall_seconds, ended.console.encode(), ended.restored


async def boot_to_hello(
    image: Image,
    *,
    setup_disk: Path | None = None,
    memory_mb: int = 512,
    timeout: float = 60.0,
    trace: bool = False,
    snapshots: bool = False,
) -> BootResult:
    """Boot `image`, read Hello, send an empty Start, and wait for Goodbye and power-off.

    `trace` adds pyti.trace to the kernel command line: /init and the agent then write
    their guest uptime at each step to the console (see BootResult.console). `snapshots`
    resumes the shape's saved VM instead (made first if missing), as `pyti run` does.
    """
    started = time.monotonic()

    async def conversation(machine: Machine) -> tuple[Hello, float, float | None, Goodbye | None]:
        return await _hello_then_goodbye(machine, started)

    (hello, at_hello, cpu, goodbye), total, console, restored = await _run_vm(
        image,
        conversation,
        setup_disk=setup_disk,
        memory_mb=memory_mb,
        extra_cmdline="pyti.trace" if trace else "",
        timeout=timeout,
        snapshots=snapshots,
    )
    return BootResult(hello, at_hello, cpu, total, goodbye, console, restored)


async def run_script(
    image: Image,
    script: str,
    *,
    setup_disk: Path | None = None,
    memory_mb: int = 512,
    timeout: float = 600.0,
) -> bytes:
    """Boot `image` with the guest path `script` run as root in place of the agent (for
    benchmarks and debugging); return the console output once the guest powered off."""
    if not script.startswith("/") or any(c.isspace() for c in script):
        raise ValueError(f"script must be an absolute guest path without spaces: {script!r}")

    async def no_conversation(machine: Machine) -> None:
        machine.mark_ready()  # no agent will say Hello: the script is the guest's work

    _, _, console, _ = await _run_vm(
        image,
        no_conversation,
        setup_disk=setup_disk,
        memory_mb=memory_mb,
        extra_cmdline=f"pyti.exec={script}",
        timeout=timeout,
    )
    return console


async def _hello_then_goodbye(
    machine: Machine, started: float
) -> tuple[Hello, float, float | None, Goodbye | None]:
    stream = machine.port
    conn = Connection(Role.HOST)
    hello: Hello | None = None
    at_hello = 0.0
    cpu: float | None = None
    goodbye: Goodbye | None = None
    while goodbye is None:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
            continue
        if event is CLOSED:
            break
        if isinstance(event, Hello):
            hello, at_hello = event, time.monotonic() - started
            cpu = cpu_seconds(machine.pid) if machine.pid else None
            machine.mark_ready()
            start = snapshot.fresh_start(uuid.uuid4().hex, ())
            await stream.send_all(conn.send(start))
        elif isinstance(event, Goodbye):
            goodbye = event
            machine.session_complete()
    if hello is None:
        raise GuestCrashed("the guest closed its port before Hello")
    return hello, at_hello, cpu, goodbye
