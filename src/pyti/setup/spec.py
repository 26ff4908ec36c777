"""Parse what the user asked to test: a requirement, a local file, an sdist URL, or a directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from pyti.errors import UsageError

SDIST_SUFFIXES = (".tar.gz", ".zip")


@dataclass(frozen=True)
class RequirementSpec:
    """A requirement on the index: `attrs`, `attrs==23.2.0`, `attrs>=23`."""

    requirement: Requirement

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)


@dataclass(frozen=True)
class LocalFileSpec:
    path: Path
    kind: str  # "sdist" | "wheel"
    name: str
    version: str


@dataclass(frozen=True)
class UrlSpec:
    """An sdist (or wheel) at a URL; a `#sha256=` fragment is checked when present."""

    url: str
    filename: str
    kind: str
    name: str
    version: str
    sha256: str | None


@dataclass(frozen=True)
class ProjectDirSpec:
    path: Path


Spec = RequirementSpec | LocalFileSpec | UrlSpec | ProjectDirSpec


def _file_identity(filename: str) -> tuple[str, str, str]:
    """(kind, normalized name, version) from a dist file name, or UsageError."""
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
            return "wheel", str(name), str(version)
        if filename.endswith(SDIST_SUFFIXES):
            name, version = parse_sdist_filename(filename)
            return "sdist", str(name), str(version)
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise UsageError(f"not a distribution file name: {filename} ({exc})") from None
    raise UsageError(f"not a wheel or sdist (.whl, .tar.gz, .zip): {filename}")


def parse_spec(text: str, *, cwd: Path | None = None) -> Spec:
    text = text.strip()
    if not text:
        raise UsageError("empty package spec")
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        filename = unquote(parts.path.rsplit("/", 1)[-1])
        kind, name, version = _file_identity(filename)
        sha256 = None
        if parts.fragment.startswith("sha256="):
            sha256 = parts.fragment.removeprefix("sha256=").lower()
        return UrlSpec(parts._replace(fragment="").geturl(), filename, kind, name, version, sha256)
    base = cwd or Path.cwd()
    looks_like_path = "@" not in text and (
        text in {".", ".."} or "/" in text or text.endswith((".whl", *SDIST_SUFFIXES))
    )
    path = base / text
    if looks_like_path or path.is_dir():
        if path.is_dir():
            return ProjectDirSpec(path.resolve())
        if path.is_file():
            kind, name, version = _file_identity(path.name)
            return LocalFileSpec(path.resolve(), kind, name, version)
        raise UsageError(f"no such file or directory: {text}")
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise UsageError(f"not a requirement, file, directory or URL: {text!r} ({exc})") from None
    if requirement.url:
        raise UsageError(f"use the URL itself instead of a direct reference: {text}")
    return RequirementSpec(requirement)
