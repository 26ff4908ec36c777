"""Which accelerator runs the guests: KVM when a probe guest really boots under it, else TCG.

`/dev/kvm` existing proves nothing (on some hosts `-accel kvm` hangs and `-cpu host`
aborts), so the probe boots a guest image's own kernel under KVM with an init that does
not exist: a working KVM reaches the kernel's "no working init" panic, and QEMU exits by
itself (`panic=-1 -no-reboot`) within a second or two. Anything else within the deadline
means TCG. The answer is cached per host boot and QEMU build, so runs do not pay for it
again.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from pyti import paths
from pyti.errors import AcceleratorUnavailable

log = logging.getLogger(__name__)

PROBE_DEADLINE = 8.0
_PANIC_MARKERS = (b"Kernel panic", b"No working init", b"Attempted to kill init")


@dataclass(frozen=True, kw_only=True)
class AccelChoice:
    accel: str  # "kvm" or "tcg"
    reason: str
    probed: bool  # False when --accel decided, or no probe could run

    def __str__(self) -> str:
        return f"{self.accel} ({self.reason})"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def qemu_identity(qemu: str) -> str:
    """Path, size and mtime of the QEMU binary: changes when QEMU is upgraded."""
    import shutil

    found = shutil.which(qemu)
    if not found:
        return "missing"
    stat = Path(found).stat()
    return f"{found}:{stat.st_size}:{int(stat.st_mtime)}"


def _cache_file() -> Path:
    return paths.probes_dir() / "accel.json"


def _read_cache(key: str) -> AccelChoice | None:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    try:
        return AccelChoice(accel=data["accel"], reason=data["reason"], probed=True)
    except (KeyError, TypeError):
        return None


def _write_cache(key: str, choice: AccelChoice) -> None:
    target = _cache_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".accel-")
    with os.fdopen(fd, "w") as handle:
        json.dump({"key": key, **asdict(choice)}, handle)
    os.replace(tmp, target)


def kvm_device_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def probe_kvm(qemu: str, kernel: Path, initrd: Path, deadline: float = PROBE_DEADLINE) -> bool:
    """Boot `kernel` under KVM to its init panic; True only if that happens in time."""
    argv = [
        qemu,
        "-accel",
        "kvm",
        "-M",
        "microvm,rtc=on",
        "-cpu",
        "host",
        "-m",
        "256M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-nic",
        "none",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        "console=ttyS0 panic=-1 reboot=t rdinit=/pyti-probe-no-such-init init=/none",
    ]
    try:
        result = subprocess.run(
            argv, capture_output=True, timeout=deadline, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        log.info("KVM probe: no panic within %.0f s", deadline)
        return False
    except OSError as exc:
        log.info("KVM probe could not start QEMU: %s", exc)
        return False
    output = result.stdout + result.stderr
    return any(marker in output for marker in _PANIC_MARKERS)


def choose(
    requested: str = "auto",
    *,
    qemu: str = "qemu-system-x86_64",
    kernel: Path | None = None,
    initrd: Path | None = None,
) -> AccelChoice:
    """Decide the accelerator: `requested` wins; `auto` probes (cached) when it can."""
    if requested == "tcg":
        return AccelChoice(accel="tcg", reason="--accel tcg", probed=False)
    if requested == "kvm":
        if not kvm_device_usable():
            raise AcceleratorUnavailable(
                "--accel kvm: /dev/kvm is missing or not accessible; use --accel tcg"
            )
        return AccelChoice(accel="kvm", reason="--accel kvm", probed=False)
    if not kvm_device_usable():
        return AccelChoice(accel="tcg", reason="no usable /dev/kvm", probed=False)
    key = f"{boot_id()}|{qemu_identity(qemu)}"
    cached = _read_cache(key)
    if cached is not None:
        return cached
    if kernel is None or initrd is None:
        return AccelChoice(
            accel="tcg", reason="KVM not probed yet: no guest image to probe with", probed=False
        )
    if probe_kvm(qemu, kernel, initrd):
        choice = AccelChoice(accel="kvm", reason="a probe guest booted under KVM", probed=True)
    else:
        choice = AccelChoice(
            accel="tcg", reason="/dev/kvm exists but a probe guest did not boot", probed=True
        )
    _write_cache(key, choice)
    return choice
