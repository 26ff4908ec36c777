"""Resolution for the guest with `uv pip compile --no-build`: no package code runs.

uv writes a pylock.toml with each pinned wheel's URL and sha256. The package and
its runtime dependencies resolve strictly; test dependencies best effort: the
ones that break the resolution are dropped, one by one, with the reason.

A dependency with no usable wheel stops `--no-build`. uv names it; a `Lookup`
(pyti.setup.sdist_only) then picks its sdist, whose dependencies are read
statically, and the resolution runs again with the project excluded and those
dependencies added. The guest builds the sdist.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from pyti import paths
from pyti.errors import MissingTool, ResolutionFailed
from pyti.setup.choose import supported_tags
from pyti.setup.metadata import applies, guest_environment
from pyti.setup.model import GuestTarget

log = logging.getLogger(__name__)

MAX_EXPLANATION = 2000
# uv 0.13.9 knows manylinux tags up to 2_40; an older tag is a safe subset.
UV_MAX_GLIBC = (2, 40)
# Rounds of "X has only an sdist": X's own dependencies may bring another one.
MAX_SDIST_ROUNDS = 8


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    filename: str
    url: str
    sha256: str
    size: int | None

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class SdistPin:
    """A dependency with no usable wheel for the guest: its sdist goes on the disk."""

    name: str
    version: str
    filename: str
    sha256: str
    path: Path  # in the download cache
    requires: tuple[str, ...]  # its runtime dependencies for the guest, read statically
    build_requires: tuple[str, ...]
    note: str = ""  # how `requires` was known, when not from PEP 643 metadata

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


# name, the versions uv's explanation and the requirements allow -> the sdist to use;
# raises ResolutionFailed when there is none or its dependencies need a build.
Lookup = Callable[[str, SpecifierSet], Awaitable[SdistPin]]


class NoUsableWheels(ResolutionFailed):
    """uv's `--no-build` met projects that have only sdists for the guest.

    `projects` maps each (normalized) name to the versions uv said are required,
    as far as its explanation tells (an empty SpecifierSet when it does not).
    """

    def __init__(self, explanation: str, projects: Mapping[str, SpecifierSet]) -> None:
        super().__init__(explanation)
        self.projects = dict(projects)


@dataclass(frozen=True)
class Options:
    index_urls: tuple[str, ...]  # the first is --index-url, the rest --extra-index-url
    offline: bool = False


@dataclass(frozen=True)
class Resolution:
    pins: tuple[Pin, ...]
    kept: tuple[str, ...]  # best-effort requirements that resolved
    dropped: tuple[tuple[str, str], ...]  # (requirement, uv's reason)
    sdists: tuple[SdistPin, ...] = ()  # dependencies the guest builds from sdists


def uv_binary() -> str:
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError) as exc:
        raise MissingTool("uv", "run `just setup` (uv comes with pyti's venv)") from exc


def uv_platform(target: GuestTarget) -> str:
    major, minor = min(target.glibc, UV_MAX_GLIBC)
    return f"x86_64-manylinux_{major}_{minor}"


def _trim(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("error: "):
        lines[0] = lines[0].removeprefix("error: ")
    text = "\n".join(lines)
    return text if len(text) <= MAX_EXPLANATION else text[:MAX_EXPLANATION] + " ..."


# uv 0.13's words. The hint is given once per project whatever the explanation's shape;
# the "no usable wheels" clauses are a fallback should a hint ever be left out.
_NO_BUILD_HINT = re.compile(
    r"Wheels are required for `([^`]+)` because building from source is disabled"
)
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_NO_WHEELS = re.compile(rf"(?<![\w.-])({_NAME})(?:[<>=!~][^\s]*)? (?:has|have) no usable wheels")
# "you require docopt==0.6.2", "coveralls==3.3.1 depends on docopt>=0.6.1": what a
# requirement allows; uv may print extras in brackets and markers in braces.
_REQUIRED = re.compile(
    rf"(?:depends on|you require) ({_NAME})(?:\[[^\]]*\])?(?:\{{[^}}]*\}})?"
    r"((?:[<>=!~]=?=?)[^\s,]+(?:,(?:[<>=!~]=?=?)[^\s,]+)*)?"
)

# A conclusion ends at a comma or a full stop (not the dots inside a version).
_CONCLUSION = re.compile(r"we can conclude that .*?(?:[.,](?=\s|$)|$)")


def no_usable_wheels(explanation: str) -> tuple[str, ...]:
    """The projects uv's `--no-build` explanation says have no usable wheels."""
    text = " ".join(explanation.split())
    names = {canonicalize_name(m) for m in _NO_BUILD_HINT.findall(text)}
    names |= {canonicalize_name(m) for m in _NO_WHEELS.findall(text)}
    return tuple(sorted(names))


def required_versions(explanation: str, name: str) -> SpecifierSet:
    """What the requirements uv quotes allow of `name` (all versions when none is readable).

    Only stated requirements count: what uv concludes ("we can conclude that a depends
    on b>=2") already leaves out the versions without wheels.
    """
    allowed = SpecifierSet()
    facts = _CONCLUSION.sub(" ", " ".join(explanation.split()))
    for found, spec in _REQUIRED.findall(facts):
        if canonicalize_name(found) != name or not spec:
            continue
        try:
            allowed &= SpecifierSet(spec.rstrip(".;:)"))
        except InvalidSpecifier:
            log.debug("unreadable version range in uv's explanation: %s%s", found, spec)
    return allowed


def _failure(stderr: str) -> ResolutionFailed:
    names = no_usable_wheels(stderr)
    if names:
        return NoUsableWheels(_trim(stderr), {n: required_versions(stderr, n) for n in names})
    return ResolutionFailed(_trim(stderr))


def _wheel_name(wheel: dict[str, Any]) -> str:
    return str(wheel.get("name") or str(wheel.get("url", "")).rsplit("/", 1)[-1].split("#")[0])


def _best(wheels: list[dict[str, Any]], tags: list[Tag]) -> dict[str, Any] | None:
    """pylock lists every wheel that fits the platform: take the one pip would."""
    rank = {tag: i for i, tag in enumerate(tags)}
    scored = []
    for wheel in wheels:
        try:
            _, _, _, wheel_tags = parse_wheel_filename(_wheel_name(wheel))
        except InvalidWheelFilename:
            continue
        score = min((rank[t] for t in wheel_tags if t in rank), default=None)
        if score is not None:
            scored.append((score, _wheel_name(wheel), wheel))
    return min(scored, key=lambda item: item[:2])[2] if scored else None


def parse_pylock(data: bytes, target: GuestTarget) -> tuple[Pin, ...]:
    lock = tomllib.loads(data.decode("utf-8"))
    tags = supported_tags(target)
    pins = []
    for package in lock.get("packages", []):
        marker = package.get("marker")
        if marker:
            try:
                if not Marker(marker).evaluate(guest_environment(target)):
                    continue
            except InvalidMarker:
                pass
        wheel = _best(package.get("wheels") or [], tags)
        if wheel is None:
            raise ResolutionFailed(f"uv found no wheel of {package.get('name')} for the guest")
        url = wheel.get("url") or ""
        sha256 = (wheel.get("hashes") or {}).get("sha256")
        if not url or not sha256:
            raise ResolutionFailed(f"uv gave no URL or sha256 for {package.get('name')}")
        pins.append(
            Pin(
                name=canonicalize_name(package["name"]),
                version=str(package["version"]),
                filename=_wheel_name(wheel),
                url=url,
                sha256=sha256.lower(),
                size=wheel.get("size"),
            )
        )
    return tuple(sorted(pins, key=lambda pin: pin.name))


async def compile_pins(
    requirements: Sequence[str],
    target: GuestTarget,
    options: Options,
    excludes: Sequence[str] = (),
) -> tuple[Pin, ...]:
    """Exact wheels for `requirements` on the guest; ResolutionFailed with uv's words.

    Projects in `excludes` are left out of the resolution altogether (uv `--excludes`),
    as are requirements on them. NoUsableWheels when some project has only sdists.
    """
    if not requirements:
        return ()
    with tempfile.TemporaryDirectory(prefix="pyti-resolve-") as tmp:
        folder = Path(tmp)
        (folder / "requirements.in").write_text("\n".join(requirements) + "\n")
        argv = [
            uv_binary(), "pip", "compile", str(folder / "requirements.in"),
            "--no-build", "--quiet", "--no-header", "--no-config",
            "--python-version", target.python_version,
            "--python-platform", uv_platform(target),
            "--format", "pylock.toml", "-o", str(folder / "pylock.toml"),
        ]  # fmt: skip
        if options.index_urls:
            argv += ["--index-url", options.index_urls[0]]
            for extra in options.index_urls[1:]:
                argv += ["--extra-index-url", extra]
        if options.offline:
            argv.append("--offline")
        if excludes:
            (folder / "excludes.txt").write_text("\n".join(excludes) + "\n")
            argv += ["--excludes", str(folder / "excludes.txt")]
        # No UV_* from the user's environment (indexes, find-links, constraints,
        # --no-build overrides...): the resolution depends only on what pyti passes.
        env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
        # uv's own cache under ours: --offline then means "what pyti has seen".
        env |= {"UV_CACHE_DIR": str(paths.cache_dir() / "uv"), "UV_PYTHON_DOWNLOADS": "never"}
        log.debug("resolving %s", requirements)
        done = await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, check=False, env=env
        )
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", "replace")
            if options.offline and "network was disabled" in stderr:
                raise ResolutionFailed(
                    "offline, and the cache lacks what is needed: " + _trim(stderr)
                )
            raise _failure(stderr)
        return parse_pylock((folder / "pylock.toml").read_bytes(), target)


def _cause(exc: ResolutionFailed) -> str:
    lines = [line.strip() for line in str(exc).splitlines()] or [""]
    cause = next((line for line in lines if line.startswith("cause: ")), lines[0])
    return cause.removeprefix("cause: ")[:300]


def _mentioned(requirements: Sequence[str], explanation: str) -> list[str]:
    """The requirements whose project uv's explanation names: the likely culprits."""
    text = explanation.lower()
    out = []
    for requirement in requirements:
        try:
            name = canonicalize_name(Requirement(requirement).name)
        except InvalidRequirement:
            continue
        if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", text):
            out.append(requirement)
    return out


def _allowed_by(requirements: Sequence[str], name: str, target: GuestTarget) -> SpecifierSet:
    """The versions of `name` that the requirements naming it allow on the guest."""
    allowed = SpecifierSet()
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) == name and applies(requirement, target):
            allowed &= requirement.specifier
    return allowed


async def compile_with_sdists(
    requirements: Sequence[str], target: GuestTarget, options: Options, lookup: Lookup | None
) -> tuple[tuple[Pin, ...], tuple[SdistPin, ...]]:
    """compile_pins, plus the sdists of the dependencies that have no usable wheel.

    Each round that fails on projects without wheels looks them up (`lookup`), then
    resolves again with them excluded and their static dependencies added. When uv
    names several and only some have a usable sdist, the others wait a round: with
    those excluded, an older version of theirs that has a wheel may do (hdfs 2.7.0
    once docopt is handled, where 2.7.3 has only an sdist that needs a build).
    """
    picked: dict[str, SdistPin] = {}
    waited: set[str] = set()
    for _ in range(MAX_SDIST_ROUNDS):
        wanted = [*requirements, *(r for pin in picked.values() for r in pin.requires)]
        try:
            if picked:
                pins = await compile_pins(wanted, target, options, excludes=sorted(picked))
            else:
                pins = await compile_pins(wanted, target, options)
        except NoUsableWheels as exc:
            new = {n: v for n, v in exc.projects.items() if n not in picked}
            if lookup is None or not new:
                raise
            failed: list[tuple[str, ResolutionFailed]] = []
            for name, versions in sorted(new.items()):
                log.info("%s has no usable wheel: looking for its sdist", name)
                try:
                    picked[name] = await lookup(name, versions & _allowed_by(wanted, name, target))
                except ResolutionFailed as failure:
                    failed.append((name, failure))
            again = [failure for name, failure in failed if name in waited]
            if again or (failed and len(failed) == len(new)):
                raise (again or [failed[0][1]])[0] from exc
            waited |= {name for name, _ in failed}
        else:
            return pins, tuple(picked[name] for name in sorted(picked))
    raise ResolutionFailed(
        f"still more dependencies without wheels after {MAX_SDIST_ROUNDS} rounds"
        f" ({', '.join(sorted(picked))}); fix: --extra-index-url an index with their wheels"
    )


class _BestEffort:
    """Adds best-effort requirements to a resolvable base, dropping those that break it."""

    def __init__(
        self,
        strict: Sequence[str],
        target: GuestTarget,
        options: Options,
        lookup: Lookup | None,
        found: tuple[tuple[Pin, ...], tuple[SdistPin, ...]],
    ) -> None:
        self.strict, self.target, self.options, self.lookup = list(strict), target, options, lookup
        self.pins, self.sdists = found  # always the resolution of strict + kept
        self.kept: list[str] = []
        self.dropped: list[tuple[str, str]] = []

    async def add(self, candidates: Sequence[str]) -> None:
        # Bisection: a group that resolves is kept whole, a failing one is split, so a
        # few bad entries among many cost O(bad * log n) uv runs, not one run each.
        if not candidates:
            return
        try:
            self.pins, self.sdists = await compile_with_sdists(
                [*self.strict, *self.kept, *candidates], self.target, self.options, self.lookup
            )
        except ResolutionFailed as exc:
            if len(candidates) == 1:
                self.dropped.append((candidates[0], _cause(exc)))
                return
            half = len(candidates) // 2
            await self.add(candidates[:half])
            await self.add(candidates[half:])
        else:
            self.kept += candidates


async def resolve(
    strict: Sequence[str],
    best_effort: Sequence[str],
    target: GuestTarget,
    options: Options,
    lookup: Lookup | None = None,
) -> Resolution:
    """Pins for `strict` (or ResolutionFailed) and as much of `best_effort` as fits.

    With a `lookup`, dependencies that have only sdists are taken as sdists (for
    both parts) instead of failing the resolution.
    """
    try:
        pins, sdists = await compile_with_sdists([*strict, *best_effort], target, options, lookup)
        return Resolution(pins, tuple(best_effort), (), sdists)
    except ResolutionFailed as exc:
        if not best_effort:
            raise
        suspects = _mentioned(best_effort, str(exc))
    others = [r for r in best_effort if r not in suspects]
    if suspects and others:
        # First guess: uv named the culprits. One run tells whether the rest is fine.
        try:
            found = await compile_with_sdists([*strict, *others], target, options, lookup)
        except ResolutionFailed:
            pass
        else:
            search = _BestEffort(strict, target, options, lookup, found)
            search.kept = others
            await search.add(suspects)
            return _ordered(search, best_effort)
    # raises: the package itself fails
    found = await compile_with_sdists(strict, target, options, lookup)
    search = _BestEffort(strict, target, options, lookup, found)
    await search.add(list(best_effort))
    return _ordered(search, best_effort)


def _ordered(search: _BestEffort, best_effort: Sequence[str]) -> Resolution:
    kept = set(search.kept)
    return Resolution(
        search.pins,
        tuple(r for r in best_effort if r in kept),
        tuple(search.dropped),
        search.sdists,
    )
