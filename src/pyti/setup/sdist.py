"""Read a few small members of a hostile sdist (or wheel) in memory, with caps.

Nothing is ever extracted. The whole archive is walked once, streaming, so a
gzip bomb is stopped by the cap on the bytes the headers announce, and every
read is bounded, so a member that lies about its size is stopped too.
"""

from __future__ import annotations

import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pyti.errors import HostileArchive

MAX_MEMBER_BYTES = 2 << 20  # pyproject.toml, tox.ini, PKG-INFO: small text files
MAX_READ_BYTES = 16 << 20  # all members read, together
MAX_ARCHIVE_BYTES = 1 << 30  # uncompressed bytes walked: stops a decompression bomb
MAX_MEMBERS = 100_000


# What a corrupt archive makes tarfile, zipfile, gzip and zlib raise (found by fuzzing):
# NotImplementedError is an unknown zip compression, RuntimeError an encrypted member,
# IndexError a zeroed local header (zipfile reads past a short name).
_CORRUPT = (
    tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error,
    EOFError, OSError, ValueError, NotImplementedError, RuntimeError, IndexError,
)  # fmt: skip


@dataclass(frozen=True)
class Limits:
    member: int = MAX_MEMBER_BYTES
    read: int = MAX_READ_BYTES
    archive: int = MAX_ARCHIVE_BYTES
    members: int = MAX_MEMBERS


def _safe_name(label: str, name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or "\x00" in name:
        raise HostileArchive(f"{label}: member escapes the archive: {name!r}")
    return path


def _check_link(label: str, member: PurePosixPath, target: str, *, hard: bool) -> None:
    # A hard link's target is relative to the archive root, a symlink's to its directory.
    resolved = PurePosixPath(target) if hard else member.parent / target
    if target.startswith("/") or _escapes(resolved):
        raise HostileArchive(f"{label}: link {str(member)!r} points outside: {target!r}")


def _escapes(path: PurePosixPath) -> bool:
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def _relative(path: PurePosixPath, strip_top: bool) -> str | None:
    if not strip_top:
        return str(path)
    return str(PurePosixPath(*path.parts[1:])) if len(path.parts) > 1 else None


Want = Callable[[str], bool]


def read_members(
    archive: Path,
    want: Want,
    *,
    strip_top: bool = True,
    limits: Limits | None = None,
    filename: str | None = None,
) -> dict[str, bytes]:
    """The wanted regular-file members, by path (inside the top directory if `strip_top`).

    `filename` gives the format when `archive` is a cache path without a suffix.
    """
    limits = limits or Limits()
    name = filename or archive.name
    if name.endswith((".zip", ".whl")):
        return _read_zip(archive, name, want, strip_top, limits)
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _read_tar(archive, name, want, strip_top, limits, gz=not name.endswith(".tar"))
    raise HostileArchive(f"{name}: not a .tar.gz, .zip or .whl archive")


class _Budget:
    def __init__(self, label: str, limits: Limits) -> None:
        self.label, self.limits = label, limits
        self.members = self.walked = self.read = 0

    def member(self, name: str, size: int) -> None:
        self.members += 1
        if self.members > self.limits.members:
            raise HostileArchive(f"{self.label}: more than {self.limits.members} members")
        self.walked += max(size, 0)
        if self.walked > self.limits.archive:
            raise HostileArchive(
                f"{self.label}: more than {self.limits.archive} bytes uncompressed"
                f" (at {name!r}); a decompression bomb?"
            )

    def take(self, name: str, size: int) -> None:
        if size > self.limits.member:
            raise HostileArchive(
                f"{self.label}: member {name!r} is larger than {self.limits.member} bytes"
            )
        self.read += size
        if self.read > self.limits.read:
            raise HostileArchive(f"{self.label}: wanted members exceed {self.limits.read}")


def _read_tar(
    archive: Path, label: str, want: Want, strip_top: bool, limits: Limits, *, gz: bool
) -> dict[str, bytes]:
    budget = _Budget(label, limits)
    found: dict[str, bytes] = {}
    try:
        # Stream mode: one pass, no random access, so no seeking into a bomb.
        with tarfile.open(archive, "r|gz" if gz else "r|") as tar:
            for info in tar:
                path = _safe_name(label, info.name)
                budget.member(info.name, info.size)
                if info.issym() or info.islnk():
                    _check_link(label, path, info.linkname, hard=info.islnk())
                    continue  # links are never followed
                if info.ischr() or info.isblk() or info.isfifo():
                    raise HostileArchive(f"{label}: device or fifo member {info.name!r}")
                rel = _relative(path, strip_top)
                if not info.isfile() or rel is None or not want(rel):
                    continue
                budget.take(info.name, info.size)
                handle = tar.extractfile(info)
                if handle is None:
                    continue
                data = handle.read(limits.member + 1)
                if len(data) > limits.member:
                    raise HostileArchive(f"{label}: member {info.name!r} is too large")
                found.setdefault(rel, data)
    except _CORRUPT as exc:
        raise HostileArchive(f"{label}: unreadable archive: {exc}") from exc
    return found


def _read_zip(
    archive: Path, label: str, want: Want, strip_top: bool, limits: Limits
) -> dict[str, bytes]:
    budget = _Budget(label, limits)
    found: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > limits.members:
                raise HostileArchive(f"{label}: more than {limits.members} members")
            for info in infos:
                path = _safe_name(label, info.filename)
                budget.member(info.filename, info.file_size)
                if stat.S_ISLNK(info.external_attr >> 16):
                    continue  # a symlink stored in a zip: never followed
                rel = _relative(path, strip_top)
                if info.is_dir() or rel is None or not want(rel):
                    continue
                budget.take(info.filename, info.file_size)
                with zf.open(info) as handle:
                    # The header's size may lie: bound the read itself.
                    data = handle.read(limits.member + 1)
                if len(data) > limits.member:
                    raise HostileArchive(f"{label}: member {info.filename!r} is too large")
                found.setdefault(rel, data)
    except _CORRUPT as exc:
        raise HostileArchive(f"{label}: unreadable archive: {exc}") from exc
    return found
