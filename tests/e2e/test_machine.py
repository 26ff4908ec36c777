"""The VM lifecycle against real QEMU and the bookworm guest (slow under TCG)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from pyti.deadlines import Deadlines
from pyti.errors import QemuFailed
from pyti.machine import End, Machine, MachineConfig, open_machine
from pyti.protocol import CLOSED, NEED_DATA, Connection, Goodbye, Hello, Message, Role, Start
from pyti.vmstate import VmState

# A guest that never says Hello: the initramfs's busybox runs `sleep` as PID 1 (the kernel
# hands the words after "--" to init).
HANG = "rdinit=/bin/busybox -- sleep 100000"
# A guest whose kernel panics at once: no init in the initramfs, no root= to fall back to.
PANIC = "rdinit=/nonexistent"


@pytest.fixture(scope="session")
def image(bookworm_image: Any) -> Any:
    return bookworm_image


@pytest.fixture(autouse=True)
def vms_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's VM dirs in a fresh, short directory (unix socket paths are short)."""
    base = Path(tmp_path_factory.mktemp("v", numbered=True))
    monkeypatch.setattr("pyti.paths.vms_dir", lambda: base / "vms")
    return base / "vms"


def config(image: Any, **changes: Any) -> MachineConfig:
    return MachineConfig.from_image(image, **({"memory_mb": 512, "accel": "tcg"} | changes))


async def next_message(machine: Machine, conn: Connection) -> Message | None:
    """The next message from the guest, or None when the port closed."""
    while True:
        event = conn.next_event()
        if event is CLOSED:
            return None
        if event is NEED_DATA:
            try:
                data = await machine.port.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            conn.receive_data(data)
            continue
        assert isinstance(event, Message)
        return event


def qemu_alive(pid: int) -> bool:
    """A live (not zombie) QEMU with this pid, as /proc sees it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return b"qemu-system" in cmdline and "State:\tZ" not in status


def wait_gone(pid: int, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not qemu_alive(pid):
            return True
        time.sleep(0.05)
    return False


async def test_boot_to_hello_then_the_guest_powers_off(image: Any, vms_dir: Path) -> None:
    async with trio.open_nursery() as nursery:
        machine = Machine(config(image))
        await nursery.start(machine.run)
        assert machine.state is VmState.BOOTING
        assert machine.pid is not None
        conn = Connection(Role.HOST)
        hello = await next_message(machine, conn)
        assert isinstance(hello, Hello)
        machine.mark_ready()
        await machine.port.send_all(conn.send(Start(run_id="e2e", tasks=())))
        machine.mark_running()
        goodbye = await next_message(machine, conn)
        assert isinstance(goodbye, Goodbye)
        result = await machine.shutdown()
    assert result.end is End.NORMAL, result.summary()
    assert result
    assert result.stopped_by == "itself"  # the guest powered off; no QMP stop was needed
    assert result.returncode == 0
    assert result.accel == "tcg"
    assert result.boot_seconds is not None and 0 < result.boot_seconds < result.wall_seconds
    assert "reboot: Power down" in result.console
    assert machine.state is VmState.STOPPED
    assert not qemu_alive(machine.pid)
    assert list(vms_dir.iterdir()) == []


async def test_kernel_panic_is_classified_within_seconds(image: Any, tmp_path: Path) -> None:
    log = tmp_path / "vm.log"
    start = time.monotonic()
    async with open_machine(config(image, extra_cmdline=PANIC, log_path=log)) as machine:
        result = await machine.wait()
    assert result.end is End.PANIC, result.summary()
    assert "Kernel panic - not syncing" in result.detail
    assert time.monotonic() - start < 30  # no deadline involved (boot deadline is 60 s)
    assert "Kernel panic" in log.read_text()


async def test_guest_out_of_memory_is_classified_as_oom(image: Any) -> None:
    # PID 1 (busybox sh) hoards /dev/urandom in a variable of a 128 MiB guest
    script = (
        "/bin/busybox --install -s /bin; mount -t devtmpfs d /dev; x=$(cat /dev/urandom); "
        "sleep 100000"
    )
    hog = f'rdinit=/bin/busybox -- sh -c "{script}"'
    async with open_machine(config(image, memory_mb=128, extra_cmdline=hog)) as machine:
        result = await machine.wait()
    assert result.end is End.OOM, result.summary()
    assert result.oom_lines
    assert "Out of memory" in result.detail


async def test_guest_that_never_says_hello_hits_the_boot_deadline(image: Any) -> None:
    deadlines = Deadlines(boot=2.0, soft_stop=0.25, quit=2.0)  # x4 under TCG: 8 s
    start = time.monotonic()
    async with open_machine(config(image, extra_cmdline=HANG, deadlines=deadlines)) as machine:
        result = await machine.wait()
    assert result.end is End.BOOT_TIMEOUT, result.summary()
    assert 8 <= time.monotonic() - start < 30
    assert result.stopped_by in ("powerdown", "quit")
    assert result.boot_seconds is None


async def test_agent_silence_stops_a_frozen_guest_the_hard_way(image: Any) -> None:
    """QEMU frozen by SIGSTOP: no frames, QMP unanswered, so only SIGKILL ends it."""
    deadlines = Deadlines(soft_stop=0.25, quit=1.0)
    async with trio.open_nursery() as nursery:
        machine = Machine(config(image, deadlines=deadlines))
        await nursery.start(machine.run)
        conn = Connection(Role.HOST)
        assert isinstance(await next_message(machine, conn), Hello)
        machine.mark_ready()
        assert machine.pid is not None
        os.kill(machine.pid, signal.SIGSTOP)
        with trio.move_on_after(3.0) as silence:  # the channel's silence timer, in short
            while True:
                await next_message(machine, conn)
        assert silence.cancelled_caught
        result = await machine.shutdown(End.SILENCE, "no frame for 3 s")
    assert result.end is End.SILENCE
    assert result.stopped_by == "sigkill"
    assert not qemu_alive(machine.pid)


async def test_cancel_mid_boot_leaves_no_qemu_and_no_files(image: Any, vms_dir: Path) -> None:
    machine = Machine(config(image))
    with trio.move_on_after(1.5):
        async with trio.open_nursery() as nursery:
            await nursery.start(machine.run)
            await trio.sleep_forever()
    assert machine.pid is not None
    assert machine.result is not None
    assert machine.result.end is End.CANCELLED
    assert machine.state is VmState.STOPPED
    assert wait_gone(machine.pid, 0.1)
    assert list(vms_dir.iterdir()) == []


async def test_qemu_killed_from_outside_is_a_crash_with_its_output(image: Any) -> None:
    async with open_machine(config(image, extra_cmdline=HANG)) as machine:
        assert machine.pid is not None
        os.kill(machine.pid, signal.SIGKILL)
        result = await machine.wait()
    assert result.end is End.QEMU_CRASH
    assert "signal 9" in result.detail


async def test_qemu_that_cannot_start_raises_with_its_message(image: Any, vms_dir: Path) -> None:
    broken = config(image, root_disk=Path("/nonexistent/root.sqfs"))
    with pytest.raises(QemuFailed, match=r"QEMU did not start: .*nonexistent"):
        async with open_machine(broken):
            pytest.fail("must not get here")
    assert list(vms_dir.iterdir()) == []


KILLED_HOST = textwrap.dedent(
    """
    import sys, trio
    from pathlib import Path
    from pyti.image.cache import load
    from pyti.machine import Machine, MachineConfig
    from pyti.deadlines import Deadlines

    image = load(Path(sys.argv[1]))
    async def main():
        cfg = MachineConfig.from_image(image, memory_mb=512, deadlines=Deadlines(boot=600),
                                       extra_cmdline=sys.argv[2])
        async with trio.open_nursery() as nursery:
            machine = Machine(cfg)
            await nursery.start(machine.run)
            print(machine.pid, flush=True)
            await trio.sleep_forever()
    trio.run(main)
    """
)


def test_kill_9_of_the_host_leaves_no_qemu_even_after_10_s(image: Any, tmp_path: Path) -> None:
    """PDEATHSIG tied to a trio worker thread would fire after ~10 s idle: this VM lives 13 s."""
    cache = tmp_path / "c"
    env = {**os.environ, "PYTI_CACHE_DIR": str(cache)}
    host = subprocess.Popen(
        [sys.executable, "-c", KILLED_HOST, str(image.directory), HANG],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert host.stdout is not None
        pid = int(host.stdout.readline())
        time.sleep(13)
        assert qemu_alive(pid), "QEMU died early: PDEATHSIG fired with a worker thread"
        host.kill()
        host.wait()
        assert wait_gone(pid), "QEMU outlived a kill -9 of pyti"
    finally:
        host.kill()
        host.wait()
        host.stdout.close()
    # kill -9 ran no cleanup; the next VM's start sweeps the dead VM's directory
    from pyti.vmdir import sweep_stale

    stale = list((cache / "vms").iterdir())
    assert len(stale) == 1
    assert sweep_stale(cache / "vms", min_age=0) == stale
