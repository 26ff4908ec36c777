"""The VM lifecycle states and the one table of allowed transitions.

IDLE -> BOOTING (QEMU launched) -> READY (the agent said Hello) -> RUNNING (tasks sent)
-> STOPPING (ending: by itself, on request, on a deadline) -> STOPPED. Any live state may go
straight to STOPPING: a guest can power off, panic or time out at any point.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from pyti.errors import VmStateError


class VmState(enum.Enum):
    IDLE = "idle"
    BOOTING = "booting"
    READY = "ready"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


TRANSITIONS: Mapping[VmState, frozenset[VmState]] = {
    VmState.IDLE: frozenset({VmState.BOOTING}),
    VmState.BOOTING: frozenset({VmState.READY, VmState.STOPPING}),
    VmState.READY: frozenset({VmState.RUNNING, VmState.STOPPING}),
    VmState.RUNNING: frozenset({VmState.STOPPING}),
    VmState.STOPPING: frozenset({VmState.STOPPED}),
    VmState.STOPPED: frozenset(),
}

LIVE = frozenset({VmState.BOOTING, VmState.READY, VmState.RUNNING})


class Lifecycle:
    """The current state, moved only along `TRANSITIONS`; methods check it with `require`."""

    def __init__(self) -> None:
        self._state = VmState.IDLE
        self.history: list[VmState] = [VmState.IDLE]

    @property
    def state(self) -> VmState:
        return self._state

    def advance(self, new: VmState) -> None:
        if new not in TRANSITIONS[self._state]:
            raise VmStateError(f"illegal VM state transition {self._state.value} -> {new.value}")
        self._state = new
        self.history.append(new)

    def require(self, action: str, *allowed: VmState) -> None:
        if self._state not in allowed:
            names = ", ".join(state.value for state in allowed)
            raise VmStateError(f"cannot {action} a VM that is {self._state.value} (needs {names})")
