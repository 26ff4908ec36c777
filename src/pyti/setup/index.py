"""A small PEP 503 (HTML) / PEP 691 (JSON) simple-index client on httpx.

Only what pyti needs: list a project's files with their sha256, requires-python
and yanked state. File URLs may be relative; they are resolved against the page.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from pyti import paths
from pyti.errors import DownloadError, NoSuchPackage

log = logging.getLogger(__name__)

MAX_PAGE_BYTES = 64 << 20  # the biggest PyPI project pages are tens of MB of JSON
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
)
TIMEOUT = httpx.Timeout(30.0, connect=15.0)


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None
    requires_python: str | None
    yanked: bool
    kind: str  # "wheel" | "sdist"
    name: str
    version: Version

    def python_ok(self, python: str) -> bool:
        if not self.requires_python:
            return True
        try:
            return SpecifierSet(self.requires_python).contains(python, prereleases=True)
        except InvalidSpecifier:
            return True  # like pip: an unreadable constraint does not hide a file


def make_file(
    filename: str, url: str, sha256: str | None, requires_python: str | None, yanked: bool
) -> IndexFile | None:
    """An IndexFile, or None for files pyti cannot use (eggs, odd names)."""
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
            kind = "wheel"
        elif filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            kind = "sdist"
        else:
            return None
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return IndexFile(filename, url, sha256, requires_python, yanked, kind, str(name), version)


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))


def parse_html(page_url: str, text: str) -> list[IndexFile]:
    parser = _LinkParser()
    parser.feed(text)
    files = []
    for attrs in parser.links:
        href = attrs.get("href")
        if not href:
            continue
        url = urljoin(page_url, href)
        parts = urlsplit(url)
        sha256 = None
        if parts.fragment.startswith("sha256="):
            sha256 = parts.fragment.removeprefix("sha256=").lower()
        filename = parts.path.rsplit("/", 1)[-1]
        made = make_file(
            unquote(filename),
            parts._replace(fragment="").geturl(),
            sha256,
            attrs.get("data-requires-python"),
            "data-yanked" in attrs,
        )
        if made:
            files.append(made)
    return files


def parse_json(page_url: str, text: str) -> list[IndexFile]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DownloadError(f"malformed index page {page_url}: {exc}") from exc
    entries = data.get("files") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DownloadError(f"malformed index page {page_url}: no files list")
    files = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        filename, url = entry.get("filename"), entry.get("url")
        hashes = entry.get("hashes") or {}
        if (
            not isinstance(filename, str)
            or not isinstance(url, str)
            or not isinstance(hashes, dict)
        ):
            continue
        sha256 = hashes.get("sha256")
        requires_python = entry.get("requires-python")
        made = make_file(
            filename,
            urljoin(page_url, url),
            sha256.lower() if isinstance(sha256, str) else None,
            requires_python if isinstance(requires_python, str) else None,
            bool(entry.get("yanked")),
        )
        if made:
            files.append(made)
    return files


class IndexClient:
    """Project pages from one or more indexes; the first index that has the project wins."""

    def __init__(self, client: httpx.AsyncClient, index_urls: tuple[str, ...]) -> None:
        self.client = client
        self.index_urls = index_urls

    def project_url(self, index_url: str, name: str) -> str:
        return f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"

    async def _page(self, url: str) -> tuple[str, str, str] | None:
        """(final url, content type, text), or None when the index has no such page."""
        try:
            async with self.client.stream(
                "GET", url, headers={"Accept": ACCEPT}, follow_redirects=True, timeout=TIMEOUT
            ) as response:
                if response.status_code == 404:
                    return None
                response.raise_for_status()
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_PAGE_BYTES:
                        raise DownloadError(f"index page larger than {MAX_PAGE_BYTES} bytes: {url}")
                ctype = response.headers.get("content-type", "")
                return str(response.url), ctype, body.decode("utf-8", "replace")
        except httpx.HTTPError as exc:
            raise DownloadError(f"cannot read the index page {url}: {exc}") from exc

    async def files(self, name: str) -> list[IndexFile]:
        for index_url in self.index_urls:
            url = self.project_url(index_url, name)
            page = await self._page(url)
            if page is None:
                continue
            final_url, ctype, text = page
            if "json" in ctype:
                return parse_json(final_url, text)
            return parse_html(final_url, text)
        raise NoSuchPackage(
            f"no such package on {', '.join(self.index_urls)}: {name}"
            " (check the name, or pass --index-url)"
        )


def _listing_path(index_urls: tuple[str, ...], name: str) -> Path:
    key = hashlib.sha256("\n".join(index_urls).encode()).hexdigest()[:16]
    return paths.cache_dir() / "index" / key / f"{canonicalize_name(name)}.json"


def save_listing(index_urls: tuple[str, ...], name: str, files: list[IndexFile]) -> None:
    """Remember a project's files so that `--offline` can choose the same ones later."""
    path = _listing_path(index_urls, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "filename": f.filename,
            "url": f.url,
            "sha256": f.sha256,
            "requires_python": f.requires_python,
            "yanked": f.yanked,
        }
        for f in files
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    tmp.replace(path)


def load_listing(index_urls: tuple[str, ...], name: str) -> list[IndexFile]:
    path = _listing_path(index_urls, name)
    if not path.is_file():
        raise DownloadError(f"offline, and pyti has not seen the index page of {name} yet")
    rows = json.loads(path.read_text())
    made = (
        make_file(r["filename"], r["url"], r["sha256"], r["requires_python"], r["yanked"])
        for r in rows
    )
    return [f for f in made if f is not None]
