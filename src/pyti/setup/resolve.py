"""Resolution for the guest with `uv pip compile --no-build`: no package code runs.

uv writes a pylock.toml with each pinned wheel's URL and sha256. The package and
its runtime dependencies resolve strictly; test dependencies best effort: the
ones that break the resolution are dropped, one by one, with the reason.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from pyti import paths
from pyti.errors import MissingTool, ResolutionFailed
from pyti.setup.choose import supported_tags
from pyti.setup.metadata import guest_environment
from pyti.setup.model import GuestTarget

log = logging.getLogger(__name__)

MAX_EXPLANATION = 2000
# uv 0.13.9 knows manylinux tags up to 2_40; an older tag is a safe subset.
UV_MAX_GLIBC = (2, 40)


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
class Options:
    index_urls: tuple[str, ...]  # the first is --index-url, the rest --extra-index-url
    offline: bool = False


@dataclass(frozen=True)
class Resolution:
    pins: tuple[Pin, ...]
    kept: tuple[str, ...]  # best-effort requirements that resolved
    dropped: tuple[tuple[str, str], ...]  # (requirement, uv's reason)


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
    requirements: Sequence[str], target: GuestTarget, options: Options
) -> tuple[Pin, ...]:
    """Exact wheels for `requirements` on the guest; ResolutionFailed with uv's words."""
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
            raise ResolutionFailed(_trim(stderr))
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


class _BestEffort:
    """Adds best-effort requirements to a resolvable base, dropping those that break it."""

    def __init__(
        self, strict: Sequence[str], target: GuestTarget, options: Options, pins: tuple[Pin, ...]
    ) -> None:
        self.strict, self.target, self.options = list(strict), target, options
        self.pins = pins  # always the resolution of strict + kept
        self.kept: list[str] = []
        self.dropped: list[tuple[str, str]] = []

    async def add(self, candidates: Sequence[str]) -> None:
        # Bisection: a group that resolves is kept whole, a failing one is split, so a
        # few bad entries among many cost O(bad * log n) uv runs, not one run each.
        if not candidates:
            return
        try:
            self.pins = await compile_pins(
                [*self.strict, *self.kept, *candidates], self.target, self.options
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
    strict: Sequence[str], best_effort: Sequence[str], target: GuestTarget, options: Options
) -> Resolution:
    try:
        pins = await compile_pins([*strict, *best_effort], target, options)
        return Resolution(pins, tuple(best_effort), ())
    except ResolutionFailed as exc:
        if not best_effort:
            raise
        suspects = _mentioned(best_effort, str(exc))
    others = [r for r in best_effort if r not in suspects]
    if suspects and others:
        # First guess: uv named the culprits. One run tells whether the rest is fine.
        try:
            pins = await compile_pins([*strict, *others], target, options)
        except ResolutionFailed:
            pass
        else:
            search = _BestEffort(strict, target, options, pins)
            search.kept = others
            await search.add(suspects)
            return _ordered(search, best_effort)
    pins = await compile_pins(strict, target, options)  # raises: the package itself fails
    search = _BestEffort(strict, target, options, pins)
    await search.add(list(best_effort))
    return _ordered(search, best_effort)


def _ordered(search: _BestEffort, best_effort: Sequence[str]) -> Resolution:
    kept = set(search.kept)
    return Resolution(
        search.pins, tuple(r for r in best_effort if r in kept), tuple(search.dropped)
    )
