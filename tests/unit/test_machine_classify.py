from __future__ import annotations

from typing import Any

import pytest

from pyti.console import ConsoleVerdicts
from pyti.machine import End, classify

PANIC = ConsoleVerdicts(panic_line="Kernel panic - not syncing: Attempted to kill init!")
OOM = ConsoleVerdicts(oom_lines=["Out of memory: Killed process 123 (python3)"])
CLEAN = ConsoleVerdicts()
OFF = {"guest": True, "reason": "guest-shutdown"}
RESET = {"guest": True, "reason": "guest-reset"}


def ends(**kwargs: Any) -> End:
    args: dict[str, Any] = {
        "requested": None,
        "returncode": 0,
        "shutdown": OFF,
        "guest_panicked": False,
        "verdicts": CLEAN,
        "signalled_by_us": False,
        "was_ready": True,
    }
    args.update(kwargs)
    return classify(**args)[0]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({}, End.NORMAL),
        ({"was_ready": False}, End.BOOT_FAILED),
        ({"requested": (End.NORMAL, "")}, End.NORMAL),
        # a session that completed stays normal even if pyti had to quit QEMU
        ({"requested": (End.NORMAL, ""), "shutdown": None, "signalled_by_us": True}, End.NORMAL),
        ({"verdicts": PANIC, "shutdown": RESET}, End.PANIC),
        ({"guest_panicked": True, "shutdown": None}, End.PANIC),
        ({"shutdown": {"guest": True, "reason": "guest-panic"}}, End.PANIC),
        # a panic explains a timeout better than the timeout does
        ({"requested": (End.BOOT_TIMEOUT, ""), "verdicts": PANIC}, End.PANIC),
        ({"shutdown": RESET}, End.GUEST_RESET),
        ({"requested": (End.BOOT_TIMEOUT, ""), "signalled_by_us": True}, End.BOOT_TIMEOUT),
        ({"requested": (End.SILENCE, ""), "signalled_by_us": True}, End.SILENCE),
        ({"requested": (End.NO_PROGRESS, "")}, End.NO_PROGRESS),
        ({"requested": (End.RUN_TIMEOUT, "")}, End.RUN_TIMEOUT),
        ({"requested": (End.STOPPED, "protocol error")}, End.STOPPED),
        ({"returncode": 1, "shutdown": None}, End.QEMU_CRASH),
        ({"returncode": -11, "shutdown": None}, End.QEMU_CRASH),
        ({"returncode": -9, "shutdown": None, "signalled_by_us": True}, End.STOPPED),
        ({"shutdown": {"guest": False, "reason": "host-signal"}}, End.QEMU_CRASH),
        ({"shutdown": {"guest": False, "reason": "host-signal"}, "signalled_by_us": True},
            End.STOPPED),
        # OOM explains a silent or hung guest, and a guest that died early
        ({"requested": (End.SILENCE, ""), "verdicts": OOM}, End.OOM),
        ({"requested": (End.BOOT_TIMEOUT, ""), "verdicts": OOM}, End.OOM),
        ({"verdicts": OOM}, End.OOM),
        ({"verdicts": OOM, "was_ready": False}, End.OOM),
        # the OOM killer took PID 1 and the kernel panicked: out of memory is the cause
        ({"verdicts": ConsoleVerdicts(panic_line=PANIC.panic_line, oom_lines=OOM.oom_lines),
          "shutdown": RESET}, End.OOM),
        # ... but not a session that completed (a test's process was killed: the task says so)
        ({"requested": (End.NORMAL, ""), "verdicts": OOM}, End.NORMAL),
        # cancellation by the host wins over everything
        ({"requested": (End.CANCELLED, ""), "verdicts": PANIC}, End.CANCELLED),
        ({"requested": (End.CANCELLED, ""), "verdicts": OOM}, End.CANCELLED),
    ],
)  # fmt: skip
def test_classify(case: dict[str, Any], expected: End) -> None:
    assert ends(**case) is expected


def test_panic_detail_is_the_kernel_line() -> None:
    _, detail = classify(
        requested=None,
        returncode=0,
        shutdown=RESET,
        guest_panicked=False,
        verdicts=PANIC,
        signalled_by_us=False,
    )
    assert detail == PANIC.panic_line


def test_oom_detail_names_the_killed_process_and_the_plain_end() -> None:
    _, detail = classify(
        requested=(End.SILENCE, "no frame for 60 s"),
        returncode=0,
        shutdown=None,
        guest_panicked=False,
        verdicts=OOM,
        signalled_by_us=True,
    )
    assert detail == "Out of memory: Killed process 123 (python3) (then: agent-silence)"
