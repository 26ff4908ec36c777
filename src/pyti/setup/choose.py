"""Choose the package's version and files for the guest from an index listing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from pyti.errors import NoCompatibleDistribution
from pyti.setup.index import IndexFile
from pyti.setup.model import GuestTarget


@dataclass(frozen=True)
class Chosen:
    version: Version
    sdist: IndexFile | None
    wheel: IndexFile | None


def supported_tags(target: GuestTarget) -> list[Tag]:
    """The guest's wheel tags, best first (CPython, manylinux on x86_64)."""
    major, minor = target.glibc
    platforms = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014_x86_64", 12: "manylinux2010_x86_64", 5: "manylinux1_x86_64"}
    ordered: list[str] = []
    for platform in platforms:
        ordered.append(platform)
        alias = legacy.get(int(platform.split("_")[2]))
        if alias:
            ordered.append(alias)
    py = target.python_tuple
    interpreter = f"cp{py[0]}{py[1]}"
    return [
        *cpython_tags(py, abis=[interpreter], platforms=ordered),
        *compatible_tags(py, interpreter, platforms=ordered),
    ]


def best_wheel(files: Sequence[IndexFile], tags: Sequence[Tag]) -> IndexFile | None:
    rank = {tag: i for i, tag in enumerate(tags)}
    best: tuple[int, IndexFile] | None = None
    for item in files:
        if item.kind != "wheel":
            continue
        _, _, _, wheel_tags = parse_wheel_filename(item.filename)
        score = min((rank[t] for t in wheel_tags if t in rank), default=None)
        if score is not None and (best is None or score < best[0]):
            best = (score, item)
    return best[1] if best else None


def choose(files: Sequence[IndexFile], requirement: Requirement, target: GuestTarget) -> Chosen:
    pinned = any(spec.operator in {"==", "==="} for spec in requirement.specifier)
    tags = supported_tags(target)
    usable: dict[Version, list[IndexFile]] = {}
    for item in files:
        if item.yanked and not pinned:
            continue  # PEP 592: a yanked file is only for an exact pin
        if item.python_ok(target.python_version):
            usable.setdefault(item.version, []).append(item)
    candidates = [
        version
        for version, items in usable.items()
        if any(i.kind == "sdist" for i in items) or best_wheel(items, tags)
    ]
    allowed = list(requirement.specifier.filter(candidates))
    if not allowed:
        existing = sorted({item.version for item in files})
        shown = ", ".join(str(v) for v in existing[-10:]) or "none"
        more = f" (and {len(existing) - 10} older)" if len(existing) > 10 else ""
        raise NoCompatibleDistribution(
            f"no wheel or sdist of {requirement} for Python {target.python_version}"
            f" ({target.platform_tag}); versions on the index: {shown}{more}"
        )
    version = max(allowed)
    items = usable[version]
    sdists = sorted(
        (i for i in items if i.kind == "sdist"), key=lambda i: not i.filename.endswith(".tar.gz")
    )
    return Chosen(version, sdists[0] if sdists else None, best_wheel(items, tags))
