from __future__ import annotations

from pathlib import Path

import pytest

from pyti.channel import EndKind
from pyti.errors import UsageError
from pyti.machine import End, MachineResult
from pyti.outcomes import VmEnd
from pyti.run import suite_for, vm_end


def _machine(end: End) -> MachineResult:
    return MachineResult(
        end=end,
        detail="",
        accel="tcg",
        returncode=0,
        stopped_by="itself",
        boot_seconds=None,
        wall_seconds=1.0,
        console="",
        qemu_output="",
        log_path=Path("/nonexistent"),
    )


@pytest.mark.parametrize(
    ("machine", "channel", "expected"),
    [
        (End.NORMAL, EndKind.GOODBYE, VmEnd.NORMAL),
        (End.NORMAL, EndKind.EOF, VmEnd.EOF),
        (End.NORMAL, None, VmEnd.EOF),
        (End.STOPPED, EndKind.PROTOCOL_ERROR, VmEnd.PROTOCOL_ERROR),
        (End.STOPPED, EndKind.LIMIT_EXCEEDED, VmEnd.LIMIT_EXCEEDED),
        (End.NO_PROGRESS, EndKind.NO_PROGRESS, VmEnd.NO_PROGRESS),
        (End.SILENCE, EndKind.SILENCE, VmEnd.SILENCE),
        # the machine's own cause wins over what the channel saw when the guest died
        (End.PANIC, EndKind.EOF, VmEnd.PANIC),
        (End.OOM, EndKind.EOF, VmEnd.OOM),
        (End.QEMU_CRASH, EndKind.EOF, VmEnd.QEMU_CRASH),
        (End.RUN_TIMEOUT, None, VmEnd.TOTAL_TIMEOUT),
        (End.BOOT_TIMEOUT, None, VmEnd.BOOT_TIMEOUT),
        (End.CANCELLED, None, VmEnd.CANCELLED),
    ],
)
def test_one_vm_end_from_the_machine_and_the_channel(
    machine: End, channel: EndKind | None, expected: VmEnd
) -> None:
    assert vm_end(_machine(machine), channel) is expected


def test_the_python_picks_the_suite() -> None:
    assert suite_for("3.11") == "bookworm"
    assert suite_for("3.13") == "trixie"
    with pytest.raises(UsageError, match=r"no guest image has Python 3\.9; choose one of"):
        suite_for("3.9")
