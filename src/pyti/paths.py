"""Where pyti keeps things: XDG cache and data dirs, never inside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """Images, downloads, setup disks, probes: all rebuildable."""
    override = os.environ.get("PYTI_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("pyti"))


def data_dir() -> Path:
    """The results store: not rebuildable, so not in the cache."""
    override = os.environ.get("PYTI_DATA_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir("pyti"))


def images_dir() -> Path:
    return cache_dir() / "images"


def downloads_dir() -> Path:
    return cache_dir() / "downloads"


def setup_disks_dir() -> Path:
    return cache_dir() / "setup"


def vms_dir() -> Path:
    """Per-VM temporary directories (sockets, scratch disk, console log)."""
    return cache_dir() / "vms"


def snapshots_dir() -> Path:
    """Saved VMs to resume instead of booting (pyti.snapshot)."""
    return cache_dir() / "snapshots"


def probes_dir() -> Path:
    return cache_dir() / "probes"


def store_path() -> Path:
    return data_dir() / "runs.sqlite3"


def repo_root() -> Path | None:
    """The checkout this pyti runs from (images/ and guest_agent/ live there)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "guest_agent").is_dir() and (root / "images").is_dir() else None
