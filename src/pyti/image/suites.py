"""The Debian suites pyti builds guests from, and what each gives the guest."""

from __future__ import annotations

from dataclasses import dataclass

from pyti.errors import UsageError

MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Suite:
    name: str
    python_version: str
    # glibc of the suite: what manylinux wheels the guest can install
    platform_tag: str


_SUITES = (
    Suite("bookworm", "3.11", "x86_64-manylinux_2_36"),
    Suite("trixie", "3.13", "x86_64-manylinux_2_41"),
)

# The contract (docs/architecture.md): suite name -> Python version.
SUITES: dict[str, str] = {suite.name: suite.python_version for suite in _SUITES}
DEFAULT_SUITE = "bookworm"


def get_suite(name: str) -> Suite:
    for suite in _SUITES:
        if suite.name == name:
            return suite
    known = ", ".join(SUITES)
    raise UsageError(f"unknown suite {name!r}; known suites: {known}")
