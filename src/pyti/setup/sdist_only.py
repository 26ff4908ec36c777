"""Dependencies that have only sdists for the guest: chosen on the host, built in the guest.

uv resolves with `--no-build`, so a dependency X with no usable wheel stops it
(resolve.py). `SdistLookup` is what resolve.py calls then: the newest non-yanked
sdist of X that fits the guest's Python and the versions the requirements allow,
and preferably has no wheel for the guest (a version with one would have resolved),
downloaded into the cache; its dependencies are read statically, as for the package
itself. Nothing of X runs on the host: when its dependencies need a build, the
lookup fails and names X.

The one exception is the legacy sdist that setuptools made without any dependency:
its PKG-INFO (Metadata-Version < 2.2) has no Requires-Dist, and its `*.egg-info/`
has no `requires.txt` (setuptools writes that file whenever `install_requires` or
`extras_require` is set, and deletes it otherwise). docopt 0.6.2 and pyperclip 1.9
are such sdists. X is then taken as having no dependencies, and the finding says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import httpx
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from pyti.errors import HostileArchive, MalformedMetadata, ResolutionFailed
from pyti.setup import download, index
from pyti.setup.choose import best_wheel, supported_tags
from pyti.setup.index import IndexFile
from pyti.setup.metadata import (
    CoreMetadata,
    applies,
    build_requires,
    load_toml,
    parse_core_metadata,
    project_table,
    static_dependencies,
    without_marker,
)
from pyti.setup.model import GuestTarget
from pyti.setup.resolve import Options, SdistPin
from pyti.setup.sdist import read_members

log = logging.getLogger(__name__)

LEGACY_NOTE = "no Requires-Dist and no egg-info requires.txt: taken as no dependencies"


def _fix(name: str) -> str:
    return f"fix: --extra-index-url an index that has a {name} wheel for the guest"


def newest_sdist(
    files: Sequence[IndexFile], name: str, allowed: SpecifierSet, target: GuestTarget
) -> IndexFile:
    """The sdist to build: newest allowed version, without a guest wheel if one is like that.

    A version that has a wheel for the guest lost in uv's resolution for some other
    reason (a requirement pyti could not read from uv's explanation, or its own
    dependencies): a version without one is what uv asked for.
    """
    pinned = any(spec.operator in {"==", "==="} for spec in allowed)
    tags = supported_tags(target)
    by_version: dict[Version, list[IndexFile]] = {}
    for item in files:
        if (item.yanked and not pinned) or not item.python_ok(target.python_version):
            continue  # PEP 592: a yanked file is only for an exact pin
        by_version.setdefault(item.version, []).append(item)
    with_sdist = [v for v, items in by_version.items() if any(i.kind == "sdist" for i in items)]
    versions = list(allowed.filter(with_sdist))
    without_wheel = [v for v in versions if best_wheel(by_version[v], tags) is None]
    if not versions:
        wanted = f"{name}{allowed}" if allowed else name
        raise ResolutionFailed(
            f"{name} has no usable wheel for the guest and no sdist of {wanted} for"
            f" Python {target.python_version} on the index; {_fix(name)}"
        )
    version = max(without_wheel or versions)
    sdists = [i for i in by_version[version] if i.kind == "sdist"]
    return sorted(sdists, key=lambda i: not i.filename.endswith(".tar.gz"))[0]


def wanted_member(path: str) -> bool:
    """PKG-INFO, pyproject.toml, and an egg-info's PKG-INFO and requires.txt."""
    parts = PurePosixPath(path).parts
    if path in {"PKG-INFO", "pyproject.toml"}:
        return True
    return (
        2 <= len(parts) <= 3
        and parts[-2].endswith(".egg-info")
        and parts[-1] in {"PKG-INFO", "requires.txt"}
    )


def _legacy_without_dependencies(
    name: str, pkg_info: CoreMetadata | None, members: Mapping[str, bytes]
) -> bool:
    """A setuptools sdist whose egg-info says it declared no dependencies (see above)."""
    if pkg_info is None or pkg_info.requires_dist or "requires-dist" in pkg_info.dynamic:
        return False
    for path, data in members.items():
        parts = PurePosixPath(path).parts
        if parts[-1] != "PKG-INFO" or len(parts) < 2:
            continue
        if parse_core_metadata(data).name != name:
            continue
        if str(PurePosixPath(*parts[:-1], "requires.txt")) not in members:
            return True
    return False


def dependencies(
    name: str,
    version: str,
    members: Mapping[str, bytes],
    pyproject: Mapping[str, Any] | None,
    target: GuestTarget,
) -> tuple[tuple[str, ...], str]:
    """(its runtime requirements for the guest, a note), read without a build.

    ResolutionFailed, one line naming X and the fix, when only a build would tell.
    """
    pkg_info = parse_core_metadata(members["PKG-INFO"]) if "PKG-INFO" in members else None
    found = static_dependencies(pkg_info, pyproject, target)
    if found is not None:
        return found, ""
    if not project_table(pyproject) and _legacy_without_dependencies(name, pkg_info, members):
        return (), LEGACY_NOTE
    raise ResolutionFailed(
        f"{name} {version} has only an sdist for the guest, and its dependencies need a"
        " build to be known (no PKG-INFO 2.2+, no static dependencies in pyproject.toml);"
        f" {_fix(name)}, or --with a version of {name} that has a wheel"
    )


class SdistLookup:
    """resolve.Lookup: picks, downloads and reads sdists, each project's page read once."""

    def __init__(
        self, target: GuestTarget, options: Options, client: httpx.AsyncClient | None
    ) -> None:
        self.target, self.options, self.client = target, options, client
        self._files: dict[str, list[IndexFile]] = {}
        self._picked: dict[tuple[str, str], SdistPin | ResolutionFailed] = {}

    async def __call__(self, name: str, allowed: SpecifierSet) -> SdistPin:
        key = (name, str(allowed))
        if key not in self._picked:
            try:
                self._picked[key] = await self._pick(name, allowed)
            except ResolutionFailed as exc:
                self._picked[key] = exc
        found = self._picked[key]
        if isinstance(found, ResolutionFailed):
            # A fresh error each time: one raised twice would grow a shared traceback.
            raise ResolutionFailed(str(found)) from found
        return found

    async def _listing(self, name: str) -> list[IndexFile]:
        if name not in self._files:
            urls = self.options.index_urls
            if self.client is None:
                self._files[name] = index.load_listing(urls, name)
            else:
                self._files[name] = await index.IndexClient(self.client, urls).files(name)
                index.save_listing(urls, name, self._files[name])
        return self._files[name]

    async def _pick(self, name: str, allowed: SpecifierSet) -> SdistPin:
        chosen = newest_sdist(await self._listing(name), name, allowed, self.target)
        wanted = download.Wanted(chosen.filename, chosen.url, chosen.sha256)
        got = await download.fetch_all([wanted], offline=self.options.offline, client=self.client)
        path = got[chosen.filename]
        version = str(chosen.version)
        try:
            members = read_members(path, wanted_member, filename=chosen.filename)
            pyproject = (
                load_toml("pyproject.toml", members["pyproject.toml"])
                if "pyproject.toml" in members
                else None
            )
        except (HostileArchive, MalformedMetadata) as exc:
            raise ResolutionFailed(f"{name} {version} (sdist only): {exc}") from exc
        requires, note = dependencies(name, version, members, pyproject, self.target)
        log.info("%s %s: sdist only; requires %s", name, version, requires or "nothing")
        return SdistPin(
            name=name,
            version=version,
            filename=chosen.filename,
            sha256=path.name,
            path=path,
            requires=requires,
            build_requires=build_requires(pyproject),
            note=note,
        )


def check_versions(
    sdists: Sequence[SdistPin],
    requirers: Iterable[tuple[str, Iterable[Requirement]]],
    target: GuestTarget,
) -> None:
    """Every requirement on an sdist-only dependency must allow the version chosen.

    uv never saw those projects (they were excluded), and the guest installs with
    --no-deps, so a requirement uv's explanation did not show is checked here.
    `requirers` are (who, their requirements) pairs.
    """
    chosen = {s.name: s for s in sdists}
    for who, requirements in requirers:
        for requirement in requirements:
            pin = chosen.get(canonicalize_name(requirement.name))
            if pin is None or not applies(requirement, target):
                continue
            if not requirement.specifier.contains(pin.version, prereleases=True):
                wanted = without_marker(requirement)
                raise ResolutionFailed(
                    f"{pin.name} has only sdists for the guest; pyti chose {pin.version},"
                    f" but {who} requires {wanted}; fix: --with '{wanted}'"
                )
