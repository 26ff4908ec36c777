"""The image cache: ~/.cache/pyti/images/<suite>-<id12>/ with a manifest.json each.

An image directory appears only by an atomic rename of a finished build, so a reader
never sees half an image; builds serialise on one flock. Before use, an image's files
are checked against its manifest (size and mtime: cheap on every run); one that no
longer matches is rebuilt, never booted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyti import paths

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SCHEMA = 1
ROOT, KERNEL, INITRD = "root.sqfs", "vmlinux", "initrd"
BASE_DIR = ".base"  # root filesystems and kernels shared by images of one base key
LOG_DIR = "logs"


@dataclass(frozen=True)
class Image:
    """A built, verified image (the contract in docs/architecture.md)."""

    name: str
    suite: str
    python_version: str
    platform_tag: str
    kernel_version: str
    image_id: str
    directory: Path
    root: Path
    kernel: Path
    initrd: Path
    cmdline: str

    @classmethod
    def from_manifest(cls, directory: Path, manifest: dict[str, Any]) -> Image:
        return cls(
            name=manifest["name"],
            suite=manifest["suite"],
            python_version=manifest["python_version"],
            platform_tag=manifest["platform_tag"],
            kernel_version=manifest["kernel_version"],
            image_id=manifest["image_id"],
            directory=directory,
            root=directory / ROOT,
            kernel=directory / KERNEL,
            initrd=directory / INITRD,
            cmdline=manifest["cmdline"],
        )


def images_dir() -> Path:
    return paths.images_dir()


def image_name(suite: str, image_id: str) -> str:
    return f"{suite}-{image_id[:12]}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def mismatches(directory: Path, manifest: dict[str, Any], *, deep: bool = False) -> list[str]:
    """Files that no longer match the manifest (size+mtime; sha256 too when `deep`)."""
    bad = []
    files = manifest.get("files")
    if not isinstance(files, dict) or not {ROOT, KERNEL, INITRD} <= files.keys():
        return ["manifest lists no files"]
    for name, record in files.items():
        path = directory / name
        try:
            st = path.stat()
        except OSError:
            bad.append(f"{name}: missing")
            continue
        if st.st_size != record.get("size") or st.st_mtime_ns != record.get("mtime_ns"):
            bad.append(f"{name}: size or mtime changed")
        elif deep and sha256_file(path) != record.get("sha256"):
            bad.append(f"{name}: sha256 changed")
    return bad


def load(directory: Path, *, deep: bool = False) -> Image | None:
    """The image in `directory` if its files match its manifest, else None (logged)."""
    manifest = read_manifest(directory)
    if manifest is None:
        return None
    bad = mismatches(directory, manifest, deep=deep)
    if bad:
        log.warning("image %s does not match its manifest (%s)", directory.name, "; ".join(bad))
        return None
    try:
        return Image.from_manifest(directory, manifest)
    except (KeyError, TypeError):
        return None


def installed() -> list[tuple[Path, dict[str, Any] | None]]:
    """Every image directory with its manifest (None when unreadable), sorted by name."""
    root = images_dir()
    if not root.is_dir():
        return []
    return [
        (d, read_manifest(d))
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".") and d.name != LOG_DIR
    ]


def remove(directory: Path) -> int:
    """Remove one image directory; return the bytes freed (hard links to a base free 0)."""
    freed = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            st = path.lstat()
            if path.is_file() and st.st_nlink == 1:
                freed += st.st_size
    shutil.rmtree(directory, ignore_errors=True)
    return freed


def remove_leftovers() -> None:
    """Temporary and stale directories of builds that died (call under the build lock: then
    no build is running, so every one of them is a leftover)."""
    for parent in (images_dir(), images_dir() / BASE_DIR):
        if parent.is_dir():
            for path in parent.iterdir():
                if path.name.startswith((".tmp-", ".stale-")):
                    log.info("removing leftover %s", path)
                    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time per cache; a second builder waits, then finds the image built."""
    root = images_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
