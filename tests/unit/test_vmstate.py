from __future__ import annotations

import itertools

import pytest

from pyti.errors import VmStateError
from pyti.vmstate import TRANSITIONS, Lifecycle, VmState

S = VmState
ALLOWED = {
    (S.IDLE, S.BOOTING),
    (S.BOOTING, S.READY),
    (S.BOOTING, S.STOPPING),
    (S.READY, S.RUNNING),
    (S.READY, S.STOPPING),
    (S.RUNNING, S.STOPPING),
    (S.STOPPING, S.STOPPED),
}


def reach(state: VmState) -> Lifecycle:
    """A lifecycle driven along the happy path until it is in `state`."""
    path = [S.BOOTING, S.READY, S.RUNNING, S.STOPPING, S.STOPPED]
    life = Lifecycle()
    for step in path[: path.index(state) + 1] if state is not S.IDLE else []:
        life.advance(step)
    assert life.state is state
    return life


def test_the_table_is_exactly_the_documented_one() -> None:
    table = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert table == ALLOWED
    assert set(TRANSITIONS) == set(VmState)


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED, key=str))
def test_allowed_transition_moves_the_state(old: VmState, new: VmState) -> None:
    life = reach(old)
    life.advance(new)
    assert life.state is new
    assert life.history[-2:] == [old, new]


@pytest.mark.parametrize(
    ("old", "new"),
    sorted(set(itertools.product(VmState, VmState)) - ALLOWED, key=str),
)
def test_illegal_transition_raises_and_keeps_the_state(old: VmState, new: VmState) -> None:
    life = reach(old)
    with pytest.raises(VmStateError, match=f"{old.value} -> {new.value}"):
        life.advance(new)
    assert life.state is old


def test_require_passes_in_an_allowed_state_and_names_the_action_otherwise() -> None:
    life = reach(S.READY)
    life.require("start tasks on", S.READY)
    with pytest.raises(VmStateError, match="cannot mark ready a VM that is ready"):
        life.require("mark ready", S.BOOTING)
