"""Per-VM time limits, and how they scale with the accelerator.

The defaults are written for KVM (near-native speed). TCG emulates every instruction: the
measured guest is 3-10x slower than native (boot to Hello about 2.2 s, `pip --version`
2.5 s), so every limit that waits for the *guest* is multiplied by `deadline_factor("tcg")`.
Limits that only wait for QEMU on the host (QMP `quit`) are not scaled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ACCEL_FACTORS = {"kvm": 1.0, "tcg": 4.0}


def deadline_factor(accel: str) -> float:
    """How much longer guest-side work takes under `accel` than under KVM."""
    try:
        return ACCEL_FACTORS[accel]
    except KeyError:
        raise ValueError(f"unknown accelerator {accel!r}") from None


@dataclass(frozen=True, kw_only=True)
class Deadlines:
    """Seconds. crater-like defaults: 15 minutes in all, 5 minutes without progress."""

    boot: float = 15.0  # QEMU start -> the agent's Hello
    total: float = 15 * 60.0  # QEMU start -> the end, whatever happens
    silence: float = 60.0  # no frame at all from the agent (enforced by pyti.channel)
    no_progress: float = 5 * 60.0  # frames, but no test result or task change (pyti.channel)
    poweroff: float = 10.0  # after the session ends, for the guest to power off by itself
    # After QMP system_powerdown. Short: the pyti guests have no ACPI power-button handler
    # (no acpid, the agent is PID 1), so today this step only ever costs its own length.
    soft_stop: float = 1.0
    quit: float = 5.0  # after QMP quit, before SIGKILL (host side: not scaled)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"deadline {field.name} must be positive, not {value!r}")

    def scaled(self, accel: str) -> Deadlines:
        factor = deadline_factor(accel)
        guest_side = {
            field.name: getattr(self, field.name) * factor
            for field in dataclasses.fields(self)
            if field.name != "quit"
        }
        return dataclasses.replace(self, **guest_side)
