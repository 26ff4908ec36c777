"""Building images: the base (root, kernel, modules; ~1 min) then the image (initramfs; ~1 s).

    ensure_image(suite) -> find_image(suite) or, under the build lock:
        base  = .base/<suite>-<key12>/   mmdebstrap root.sqfs | kernel .deb -> vmlinux, modules
        image = <suite>-<id12>/          root.sqfs + vmlinux hard-linked from the base,
                                         initrd (busybox, /init, modules, agent, codec),
                                         manifest.json
Both are built in a temporary directory and renamed into place.
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
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from pyti.errors import ImageBuildFailed
from pyti.image import cache, debs, initramfs, kernel, modules, rootfs
from pyti.image.cache import INITRD, KERNEL, ROOT, Image
from pyti.image.sources import Sources, digest
from pyti.image.suites import MIRROR, Suite, get_suite

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

# The boot recipe measured in guest-poc.md: lpj/tsc_early_khz skip the PIT calibration that
# hung 1 boot in 3 under TCG, cryptomgr.notests saves ~0.25 s of crypto self-tests.
CMDLINE = (
    "console=ttyS0 quiet panic=-1 reboot=t lpj=10400032 tsc_early_khz=2600000 cryptomgr.notests"
)
TIMEZONE = "Etc/UTC"
BASE_INFO = "base.json"


def _uv_binary() -> tuple[Path, str]:
    from uv import find_uv_bin

    return Path(find_uv_bin()), dist_version("uv")


def agent_version(sources: Sources) -> str:
    text = (sources.agent / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"', text, flags=re.MULTILINE)
    return found.group(1) if found else "unknown"


def keys(suite: Suite, sources: Sources) -> tuple[str, str]:
    """(base key, image id) for the current sources."""
    _, uv_version = _uv_binary()
    base_key = digest(sources.base_inputs(suite.name, uv_version))
    image_id = digest([("base", base_key.encode()), *sources.image_inputs()])
    return base_key, image_id


def find_image(suite_name: str) -> Image | None:
    """The image the current sources describe, if it is built and matches its manifest."""
    suite = get_suite(suite_name)
    _, image_id = keys(suite, Sources.locate())
    return cache.load(cache.images_dir() / cache.image_name(suite.name, image_id))


def ensure_image(suite_name: str, progress: Progress | None = None) -> Image:
    """find_image, or build it (waiting for a concurrent build of the same cache)."""
    suite = get_suite(suite_name)
    sources = Sources.locate()
    base_key, image_id = keys(suite, sources)
    final = cache.images_dir() / cache.image_name(suite.name, image_id)
    found = cache.load(final)
    if found is not None:
        return found
    say = progress or (lambda _message: None)
    with cache.build_lock():
        found = cache.load(final)  # another process may have built it while we waited
        if found is not None:
            return found
        base = _ensure_base(suite, sources, base_key, say)
        image = _build_image(suite, sources, base, image_id, final, say=say)
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


def _base_ok(directory: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((directory / BASE_INFO).read_text())
    except (OSError, ValueError):
        return None
    for name, size in info.get("sizes", {}).items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return info if isinstance(info, dict) else None


def _ensure_base(suite: Suite, sources: Sources, base_key: str, say: Progress) -> Path:
    final = cache.images_dir() / cache.BASE_DIR / cache.image_name(suite.name, base_key)
    if _base_ok(final) is not None:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    log_path = _log_path(f"base-{final.name}")
    log_path.write_bytes(b"")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        uv_binary, _ = _uv_binary()
        say(f"{suite.name}: building the root filesystem and fetching the kernel (about a minute)")
        with ThreadPoolExecutor(max_workers=2) as pool:
            root_job = pool.submit(
                rootfs.build_root,
                suite=suite.name,
                packages=rootfs.read_packages(sources.packages_file(suite.name)),
                customize=sources.images / "customize.sh",
                uv_binary=uv_binary,
                out_dir=tmp,
                log_path=log_path,
            )
            kernel_log = _log_path(f"kernel-{final.name}")
            kernel_job = pool.submit(_fetch_kernel, suite, sources, tmp, kernel_log)
            info = kernel_job.result()
            root_job.result()
        info["python_version"] = (tmp / "python_version").read_text().strip()
        info["packages"] = dict(
            line.split(" ", 1) for line in (tmp / "packages.txt").read_text().splitlines() if line
        )
        info["build_seconds"] = round(time.monotonic() - started, 1)
        info["base_key"] = base_key
        info["mmdebstrap_mode"] = rootfs.mode()
        info["sizes"] = {name: (tmp / name).stat().st_size for name in (ROOT, KERNEL, "busybox")}
        (tmp / BASE_INFO).write_text(json.dumps(info, indent=2, sort_keys=True))
        _replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"{suite.name}: base built in {time.monotonic() - started:.0f} s")
    return final


def _fetch_kernel(suite: Suite, sources: Sources, out: Path, log_path: Path) -> dict[str, Any]:
    """vmlinux, the resolved modules and busybox from the suite's archive, into `out`."""
    log_path.write_bytes(b"")
    work = out / "kernel-work"
    try:
        archive = debs.Archive(suite.name, MIRROR, work, log_path)
        archive.update()
        package = archive.kernel_package()
        unpacked = work / "unpacked"
        archive.download_and_unpack([package, "busybox-static"], unpacked)
        kernel_version, vmlinuz = kernel.find_vmlinuz(unpacked)
        compression = kernel.extract_vmlinux(vmlinuz, out / KERNEL)
        index = modules.load_index(unpacked, kernel_version, log_path)
        wanted = rootfs.read_packages(sources.images / "modules.txt")
        order = index.resolve(wanted)
        copied = modules.copy_modules(
            index, order, modules.modules_dir(unpacked, kernel_version), out / "modules"
        )
        # trixie's merged /usr puts it in usr/bin
        found = [p for p in (unpacked / "bin", unpacked / "usr/bin") if (p / "busybox").is_file()]
        if not found:
            raise ImageBuildFailed("busybox-static has no busybox binary", log=log_path)
        shutil.copyfile(found[0] / "busybox", out / "busybox")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "kernel_package": package,
        "kernel_version": kernel_version,
        "kernel_compression": compression,
        "modules": [name for name, _ in copied],
        "builtin_skipped": sorted(set(wanted) - set(order)),
    }


def _build_image(
    suite: Suite, sources: Sources, base: Path, image_id: str, final: Path, *, say: Progress
) -> Image:
    started = time.monotonic()
    info = json.loads((base / BASE_INFO).read_text())
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        for name in (ROOT, KERNEL):
            (tmp / name).hardlink_to(base / name)
        version = agent_version(sources)
        items = initramfs.entries(
            sources=sources,
            busybox=base / "busybox",
            modules_dir=base / "modules",
            load_order=info["modules"],
            image_info={"image_id": image_id, "suite": suite.name, "agent_version": version},
            root_sqfs=base / ROOT,
            python_version=info["python_version"],
        )
        initramfs.write_initramfs(tmp / INITRD, items)
        manifest: dict[str, Any] = {
            "schema": cache.SCHEMA,
            "name": final.name,
            "suite": suite.name,
            "image_id": image_id,
            "base_key": info["base_key"],
            "python_version": info["python_version"],
            "platform_tag": suite.platform_tag,
            "kernel_package": info["kernel_package"],
            "kernel_version": info["kernel_version"],
            "agent_version": version,
            "timezone": TIMEZONE,
            "cmdline": CMDLINE,
            "modules": info["modules"],
            "mmdebstrap_mode": info["mmdebstrap_mode"],
            "base_build_seconds": info["build_seconds"],
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
