"""One temporary directory per VM, locked for the VM's life, swept after a `kill -9`.

The directory holds the sockets, the scratch disk and QEMU's log. It is removed when the VM
ends; but `kill -9` runs no `finally`, so every new VM first sweeps stale directories: those
whose lock (an `fcntl.flock` held by the owning pyti process, released by the kernel when that
process dies) is free and which are old enough not to be half-created.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

from pyti import paths
from pyti.errors import EnvironmentProblem

log = logging.getLogger(__name__)

LOCK_NAME = "lock"
PREFIX = "vm-"
# A directory younger than this may be between mkdtemp and flock in another process.
MIN_STALE_AGE = 10.0
# sun_path is 108 bytes including the final NUL.
MAX_SOCKET_PATH = 107


class VmDir:
    """A locked, private directory; use as a context manager or call `close()` (idempotent)."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    @classmethod
    def create(cls, base: Path | None = None) -> VmDir:
        base = base if base is not None else paths.vms_dir()
        base.mkdir(parents=True, exist_ok=True)
        sweep_stale(base)
        path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        vmdir = cls(path, fd)
        longest = vmdir.socket("console")
        if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
            vmdir.close()
            raise EnvironmentProblem(
                f"VM directory {path} is too deep for unix sockets "
                f"(limit {MAX_SOCKET_PATH} bytes); fix: set PYTI_CACHE_DIR to a shorter path"
            )
        return vmdir

    def socket(self, name: str) -> Path:
        return self.path / f"{name}.sock"

    @property
    def closed(self) -> bool:
        return self._lock_fd is None

    def close(self) -> None:
        if self._lock_fd is None:
            return
        # Remove first, unlock last: a sweeper never sees an unlocked directory of ours.
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> VmDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def sweep_stale(base: Path, *, min_age: float = MIN_STALE_AGE) -> list[Path]:
    """Remove VM directories under `base` whose owner is gone; return what was removed."""
    removed: list[Path] = []
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
    except FileNotFoundError:
        return removed
    now = time.time()
    for candidate in candidates:
        try:
            if now - candidate.stat().st_mtime < min_age:
                continue
            fd = os.open(candidate / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # Old and lockless: its creator died between mkdtemp and flock.
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a live VM
            continue
        try:
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    if removed:
        log.info("removed %d stale VM directories under %s", len(removed), base)
    return removed
