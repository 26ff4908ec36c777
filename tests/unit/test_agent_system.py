"""The agent's per-run preparation (guest_agent/pyti_agent/system.py), with the kernel's
interfaces replaced: the real ones are exercised by the e2e tests in a guest."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "guest_agent"))

from pyti_agent import system


def test_the_clock_is_set_from_start_and_left_alone_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, float]] = []
    monkeypatch.setattr(time, "clock_settime", lambda clock, value: calls.append((clock, value)))
    system.set_clock(0.0)
    system.set_clock(1_790_000_000.5)
    assert calls == [(time.CLOCK_REALTIME, 1_790_000_000.5)]


def test_entropy_is_written_to_the_pool_then_the_crng_is_reseeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    pool = tmp_path / "urandom"
    pool.touch()
    monkeypatch.setattr(system, "URANDOM", str(pool))
    requests: list[int] = []
    monkeypatch.setattr(fcntl, "ioctl", lambda fd, request, *rest: requests.append(request))
    system.reseed(b"")
    assert requests == [] and pool.read_bytes() == b""
    system.reseed(b"\x01" * 64)
    assert pool.read_bytes() == b"\x01" * 64
    assert requests == [0x5207]  # RNDRESEEDCRNG


def test_without_a_setup_device_nothing_is_mounted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTI_SETUP_DEV", raising=False)
    mounted: list[str] = []
    monkeypatch.setattr(system, "mount_setup", mounted.append)
    system.prepare(0.0, b"")
    assert mounted == []
    monkeypatch.setenv("PYTI_SETUP_DEV", "/dev/vdb")
    monkeypatch.setattr(system, "SETUP_DIR", "/nonexistent-pyti-setup")
    system.prepare(0.0, b"")
    assert mounted == ["/dev/vdb"]
