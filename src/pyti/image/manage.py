"""`pyti image list/rm` and the pruning that keeps the cache from growing per agent edit."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyti.errors import UsageError
from pyti.image import cache
from pyti.image.build import keys
from pyti.image.sources import Sources
from pyti.image.suites import SUITES, get_suite

log = logging.getLogger(__name__)

# Images of one suite kept besides the current one: an agent edit makes a new image
# (~1 s to build), and a checkout switched back and forth should not rebuild each time.
KEEP_OLD = 2


@dataclass(frozen=True)
class ImageSummary:
    name: str
    suite: str
    python_version: str
    kernel_version: str
    size: int  # bytes of the image's files
    built_at: str
    status: str  # ok | current | damaged | unreadable
    directory: Path
    own: int = 0  # bytes no other image shares (the rest are hard links to a shared base)


def _current_names() -> set[str]:
    sources = Sources.locate()
    return {cache.image_name(suite, keys(get_suite(suite), sources).image) for suite in SUITES}


def list_images() -> list[ImageSummary]:
    current = _current_names()
    out = []
    for directory, manifest in cache.installed():
        if manifest is None:
            out.append(ImageSummary(directory.name, "?", "?", "?", 0, "?", "unreadable", directory))
            continue
        damaged = cache.mismatches(directory, manifest)
        status = "damaged" if damaged else "current" if directory.name in current else "ok"
        out.append(_summary(directory, manifest, status))
    return out


def _summary(directory: Path, manifest: dict[str, Any], status: str) -> ImageSummary:
    sizes = manifest.get("sizes", {})
    return ImageSummary(
        name=directory.name,
        suite=str(manifest.get("suite", "?")),
        python_version=str(manifest.get("python_version", "?")),
        kernel_version=str(manifest.get("kernel_version", "?")),
        size=sum(v for v in sizes.values() if isinstance(v, int)),
        built_at=str(manifest.get("built_at", "?")),
        status=status,
        directory=directory,
        own=_own_bytes(directory),
    )


def _own_bytes(directory: Path) -> int:
    """Bytes of the files only this image links (a shared root or kernel has more links)."""
    total = 0
    for path in directory.iterdir():
        try:
            st = path.lstat()
        except OSError:
            continue
        if path.is_file() and st.st_nlink == 1:
            total += st.st_blocks * 512
    return total


def disk_usage() -> int:
    """Bytes the image cache takes on disk, every hard-linked file counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in cache.images_dir().rglob("*"):
        try:
            st = path.lstat()
        except OSError:
            continue
        if path.is_file() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def remove_images(names: list[str], *, suite: str | None = None, everything: bool = False) -> int:
    """Remove images by name, by suite, or all (with their bases); return bytes freed."""
    if suite is not None:
        get_suite(suite)
    installed = {d.name: d for d, _ in cache.installed()}
    unknown = [name for name in names if name not in installed]
    if unknown:
        known = ", ".join(sorted(installed)) or "none"
        raise UsageError(f"no image named {', '.join(unknown)}; installed: {known}")
    chosen = [installed[name] for name in names]
    if suite is not None:
        chosen += [d for name, d in installed.items() if name.startswith(f"{suite}-")]
    if everything:
        chosen = list(installed.values())
    freed = sum(cache.remove(directory) for directory in set(chosen))
    return freed + remove_unused_bases()


def remove_unused_bases() -> int:
    """Remove root and kernel parts that no image uses any more; return bytes freed."""
    in_use = set()
    for _, manifest in cache.installed():
        if manifest is not None:
            for kind in ("root", "kernel"):
                key = str(manifest.get(f"{kind}_key", ""))[:12]
                in_use.add(f"{kind}-{manifest.get('suite')}-{key}")
    base_dir = cache.images_dir() / cache.BASE_DIR
    freed = 0
    if base_dir.is_dir():
        for base in base_dir.iterdir():
            if base.name.startswith(".tmp-"):
                continue
            if base.name not in in_use:
                freed += sum(p.stat().st_size for p in base.rglob("*") if p.is_file())
                shutil.rmtree(base, ignore_errors=True)
    return freed


def prune(suite: str, keep_name: str, keep_old: int = KEEP_OLD) -> None:
    """Drop all but the `keep_old` newest other images of `suite` (call under the lock)."""
    others = [
        (manifest.get("built_at", ""), directory)
        for directory, manifest in cache.installed()
        if manifest is not None and manifest.get("suite") == suite and directory.name != keep_name
    ]
    for _, directory in sorted(others, key=lambda pair: str(pair[0]), reverse=True)[keep_old:]:
        log.info("pruning old image %s", directory.name)
        cache.remove(directory)
    remove_unused_bases()
