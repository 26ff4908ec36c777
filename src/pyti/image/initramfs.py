"""The initramfs: static busybox, /init, the resolved modules, and the agent with its codec.

Left uncompressed: it is a few MB that QEMU copies into guest memory, while decompressing
it would be guest work under TCG on every boot.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyti.image import cpio, pycompile
from pyti.image.sources import Sources

_DIRS = ("bin", "dev", "proc", "sys", "lib", "lib/modules", "mnt", "opt", "opt/pyti", "tmp")


def entries(
    *,
    sources: Sources,
    busybox: Path,
    modules_dir: Path,
    load_order: list[str],
    image_info: dict[str, str],
    root_sqfs: Path,
    python_version: str,
) -> list[cpio.Entry]:
    out = [cpio.directory(name) for name in _DIRS]
    # the kernel opens /dev/console for /init's stdio before devtmpfs is mounted
    out.append(cpio.char_device("dev/console", 5, 1))
    out.append(cpio.file("bin/busybox", busybox.read_bytes(), 0o755))
    out.append(cpio.file("init", (sources.images / "init").read_bytes(), 0o755))
    for name in load_order:
        out.append(cpio.file(f"lib/modules/{name}", (modules_dir / name).read_bytes()))
    out.append(cpio.file("lib/modules/load.order", "".join(f"{n}\n" for n in load_order).encode()))
    info = json.dumps(image_info, sort_keys=True).encode()
    out.append(cpio.file("opt/pyti/image.json", info))
    out.append(cpio.file("opt/pyti/image_id", image_info["image_id"].encode()))
    python: dict[str, bytes] = {"opt/pyti/pyti/__init__.py": b""}
    python.update(_tree(sources.agent, "opt/pyti/pyti_agent", sources))
    python.update(_tree(sources.protocol, "opt/pyti/pyti/protocol", sources))
    _, compiled = pycompile.compile_files(
        root_sqfs, python_version, {f"/{path}": data for path, data in python.items()}
    )
    python.update({path.lstrip("/"): data for path, data in compiled.items()})
    made = set(_DIRS)
    for path, data in sorted(python.items()):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory not in made:
                made.add(directory)
                out.append(cpio.directory(directory))
        out.append(cpio.file(path, data))
    return out


def _tree(directory: Path, prefix: str, sources: Sources) -> dict[str, bytes]:
    return {
        f"{prefix}/{path.relative_to(directory)}": path.read_bytes()
        for path in sources.python_files(directory)
    }


def write_initramfs(path: Path, items: list[cpio.Entry]) -> int:
    with path.open("wb") as out:
        return cpio.write(items, out)
