"""The initramfs cpio writer: newc headers, 4-byte alignment, device nodes, trailer."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess

import pytest

from pyti.image import cpio


def parse(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """A strict newc reader: (name, mode, data, rdev) per entry, trailer included."""
    out = []
    offset = 0
    while True:
        header = data[offset : offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmajor, rminor, namesize = (
            fields[1],
            fields[6],
            fields[9],
            fields[10],
            fields[11],
        )
        name_end = offset + 110 + namesize
        name = data[offset + 110 : name_end - 1].decode()
        assert data[name_end - 1] == 0
        body = name_end + (-name_end % 4)
        assert body % 4 == 0
        out.append((name, mode, data[body : body + filesize], (rmajor, rminor)))
        offset = body + filesize + (-(body + filesize) % 4)
        if name == cpio.TRAILER:
            assert offset == len(data)
            return out


def archive(entries: list[cpio.Entry]) -> bytes:
    buffer = io.BytesIO()
    size = cpio.write(entries, buffer)
    assert size == len(buffer.getvalue())
    return buffer.getvalue()


def test_round_trip_of_every_entry_kind() -> None:
    data = archive(
        [
            cpio.directory("bin"),
            cpio.file("bin/tool", b"#!/bin/sh\n", 0o755),
            cpio.symlink("bin/sh", "tool"),
            cpio.char_device("dev/console", 5, 1),
            cpio.file("odd", b"12345"),
        ]
    )
    entries = parse(data)
    names = [name for name, *_ in entries]
    assert names == ["bin", "bin/tool", "bin/sh", "dev/console", "odd", cpio.TRAILER]
    by_name = {name: rest for name, *rest in entries}
    assert stat.S_ISDIR(by_name["bin"][0])
    assert by_name["bin/tool"][0] == stat.S_IFREG | 0o755
    assert by_name["bin/tool"][1] == b"#!/bin/sh\n"
    assert stat.S_ISLNK(by_name["bin/sh"][0]) and by_name["bin/sh"][1] == b"tool"
    assert stat.S_ISCHR(by_name["dev/console"][0]) and by_name["dev/console"][2] == (5, 1)
    assert by_name["odd"][1] == b"12345"


def test_same_entries_give_identical_bytes() -> None:
    entries = [cpio.directory("a"), cpio.file("a/b", b"x" * 1001)]
    assert archive(entries) == archive(entries)


def test_leading_slash_is_dropped() -> None:
    assert parse(archive([cpio.file("/init", b"")]))[0][0] == "init"


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) not installed")
def test_gnu_cpio_reads_the_archive() -> None:
    data = archive([cpio.directory("d"), cpio.file("d/f", b"hello")])
    listing = subprocess.run(
        ["cpio", "-it", "--quiet"], input=data, capture_output=True, check=True
    ).stdout.decode()
    assert listing.split() == ["d", "d/f"]
