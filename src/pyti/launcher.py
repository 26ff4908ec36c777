"""A minimal launcher: boot an image, read the agent's Hello, let it power off.

Enough to boot and test images (`pyti image build --boot`, the image e2e tests, the boot
benchmark). The VM lifecycle (`pyti.machine`) hardens this: QMP, classified ends, caps.
"""

from __future__ import annotations

import logging
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class BootResult:
    hello: Hello
    seconds_to_hello: float  # QEMU start -> Hello decoded on the host
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
    qemu = which("qemu-system-x86_64")
    if qemu is None:
        raise MissingTool("qemu-system-x86_64", install_line(["qemu-system-x86"]))
    with VmDir.create() as vmdir:
        scratch = vmdir.path / "scratch.ext4"
        make_scratch_disk(scratch)
        config = VmConfig(
            qemu=qemu,
            accel="tcg",
            memory_mb=memory_mb,
            cpus=1,
            kernel=image.kernel,
            initrd=image.initrd,
            cmdline=image.cmdline + (" pyti.trace" if trace else ""),
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
        log_path = vmdir.path / "qemu.log"
        started = time.monotonic()
        with log_path.open("wb") as qemu_log, trio.move_on_after(timeout) as scope:
            async with trio.open_nursery() as nursery:
                process = await trio.lowlevel.open_process(
                    argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT
                )
                try:
                    result = await _converse(process, config, console, nursery, started)
                    with trio.fail_after(10):
                        await process.wait()
                    total = time.monotonic() - started
                finally:
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                nursery.cancel_scope.cancel()
        if scope.cancelled_caught:
            tail = bytes(console[-2000:]).decode("utf-8", "replace")
            raise GuestCrashed(f"no Hello and Goodbye within {timeout} s; console ends: {tail}")
        if process.returncode != 0:
            raise QemuFailed("QEMU failed", returncode=process.returncode, log=None)
        hello, at_hello, goodbye = result
        return BootResult(hello, at_hello, total, goodbye, bytes(console))


async def _converse(
    process: trio.Process,
    config: VmConfig,
    console: bytearray,
    nursery: trio.Nursery,
    started: float,
) -> tuple[Hello, float, Goodbye | None]:
    deadline = trio.current_time() + 10
    console_stream = await _connect(config.console_socket, deadline)
    nursery.start_soon(_drain_console, console_stream, console)
    stream = await _connect(config.serial_socket, deadline)
    conn = Connection(Role.HOST)
    hello: Hello | None = None
    at_hello = 0.0
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
                hello, at_hello = event, time.monotonic() - started
                await stream.send_all(conn.send(Start(run_id=uuid.uuid4().hex, tasks=())))
            elif isinstance(event, Goodbye):
                goodbye = event
    if hello is None:
        raise GuestCrashed("the guest closed its port before Hello")
    return hello, at_hello, goodbye
