"""The setup disk: dists/ plus manifest.cbor in a squashfs, the same bytes for the same inputs.

Built without root by mksquashfs with every timestamp, owner and mode fixed,
and cached under setup_disks_dir() by the manifest's digest (the manifest
names every file and its sha256, so it identifies the whole content).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import trio

from pyti import paths
from pyti.errors import HostError, MissingTool
from pyti.protocol.manifest import SetupManifest

log = logging.getLogger(__name__)

# Part of the cache key: change it when the layout or the mksquashfs options change.
FORMAT = b"pyti-setup-disk-2"  # 2: bytecode trees
MKSQUASHFS_OPTIONS = (
    "-noappend", "-all-root", "-no-xattrs", "-no-exports", "-no-progress",
    "-reproducible", "-all-time", "0", "-mkfs-time", "0", "-root-time", "0",
    "-comp", "lz4", "-quiet",
)  # fmt: skip


# Every setup disk is padded (sparse: no blocks) to this size, so that all of them look the
# same to the guest and one saved VM fits every run (pyti.snapshot: the size of a disk is
# part of the VM's state; squashfs ignores what follows its end).
PADDED_BYTES = 64 << 30

BYTECODE_SUFFIX = ".pyti-bytecode"
PYC_MEMBER = re.compile(r"(?:[A-Za-z0-9_.-]+/)*__pycache__/[A-Za-z0-9_.-]+\.pyc")


def disk_digest(manifest: SetupManifest) -> str:
    return hashlib.sha256(FORMAT + manifest.to_cbor()).hexdigest()


def disk_path(digest: str) -> Path:
    return paths.setup_disks_dir() / f"{digest}.sqfs"


def _stage(folder: Path, manifest: SetupManifest, sources: Mapping[str, Path]) -> None:
    dists = folder / "dists"
    dists.mkdir(mode=0o755)
    for name in sorted(manifest.files):
        target = dists / name
        try:
            os.link(sources[name], target)  # the cache is on the same filesystem: no copy
        except OSError:
            shutil.copyfile(sources[name], target)
        target.chmod(0o644)
    for name in manifest.bytecode:
        _stage_bytecode(dists / name, folder / "bytecode" / name.removesuffix(BYTECODE_SUFFIX))
    manifest_file = folder / "manifest.cbor"
    manifest_file.write_bytes(manifest.to_cbor())
    manifest_file.chmod(0o644)
    folder.chmod(0o755)


def _stage_bytecode(archive: Path, tree: Path) -> None:
    """The host-compiled pycs as a tree the agent links into the venv (no unpacking there).

    The archive beside it is hash-checked by the agent; this tree is made from it here.
    """
    with zipfile.ZipFile(archive) as members:
        for info in members.infolist():
            if not PYC_MEMBER.fullmatch(info.filename) or ".." in info.filename:
                continue
            target = tree / info.filename
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            target.write_bytes(members.read(info))
            target.chmod(0o644)


async def build_disk(manifest: SetupManifest, sources: Mapping[str, Path]) -> tuple[Path, str]:
    """(path, digest) of the setup disk; reused when it already exists."""
    digest = disk_digest(manifest)
    target = disk_path(digest)
    if target.is_file():
        log.debug("setup disk %s is cached", target)
        pad(target)  # a disk cached before padding existed
        return target, digest
    mksquashfs = shutil.which("mksquashfs") or (
        "/usr/bin/mksquashfs" if Path("/usr/bin/mksquashfs").exists() else None
    )
    if mksquashfs is None:
        raise MissingTool("mksquashfs", "apt-get install squashfs-tools (or run `just setup`)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".stage-") as tmp:
        stage = Path(tmp) / "root"
        stage.mkdir()
        _stage(stage, manifest, sources)
        partial = Path(tmp) / "disk.sqfs"
        argv = [mksquashfs, str(stage), str(partial), *MKSQUASHFS_OPTIONS]
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip()[-1000:]
            raise HostError(f"mksquashfs failed (exit {done.returncode}): {detail}")
        partial.chmod(0o644)
        pad(partial)
        os.replace(partial, target)
    return target, digest


def content_size(disk: Path) -> int:
    """The squashfs's own size (its superblock's bytes_used), without the padding."""
    with disk.open("rb") as handle:
        superblock = handle.read(96)
    if superblock[:4] != b"hsqs":
        raise HostError(f"{disk} is not a squashfs image")
    return int.from_bytes(superblock[40:48], "little")


def pad(disk: Path) -> None:
    """Extend `disk` with a hole to PADDED_BYTES (never shrinks a larger disk)."""
    if disk.stat().st_size < PADDED_BYTES:
        os.truncate(disk, PADDED_BYTES)
