"""What goes into an image, and the content hashes that key the cache.

Three keys: the *root* part (root.sqfs, ~1 min to build) hashes the suite, its package
list, the customize hook, rootfs.py and the uv version; the *kernel* part (vmlinux, modules,
busybox, ~10 s) the suite, the module list and the kernel scripts; the *image* id adds the
initramfs inputs (/init, the agent, the codec) to both, which rebuild in about a second.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pyti.errors import ImageBuildFailed
from pyti.paths import repo_root

_IMAGE_MODULE_DIR = Path(__file__).resolve().parent
_PROTOCOL_DIR = _IMAGE_MODULE_DIR.parent / "protocol"

# Changing how a part is built changes the part, so these scripts are part of its key.
_ROOT_SCRIPTS = ("rootfs.py",)
_KERNEL_SCRIPTS = ("debs.py", "kernel.py", "modules.py", "kernelpart.py")
_IMAGE_SCRIPTS = ("initramfs.py", "cpio.py", "pycompile.py")


@dataclass(frozen=True)
class Sources:
    images: Path  # the repository's images/ (package lists, /init, hooks)
    agent: Path  # guest_agent/pyti_agent
    protocol: Path  # src/pyti/protocol

    @classmethod
    def locate(cls) -> Sources:
        root = repo_root()
        if root is not None:
            images, agent = root / "images", root / "guest_agent" / "pyti_agent"
        else:  # an installed wheel carries them as resources
            resources = _IMAGE_MODULE_DIR.parent / "_resources"
            images, agent = resources / "images", resources / "guest_agent" / "pyti_agent"
        for needed in (images, agent, _PROTOCOL_DIR):
            if not needed.is_dir():
                raise ImageBuildFailed(f"image sources missing: {needed}")
        return cls(images, agent, _PROTOCOL_DIR)

    def packages_file(self, suite: str) -> Path:
        return self.images / f"{suite}.packages"

    def python_files(self, directory: Path) -> list[Path]:
        return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)

    def root_inputs(self, suite: str, uv_version: str) -> list[tuple[str, bytes]]:
        inputs = [("suite", suite.encode()), ("uv", uv_version.encode())]
        for path in (self.packages_file(suite), self.images / "customize.sh"):
            inputs.append((path.name, path.read_bytes()))
        inputs.extend((name, (_IMAGE_MODULE_DIR / name).read_bytes()) for name in _ROOT_SCRIPTS)
        return inputs

    def kernel_inputs(self, suite: str) -> list[tuple[str, bytes]]:
        inputs = [("suite", suite.encode())]
        inputs.append(("modules.txt", (self.images / "modules.txt").read_bytes()))
        inputs.extend((name, (_IMAGE_MODULE_DIR / name).read_bytes()) for name in _KERNEL_SCRIPTS)
        return inputs

    def image_inputs(self) -> list[tuple[str, bytes]]:
        inputs = [(name, (self.images / name).read_bytes()) for name in ("init", "cmdline")]
        inputs.extend((name, (_IMAGE_MODULE_DIR / name).read_bytes()) for name in _IMAGE_SCRIPTS)
        for directory, prefix in ((self.agent, "pyti_agent"), (self.protocol, "pyti/protocol")):
            for path in self.python_files(directory):
                inputs.append((f"{prefix}/{path.relative_to(directory)}", path.read_bytes()))
        return inputs


def digest(inputs: list[tuple[str, bytes]]) -> str:
    """sha256 over (name, content) pairs, length-prefixed so no two lists collide."""
    h = hashlib.sha256()
    for name, data in inputs:
        for part in (name.encode(), data):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.hexdigest()
