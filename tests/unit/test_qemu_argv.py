from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pyti.qemu_argv import VmConfig, build_argv

BASE = VmConfig(
    qemu="qemu-system-x86_64",
    accel="tcg",
    memory_mb=1536,
    cpus=1,
    kernel=Path("/img/vmlinux"),
    initrd=Path("/img/initrd.gz"),
    cmdline="console=ttyS0 quiet panic=-1",
    root_disk=Path("/img/root.sqfs"),
    setup_disk=Path("/run/setup.sqfs"),
    scratch_disk=Path("/vm/scratch.ext4"),
    serial_socket=Path("/vm/serial.sock"),
    console_socket=Path("/vm/console.sock"),
    qmp_socket=Path("/vm/qmp.sock"),
    sandbox=True,
)


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]


def test_base_argv_is_exactly_this() -> None:
    assert build_argv(BASE) == [
        "qemu-system-x86_64",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-nic", "none",
        "-accel", "tcg",
        "-M", "microvm,rtc=on",
        "-cpu", "qemu64,+rdrand,+ssse3,+sse4.1,+sse4.2,+popcnt",
        "-m", "1536M", "-smp", "1",
        "-kernel", "/img/vmlinux", "-initrd", "/img/initrd.gz",
        "-append", "console=ttyS0 quiet panic=-1",
        "-chardev", "socket,id=con0,path=/vm/console.sock,server=on,wait=off",
        "-serial", "chardev:con0",
        "-chardev", "socket,id=pyti0,path=/vm/serial.sock,server=on,wait=off",
        "-device", "virtio-serial-device",
        "-device", "virtserialport,chardev=pyti0,name=pyti.0",
        "-drive", "file=/img/root.sqfs,if=none,format=raw,id=root,readonly=on",
        "-device", "virtio-blk-device,drive=root,serial=pyti-root",
        "-drive", "file=/run/setup.sqfs,if=none,format=raw,id=setup,readonly=on",
        "-device", "virtio-blk-device,drive=setup,serial=pyti-setup",
        "-drive", "file=/vm/scratch.ext4,if=none,format=raw,id=scratch,cache=unsafe",
        "-device", "virtio-blk-device,drive=scratch,serial=pyti-scratch",
        "-qmp", "unix:/vm/qmp.sock,server=on,wait=off",
        "-device", "pvpanic",
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "option", "expected"),
    [
        ({"accel": "kvm"}, "-accel", ["kvm"]),
        ({"accel": "kvm"}, "-cpu", ["host"]),
        ({"accel": "tcg", "tb_size_mb": 64}, "-accel", ["tcg,tb-size=64"]),
        ({"accel": "kvm", "tb_size_mb": 64}, "-accel", ["kvm"]),
        ({"memory_mb": 512}, "-m", ["512M"]),
        ({"cpus": 2}, "-smp", ["2"]),
        ({"sandbox": False}, "-sandbox", []),
        ({"pvpanic": False}, "-device", [
            "virtio-serial-device",
            "virtserialport,chardev=pyti0,name=pyti.0",
            "virtio-blk-device,drive=root,serial=pyti-root",
            "virtio-blk-device,drive=setup,serial=pyti-setup",
            "virtio-blk-device,drive=scratch,serial=pyti-scratch",
        ]),
        ({"setup_disk": None}, "-drive", [
            "file=/img/root.sqfs,if=none,format=raw,id=root,readonly=on",
            "file=/vm/scratch.ext4,if=none,format=raw,id=scratch,cache=unsafe",
        ]),
        ({"setup_disk": None, "scratch_disk": None}, "-drive", [
            "file=/img/root.sqfs,if=none,format=raw,id=root,readonly=on",
        ]),
        # QEMU splits options at commas; a doubled comma is a literal one.
        ({"qmp_socket": Path("/a,b/q.sock")}, "-qmp", ["unix:/a,,b/q.sock,server=on,wait=off"]),
        ({"root_disk": Path("/x,y.sqfs")}, "-drive", [
            "file=/x,,y.sqfs,if=none,format=raw,id=root,readonly=on",
            "file=/run/setup.sqfs,if=none,format=raw,id=setup,readonly=on",
            "file=/vm/scratch.ext4,if=none,format=raw,id=scratch,cache=unsafe",
        ]),
        # -append is one argv element, never split: commas and spaces stay as they are.
        ({"cmdline": "a=1,2 b"}, "-append", ["a=1,2 b"]),
    ],
)  # fmt: skip
def test_option_follows_config(
    changes: dict[str, object], option: str, expected: list[str]
) -> None:
    argv = build_argv(dataclasses.replace(BASE, **changes))  # type: ignore[arg-type]
    assert option_values(argv, option) == expected


def test_paused_adds_dash_s_only_when_asked() -> None:
    assert "-S" not in build_argv(BASE)
    assert build_argv(dataclasses.replace(BASE, paused=True))[-1] == "-S"


def test_incoming_fd_resumes_a_snapshot_with_otherwise_the_same_argv() -> None:
    restored = build_argv(dataclasses.replace(BASE, incoming_fd=7))
    assert option_values(restored, "-incoming") == ["fd:7"]
    cold = build_argv(BASE)
    assert "-incoming" not in cold
    # the devices must match the snapshot's VM exactly: only -incoming differs
    assert [arg for arg in restored if arg not in ("-incoming", "fd:7")] == cold


def test_incoming_fd_must_be_a_descriptor() -> None:
    with pytest.raises(ValueError, match="incoming_fd"):
        dataclasses.replace(BASE, incoming_fd=-1)


def test_no_network_device_whatever_the_config() -> None:
    for accel in ("kvm", "tcg"):
        argv = build_argv(dataclasses.replace(BASE, accel=accel))
        assert option_values(argv, "-nic") == ["none"]
        assert "-netdev" not in argv
        assert not any("net" in d for d in option_values(argv, "-device"))


def test_read_only_disks_are_marked_read_only() -> None:
    drives = option_values(build_argv(BASE), "-drive")
    assert [d.endswith("readonly=on") for d in drives] == [True, True, False]


@pytest.mark.parametrize(
    "changes",
    [{"accel": "hvf"}, {"memory_mb": 0}, {"cpus": 0}, {"tb_size_mb": 0}],
)
def test_invalid_config_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(changes))):
        dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


def test_build_argv_is_pure() -> None:
    assert build_argv(BASE) == build_argv(BASE)
    assert build_argv(BASE) is not build_argv(BASE)
