"""The setup API: everything the network-less guest needs, on a read-only disk.

`prepare(spec, target=...)` resolves the package and its (test) dependencies for
the guest's Python without running any package code, downloads them verified,
and writes dists/ plus manifest.cbor into a reproducible squashfs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pyti.errors import MalformedMetadata, ResolutionFailed, UsageError
from pyti.protocol.manifest import ManifestError, SetupManifest
from pyti.setup import bytecode as bytecode_module
from pyti.setup import download, index, local_project, resolve
from pyti.setup.choose import choose
from pyti.setup.image import build_disk
from pyti.setup.metadata import (
    CoreMetadata,
    applies,
    build_requires,
    load_toml,
    parse_core_metadata,
    parse_requirements,
    static_dependencies,
    without_marker,
)
from pyti.setup.model import DEFAULT_INDEX, GuestTarget, HostFinding, SetupDisk, target_for_python
from pyti.setup.sdist import read_members
from pyti.setup.sdist_only import SdistLookup, check_versions
from pyti.setup.spec import (
    LocalFileSpec,
    ProjectDirSpec,
    RequirementSpec,
    Spec,
    UrlSpec,
    parse_spec,
)
from pyti.setup.testdeps import extract, wanted_member

__all__ = [
    "DEFAULT_INDEX",
    "GuestTarget",
    "HostFinding",
    "SetupDisk",
    "parse_spec",
    "prepare",
    "target_for_python",
]

log = logging.getLogger(__name__)

QUALITY_TOOLS = ("ruff",)


@dataclass
class _Package:
    """The package under test once its files are in the cache."""

    name: str
    version: str
    sdist: tuple[str, str, Path] | None = None  # (filename, sha256, cached path)
    wheel: tuple[str, str, Path] | None = None
    findings: list[HostFinding] = field(default_factory=list)
    from_index: bool = False  # whether the index can serve the package's pin


async def _from_index(
    spec: RequirementSpec,
    target: GuestTarget,
    options: resolve.Options,
    client: httpx.AsyncClient | None,
) -> _Package:
    if client is None:
        files = index.load_listing(options.index_urls, spec.name)
    else:
        files = await index.IndexClient(client, options.index_urls).files(spec.name)
        index.save_listing(options.index_urls, spec.name, files)
    chosen = choose(files, spec.requirement, target)
    wanted = [
        download.Wanted(f.filename, f.url, f.sha256)
        for f in (chosen.sdist, chosen.wheel)
        if f is not None
    ]
    got = await download.fetch_all(wanted, offline=options.offline, client=client)
    package = _Package(spec.name, str(chosen.version), from_index=True)
    if chosen.sdist:
        path = got[chosen.sdist.filename]
        package.sdist = (chosen.sdist.filename, path.name, path)
    if chosen.wheel:
        path = got[chosen.wheel.filename]
        package.wheel = (chosen.wheel.filename, path.name, path)
    return package


async def _from_file(spec: LocalFileSpec | UrlSpec, client: httpx.AsyncClient | None) -> _Package:
    if isinstance(spec, LocalFileSpec):
        sha256, path = download.add_file(spec.path)
        filename = spec.path.name
    else:
        wanted = download.Wanted(spec.filename, spec.url, spec.sha256)
        path = (await download.fetch_all([wanted], offline=client is None, client=client))[
            spec.filename
        ]
        sha256, filename = path.name, spec.filename
    package = _Package(spec.name, spec.version)
    if spec.kind == "wheel":
        package.wheel = (filename, sha256, path)
    else:
        package.sdist = (filename, sha256, path)
    return package


def _from_directory(spec: ProjectDirSpec) -> _Package:
    packed = local_project.pack(spec.path)
    sha256, path = download.add_bytes(packed.data)
    log.info("packed %d tracked files of %s", packed.files, spec.path)
    return _Package(packed.name, packed.version, sdist=(packed.filename, sha256, path))


def _wheel_metadata(path: Path, filename: str) -> CoreMetadata | None:
    members = read_members(
        path,
        lambda p: p.count("/") == 1 and p.endswith(".dist-info/METADATA"),
        strip_top=False,
        filename=filename,
    )
    return parse_core_metadata(next(iter(members.values()))) if members else None


async def prepare(
    spec: str | Spec,
    *,
    target: GuestTarget,
    with_requirements: Sequence[str] = (),
    index_urls: Sequence[str] = (DEFAULT_INDEX,),
    offline: bool = False,
    runner_args: Sequence[str] | None = None,
    tasks: Sequence[str] = ("install", "test"),
    dependencies: Sequence[str] | None = None,
) -> SetupDisk:
    """Resolve, download and write the setup disk for `spec` (cached by content).

    `dependencies` are the package's own requirements as the guest's metadata pass
    built them (PEP 517 `prepare_metadata_for_build_wheel`), for an sdist whose
    dependencies cannot be read statically; they resolve strictly.
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    options = resolve.Options(
        tuple(u for u in index_urls if u) or (DEFAULT_INDEX,), offline=offline
    )
    for extra in with_requirements:
        try:
            Requirement(extra)  # a typo fails here, before any download
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0]
            raise UsageError(f"--with {extra!r} is not a requirement: {reason}") from None
    async with httpx.AsyncClient() as http:
        client = None if offline else http
        if isinstance(parsed, RequirementSpec):
            package = await _from_index(parsed, target, options, client)
        elif isinstance(parsed, LocalFileSpec | UrlSpec):
            package = await _from_file(parsed, client)
        else:
            package = _from_directory(parsed)
        return await _assemble(
            str(spec),
            package=package,
            target=target,
            options=options,
            client=client,
            with_requirements=with_requirements,
            runner_args=runner_args,
            tasks=tasks,
            dependencies=dependencies,
        )


async def _tool_pins(
    tasks: Sequence[str], target: GuestTarget, options: resolve.Options, findings: list[HostFinding]
) -> tuple[resolve.Pin, ...]:
    """The quality task's linter, as a wheel on the disk, never installed into the test venv.

    The agent takes ruff's static binary out of the wheel; a linter that does not
    resolve only drops the quality task's tool, with a finding.
    """
    if "quality" not in tasks:
        return ()
    try:
        return await resolve.compile_pins(QUALITY_TOOLS, target, options)
    except ResolutionFailed as exc:
        findings.append(HostFinding("quality-tool-dropped", str(exc).splitlines()[0]))
        return ()


def _static_or_finding(
    pkg_info: CoreMetadata | None,
    pyproject: Mapping[str, Any] | None,
    target: GuestTarget,
    findings: list[HostFinding],
) -> tuple[str, ...]:
    deps = static_dependencies(pkg_info, pyproject, target)
    if deps is None:
        findings.append(
            HostFinding(
                "dynamic-metadata",
                "the sdist's dependencies are not static (no PKG-INFO 2.2+ or static"
                " [project].dependencies); they are not on the disk",
            )
        )
    return deps or ()


async def _build_pins(
    own: Sequence[str] | None,
    sdists: Sequence[resolve.SdistPin],
    target: GuestTarget,
    options: resolve.Options,
) -> tuple[resolve.Pin, ...]:
    """Wheels for building every sdist the guest builds: the package's (`own`) and its
    sdist-only dependencies'.

    All together when they agree (one version of each, usable as a build constraint);
    otherwise each sdist's on its own (uv in the guest picks per build from dists/).
    """
    wanted = [("build requirements", tuple(own))] if own is not None else []
    wanted += [(f"build requirements of {s.name}", s.build_requires) for s in sdists]
    if len(wanted) > 1:
        together = sorted({r for _, requirements in wanted for r in requirements})
        try:
            return await resolve.compile_pins(together, target, options)
        except ResolutionFailed:
            log.info("build requirements disagree; resolving them one sdist at a time")
    pins: dict[str, resolve.Pin] = {}
    done: set[tuple[str, ...]] = set()
    for label, requirements in wanted:
        if requirements in done:
            continue
        done.add(requirements)
        try:
            found = await resolve.compile_pins(requirements, target, options)
        except ResolutionFailed as exc:
            raise ResolutionFailed(f"{label}: {exc}") from exc
        pins |= {p.filename: p for p in found}
    return tuple(pins[name] for name in sorted(pins))


def _sdist_findings(sdists: Sequence[resolve.SdistPin]) -> list[HostFinding]:
    out = []
    for sdist in sdists:
        detail = f"{sdist.name} {sdist.version}: no wheel for the guest; its sdist is built there"
        out.append(
            HostFinding(
                "sdist-only-dependency", f"{detail} ({sdist.note})" if sdist.note else detail
            )
        )
    return out


def _add_sdists(
    package: _Package,
    strict: Sequence[str],
    resolution: resolve.Resolution,
    *,
    files: dict[str, str],
    sources: dict[str, Path],
    target: GuestTarget,
) -> None:
    """The sdist-only dependencies onto the disk, once every requirement allows them."""
    for sdist in resolution.sdists:
        files[sdist.filename] = sdist.sha256
        sources[sdist.filename] = sdist.path
    if resolution.sdists:
        check_versions(resolution.sdists, _requirers(package, strict, resolution, sources), target)


def _requirers(
    package: _Package,
    strict: Sequence[str],
    resolution: resolve.Resolution,
    wheels: dict[str, Path],
) -> Iterable[tuple[str, Iterable[Requirement]]]:
    """Who requires what, for check_versions: the requirements, each wheel, each sdist."""
    yield package.name, parse_requirements(strict)
    yield "the tests", parse_requirements(resolution.kept)
    for pin in resolution.pins:
        metadata = _wheel_metadata(wheels[pin.filename], pin.filename)
        yield pin.requirement, metadata.requires_dist if metadata else ()
    for sdist in resolution.sdists:
        yield sdist.requirement, parse_requirements(sdist.requires)


async def _add_bytecode(
    wheels: Sequence[str], files: dict[str, str], sources: dict[str, Path], target: GuestTarget
) -> tuple[str, ...]:
    """Host-compiled bytecode beside each installed wheel, when the host can make it."""
    if not bytecode_module.can_compile_for(target):
        return ()
    names = []
    for wheel in sorted(set(wheels)):
        archive = await trio.to_thread.run_sync(
            bytecode_module.cached_bytecode, sources[wheel], files[wheel], target
        )
        name = wheel + bytecode_module.SUFFIX
        files[name] = download.sha256_file(archive)
        sources[name] = archive
        names.append(name)
    return tuple(names)


async def _assemble(
    spec_text: str,
    *,
    package: _Package,
    target: GuestTarget,
    options: resolve.Options,
    client: httpx.AsyncClient | None,
    with_requirements: Sequence[str],
    runner_args: Sequence[str] | None,
    tasks: Sequence[str],
    dependencies: Sequence[str] | None = None,
) -> SetupDisk:
    findings = list(package.findings)
    members = (
        read_members(package.sdist[2], wanted_member, filename=package.sdist[0])
        if package.sdist
        else {}
    )
    pyproject = (
        load_toml("pyproject.toml", members["pyproject.toml"])
        if ("pyproject.toml" in members)
        else None
    )
    pkg_info = parse_core_metadata(members["PKG-INFO"]) if "PKG-INFO" in members else None
    metadata = _wheel_metadata(package.wheel[2], package.wheel[0]) if package.wheel else pkg_info
    if package.sdist is None:
        findings.append(
            HostFinding("no-sdist", "only a wheel: the tests are those the wheel ships, if any")
        )
    config = extract(members, package=package.name, target=target, metadata=metadata)
    findings += config.findings
    pin = f"{package.name}=={package.version}"
    strict = [*with_requirements]
    if package.wheel and package.from_index:
        strict.insert(0, pin)
    elif package.wheel and metadata is not None:
        # A wheel from a path or URL is not on the index: resolve what it requires.
        strict += [
            without_marker(r) for r in metadata.requires_dist if applies(r, target, extra="")
        ]
    elif dependencies is not None:
        strict += dependencies
    else:
        strict += _static_or_finding(pkg_info, pyproject, target, findings)
    lookup = SdistLookup(target, options, client)
    resolution = await resolve.resolve(strict, config.requirements, target, options, lookup)
    for requirement, reason in resolution.dropped:
        findings.append(HostFinding("test-dependency-dropped", f"{requirement}: {reason}"))
    findings += _sdist_findings(resolution.sdists)
    build_pins = await _build_pins(
        build_requires(pyproject) if package.wheel is None else None,
        resolution.sdists,
        target,
        options,
    )
    tool_pins = await _tool_pins(tasks, target, options, findings)
    pins = {p.filename: p for p in (*resolution.pins, *build_pins, *tool_pins)}
    own = {f[0] for f in (package.sdist, package.wheel) if f}
    got = await download.fetch_all(
        [
            download.Wanted(p.filename, p.url, p.sha256)
            for p in pins.values()
            if p.filename not in own
        ],
        offline=options.offline,
        client=client,
    )
    sources = dict(got)
    files = {name: path.name for name, path in got.items()}
    for entry in (package.sdist, package.wheel):
        if entry:
            files[entry[0]] = entry[1]
            sources[entry[0]] = entry[2]
    _add_sdists(package, strict, resolution, files=files, sources=sources, target=target)
    installed_wheels = [
        name
        for name in [*(p.filename for p in resolution.pins), package.wheel and package.wheel[0]]
        if name and name.endswith(".whl") and name in files
    ]
    bytecode = await _add_bytecode(installed_wheels, files, sources, target)
    installed = {p.name: p.requirement for p in resolution.pins}
    installed |= {s.name: s.requirement for s in resolution.sdists}
    others = [installed[n] for n in sorted(installed) if n != canonicalize_name(package.name)]
    kept = {canonicalize_name(Requirement(r).name) for r in resolution.kept}
    # Without a wheel the package is installed from its sdist's file name: a local
    # project's version may be a placeholder the build would not reproduce.
    first = pin if package.wheel or package.sdist is None else package.sdist[0]
    try:
        manifest = SetupManifest(
            spec=spec_text,
            package_name=package.name,
            package_version=package.version,
            sdist=package.sdist[0] if package.sdist else None,
            wheel=package.wheel[0] if package.wheel else None,
            install=(first, *others),
            build_requirements=tuple(sorted({p.requirement for p in build_pins})),
            files=files,
            runner=config.runner,
            runner_args=tuple(runner_args) if runner_args is not None else config.runner_args,
            test_requirements=tuple(sorted(kept & installed.keys())),
            tasks=tuple(tasks),
            bytecode=bytecode,
            bytecode_site=bytecode_module.guest_site(target) if bytecode else "",
        )
    except ManifestError as exc:
        # Names and strings come from the index and the sdist: odd ones stop here,
        # before anything is staged under them.
        raise MalformedMetadata(f"cannot describe the setup disk: {exc}") from None
    path, digest = await build_disk(manifest, sources)
    resolved = {p.name: p.version for p in resolution.pins}
    resolved |= {s.name: s.version for s in resolution.sdists} | {package.name: package.version}
    return SetupDisk(path, manifest, digest, tuple(findings), resolved)
