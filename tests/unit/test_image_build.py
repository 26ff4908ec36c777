"""ensure_image with the slow parts stubbed: builds once, reuses, and rebuilds a damaged image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyti.image import build, cache, cpio, initramfs
from pyti.image.suites import Suite


@pytest.fixture(autouse=True)
def stubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A cache in tmp_path whose root and kernel parts are tiny fakes; returns the build log."""
    monkeypatch.setenv("PYTI_CACHE_DIR", str(tmp_path / "cache"))
    built: list[str] = []

    def fake_part(kind: str, suite: Suite, key: str, builder: Any, say: Any) -> Path:
        part = cache.images_dir() / cache.BASE_DIR / f"{kind}-{suite.name}-{key[:12]}"
        if not part.exists():
            built.append(kind)
            part.mkdir(parents=True)
            info: dict[str, Any] = {"key": key, "build_seconds": 0.0}
            if kind == "root":
                (part / cache.ROOT).write_bytes(b"hsqs")
                info |= {"python_version": "3.11.2", "uv_version": "0", "mmdebstrap_mode": "root"}
            else:
                (part / cache.KERNEL).write_bytes(b"\x7fELF")
                info |= {"kernel_package": "linux-image-x", "kernel_version": "x", "modules": []}
            (part / build.PART_INFO).write_text(json.dumps(info))
        return part

    def fake_entries(**_: Any) -> list[cpio.Entry]:
        built.append("initramfs")
        return [cpio.file("init", b"#!/bin/sh\n", 0o755)]

    monkeypatch.setattr(build, "_ensure_part", fake_part)
    monkeypatch.setattr(initramfs, "entries", fake_entries)
    return built


def test_first_call_builds_and_the_second_reuses(stubbed: list[str]) -> None:
    image = build.ensure_image("bookworm")
    assert stubbed == ["root", "kernel", "initramfs"]
    assert image.initrd.is_file() and image.root.read_bytes() == b"hsqs"
    manifest = json.loads((image.directory / cache.MANIFEST).read_text())
    assert manifest["suite"] == "bookworm" and manifest["timezone"] == "Etc/UTC"
    assert manifest["platform_tag"] == "x86_64-manylinux_2_36"
    assert "initcall_blacklist=" in manifest["cmdline"]
    assert build.ensure_image("bookworm") == image
    assert stubbed == ["root", "kernel", "initramfs"]
    assert build.find_image("bookworm") == image


def test_a_damaged_image_is_rebuilt_not_returned(stubbed: list[str]) -> None:
    image = build.ensure_image("bookworm")
    image.initrd.write_bytes(b"tampered by someone")
    assert build.find_image("bookworm") is None
    again = build.ensure_image("bookworm")
    assert stubbed == ["root", "kernel", "initramfs", "initramfs"]  # parts reused
    assert again.initrd.read_bytes() != b"tampered by someone"
    assert cache.load(again.directory, deep=True) is not None


def test_find_image_is_none_before_any_build() -> None:
    assert build.find_image("trixie") is None


def test_leftovers_of_a_dead_build_are_removed_by_the_next_build() -> None:
    leftover = cache.images_dir() / cache.BASE_DIR / ".tmp-root-bookworm-0123-xyz"
    leftover.mkdir(parents=True)
    (cache.images_dir() / ".stale-bookworm-0").mkdir()
    build.ensure_image("bookworm")
    assert not leftover.exists()
    assert not (cache.images_dir() / ".stale-bookworm-0").exists()
