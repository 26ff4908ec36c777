"""Fetch .debs from a suite's archive without touching the host's apt state.

apt-get runs with a throwaway sources list, lists dir, cache and empty status file
(trixie-facts.md, pitfall 8); the packages are unpacked with dpkg-deb -x, never installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pyti.errors import ImageBuildFailed
from pyti.image.commands import output, run

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class Archive:
    """One suite's archive, as seen through a private apt configuration under `workdir`."""

    def __init__(self, suite: str, mirror: str, workdir: Path, log_path: Path) -> None:
        self.suite = suite
        self.workdir = workdir
        self.log_path = log_path
        state = workdir / "apt"
        for sub in ("lists/partial", "cache/archives/partial", "etc"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "status").write_bytes(b"")
        sources = state / "etc" / "sources.list"
        sources.write_text(f"deb [signed-by={KEYRING}] {mirror} {suite} main\n")
        self._options = [
            f"-oDir::Etc::SourceList={sources}",
            f"-oDir::Etc::SourceParts={state / 'etc' / 'none'}",
            f"-oDir::Etc::Preferences={state / 'etc' / 'none'}",
            f"-oDir::Etc::PreferencesParts={state / 'etc' / 'none'}",
            f"-oDir::State::Lists={state / 'lists'}",
            f"-oDir::State::status={state / 'status'}",
            f"-oDir::Cache={state / 'cache'}",
            "-oAPT::Architecture=amd64",
            "-oAcquire::Languages=none",
            "-oDebug::NoLocking=1",
            # as root apt would drop to _apt, which cannot write our private dirs
            "-oAPT::Sandbox::User=root",
        ]
        self._env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}

    def update(self) -> None:
        run(
            ["apt-get", *self._options, "update", "-q"],
            log_path=self.log_path,
            env=self._env,
            what=f"apt-get update ({self.suite})",
        )

    def depends(self, package: str) -> list[str]:
        """The direct Depends of `package` (first alternative of each)."""
        text = output(
            ["apt-cache", *self._options, "depends", "--no-recommends", "--no-suggests", package],
            log_path=self.log_path,
            env=self._env,
            what=f"apt-cache depends {package}",
        )
        return re.findall(r"^\s+Depends: ([^\s<>]+)$", text, flags=re.MULTILINE)

    def kernel_package(self) -> str:
        """The versioned linux-image package the suite's linux-image-amd64 points at."""
        for name in self.depends("linux-image-amd64"):
            if name.startswith("linux-image-") and name != "linux-image-amd64":
                return name
        raise ImageBuildFailed(
            f"{self.suite}: linux-image-amd64 names no kernel package", log=self.log_path
        )

    def download_and_unpack(self, packages: list[str], into: Path) -> None:
        debs = self.workdir / "debs"
        debs.mkdir(exist_ok=True)
        run(
            ["apt-get", *self._options, "download", "-q", *packages],
            log_path=self.log_path,
            cwd=debs,
            env=self._env,
            what=f"apt-get download {' '.join(packages)}",
        )
        into.mkdir(parents=True, exist_ok=True)
        for deb in sorted(debs.glob("*.deb")):
            run(
                ["dpkg-deb", "-x", str(deb), str(into)],
                log_path=self.log_path,
                what=f"dpkg-deb -x {deb.name}",
            )
            deb.unlink()
