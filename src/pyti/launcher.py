"""A minimal launcher: boot an image, read the agent's Hello, let it power off.

Enough to boot and test images (the image e2e tests, the boot benchmark). The VM
lifecycle (`pyti.machine`) hardens this: QMP, classified ends, caps, sandbox.
"""

from __future__ import annotations

import logging
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trio

from pyti.errors import GuestCrashed, MissingTool, QemuFailed
from pyti.hostdeps import install_line, which
from pyti.image import Image
from pyti.protocol import CLOSED, NEED_DATA, Connection, Goodbye, Hello, Role, Start
from pyti.qemu_argv import VmConfig, build_argv
from pyti.vmdir import VmDir

log = logging.getLogger(__name__)

SCRATCH_MB = 2048  # sparse: costs only what the guest writes
CONSOLE_CAP = 1 << 20
CONNECT_POLL = 0.005
T = TypeVar("T")


@dataclass(frozen=True)
class BootResult:
    hello: Hello
    seconds_to_hello: float  # QEMU start -> Hello decoded on the host
    cpu_to_hello: float | None  # QEMU's CPU seconds (user + system) by then: load-independent
    seconds_total: float  # QEMU start -> QEMU exited after Goodbye
    goodbye: Goodbye | None
    console: bytes


def make_scratch_disk(path: Path, size_mb: int = SCRATCH_MB) -> None:
    """A sparse file: the guest's /init makes it swap (docs/images.md), so no mkfs here."""
    with path.open("wb") as f:
        f.truncate(size_mb << 20)


async def _connect(path: Path, deadline: float) -> trio.SocketStream:
    while True:
        try:
            return await trio.open_unix_socket(str(path))
        except OSError:
            if trio.current_time() > deadline:
                raise
            await trio.sleep(CONNECT_POLL)


async def _drain_console(stream: trio.SocketStream, sink: bytearray) -> None:
    async with stream:
        try:
            while data := await stream.receive_some(65536):
                sink += data[: max(0, CONSOLE_CAP - len(sink))]
        except trio.BrokenResourceError:
            pass


Conversation = Callable[[VmConfig, float, int], Awaitable[T]]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (None once it is gone)."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
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
    exit_within: float = 10.0,
) -> tuple[T, float, bytes]:
    """Run one VM until it powers off: (what `conversation` returned, seconds, console)."""
    qemu = which("qemu-system-x86_64")
    if qemu is None:
        raise MissingTool("qemu-system-x86_64", install_line(["qemu-system-x86"]))
    with VmDir.create() as vmdir:
        scratch = vmdir.path / "scratch.img"
        make_scratch_disk(scratch)
        config = VmConfig(
            qemu=qemu,
            accel="tcg",
            memory_mb=memory_mb,
            cpus=1,
            kernel=image.kernel,
            initrd=image.initrd,
            cmdline=f"{image.cmdline} {extra_cmdline}".strip(),
            root_disk=image.root,
            setup_disk=setup_disk,
            scratch_disk=scratch,
            serial_socket=vmdir.socket("serial"),
            console_socket=vmdir.socket("console"),
            qmp_socket=vmdir.socket("qmp"),
            sandbox=False,
        )
        argv = build_argv(config)
        log.debug("starting %s", " ".join(argv))
        console = bytearray()
        started = time.monotonic()
        with (vmdir.path / "qemu.log").open("wb") as qemu_log, trio.move_on_after(timeout) as scope:
            async with trio.open_nursery() as nursery:
                process = await trio.lowlevel.open_process(
                    argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT
                )
                try:
                    console_stream = await _connect(config.console_socket, trio.current_time() + 10)
                    nursery.start_soon(_drain_console, console_stream, console)
                    result = await conversation(config, started, process.pid)
                    with trio.fail_after(exit_within):
                        await process.wait()
                    total = time.monotonic() - started
                finally:
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                nursery.cancel_scope.cancel()
        tail = bytes(console[-2000:]).decode("utf-8", "replace")
        if scope.cancelled_caught:
            raise GuestCrashed(f"the guest did not finish within {timeout} s; console ends: {tail}")
        if process.returncode != 0:
            raise QemuFailed(
                f"QEMU failed; console ends: {tail}", returncode=process.returncode, log=None
            )
        return result, total, bytes(console)


async def boot_to_hello(
    image: Image,
    *,
    setup_disk: Path | None = None,
    memory_mb: int = 512,
    timeout: float = 60.0,
    trace: bool = False,
) -> BootResult:
    """Boot `image`, read Hello, send an empty Start, and wait for Goodbye and power-off.

    `trace` adds pyti.trace to the kernel command line: /init and the agent then write
    their guest uptime at each step to the console (see BootResult.console).
    """
    (hello, at_hello, cpu, goodbye), total, console = await _run_vm(
        image,
        _hello_then_goodbye,
        setup_disk=setup_disk,
        memory_mb=memory_mb,
        extra_cmdline="pyti.trace" if trace else "",
        timeout=timeout,
    )
    return BootResult(hello, at_hello, cpu, total, goodbye, console)


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

    async def no_conversation(config: VmConfig, started: float, pid: int) -> None:
        return None

    _, _, console = await _run_vm(
        image,
        no_conversation,
        setup_disk=setup_disk,
        memory_mb=memory_mb,
        extra_cmdline=f"pyti.exec={script}",
        timeout=timeout,
        exit_within=timeout,
    )
    return console


async def _hello_then_goodbye(
    config: VmConfig, started: float, pid: int
) -> tuple[Hello, float, float | None, Goodbye | None]:
    stream = await _connect(config.serial_socket, trio.current_time() + 10)
    conn = Connection(Role.HOST)
    hello: Hello | None = None
    at_hello = 0.0
    cpu: float | None = None
    goodbye: Goodbye | None = None
    async with stream:
        while goodbye is None:
            event = conn.next_event()
            if event is NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if event is CLOSED:
                break
            if isinstance(event, Hello):
                hello, at_hello, cpu = event, time.monotonic() - started, cpu_seconds(pid)
                await stream.send_all(conn.send(Start(run_id=uuid.uuid4().hex, tasks=())))
            elif isinstance(event, Goodbye):
                goodbye = event
    if hello is None:
        raise GuestCrashed("the guest closed its port before Hello")
    return hello, at_hello, cpu, goodbye
