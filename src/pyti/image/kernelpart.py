"""The kernel part of an image: vmlinux, the resolved modules and busybox, from the archive."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pyti.errors import ImageBuildFailed
from pyti.image import debs, kernel, modules
from pyti.image.cache import KERNEL
from pyti.image.rootfs import read_packages
from pyti.image.suites import MIRROR, Suite


def fetch_kernel(suite: Suite, modules_txt: Path, out: Path, log_path: Path) -> dict[str, Any]:
    """Write out/vmlinux, out/modules/*.ko and out/busybox; return what the manifest keeps."""
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
        wanted = read_packages(modules_txt)
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
    names = [name.rstrip("?").replace("-", "_") for name in wanted]
    return {
        "kernel_package": package,
        "kernel_version": kernel_version,
        "kernel_compression": compression,
        "modules": [name for name, _ in copied],
        "not_loaded": sorted(set(names) - set(order)),  # built in, or optional and absent
    }
