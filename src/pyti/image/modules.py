"""Which kernel modules the initramfs carries, from the kernel's own dependency data.

depmod (host kmod) writes modules.dep/softdep/alias for the unpacked kernel (trixie's .deb
ships none); `resolve` then takes the closure of the wanted names in load order, skipping
what that kernel builds in (modules.builtin). Softdeps matter: ext4 and libcrc32c want
`crc32c`, and on a CPU without SSE4.2 (plain qemu64) only crc32c_generic can provide it.
"""

from __future__ import annotations

import lzma
import shutil
from dataclasses import dataclass
from pathlib import Path

from pyti.errors import ImageBuildFailed
from pyti.image.commands import run

_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


def module_name(path: str) -> str:
    """`kernel/fs/ext4/ext4.ko.xz` -> `ext4`; dashes and underscores are one name to kmod."""
    base = path.rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


@dataclass(frozen=True)
class ModuleIndex:
    """The parts of depmod's output that resolution needs."""

    paths: dict[str, str]  # name -> path relative to the modules dir
    deps: dict[str, tuple[str, ...]]  # name -> names it needs (hard)
    softdeps: dict[str, tuple[str, ...]]  # name -> `pre:` names or aliases
    aliases: dict[str, tuple[str, ...]]  # alias -> module names
    builtin: frozenset[str]

    @classmethod
    def parse(cls, *, dep: str, builtin: str, softdep: str = "", alias: str = "") -> ModuleIndex:
        paths: dict[str, str] = {}
        deps: dict[str, tuple[str, ...]] = {}
        for line in dep.splitlines():
            if ":" not in line:
                continue
            target, _, needs = line.partition(":")
            name = module_name(target.strip())
            paths[name] = target.strip()
            deps[name] = tuple(module_name(need) for need in needs.split())
        softdeps: dict[str, tuple[str, ...]] = {}
        for line in softdep.splitlines():
            words = line.split()
            if len(words) < 3 or words[0] != "softdep":
                continue
            pre: list[str] = []
            section = ""
            for word in words[2:]:
                if word.endswith(":"):
                    section = word[:-1]
                elif section == "pre":
                    pre.append(word.replace("-", "_"))
            name = words[1].replace("-", "_")
            softdeps[name] = softdeps.get(name, ()) + tuple(pre)
        aliases: dict[str, tuple[str, ...]] = {}
        for line in alias.splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "alias":
                key = words[1].replace("-", "_")
                aliases[key] = (*aliases.get(key, ()), words[2].replace("-", "_"))
        built = frozenset(
            module_name(line.strip()) for line in builtin.splitlines() if line.strip()
        )
        return cls(paths, deps, softdeps, aliases, built)

    def _provider(self, wanted: str) -> str | None:
        """A module for a softdep name: the module itself, else the `_generic` alias target."""
        if wanted in self.paths or wanted in self.builtin:
            return wanted
        candidates = self.aliases.get(wanted, ())
        for candidate in candidates:
            if candidate.endswith("_generic"):
                return candidate
        return candidates[0] if candidates else None

    def resolve(self, wanted: list[str]) -> list[str]:
        """Names to insmod, dependencies first; built-in names are left out.

        A name ending in `?` is optional: left out when this kernel has no such module.
        """
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in seen or name in self.builtin:
                return
            if name in chain:
                raise ImageBuildFailed(f"module dependency cycle: {' -> '.join((*chain, name))}")
            if name not in self.paths:
                raise ImageBuildFailed(f"kernel module {name!r} is neither built in nor shipped")
            for soft in self.softdeps.get(name, ()):
                provider = self._provider(soft)
                if provider is not None:
                    visit(provider, (*chain, name))
            for need in self.deps.get(name, ()):
                visit(need, (*chain, name))
            seen.add(name)
            order.append(name)

        for entry in wanted:
            name = entry.rstrip("?").replace("-", "_")
            if entry.endswith("?") and name not in self.paths:
                continue
            visit(name, ())
        return order


def modules_dir(unpacked: Path, kernel_version: str) -> Path:
    """Where the .deb put the modules; bookworm uses /lib, trixie's merged /usr /usr/lib."""
    for base in ("lib/modules", "usr/lib/modules"):
        candidate = unpacked / base / kernel_version
        if candidate.is_dir():
            return candidate
    raise ImageBuildFailed(f"the kernel package has no modules for {kernel_version}")


def load_index(unpacked: Path, kernel_version: str, log_path: Path) -> ModuleIndex:
    directory = modules_dir(unpacked, kernel_version)
    # depmod -b BASE looks in BASE/lib/modules; give merged-/usr packages that path too.
    if not (unpacked / "lib" / "modules").exists():
        (unpacked / "lib").mkdir(exist_ok=True)
        (unpacked / "lib" / "modules").symlink_to(directory.parent)
    run(["depmod", "-b", str(unpacked), kernel_version], log_path=log_path, what="depmod")

    def read(name: str) -> str:
        path = directory / name
        return path.read_text() if path.exists() else ""

    return ModuleIndex.parse(
        dep=read("modules.dep"),
        builtin=read("modules.builtin"),
        softdep=read("modules.softdep"),
        alias=read("modules.alias"),
    )


def copy_modules(
    index: ModuleIndex, names: list[str], source: Path, dest: Path
) -> list[tuple[str, int]]:
    """Copy (and decompress: insmod then needs no userspace xz) into `dest`; return
    (file name, size) in load order."""
    dest.mkdir(parents=True, exist_ok=True)
    copied: list[tuple[str, int]] = []
    for name in names:
        relative = index.paths[name]
        target = dest / f"{name}.ko"
        if relative.endswith(".ko.xz"):
            target.write_bytes(lzma.decompress((source / relative).read_bytes()))
        elif relative.endswith(".ko"):
            shutil.copyfile(source / relative, target)
        else:
            raise ImageBuildFailed(f"unsupported module compression: {relative}")
        copied.append((target.name, target.stat().st_size))
    return copied
