"""Static package metadata: core metadata (PKG-INFO/METADATA) and pyproject.toml, never code.

Markers are evaluated for the guest (its Python, Linux x86_64), not the host.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.parser import HeaderParser
from typing import Any

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pyti.errors import MalformedMetadata
from pyti.setup.model import GuestTarget

DEFAULT_BUILD_REQUIRES = ("setuptools>=40.8", "wheel")


def guest_environment(target: GuestTarget, extra: str = "") -> dict[str, str]:
    full = f"{target.python_version}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": full,
        "platform_python_implementation": "CPython",
        "python_version": target.python_version,
        "sys_platform": "linux",
        "extra": extra,
    }


def applies(requirement: Requirement, target: GuestTarget, extra: str = "") -> bool:
    if requirement.marker is None:
        return True
    try:
        return requirement.marker.evaluate(guest_environment(target, extra))
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
        return False


def without_marker(requirement: Requirement) -> str:
    copy = Requirement(str(requirement))
    copy.marker = None
    return str(copy)


def parse_requirements(lines: Iterable[str]) -> list[Requirement]:
    out = []
    for line in lines:
        try:
            out.append(Requirement(line))
        except InvalidRequirement:
            continue
    return out


@dataclass(frozen=True)
class CoreMetadata:
    metadata_version: Version
    name: str
    version: str
    requires_dist: tuple[Requirement, ...]
    dynamic: frozenset[str]

    @property
    def requires_dist_static(self) -> bool:
        """Whether Requires-Dist can be trusted without building (PEP 643)."""
        return self.metadata_version >= Version("2.2") and "requires-dist" not in self.dynamic


def parse_core_metadata(data: bytes) -> CoreMetadata:
    text = data.decode("utf-8", "replace")
    message = HeaderParser().parsestr(text)
    try:
        metadata_version = Version(message.get("Metadata-Version", "1.0").strip())
    except InvalidVersion:
        metadata_version = Version("1.0")
    return CoreMetadata(
        metadata_version=metadata_version,
        name=canonicalize_name(str(message.get("Name", "")).strip()),
        version=str(message.get("Version", "")).strip(),
        requires_dist=tuple(parse_requirements(message.get_all("Requires-Dist") or [])),
        dynamic=frozenset(str(v).strip().lower() for v in message.get_all("Dynamic") or []),
    )


def load_toml(name: str, data: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MalformedMetadata(f"{name} does not parse: {exc}") from None


def requirement_list(value: object) -> list[Requirement]:
    if not isinstance(value, list):
        return []
    return parse_requirements(item for item in value if isinstance(item, str))


def build_requires(pyproject: Mapping[str, Any] | None) -> tuple[str, ...]:
    system = (pyproject or {}).get("build-system")
    if not isinstance(system, dict) or "requires" not in system:
        return DEFAULT_BUILD_REQUIRES
    return tuple(str(r) for r in requirement_list(system["requires"]))


def project_table(pyproject: Mapping[str, Any] | None) -> dict[str, Any]:
    project = (pyproject or {}).get("project")
    return project if isinstance(project, dict) else {}


def static_dependencies(
    pkg_info: CoreMetadata | None, pyproject: Mapping[str, Any] | None, target: GuestTarget
) -> tuple[str, ...] | None:
    """Runtime dependencies for the guest, or None when only a build would tell."""
    if pkg_info is not None and pkg_info.requires_dist_static:
        return tuple(
            without_marker(r) for r in pkg_info.requires_dist if applies(r, target, extra="")
        )
    project = project_table(pyproject)
    dynamic = project.get("dynamic", [])
    if project and "dependencies" not in (dynamic if isinstance(dynamic, list) else []):
        reqs = requirement_list(project.get("dependencies", []))
        return tuple(without_marker(r) for r in reqs if applies(r, target))
    return None


def extra_requirements(
    requires_dist: Iterable[Requirement], extra: str, target: GuestTarget
) -> list[Requirement]:
    """Requirements a core-metadata `extra` adds (their markers evaluated for the guest)."""
    out = []
    for requirement in requires_dist:
        if applies(requirement, target, extra) and not applies(requirement, target, ""):
            out.append(requirement)
    return out
