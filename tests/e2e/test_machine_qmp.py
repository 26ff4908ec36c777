"""The qemu.qmp bridge (trio-asyncio) against a real QEMU with no guest at all."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio

from pyti.errors import QemuFailed
from pyti.qmp import open_qmp


@pytest.fixture
async def qemu_qmp(tmp_path: Path):  # type: ignore[no-untyped-def]
    socket = tmp_path / "q.sock"
    argv = ["qemu-system-x86_64", "-M", "none", "-nodefaults", "-no-user-config"]
    argv += ["-display", "none", "-S", "-qmp", f"unix:{socket},server=on,wait=off"]
    process = await trio.lowlevel.open_process(argv, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(10):
            while not socket.exists():
                await trio.sleep(0.01)
        yield socket, process
    finally:
        process.kill()
        await process.wait()


async def test_commands_and_events_round_trip(qemu_qmp: tuple[Path, trio.Process]) -> None:
    socket, process = qemu_qmp
    async with open_qmp(socket, name="test") as qmp:
        status = await qmp.execute("query-status")
        assert isinstance(status, dict)
        assert status["status"] == "prelaunch"
        await qmp.execute("cont")
        await qmp.execute("quit")
        with trio.fail_after(5):
            events = [await qmp.next_event()]
            while events[-1]["event"] != "SHUTDOWN":
                events.append(await qmp.next_event())
    assert events[-1]["data"] == {"guest": False, "reason": "host-qmp-quit"}
    with trio.fail_after(5):
        assert await process.wait() == 0


async def test_a_failing_command_raises_qemu_failed(qemu_qmp: tuple[Path, trio.Process]) -> None:
    socket, _ = qemu_qmp
    async with open_qmp(socket) as qmp:
        with pytest.raises(QemuFailed, match="no-such-command"):
            await qmp.execute("no-such-command")


async def test_cancelling_an_event_wait_leaves_the_session_usable(
    qemu_qmp: tuple[Path, trio.Process],
) -> None:
    socket, _ = qemu_qmp
    async with open_qmp(socket) as qmp:
        with trio.move_on_after(0.2) as scope:
            await qmp.next_event()
        assert scope.cancelled_caught
        assert isinstance(await qmp.execute("query-status"), dict)


async def test_connecting_to_nothing_is_a_qemu_failed(tmp_path: Path) -> None:
    with pytest.raises(QemuFailed, match="cannot connect to QMP"):
        async with open_qmp(tmp_path / "absent.sock"):
            pytest.fail("must not get here")
