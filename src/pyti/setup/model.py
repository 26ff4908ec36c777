"""Plain data shared by the setup modules: the guest target, findings, the result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pyti.errors import UsageError
from pyti.protocol.manifest import SetupManifest

DEFAULT_INDEX = "https://pypi.org/simple"


@dataclass(frozen=True)
class GuestTarget:
    """What the guest runs: never the host's Python."""

    python_version: str = "3.11"
    platform_tag: str = "x86_64-manylinux_2_36"

    @property
    def glibc(self) -> tuple[int, int]:
        # "x86_64-manylinux_2_36" -> (2, 36)
        _, _, rest = self.platform_tag.partition("manylinux_")
        major, _, minor = rest.partition("_")
        return int(major), int(minor)

    @property
    def python_tuple(self) -> tuple[int, int]:
        major, _, minor = self.python_version.partition(".")
        return int(major), int(minor)


# The suites the image builder knows, so `pyti fetch` works before any image exists.
TARGETS = {
    "3.11": GuestTarget("3.11", "x86_64-manylinux_2_36"),  # bookworm
    "3.13": GuestTarget("3.13", "x86_64-manylinux_2_41"),  # trixie
}


def target_for_python(version: str) -> GuestTarget:
    try:
        return TARGETS[version]
    except KeyError:
        raise UsageError(
            f"no guest image has Python {version}; choose one of {', '.join(TARGETS)}"
        ) from None


@dataclass(frozen=True)
class HostFinding:
    """Something the host noticed while preparing (a dropped test dependency, ...)."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class SetupDisk:
    path: Path
    manifest: SetupManifest
    digest: str
    findings: tuple[HostFinding, ...]
    resolved: Mapping[str, str]
