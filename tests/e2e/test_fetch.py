"""`pyti fetch` against a PEP 503 index on loopback, then `--offline` from the cache.

No VM boots here, but the real tools run: uv, mksquashfs, and the CLI in a subprocess.
The index serves real files downloaded once from PyPI, with relative file URLs.
"""

from __future__ import annotations

import hashlib
import html
import io
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from pyti.protocol.manifest import SetupManifest

FILES = [
    "iniconfig-2.3.1.tar.gz",
    "iniconfig-2.3.1-py3-none-any.whl",
    "pytest-9.2.0-py3-none-any.whl",
    "pluggy-1.7.0-py3-none-any.whl",
    "packaging-26.4-py3-none-any.whl",
    "pygments-2.21.0-py3-none-any.whl",
]
PYTI = [sys.executable, "-m", "pyti"]


def _project(filename: str) -> str:
    if filename.endswith(".whl"):
        return str(parse_wheel_filename(filename)[0])
    return str(parse_sdist_filename(filename)[0])


@pytest.fixture(scope="session")
def dist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dists")
    with httpx.Client(timeout=60) as client:
        for name in sorted({_project(f) for f in FILES}):
            page = client.get(
                f"https://pypi.org/simple/{name}/",
                headers={"Accept": "application/vnd.pypi.simple.v1+json"},
            ).json()
            for entry in page["files"]:
                if entry["filename"] in FILES:
                    data = client.get(entry["url"]).content
                    assert hashlib.sha256(data).hexdigest() == entry["hashes"]["sha256"]
                    (folder / entry["filename"]).write_bytes(data)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    return folder


def _handler(folder: Path, hits: list[str]) -> type[BaseHTTPRequestHandler]:
    class Index(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:  # uv asks before a range request for wheel metadata
            self.head_only = True
            self.do_GET()

        def do_GET(self) -> None:
            hits.append(self.path)
            parts = [p for p in self.path.split("/") if p]
            if len(parts) == 2 and parts[0] == "files" and (folder / parts[1]).is_file():
                self._send(200, "application/octet-stream", (folder / parts[1]).read_bytes())
                return
            if len(parts) == 2 and parts[0] == "simple":
                files = [p for p in sorted(folder.iterdir()) if _project(p.name) == parts[1]]
                if files:
                    links = "".join(
                        f'<a href="../../files/{html.escape(p.name)}#sha256='
                        f'{hashlib.sha256(p.read_bytes()).hexdigest()}">{p.name}</a>\n'
                        for p in files
                    )
                    self._send(200, "text/html", f"<html><body>{links}</body></html>".encode())
                    return
            self._send(404, "text/plain", b"not found")

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not getattr(self, "head_only", False):
                self.wfile.write(body)

    return Index


@pytest.fixture
def index(dist_dir: Path) -> Iterator[tuple[str, list[str], ThreadingHTTPServer]]:
    hits: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(dist_dir, hits))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", hits, server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_pyti(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTI_CACHE_DIR=str(cache))
    return subprocess.run(
        [*PYTI, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_fetch_then_offline_gives_the_same_disk(
    tmp_path: Path, dist_dir: Path, index: tuple[str, list[str], ThreadingHTTPServer]
) -> None:
    url, hits, server = index
    cache = tmp_path / "cache"
    first = run_pyti(cache, "fetch", "iniconfig", "--index-url", url)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    disk = Path(lines[0])
    assert disk.parent == cache / "setup"
    assert lines[1].startswith("iniconfig 2.3.1: 6 dists (wheel, sdist), 1 test requirements")
    # iniconfig's tests also want pytest-xdist, which this index lacks: dropped, not fatal
    assert any(line.startswith("finding: test-dependency-dropped: pytest-xdist") for line in lines)
    assert any(h.endswith("iniconfig-2.3.1.tar.gz") for h in hits)
    data = squashfs_bytes(disk)

    server.shutdown()  # the index is gone: --offline must not need it
    hits.clear()
    again = run_pyti(cache, "fetch", "iniconfig", "--index-url", url, "--offline")
    assert again.returncode == 0, again.stderr
    # the same disk; only uv's wording of why pytest-xdist is missing may differ
    assert again.stdout.splitlines()[:2] == lines[:2]
    assert again.stdout.count("test-dependency-dropped: pytest-xdist") == 1
    assert squashfs_bytes(disk) == data
    assert hits == []

    listing = subprocess.run(
        ["unsquashfs", "-cat", str(disk), "manifest.cbor"], capture_output=True, check=True
    ).stdout
    manifest = SetupManifest.from_cbor(listing)
    assert manifest.sdist == "iniconfig-2.3.1.tar.gz"
    assert manifest.wheel == "iniconfig-2.3.1-py3-none-any.whl"
    assert manifest.install[0] == "iniconfig==2.3.1"
    # every dist, plus the host-compiled bytecode of each installed wheel (setup.md)
    bytecode = set(manifest.bytecode)
    assert set(manifest.files) - bytecode == set(FILES)
    assert bytecode == {f"{n}.pyti-bytecode" for n in FILES if n.endswith(".whl")} & set(
        manifest.files
    )
    assert manifest.test_requirements == ("pytest",)
    for name, sha in manifest.files.items():
        if name not in bytecode:
            assert hashlib.sha256((dist_dir / name).read_bytes()).hexdigest() == sha


def test_unknown_package_and_offline_misses(
    tmp_path: Path, index: tuple[str, list[str], ThreadingHTTPServer]
) -> None:
    url, _, _ = index
    missing = run_pyti(tmp_path / "c1", "fetch", "attrs", "--index-url", url)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"pyti: error: no such package on {url}: attrs (check the name, or pass --index-url)"
    )
    cold = run_pyti(tmp_path / "c2", "fetch", "iniconfig", "--index-url", url, "--offline")
    assert cold.returncode == 1
    assert "offline" in cold.stderr
    assert canonicalize_name("IniConfig") in cold.stderr


def test_a_hostile_sdist_on_the_index_is_refused(
    tmp_path: Path, dist_dir: Path, index: tuple[str, list[str], ThreadingHTTPServer]
) -> None:
    url, _, _ = index
    evil = dist_dir / "evil-1.0.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("evil-1.0/../../../../tmp/pyti-evil-marker")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"boom"))
    try:
        done = run_pyti(tmp_path / "cache", "fetch", "evil", "--index-url", url)
    finally:
        evil.unlink()
    assert done.returncode == 1
    assert "evil-1.0.tar.gz: member escapes the archive" in done.stderr
    assert not Path("/tmp/pyti-evil-marker").exists()
    assert not (tmp_path / "cache" / "setup").exists()  # no disk was written


def test_fetch_a_local_project_directory(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "src" / "proj").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.4"]\nbuild-backend = "flit_core.buildapi"\n'
        '[project]\nname = "proj"\nversion = "0.1"\ndescription = "x"\n'
        'dependencies = ["iniconfig"]\n'
        '[dependency-groups]\ntest = ["pytest"]\n'
    )
    (project / "src" / "proj" / "__init__.py").write_text("")
    (project / ".venv").mkdir()
    (project / ".venv" / "big").write_bytes(b"x" * 1000)
    done = run_pyti(tmp_path / "cache", "fetch", str(project))
    assert done.returncode == 0, done.stderr
    disk = Path(done.stdout.splitlines()[0])
    raw = subprocess.run(
        ["unsquashfs", "-cat", str(disk), "manifest.cbor"], capture_output=True, check=True
    ).stdout
    manifest = SetupManifest.from_cbor(raw)
    assert manifest.sdist == "proj-0.1.tar.gz"
    assert manifest.wheel is None
    assert manifest.install[0] == "proj-0.1.tar.gz"  # built in the guest from the file
    assert any(pin.startswith("iniconfig==") for pin in manifest.install)
    assert any(pin.startswith("flit-core==") for pin in manifest.build_requirements)
    sdist = subprocess.run(
        ["unsquashfs", "-cat", str(disk), "dists/proj-0.1.tar.gz"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(sdist)) as tar:
        assert sorted(tar.getnames()) == [
            "proj-0.1/pyproject.toml",
            "proj-0.1/src/proj/__init__.py",
        ]


def test_fetch_a_local_wheel_resolves_what_it_requires(
    tmp_path: Path, dist_dir: Path, index: tuple[str, list[str], ThreadingHTTPServer]
) -> None:
    url, _, _ = index
    wheel = tmp_path / "pytest-9.2.0-py3-none-any.whl"
    wheel.write_bytes((dist_dir / wheel.name).read_bytes())
    done = run_pyti(tmp_path / "cache", "fetch", str(wheel), "--index-url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "pytest 9.2.0: 5 dists (wheel, no sdist), 0 test requirements, 0 dropped",
        "finding: no-sdist: only a wheel: the tests are those the wheel ships, if any",
    ]


def squashfs_bytes(disk: Path) -> bytes:
    """The disk's squashfs without its padding (a hole up to 64 GiB, for snapshots)."""
    from pyti.setup.image import content_size

    with disk.open("rb") as handle:
        return handle.read(content_size(disk))
