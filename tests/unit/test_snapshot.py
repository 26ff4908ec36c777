"""pyti.snapshot: what a saved VM's key depends on, and falling back to cold boots."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio

from pyti import snapshot
from pyti.deadlines import Deadlines
from pyti.machine import MachineConfig


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MachineConfig:
    monkeypatch.setenv("PYTI_CACHE_DIR", str(tmp_path / "cache"))
    image = tmp_path / "image"
    image.mkdir()
    for name in ("vmlinux", "initrd", "root.sqfs"):
        (image / name).write_bytes(name.encode())
    setup = tmp_path / "setup-a.sqfs"
    setup.write_bytes(b"a" * 100)
    return MachineConfig(
        kernel=image / "vmlinux",
        initrd=image / "initrd",
        cmdline="console=ttyS0 quiet",
        root_disk=image / "root.sqfs",
        setup_disk=setup,
        memory_mb=512,
        sandbox=True,
    )


def fake_maker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make snapshots without a VM: the file a real save would write, with fake content."""

    async def make(_: MachineConfig, target: Path) -> None:
        target.write_bytes(b"QEVM")

    monkeypatch.setattr(snapshot, "_make", make)


def test_the_key_ignores_what_differs_per_run(config: MachineConfig, tmp_path: Path) -> None:
    other_disk = tmp_path / "setup-b.sqfs"
    other_disk.write_bytes(b"b" * 100)  # another package, the same size
    same_shape = dataclasses.replace(
        config,
        setup_disk=other_disk,
        log_path=tmp_path / "run-7.log",
        name="run7",
        deadlines=Deadlines(total=60.0),
    )
    assert snapshot.key(same_shape) == snapshot.key(config)


@pytest.mark.parametrize(
    "change",
    [
        {"memory_mb": 1024},
        {"cpus": 2},
        {"scratch_mb": 1024},
        {"scratch_mb": None},
        {"setup_disk": None},
        {"accel": "kvm"},
        {"cmdline": "console=ttyS0"},
        {"tb_size_mb": 32},
        {"sandbox": False},
    ],
)
def test_the_key_follows_the_machine_shape(
    config: MachineConfig, change: dict[str, object]
) -> None:
    assert snapshot.key(dataclasses.replace(config, **change)) != snapshot.key(config)  # type: ignore[arg-type]


def test_the_key_follows_the_setup_disk_size(config: MachineConfig, tmp_path: Path) -> None:
    bigger = tmp_path / "setup-c.sqfs"
    bigger.write_bytes(b"c" * 200)
    assert snapshot.key(dataclasses.replace(config, setup_disk=bigger)) != snapshot.key(config)


def test_the_key_follows_the_image_files(config: MachineConfig) -> None:
    before = snapshot.key(config)
    config.initrd.write_bytes(b"a rebuilt initrd")  # another agent, another size
    assert snapshot.key(config) != before


def test_scripted_and_snapshot_making_vms_are_not_resumed(config: MachineConfig) -> None:
    assert snapshot.usable(config)
    assert not snapshot.usable(dataclasses.replace(config, extra_cmdline="pyti.exec=/x.sh"))
    assert not snapshot.usable(dataclasses.replace(config, extra_cmdline="rdinit=/nonexistent"))
    assert snapshot.usable(dataclasses.replace(config, extra_cmdline="pyti.trace"))
    assert not snapshot.usable(dataclasses.replace(config, connect_port=False))
    assert not snapshot.usable(dataclasses.replace(config, restore=Path("/some.state")))


def test_a_snapshot_that_cannot_be_made_is_not_tried_again(
    config: MachineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    async def failing_make(_: MachineConfig, target: Path) -> None:
        calls.append(target)
        raise RuntimeError("the agent never reached its snapshot point")

    monkeypatch.setattr(snapshot, "_make", failing_make)
    assert trio.run(snapshot.ensure, config) is None
    assert trio.run(snapshot.ensure, config) is None
    assert len(calls) == 1
    failed = calls[0].with_suffix(".failed")
    assert "snapshot point" in failed.read_text()


def test_an_existing_snapshot_is_used_and_a_made_one_is_kept(
    config: MachineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_maker(monkeypatch)
    made = trio.run(snapshot.ensure, config)
    assert made is not None and made.read_bytes() == b"QEVM"

    async def must_not_make(_: MachineConfig, target: Path) -> None:
        raise AssertionError("made twice")

    monkeypatch.setattr(snapshot, "_make", must_not_make)
    assert trio.run(snapshot.ensure, config) == made
    snapshot.invalidate(made, "QEMU could not load it")
    assert not made.exists()


def test_while_another_pyti_makes_it_this_run_boots_cold(
    config: MachineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def must_not_make(_: MachineConfig, target: Path) -> None:
        raise AssertionError("made while locked")

    monkeypatch.setattr(snapshot, "_make", must_not_make)
    target = snapshot.path_for(config)
    target.parent.mkdir(parents=True)
    with snapshot._try_lock(target) as locked:
        assert locked
        assert trio.run(snapshot.ensure, config) is None


def test_snapshots_of_images_that_are_gone_are_pruned(
    config: MachineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_maker(monkeypatch)
    kept = trio.run(snapshot.ensure, config)
    assert kept is not None
    assert snapshot.prune() == 0 and kept.exists()
    config.initrd.unlink()  # the image was rebuilt elsewhere and this one removed
    assert snapshot.prune() == 1
    assert not kept.exists() and not kept.with_suffix(".json").exists()


def test_snapshots_unused_for_weeks_are_pruned(
    config: MachineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import time

    fake_maker(monkeypatch)
    kept = trio.run(snapshot.ensure, config)
    assert kept is not None
    old = time.time() - (snapshot.UNUSED_DAYS + 1) * 86400
    os.utime(kept, (old, old))
    assert trio.run(snapshot.ensure, config) == kept  # using it makes it recent again
    assert snapshot.prune() == 0
    os.utime(kept, (old, old))
    assert snapshot.prune() == 1 and not kept.exists()
