"""Running the build's host programs with their output in the build log."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyti.errors import ImageBuildFailed, MissingTool
from pyti.hostdeps import HOST_PACKAGES, install_line, which

log = logging.getLogger(__name__)

_PACKAGE_OF = {command: package for package, command in HOST_PACKAGES.items()}
# Programs the image build calls that hostdeps lists under another command name.
_PACKAGE_OF.update(
    {"dpkg-deb": "dpkg", "apt-get": "apt", "apt-cache": "apt", "unsquashfs": "squashfs-tools"}
)


def require(command: str) -> str:
    """The full path of a host program, or MissingTool with the install line."""
    path = which(command)
    if path is None:
        package = _PACKAGE_OF.get(command, command)
        raise MissingTool(command, install_line([package]))
    return path


def run(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str,
) -> None:
    """Run one build step, appending its output to the build log; raise on failure."""
    program = require(argv[0])
    log.debug("%s: %s", what, " ".join(argv))
    with log_path.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        result = subprocess.run(
            [program, *argv[1:]],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise ImageBuildFailed(f"{what} failed (exit {result.returncode})", log=log_path)


def output(
    argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None, what: str
) -> str:
    """Run a query step and return its stdout (stderr goes to the build log)."""
    program = require(argv[0])
    log.debug("%s: %s", what, " ".join(argv))
    with log_path.open("ab") as err:
        err.write(f"$ {' '.join(argv)}\n".encode())
        err.flush()
        result = subprocess.run(
            [program, *argv[1:]],
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            check=False,
        )
    if result.returncode != 0:
        raise ImageBuildFailed(f"{what} failed (exit {result.returncode})", log=log_path)
    return result.stdout.decode("utf-8", "replace")
