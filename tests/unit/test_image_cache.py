"""The image cache: manifests verify files, damaged images are refused, rm frees space."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pyti.errors import UsageError
from pyti.image import cache
from pyti.image.manage import list_images, prune, remove_images, remove_unused_bases


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYTI_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_image(
    name: str,
    *,
    suite: str = "bookworm",
    built_at: str = "2026-01-01T00:00:00Z",
    root_key: str = "b" * 64,
) -> Path:
    directory = cache.images_dir() / name
    directory.mkdir(parents=True)
    for file_name, data in (
        (cache.ROOT, b"root" * 100),
        (cache.KERNEL, b"\x7fELF"),
        (cache.INITRD, b"070701"),
    ):
        (directory / file_name).write_bytes(data)
    manifest: dict[str, Any] = {
        "schema": cache.SCHEMA,
        "name": name,
        "suite": suite,
        "image_id": "a" * 64,
        "root_key": root_key,
        "kernel_key": "k" * 64,
        "python_version": "3.11.2",
        "platform_tag": "x86_64-manylinux_2_36",
        "kernel_version": "6.1.0-50-amd64",
        "cmdline": "console=ttyS0",
        "built_at": built_at,
        "files": {
            n: cache.file_record(directory / n) for n in (cache.ROOT, cache.KERNEL, cache.INITRD)
        },
    }
    manifest["sizes"] = {n: r["size"] for n, r in manifest["files"].items()}
    (directory / cache.MANIFEST).write_text(json.dumps(manifest))
    return directory


def test_an_intact_image_loads_with_its_paths() -> None:
    directory = fake_image("bookworm-000000000000")
    image = cache.load(directory)
    assert image is not None
    assert image.root == directory / "root.sqfs"
    assert image.kernel_version == "6.1.0-50-amd64"
    assert image.platform_tag == "x86_64-manylinux_2_36"


def test_a_changed_file_makes_the_image_unusable() -> None:
    directory = fake_image("bookworm-000000000000")
    (directory / cache.INITRD).write_bytes(b"tampered")
    assert cache.load(directory) is None


def test_same_size_tampering_is_caught_by_mtime_and_by_deep_check() -> None:
    directory = fake_image("bookworm-000000000000")
    initrd = directory / cache.INITRD
    record = json.loads((directory / cache.MANIFEST).read_text())["files"][cache.INITRD]
    initrd.write_bytes(b"XXXXXX")
    assert cache.load(directory) is None
    os.utime(initrd, ns=(record["mtime_ns"], record["mtime_ns"]))  # hide it from size+mtime
    assert cache.load(directory) is not None
    assert cache.load(directory, deep=True) is None


def test_missing_file_or_manifest_makes_the_image_unusable() -> None:
    directory = fake_image("bookworm-000000000000")
    (directory / cache.KERNEL).unlink()
    assert cache.load(directory) is None
    other = fake_image("bookworm-111111111111")
    (other / cache.MANIFEST).write_text("{not json")
    assert cache.load(other) is None


def test_list_marks_damaged_images() -> None:
    fake_image("bookworm-000000000000")
    damaged = fake_image("trixie-000000000000", suite="trixie")
    (damaged / cache.ROOT).write_bytes(b"x")
    statuses = {item.name: item.status for item in list_images()}
    assert statuses == {"bookworm-000000000000": "ok", "trixie-000000000000": "damaged"}


def test_rm_by_name_suite_and_all() -> None:
    fake_image("bookworm-000000000000")
    fake_image("bookworm-111111111111")
    fake_image("trixie-000000000000", suite="trixie")
    assert remove_images(["bookworm-000000000000"]) > 0
    assert [d.name for d, _ in cache.installed()] == [
        "bookworm-111111111111",
        "trixie-000000000000",
    ]
    remove_images([], suite="trixie")
    assert [d.name for d, _ in cache.installed()] == ["bookworm-111111111111"]
    remove_images([], everything=True)
    assert cache.installed() == []


def test_rm_of_an_unknown_name_lists_the_installed_ones() -> None:
    fake_image("bookworm-000000000000")
    with pytest.raises(UsageError, match="installed: bookworm-000000000000"):
        remove_images(["bookworm-nope"])


def test_unused_parts_go_and_used_ones_stay() -> None:
    fake_image("bookworm-000000000000", root_key="b" * 64)
    bases = cache.images_dir() / cache.BASE_DIR
    used = [f"root-bookworm-{'b' * 12}", f"kernel-bookworm-{'k' * 12}"]
    for name in [*used, f"root-bookworm-{'c' * 12}", f"root-trixie-{'b' * 12}"]:
        (bases / name).mkdir(parents=True)
        (bases / name / "root.sqfs").write_bytes(b"x" * 10)
    assert remove_unused_bases() == 20
    assert sorted(p.name for p in bases.iterdir()) == sorted(used)


def test_prune_keeps_the_newest_old_images_of_the_suite() -> None:
    for hour in range(5):
        fake_image(f"bookworm-00000000000{hour}", built_at=f"2026-01-01T0{hour}:00:00Z")
    fake_image("trixie-000000000000", suite="trixie")
    prune("bookworm", "bookworm-000000000004", keep_old=2)
    names = [d.name for d, _ in cache.installed()]
    assert names == [
        "bookworm-000000000002",
        "bookworm-000000000003",
        "bookworm-000000000004",
        "trixie-000000000000",
    ]


def test_build_lock_serialises_builders() -> None:
    events: list[str] = []

    def builder(name: str) -> None:
        with cache.build_lock():
            events.append(f"{name} in")
            time.sleep(0.05)
            events.append(f"{name} out")

    threads = [threading.Thread(target=builder, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert events[0].endswith(" in") and events[1].endswith(" out")
    assert events[0].split()[0] == events[1].split()[0]


def test_list_counts_a_shared_root_once() -> None:
    import os

    from pyti.image.manage import disk_usage

    first = fake_image("bookworm-000000000000")
    second = fake_image("bookworm-111111111111")
    (second / cache.ROOT).unlink()
    os.link(first / cache.ROOT, second / cache.ROOT)  # as two images share a base root
    root_bytes = (first / cache.ROOT).stat().st_blocks * 512
    items = {item.name: item for item in list_images()}
    unshared = sum(p.stat().st_blocks * 512 for p in first.iterdir() if p.name != cache.ROOT)
    assert root_bytes > 0
    assert items["bookworm-000000000000"].own == unshared
    separate = sum(p.stat().st_blocks * 512 for d in (first, second) for p in d.iterdir())
    assert disk_usage() == separate - root_bytes
