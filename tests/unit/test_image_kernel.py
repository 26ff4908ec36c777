"""Pulling the ELF vmlinux out of a vmlinuz: xz (bookworm) and zstd (trixie) payloads."""

from __future__ import annotations

import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from pyti.errors import ImageBuildFailed
from pyti.image.kernel import XZ_MAGIC, extract_vmlinux, find_vmlinuz

ELF = b"\x7fELF" + bytes(range(256)) * 64


def test_xz_payload_after_a_false_magic(tmp_path: Path) -> None:
    # a stray magic before the real stream must not stop the search
    blob = b"MZ" + b"\0" * 100 + XZ_MAGIC + b"junk" + lzma.compress(ELF) + b"trailer"
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(blob)
    assert extract_vmlinux(vmlinuz, tmp_path / "vmlinux") == "xz"
    assert (tmp_path / "vmlinux").read_bytes() == ELF


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd not installed")
def test_zstd_payload(tmp_path: Path) -> None:
    packed = subprocess.run(["zstd", "-c", "-q"], input=ELF, capture_output=True, check=True)
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"\0" * 512 + packed.stdout + b"\0" * 64)
    assert extract_vmlinux(vmlinuz, tmp_path / "vmlinux") == "zstd"
    assert (tmp_path / "vmlinux").read_bytes() == ELF


def test_payload_that_is_not_elf_is_refused(tmp_path: Path) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"\0" * 64 + lzma.compress(b"not a kernel"))
    with pytest.raises(ImageBuildFailed, match="no xz or zstd ELF payload"):
        extract_vmlinux(vmlinuz, tmp_path / "vmlinux")


def test_find_vmlinuz_names_the_kernel_version(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz-6.12.117+deb13-amd64").write_bytes(b"")
    version, path = find_vmlinuz(tmp_path)
    assert version == "6.12.117+deb13-amd64"
    assert path.name == "vmlinuz-6.12.117+deb13-amd64"
