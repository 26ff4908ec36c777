"""pyti's guest agent: PID 1 in the guest, owns the virtio port, runs the tasks.

Everything imported on the boot path is paid on every run under TCG: keep it lean.
"""

from __future__ import annotations

import os
import sys
import time

__version__ = "0.1.0"


def trace(step: str) -> None:
    """With pyti.trace on the kernel command line: guest uptime at `step`, on the console."""
    if os.environ.get("PYTI_TRACE"):
        with open("/proc/uptime") as f:
            uptime = f.read().split()[0]
        print(f"pyti-trace {uptime} {step}", file=sys.stderr, flush=True)


def power_off() -> None:
    """Power the machine off now (QEMU then exits); nothing to flush: all disks are scratch."""
    try:
        with open("/proc/sysrq-trigger", "w") as f:
            f.write("o")
    finally:
        time.sleep(10)  # the power-off is asynchronous; PID 1 must not return meanwhile


def boot() -> None:
    """PID 1 after switch_root: run the agent, then power off, whatever happened.

    A returning PID 1 would be a kernel panic, which the host reads as a crash.
    """
    status = 1
    try:
        trace("python")
        from .__main__ import main

        status = main()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        if status:
            print(f"pyti-agent: exited with status {status}", file=sys.stderr, flush=True)
        power_off()
