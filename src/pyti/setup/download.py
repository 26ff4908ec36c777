"""Parallel, sha256-verified downloads into a content-addressed cache.

A file is stored as downloads/<sha[:2]>/<sha>, written to a temporary name
first and renamed only once its hash is right, so a corrupt or truncated
download is never cached. A failed download is retried once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from pyti import paths
from pyti.errors import DownloadError

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 2 << 30
PARALLEL = 8
ATTEMPTS = 2  # one retry
CHUNK = 1 << 16
TIMEOUT = httpx.Timeout(60.0, connect=15.0)


@dataclass(frozen=True)
class Wanted:
    filename: str
    url: str
    sha256: str | None  # None only for a user-given URL without a #sha256= fragment


def cache_path(sha256: str) -> Path:
    return paths.downloads_dir() / sha256[:2] / sha256


def _url_note(url: str) -> Path:
    # For URLs without a known hash: which content they gave last time (for --offline).
    return paths.downloads_dir() / "by-url" / hashlib.sha256(url.encode()).hexdigest()


def cached(item: Wanted) -> Path | None:
    sha256 = item.sha256
    if sha256 is None:
        note = _url_note(item.url)
        sha256 = note.read_text().strip() if note.is_file() else None
    if sha256 and cache_path(sha256).is_file():
        return cache_path(sha256)
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def add_bytes(data: bytes) -> tuple[str, Path]:
    """Put bytes made on the host (a packed local project) into the cache."""
    sha256 = hashlib.sha256(data).hexdigest()
    target = cache_path(sha256)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return sha256, target


def add_file(path: Path) -> tuple[str, Path]:
    """Copy a local file into the cache: (sha256, cached path)."""
    sha256 = sha256_file(path)
    target = cache_path(sha256)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return sha256, target


async def _download_once(client: httpx.AsyncClient, item: Wanted) -> Path:
    folder = paths.downloads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".part-")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            async with client.stream(
                "GET", item.url, follow_redirects=True, timeout=TIMEOUT
            ) as response:
                response.raise_for_status()
                async for chunk in response.aiter_bytes(CHUNK):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise DownloadError(f"larger than {MAX_DOWNLOAD_BYTES} bytes")
                    digest.update(chunk)
                    out.write(chunk)
        got = digest.hexdigest()
        if item.sha256 is not None and got != item.sha256:
            raise DownloadError(f"sha256 mismatch (expected {item.sha256}, got {got})")
        target = cache_path(got)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        if item.sha256 is None:
            note = _url_note(item.url)
            note.parent.mkdir(parents=True, exist_ok=True)
            note.write_text(got)
        return target
    finally:
        tmp.unlink(missing_ok=True)


async def download(client: httpx.AsyncClient, item: Wanted) -> Path:
    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            return await _download_once(client, item)
        except (httpx.HTTPError, DownloadError, OSError) as exc:
            log.info("download of %s failed (attempt %d): %s", item.url, attempt + 1, exc)
            last = exc
    reason = str(last).splitlines()[0] if str(last) else type(last).__name__
    raise DownloadError(f"cannot download {item.filename}: {reason}") from last


async def fetch_all(
    items: Iterable[Wanted], *, offline: bool, client: httpx.AsyncClient | None
) -> Mapping[str, Path]:
    """filename -> cached file, downloading what is missing (in parallel)."""
    found: dict[str, Path] = {}
    missing: list[Wanted] = []
    for item in items:
        hit = cached(item)
        if hit is not None:
            found[item.filename] = hit
        else:
            missing.append(item)
    if not missing:
        return found
    if offline or client is None:
        names = ", ".join(sorted(item.filename for item in missing))
        raise DownloadError(f"offline, and the download cache lacks: {names}")
    limiter = trio.CapacityLimiter(PARALLEL)
    # Errors are collected, not raised in the tasks: trio would wrap them in an
    # ExceptionGroup, and the user should read one plain DownloadError.
    failures: list[DownloadError] = []

    async def one(item: Wanted) -> None:
        async with limiter:
            try:
                found[item.filename] = await download(client, item)
            except DownloadError as exc:
                failures.append(exc)

    async with trio.open_nursery() as nursery:
        for item in missing:
            nursery.start_soon(one, item)
    if failures:
        raise failures[0]
    return found
