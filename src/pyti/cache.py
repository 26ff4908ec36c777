"""Sizes of pyti's caches, and clearing them (results in the data dir are never touched)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pyti import paths


def tree_size(root: Path) -> int:
    """Bytes allocated under `root` (sparse files count what they use)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total


def sections() -> list[tuple[str, Path]]:
    return [
        ("images", paths.images_dir()),
        ("downloads", paths.downloads_dir()),
        ("setup disks", paths.setup_disks_dir()),
        ("vm snapshots", paths.snapshots_dir()),
        ("vms", paths.vms_dir()),
        ("probes", paths.probes_dir()),
    ]


def clear() -> int:
    """Remove the whole cache dir except the bootstrap tools ./dev needs; return bytes freed."""
    root = paths.cache_dir()
    freed = 0
    if not root.is_dir():
        return 0
    for child in root.iterdir():
        if child.name == "bootstrap":
            continue
        freed += tree_size(child) if child.is_dir() else child.lstat().st_blocks * 512
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    return freed
