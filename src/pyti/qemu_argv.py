"""The QEMU command line for one pyti guest, built by a pure function.

Choices (measured on this project's hosts, see /work/shared/guest-poc.md and docs/lifecycle.md):

- `-M microvm,rtc=on` with virtio-mmio devices: about 0.2 s faster to boot than q35 with PCI.
- `-cpu qemu64,+rdrand` plus the x86-64-v2 features under TCG (`TCG_CPU`): current wheels
  (NumPy 2.4) need SSE4.2/POPCNT, and the Debian kernel trusts RDRAND, so the CRNG is ready at
  once (without it the first python3 blocks about 1 s for entropy); `-cpu max` is slower.
- `-nic none` next to `-nodefaults`: no network device at all, not even a default one.
- Root and setup disks are `readonly=on`; only the per-VM scratch disk is writable.
- Every chardev is a unix socket with QEMU as server and `wait=off`; the console goes to one of
  them (never `-serial file:`, which cannot be capped) and pyti reads and caps it itself.
- `-incoming fd:N` resumes a snapshot (pyti.snapshot) instead of booting: the same argv
  otherwise, since QEMU restores device state into the devices the command line creates.
- The disks carry `serial=` ids (`pyti-root`, `pyti-setup`, `pyti-scratch`), visible in the guest
  as /sys/block/vdX/serial, so the guest can find them even if the order ever changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ACCELERATORS = ("kvm", "tcg")
SERIAL_PORT_NAME = "pyti.0"
# TCG's CPU: qemu64 plus what x86-64-v2 adds (SSSE3, SSE4.1, SSE4.2, POPCNT; qemu64 has
# CX16 and LAHF already), because current wheels assume it: NumPy 2.4's import died with
# "Illegal instruction" on plain qemu64. RDRAND: the Debian kernel trusts it, so the CRNG is
# ready at once. Boot time is the same as plain qemu64 (measured); `max` and Nehalem boot
# slower under TCG.
TCG_CPU = "qemu64,+rdrand,+ssse3,+sse4.1,+sse4.2,+popcnt"
SANDBOX_OPTION = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


@dataclass(frozen=True, kw_only=True)
class VmConfig:
    """Everything that decides QEMU's argv; the paths must exist (sockets: their directory)."""

    qemu: str  # the binary, e.g. "qemu-system-x86_64" or an absolute path
    accel: str  # "kvm" or "tcg"
    memory_mb: int
    cpus: int
    kernel: Path  # the extracted ELF vmlinux (PVH entry), not the compressed vmlinuz
    initrd: Path
    cmdline: str
    root_disk: Path  # /dev/vda, read-only
    setup_disk: Path | None  # /dev/vdb, read-only; None when there is no package to test
    scratch_disk: Path | None  # /dev/vdc (vdb without a setup disk), read-write
    serial_socket: Path  # the virtserialport "pyti.0" (QEMU listens)
    console_socket: Path  # ttyS0 (QEMU listens)
    qmp_socket: Path  # QMP (QEMU listens)
    sandbox: bool  # add -sandbox; only when the QEMU binary supports it
    # Additions after the first contract, all defaulted so older callers keep working:
    pvpanic: bool = True  # ISA pvpanic device: GUEST_PANICKED on a kernel panic (if driven)
    paused: bool = False  # -S: start with the CPU stopped, so the host connects before boot
    tb_size_mb: int | None = None  # TCG translation buffer size; None = QEMU's default
    # Resume a saved VM (pyti.snapshot) read from this inherited file descriptor instead of
    # booting; every other option must be what the snapshot's VM had (the same devices).
    incoming_fd: int | None = None

    def __post_init__(self) -> None:
        if self.accel not in ACCELERATORS:
            raise ValueError(f"accel must be one of {ACCELERATORS}, not {self.accel!r}")
        if self.memory_mb < 64:
            raise ValueError(f"memory_mb must be at least 64, not {self.memory_mb}")
        if self.cpus < 1:
            raise ValueError(f"cpus must be at least 1, not {self.cpus}")
        if self.tb_size_mb is not None and self.tb_size_mb < 1:
            raise ValueError(f"tb_size_mb must be positive, not {self.tb_size_mb}")
        if self.incoming_fd is not None and self.incoming_fd < 0:
            raise ValueError(f"incoming_fd must be a file descriptor, not {self.incoming_fd}")


def _opt(value: object) -> str:
    """Escape a value inside a QEMU -option list: a comma is written as two commas."""
    return str(value).replace(",", ",,")


def _accel(config: VmConfig) -> list[str]:
    if config.accel == "tcg" and config.tb_size_mb is not None:
        return ["-accel", f"tcg,tb-size={config.tb_size_mb}"]
    return ["-accel", config.accel]


def _cpu(config: VmConfig) -> list[str]:
    # Under KVM the host CPU is native speed and has RDRAND when the host has it.
    return ["-cpu", "host" if config.accel == "kvm" else TCG_CPU]


def _socket(chardev_id: str, path: Path) -> list[str]:
    return ["-chardev", f"socket,id={chardev_id},path={_opt(path)},server=on,wait=off"]


def _disk(disk_id: str, path: Path, *, readonly: bool) -> list[str]:
    drive = f"file={_opt(path)},if=none,format=raw,id={disk_id}"
    # The scratch disk is thrown away with the VM, so flushing it to the host's disk is waste.
    drive += ",readonly=on" if readonly else ",cache=unsafe"
    return ["-drive", drive, "-device", f"virtio-blk-device,drive={disk_id},serial=pyti-{disk_id}"]


def build_argv(config: VmConfig) -> list[str]:
    """QEMU's argv for `config`; pure (reads no files, probes nothing)."""
    argv = [config.qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]
    argv += ["-nic", "none"]
    argv += _accel(config)
    argv += ["-M", "microvm,rtc=on"]
    argv += _cpu(config)
    argv += ["-m", f"{config.memory_mb}M", "-smp", str(config.cpus)]
    argv += ["-kernel", str(config.kernel), "-initrd", str(config.initrd)]
    argv += ["-append", config.cmdline]
    argv += [*_socket("con0", config.console_socket), "-serial", "chardev:con0"]
    argv += _socket("pyti0", config.serial_socket)
    argv += ["-device", "virtio-serial-device"]
    argv += ["-device", f"virtserialport,chardev=pyti0,name={SERIAL_PORT_NAME}"]
    argv += _disk("root", config.root_disk, readonly=True)
    if config.setup_disk is not None:
        argv += _disk("setup", config.setup_disk, readonly=True)
    if config.scratch_disk is not None:
        argv += _disk("scratch", config.scratch_disk, readonly=False)
    argv += ["-qmp", f"unix:{_opt(config.qmp_socket)},server=on,wait=off"]
    if config.pvpanic:
        argv += ["-device", "pvpanic"]
    if config.sandbox:
        argv += ["-sandbox", SANDBOX_OPTION]
    if config.incoming_fd is not None:
        argv += ["-incoming", f"fd:{config.incoming_fd}"]
    if config.paused:
        argv += ["-S"]
    return argv
