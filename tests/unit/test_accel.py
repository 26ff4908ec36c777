from __future__ import annotations

from pathlib import Path

import pytest

from pyti import accel
from pyti.errors import AcceleratorUnavailable


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTI_CACHE_DIR", str(tmp_path / "cache"))


def test_explicit_tcg_skips_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "probe_kvm", _must_not_probe)
    choice = accel.choose("tcg")
    assert (choice.accel, choice.probed) == ("tcg", False)


def test_explicit_kvm_without_device_is_an_environment_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: False)
    with pytest.raises(AcceleratorUnavailable, match="--accel tcg"):
        accel.choose("kvm")


def test_auto_without_device_is_tcg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "kvm_device_usable", lambda: False)
    monkeypatch.setattr(accel, "probe_kvm", _must_not_probe)
    assert accel.choose("auto").accel == "tcg"


def test_probe_result_is_cached_per_boot_and_qemu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[Path] = []

    def fake_probe(qemu: str, kernel: Path, initrd: Path, deadline: float = 0) -> bool:
        calls.append(kernel)
        return True

    monkeypatch.setattr(accel, "kvm_device_usable", lambda: True)
    monkeypatch.setattr(accel, "probe_kvm", fake_probe)
    monkeypatch.setattr(accel, "boot_id", lambda: "boot-1")
    kernel, initrd = tmp_path / "vmlinux", tmp_path / "initrd"
    first = accel.choose("auto", kernel=kernel, initrd=initrd)
    second = accel.choose("auto", kernel=kernel, initrd=initrd)
    assert (first.accel, second.accel, len(calls)) == ("kvm", "kvm", 1)
    monkeypatch.setattr(accel, "boot_id", lambda: "boot-2")
    accel.choose("auto", kernel=kernel, initrd=initrd)
    assert len(calls) == 2


def test_probe_that_times_out_means_tcg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A real process that never panics: `sleep` stands in for a hung KVM guest.
    fake_qemu = tmp_path / "qemu"
    fake_qemu.write_text("#!/bin/sh\nexec sleep 30\n")
    fake_qemu.chmod(0o755)
    assert not accel.probe_kvm(str(fake_qemu), tmp_path / "k", tmp_path / "i", deadline=0.3)


def test_probe_that_reaches_the_init_panic_means_kvm(tmp_path: Path) -> None:
    fake_qemu = tmp_path / "qemu"
    fake_qemu.write_text("#!/bin/sh\necho 'Kernel panic - not syncing: No working init found.'\n")
    fake_qemu.chmod(0o755)
    assert accel.probe_kvm(str(fake_qemu), tmp_path / "k", tmp_path / "i", deadline=5)


def _must_not_probe(*args: object, **kwargs: object) -> bool:
    raise AssertionError("the probe must not run")
