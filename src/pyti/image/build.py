"""Building images: two parts (root ~1 min, kernel ~10 s) then the image (initramfs ~1 s).

    ensure_image(suite) -> find_image(suite) or, under the build lock:
        .base/root-<suite>-<key12>/    mmdebstrap -> root.sqfs
        .base/kernel-<suite>-<key12>/  kernel .deb -> vmlinux, modules; busybox-static
        <suite>-<id12>/                root.sqfs + vmlinux hard-linked from the parts,
                                       initrd (busybox, /init, modules, agent, codec),
                                       manifest.json
Each is built in a temporary directory and renamed into place.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from pyti.errors import ImageBuildFailed
from pyti.image import cache, initramfs, rootfs
from pyti.image.cache import INITRD, KERNEL, ROOT, Image
from pyti.image.kernelpart import fetch_kernel
from pyti.image.sources import Sources, digest
from pyti.image.suites import Suite, get_suite

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

TIMEZONE = "Etc/UTC"
PART_INFO = "part.json"


def _uv_binary() -> tuple[Path, str]:
    from uv import find_uv_bin

    return Path(find_uv_bin()), dist_version("uv")


def kernel_cmdline(sources: Sources) -> str:
    """images/cmdline as one line (its `#` lines are comments)."""
    lines = (sources.images / "cmdline").read_text().splitlines()
    return " ".join(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def agent_version(sources: Sources) -> str:
    text = (sources.agent / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"', text, flags=re.MULTILINE)
    return found.group(1) if found else "unknown"


@dataclass(frozen=True)
class Keys:
    root: str  # root.sqfs: suite, package list, customize hook, rootfs.py, uv
    kernel: str  # vmlinux, modules, busybox: suite, modules.txt, the kernel scripts
    image: str  # the image id: both of the above + /init, agent, codec, initramfs scripts


def keys(suite: Suite, sources: Sources) -> Keys:
    _, uv_version = _uv_binary()
    root = digest(sources.root_inputs(suite.name, uv_version))
    kernel_key = digest(sources.kernel_inputs(suite.name))
    image = digest(
        [("root", root.encode()), ("kernel", kernel_key.encode()), *sources.image_inputs()]
    )
    return Keys(root, kernel_key, image)


def find_image(suite_name: str) -> Image | None:
    """The image the current sources describe, if it is built and matches its manifest."""
    suite = get_suite(suite_name)
    image_id = keys(suite, Sources.locate()).image
    return cache.load(cache.images_dir() / cache.image_name(suite.name, image_id))


def ensure_image(suite_name: str, progress: Progress | None = None) -> Image:
    """find_image, or build it (waiting for a concurrent build of the same cache)."""
    suite = get_suite(suite_name)
    sources = Sources.locate()
    key = keys(suite, sources)
    final = cache.images_dir() / cache.image_name(suite.name, key.image)
    found = cache.load(final)
    if found is not None:
        return found
    say = progress or (lambda _message: None)
    with cache.build_lock():
        found = cache.load(final)  # another process may have built it while we waited
        if found is not None:
            return found
        cache.remove_leftovers()
        with ThreadPoolExecutor(max_workers=2) as pool:  # both mostly wait on the network
            root_job = pool.submit(
                _ensure_part, "root", suite, key.root, _root_builder(sources), say
            )
            kernel_job = pool.submit(
                _ensure_part, "kernel", suite, key.kernel, _kernel_builder(sources), say
            )
            parts = Parts(root=root_job.result(), kernel=kernel_job.result())
        image = _build_image(suite, sources, parts, key, final, say=say)
        from pyti.image.manage import prune

        prune(suite.name, image.name)
        return image


def _log_path(name: str) -> Path:
    directory = cache.images_dir() / cache.LOG_DIR
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}.log"


def _replace(tmp: Path, final: Path) -> None:
    """Move a finished build into place, first moving aside any stale one there."""
    if final.exists():
        stale = final.with_name(f".stale-{final.name}-{time.monotonic_ns()}")
        final.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp.rename(final)


def _part_ok(directory: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((directory / PART_INFO).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    for name, size in info.get("sizes", {}).items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return info


@dataclass(frozen=True)
class Parts:
    root: Path  # .base/root-<suite>-<key12>/: root.sqfs, part.json
    kernel: Path  # .base/kernel-<suite>-<key12>/: vmlinux, modules/, busybox, part.json


PartBuilder = Callable[[Suite, Path, Path], dict[str, Any]]


def _ensure_part(kind: str, suite: Suite, key: str, builder: PartBuilder, say: Progress) -> Path:
    """The cached part, or build it into a temporary directory and rename it into place."""
    final = cache.images_dir() / cache.BASE_DIR / f"{kind}-{cache.image_name(suite.name, key)}"
    if _part_ok(final) is not None:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    log_path = _log_path(final.name)
    log_path.write_bytes(b"")
    started = time.monotonic()
    say(f"{suite.name}: building the {kind} part (about a minute)")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        info = builder(suite, tmp, log_path)
        info["key"] = key
        info["build_seconds"] = round(time.monotonic() - started, 1)
        (tmp / PART_INFO).write_text(json.dumps(info, indent=2, sort_keys=True))
        _replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"{suite.name}: {kind} part built in {time.monotonic() - started:.0f} s")
    return final


def _root_builder(sources: Sources) -> PartBuilder:
    def build(suite: Suite, out: Path, log_path: Path) -> dict[str, Any]:
        uv_binary, uv_version = _uv_binary()
        rootfs.build_root(
            suite=suite.name,
            packages=rootfs.read_packages(sources.packages_file(suite.name)),
            customize=sources.images / "customize.sh",
            uv_binary=uv_binary,
            out_dir=out,
            log_path=log_path,
        )
        packages = (out / "packages.txt").read_text().splitlines()
        return {
            "python_version": (out / "python_version").read_text().strip(),
            "packages": dict(line.split(" ", 1) for line in packages if line),
            "uv_version": uv_version,
            "mmdebstrap_mode": rootfs.mode(),
            "sizes": {ROOT: (out / ROOT).stat().st_size},
        }

    return build


def _kernel_builder(sources: Sources) -> PartBuilder:
    def build(suite: Suite, out: Path, log_path: Path) -> dict[str, Any]:
        info = fetch_kernel(suite, sources.images / "modules.txt", out, log_path)
        info["sizes"] = {name: (out / name).stat().st_size for name in (KERNEL, "busybox")}
        return info

    return build


def _build_image(
    suite: Suite, sources: Sources, parts: Parts, key: Keys, final: Path, *, say: Progress
) -> Image:
    started = time.monotonic()
    root_info = json.loads((parts.root / PART_INFO).read_text())
    kernel_info = json.loads((parts.kernel / PART_INFO).read_text())
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        (tmp / ROOT).hardlink_to(parts.root / ROOT)
        (tmp / KERNEL).hardlink_to(parts.kernel / KERNEL)
        version = agent_version(sources)
        items = initramfs.entries(
            sources=sources,
            busybox=parts.kernel / "busybox",
            modules_dir=parts.kernel / "modules",
            load_order=kernel_info["modules"],
            image_info={"image_id": key.image, "suite": suite.name, "agent_version": version},
            root_sqfs=parts.root / ROOT,
            python_version=root_info["python_version"],
        )
        initramfs.write_initramfs(tmp / INITRD, items)
        manifest: dict[str, Any] = {
            "schema": cache.SCHEMA,
            "name": final.name,
            "suite": suite.name,
            "image_id": key.image,
            "root_key": key.root,
            "kernel_key": key.kernel,
            "python_version": root_info["python_version"],
            "platform_tag": suite.platform_tag,
            "uv_version": root_info["uv_version"],
            "kernel_package": kernel_info["kernel_package"],
            "kernel_version": kernel_info["kernel_version"],
            "agent_version": version,
            "timezone": TIMEZONE,
            "cmdline": kernel_cmdline(sources),
            "modules": kernel_info["modules"],
            "mmdebstrap_mode": root_info["mmdebstrap_mode"],
            "root_build_seconds": root_info["build_seconds"],
            "kernel_build_seconds": kernel_info["build_seconds"],
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {name: cache.file_record(tmp / name) for name in (ROOT, KERNEL, INITRD)},
        }
        manifest["sizes"] = {name: rec["size"] for name, rec in manifest["files"].items()}
        manifest["image_build_seconds"] = round(time.monotonic() - started, 2)
        (tmp / cache.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        _replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    image = cache.load(final)
    if image is None:
        raise ImageBuildFailed(f"image {final.name} does not verify right after its build")
    say(f"{suite.name}: image {final.name} ready")
    return image
