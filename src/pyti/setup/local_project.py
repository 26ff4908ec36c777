"""A local project directory (`pyti run .`): its git-tracked files, packed like an sdist.

This is not building an sdist (nothing from the project runs): it archives the
tracked files, deterministically, as <name>-<version>/... in a tar.gz. git is
run with the project's hooks and fsmonitor disabled, since the repository's
own config could otherwise name a program to run.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import subprocess
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.utils import canonicalize_name

from pyti.errors import HostileArchive, MalformedMetadata, UsageError

log = logging.getLogger(__name__)

MAX_PROJECT_BYTES = 256 << 20
MAX_PROJECT_FILES = 50_000
# 1980-01-02: zip (and so wheel building in the guest) rejects earlier timestamps.
FIXED_MTIME = 315_619_200
EXCLUDED_DIRS = {
    ".git", ".hg", ".venv", "venv", ".tox", ".nox", "build", "dist", "__pycache__",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", "node_modules", ".eggs",
}  # fmt: skip


@dataclass(frozen=True)
class PackedProject:
    name: str
    version: str
    filename: str
    data: bytes
    files: int


def _excluded(rel: PurePosixPath) -> bool:
    return any(part in EXCLUDED_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]) or (
        rel.suffix in {".pyc", ".pyo"}
    )


def tracked_files(root: Path) -> list[PurePosixPath]:
    """git-tracked files, or (outside git) every file not under an excluded directory."""
    argv = [
        "git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null",
        "-c", f"safe.directory={root}", "-C", str(root), "ls-files", "-z", "--cached",
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("git ls-files failed in %s: %s", root, exc)
        done = None
    if done is not None and done.returncode == 0:
        names = [PurePosixPath(n) for n in done.stdout.decode("utf-8", "replace").split("\0") if n]
    else:
        names = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS)
            base = Path(folder).relative_to(root)
            names += [PurePosixPath(base.as_posix()) / f for f in files]
    return sorted({n for n in names if not _excluded(n) and ".." not in n.parts})


def project_identity(root: Path) -> tuple[str, str]:
    """(name, version) read statically; version "0" when it is dynamic or absent."""
    name, version = "", ""
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            project = tomllib.loads(pyproject.read_text("utf-8")).get("project", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise MalformedMetadata(f"pyproject.toml does not parse: {exc}") from None
        if isinstance(project, dict):
            name = str(project.get("name", ""))
            version = str(project.get("version", ""))
    if not name and (root / "setup.cfg").is_file():
        text = (root / "setup.cfg").read_text("utf-8", "replace")
        if found := re.search(r"^name\s*=\s*(\S+)", text, re.MULTILINE):
            name = found.group(1)
        if found := re.search(r"^version\s*=\s*([0-9][^\s]*)", text, re.MULTILINE):
            version = version or found.group(1)
    name = canonicalize_name(name or root.name).replace("-", "_")
    return name, version or "0"


def pack(root: Path) -> PackedProject:
    if not root.is_dir():
        raise UsageError(f"not a directory: {root}")
    name, version = project_identity(root)
    top = f"{name}-{version}"
    buffer = io.BytesIO()
    total = count = 0
    # gzip with mtime 0 and no file name: the same files give the same bytes.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in tracked_files(root):
            path = root / rel
            if path.is_symlink() or not path.is_file():
                continue  # a link could point anywhere on the host: never followed
            size = path.stat().st_size
            total += size
            count += 1
            if total > MAX_PROJECT_BYTES or count > MAX_PROJECT_FILES:
                raise HostileArchive(
                    f"{root}: the tracked files exceed {MAX_PROJECT_BYTES >> 20} MB"
                    f" or {MAX_PROJECT_FILES} files"
                )
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = size
            info.mtime = FIXED_MTIME
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return PackedProject(name, version, f"{top}.tar.gz", buffer.getvalue(), count)
