from __future__ import annotations

import pytest

from pyti.deadlines import Deadlines, deadline_factor


@pytest.mark.parametrize(("accel", "factor"), [("kvm", 1.0), ("tcg", 4.0)])
def test_deadline_factor_per_accelerator(accel: str, factor: float) -> None:
    assert deadline_factor(accel) == factor


def test_unknown_accelerator_is_refused() -> None:
    with pytest.raises(ValueError, match="hvf"):
        deadline_factor("hvf")


def test_tcg_scales_guest_deadlines_but_not_the_host_side_quit() -> None:
    base = Deadlines(boot=10, total=100, silence=5, no_progress=50, poweroff=2, soft_stop=1, quit=3)
    tcg = base.scaled("tcg")
    assert (tcg.boot, tcg.total, tcg.silence, tcg.no_progress) == (40, 400, 20, 200)
    assert (tcg.poweroff, tcg.soft_stop) == (8, 4)
    assert tcg.quit == 3
    assert base.scaled("kvm") == base


def test_defaults_are_crater_like() -> None:
    assert Deadlines().total == 15 * 60
    assert Deadlines().no_progress == 5 * 60


@pytest.mark.parametrize("field", ["boot", "total", "quit"])
def test_non_positive_deadline_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Deadlines(**{field: 0})  # type: ignore[arg-type]
