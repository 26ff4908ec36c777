"""The guest kernel: an ELF vmlinux for direct PVH boot, pulled out of the suite's vmlinuz.

Booting the compressed bzImage costs its decompression under TCG on every boot
(+2.7 s for bookworm's xz, +0.65 s for trixie's zstd), so the build does it once.
"""

from __future__ import annotations

import lzma
import subprocess
from pathlib import Path

from pyti.errors import ImageBuildFailed
from pyti.image.commands import require

XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ELF_MAGIC = b"\x7fELF"


def find_vmlinuz(unpacked: Path) -> tuple[str, Path]:
    """(kernel version, path) of the one vmlinuz in an unpacked linux-image .deb."""
    found = sorted((unpacked / "boot").glob("vmlinuz-*"))
    if len(found) != 1:
        raise ImageBuildFailed(f"expected one vmlinuz in the kernel package, found {len(found)}")
    return found[0].name.removeprefix("vmlinuz-"), found[0]


def _xz(data: bytes) -> bytes | None:
    try:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    except lzma.LZMAError:
        return None


def _zstd(data: bytes) -> bytes | None:
    # zstd stops at the end of the frame; the bzImage's trailing bytes make it exit non-zero,
    # so judge by what came out (an ELF header), not by the exit status.
    result = subprocess.run(
        [require("zstd"), "-d", "-c", "-q"],
        input=data,
        capture_output=True,
        check=False,
    )
    return result.stdout or None


def extract_vmlinux(vmlinuz: Path, dest: Path) -> str:
    """Write the ELF kernel inside `vmlinuz` to `dest`; return the compression found."""
    blob = vmlinuz.read_bytes()
    for name, magic, decompress in (("xz", XZ_MAGIC, _xz), ("zstd", ZSTD_MAGIC, _zstd)):
        start = blob.find(magic)
        while start != -1:
            elf = decompress(blob[start:])
            if elf is not None and elf.startswith(ELF_MAGIC):
                dest.write_bytes(elf)
                return name
            start = blob.find(magic, start + 1)
    raise ImageBuildFailed(f"no xz or zstd ELF payload found in {vmlinuz.name}")
