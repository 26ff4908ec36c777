"""What the agent does to the guest system once the host's Start arrives, before any task.

A guest may be a restored snapshot (docs/lifecycle.md): every run then resumes the same
memory image, taken just before Hello. So what differs per run happens here, after Start:

- the wall clock: the snapshot's is minutes or days old; Start carries the host's time;
- the kernel's random state: identical in every restored guest until reseeded, so two runs
  would draw the same "random" bytes (uuid4, tempfile names, keys); Start carries fresh
  host entropy, mixed in and forced into the CRNG;
- the setup disk: a different file on every run behind the same device, so it is mounted
  only now, after dropping whatever the kernel cached of the device while probing it.

A cold-booted guest goes through the same steps, so there is one path to test.
"""

from __future__ import annotations

import os
import time

SETUP_DIR = "/mnt/setup"
URANDOM = "/dev/urandom"

_BLKFLSBUF = 0x1261  # <linux/fs.h>: drop the block device's cached pages
_RNDRESEEDCRNG = 0x5207  # <linux/random.h>: reseed the CRNG from the input pool now
_MS_RDONLY, _MS_NOSUID, _MS_NODEV = 1, 2, 4


def set_clock(epoch: float) -> None:
    """Set the wall clock to the host's (CLOCK_MONOTONIC, which timers use, is untouched)."""
    if epoch > 0:
        time.clock_settime(time.CLOCK_REALTIME, epoch)


def reseed(entropy: bytes) -> None:
    """Mix `entropy` into the kernel's pool and reseed the CRNG from it at once."""
    if not entropy:
        return
    import fcntl

    with open(URANDOM, "wb", buffering=0) as pool:
        pool.write(entropy)
        fcntl.ioctl(pool.fileno(), _RNDRESEEDCRNG)


def mount_setup(device: str, target: str = SETUP_DIR) -> None:
    """Mount the setup disk (squashfs) read-only at `target`; QEMU enforces read-only too."""
    import ctypes
    import fcntl

    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _BLKFLSBUF)  # the placeholder's blocks, read at probe time
    finally:
        os.close(fd)
    libc = ctypes.CDLL(None, use_errno=True)
    flags = _MS_RDONLY | _MS_NOSUID | _MS_NODEV
    if libc.mount(device.encode(), target.encode(), b"squashfs", flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot mount the setup disk {device}: {os.strerror(errno)}")


def prepare(clock: float, entropy: bytes) -> None:
    """Everything a run needs that must not come from the snapshot; errors propagate."""
    set_clock(clock)
    reseed(entropy)
    device = os.environ.get("PYTI_SETUP_DEV", "")
    if device and not os.path.ismount(SETUP_DIR):
        mount_setup(device)
