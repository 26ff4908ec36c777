from __future__ import annotations

import signal
from pathlib import Path

import trio

from pyti.spawn import spawn


def pdeathsig(pid: int) -> bool:
    """Whether the child is in a new session (we cannot read PDEATHSIG from outside)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[3]) == pid  # field 6: session id == own pid


async def test_spawned_child_is_reaped_with_its_exit_code() -> None:
    process = await spawn(["sh", "-c", "exit 7"])
    assert await process.wait() == 7
    assert process.returncode == 7


async def test_child_runs_in_its_own_session_so_ctrl_c_reaches_only_pyti() -> None:
    process = await spawn(["sleep", "30"])
    try:
        assert pdeathsig(process.pid)
    finally:
        await process.aclose()
    assert process.returncode == -signal.SIGKILL


async def test_wait_is_cancellable_and_aclose_is_idempotent() -> None:
    process = await spawn(["sleep", "30"])
    with trio.move_on_after(0.05):
        await process.wait()
    assert process.returncode is None
    await process.aclose()
    await process.aclose()
    assert not Path(f"/proc/{process.pid}").exists() or process.returncode is not None


async def test_two_waiters_both_see_the_exit() -> None:
    process = await spawn(["sleep", "0.1"])
    codes: list[int] = []

    async def waiter() -> None:
        codes.append(await process.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waiter)
    assert codes == [0, 0]


async def test_cancelled_spawn_leaves_no_child() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await spawn(["sleep", "30"])
    # spawn starts the child (shielded), sees the cancel, then kills and reaps it
    assert scope.cancelled_caught


async def test_huge_pages_can_be_turned_off_for_the_child() -> None:
    # QEMU is started this way (pyti.machine): a resumed guest's scattered writes would
    # otherwise each cost a 2 MiB page
    for huge_pages, expected in ((False, "0"), (True, _own_thp())):
        process = await spawn(["sleep", "30"], huge_pages=huge_pages)
        try:
            assert _thp_enabled(process.pid) == expected
        finally:
            await process.aclose()


def _thp_enabled(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("THP_enabled:"):
            return line.split()[1]
    return "unknown"


def _own_thp() -> str:
    return _thp_enabled(int(Path("/proc/self/stat").read_text().split()[0]))
