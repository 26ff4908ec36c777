"""A minimal, deterministic cpio "newc" writer: the initramfs format the kernel unpacks.

Written here rather than by cpio(1) so the archive needs no root (device nodes and
ownership are just header fields) and is byte-identical for identical inputs.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO

TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    path: str  # relative, no leading slash
    mode: int  # full st_mode, type bits included
    data: bytes = b""
    uid: int = 0
    gid: int = 0
    rdev: tuple[int, int] = (0, 0)


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(entry: Entry, ino: int, name: bytes) -> bytes:
    fields = (
        ino,
        entry.mode,
        entry.uid,
        entry.gid,
        2 if stat.S_ISDIR(entry.mode) else 1,
        0,  # mtime: fixed, for reproducible archives
        len(entry.data),
        0,
        0,
        entry.rdev[0],
        entry.rdev[1],
        len(name) + 1,
        0,
    )
    return b"070701" + b"".join(f"{value:08x}".encode() for value in fields)


def write(entries: list[Entry], out: BinaryIO) -> int:
    """Write the archive (entries in the given order, then the trailer); return its size."""
    size = 0
    for ino, entry in enumerate([*entries, Entry(TRAILER, 0)], start=1):
        name = entry.path.lstrip("/").encode()
        head = _header(entry, ino if entry.path != TRAILER else 0, name) + name + b"\0"
        chunk = head + _pad(len(head)) + entry.data + _pad(len(entry.data))
        out.write(chunk)
        size += len(chunk)
    return size
