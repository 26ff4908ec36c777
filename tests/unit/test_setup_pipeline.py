"""Resolution's best effort, verified downloads, the reproducible disk, local projects."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from pyti.errors import DownloadError, HostileArchive, ResolutionFailed
from pyti.protocol.manifest import SetupManifest
from pyti.setup import download, local_project, resolve
from pyti.setup.image import PADDED_BYTES, build_disk, content_size
from pyti.setup.model import GuestTarget, HostFinding, SetupDisk
from pyti.setup.summary import summary_lines

PY311 = GuestTarget("3.11", "x86_64-manylinux_2_36")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYTI_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


PYLOCK = b"""
lock-version = "1.0"
[[packages]]
name = "Charset_Normalizer"
version = "3.4.0"
wheels = [
  { url = "https://f/charset_normalizer-3.4.0-py3-none-any.whl", hashes = { sha256 = "AA" } },
  { url = "https://f/charset_normalizer-3.4.0-cp311-cp311-manylinux_2_17_x86_64.whl", \
hashes = { sha256 = "bb" } },
]
[[packages]]
name = "colorama"
version = "0.4.6"
marker = "sys_platform == 'win32'"
wheels = [{ url = "https://f/colorama-0.4.6-py2.py3-none-any.whl", hashes = { sha256 = "cc" } }]
"""


def test_pylock_gives_the_best_wheel_per_package_for_the_guest() -> None:
    (pin,) = resolve.parse_pylock(PYLOCK, PY311)
    assert pin.name == "charset-normalizer"
    assert pin.filename == "charset_normalizer-3.4.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    assert pin.sha256 == "bb"
    assert pin.requirement == "charset-normalizer==3.4.0"


def test_uv_platform_is_clamped_to_what_uv_knows() -> None:
    assert resolve.uv_platform(GuestTarget("3.13", "x86_64-manylinux_2_41")) == (
        "x86_64-manylinux_2_40"
    )
    assert resolve.uv_platform(PY311) == "x86_64-manylinux_2_36"


async def test_best_effort_drops_only_the_failing_test_deps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[str]] = []

    async def fake(
        requirements: Sequence[str], target: GuestTarget, options: resolve.Options
    ) -> tuple[resolve.Pin, ...]:
        calls.append(list(requirements))
        if "broken" in requirements:
            raise ResolutionFailed("No solution found\n  cause: broken has no usable wheels")
        return tuple(
            resolve.Pin(r, "1", f"{r}-1-py3-none-any.whl", "u", "0", None) for r in requirements
        )

    monkeypatch.setattr(resolve, "compile_pins", fake)
    result = await resolve.resolve(
        ["pkg==1"], ["pytest", "broken", "mock"], PY311, resolve.Options(())
    )
    assert result.kept == ("pytest", "mock")
    assert result.dropped == (("broken", "broken has no usable wheels"),)
    assert [p.name for p in result.pins] == ["pkg==1", "pytest", "mock"]
    assert calls[0] == ["pkg==1", "pytest", "broken", "mock"]


async def test_strict_failure_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake(
        requirements: Sequence[str], target: GuestTarget, options: resolve.Options
    ) -> tuple[resolve.Pin, ...]:
        raise ResolutionFailed("conflict")

    monkeypatch.setattr(resolve, "compile_pins", fake)
    with pytest.raises(ResolutionFailed, match="conflict"):
        await resolve.resolve(["pkg==1"], ["pytest"], PY311, resolve.Options(()))


def transport(bodies: list[bytes]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bodies.pop(0) if len(bodies) > 1 else bodies[0])

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_a_corrupt_download_is_retried_once_and_never_cached(cache: Path) -> None:
    good = b"the real wheel"
    sha = hashlib.sha256(good).hexdigest()
    item = download.Wanted("a-1-py3-none-any.whl", "https://f/a.whl", sha)
    async with transport([b"corrupt", b"truncat"]) as client:
        with pytest.raises(DownloadError, match="sha256 mismatch"):
            await download.fetch_all([item], offline=False, client=client)
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    async with transport([b"corrupt", good]) as client:
        got = await download.fetch_all([item], offline=False, client=client)
    assert got[item.filename].read_bytes() == good
    assert got[item.filename] == download.cache_path(sha)


async def test_offline_names_what_is_missing() -> None:
    items = [download.Wanted(f"{n}-1.tar.gz", f"https://f/{n}", "ab" * 32) for n in "zb"]
    with pytest.raises(DownloadError, match=r"lacks: b-1\.tar\.gz, z-1\.tar\.gz"):
        await download.fetch_all(items, offline=True, client=None)


def manifest_for(files: dict[str, Path]) -> SetupManifest:
    hashes = {name: download.sha256_file(path) for name, path in files.items()}
    return SetupManifest(
        spec="a",
        package_name="a",
        package_version="1",
        sdist=None,
        wheel="a-1-py3-none-any.whl",
        install=("a==1",),
        build_requirements=(),
        files=hashes,
    )


async def test_setup_disk_is_reproducible_byte_for_byte(tmp_path: Path, cache: Path) -> None:
    sources = {}
    for name, data in [("a-1-py3-none-any.whl", b"wheel"), ("b-2-py3-none-any.whl", b"b" * 9999)]:
        sources[name] = tmp_path / name
        sources[name].write_bytes(data)
    manifest = manifest_for(sources)
    first, digest = await build_disk(manifest, sources)
    # padded with a hole to one size for every disk (pyti.snapshot); the squashfs is the start
    assert first.stat().st_size == PADDED_BYTES
    assert first.stat().st_blocks * 512 < 1 << 20
    with first.open("rb") as handle:
        data = handle.read(content_size(first))
    first.unlink()
    for source in sources.values():  # different mtimes and modes must not matter
        source.touch()
        source.chmod(0o600)
    second, again = await build_disk(manifest, sources)
    assert (second, again) == (first, digest)
    with second.open("rb") as handle:
        assert handle.read(content_size(second)) == data
    listing = subprocess.run(
        ["unsquashfs", "-lls", str(second)], capture_output=True, text=True, check=True
    ).stdout
    rows = {line.split()[-1]: line.split()[:-1] for line in listing.splitlines()}
    assert rows["squashfs-root/dists/a-1-py3-none-any.whl"] == [
        "-rw-r--r--", "root/root", "5", "1970-01-01", "00:00"
    ]  # fmt: skip
    assert "squashfs-root/manifest.cbor" in listing
    assert not list((cache / "setup").glob(".stage-*"))


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_local_project_packs_tracked_files_deterministically(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "My.Proj"\nversion = "0.2"\n')
    (root / "src" / "m.py").write_text("x = 1\n")
    (root / ".venv").mkdir()
    (root / ".venv" / "junk.py").write_text("")
    (root / "untracked.py").write_text("")
    (root / "outside").symlink_to("/etc/passwd")
    git(root, "init", "-q")
    git(root, "add", "pyproject.toml", "src/m.py", ".venv/junk.py", "outside")
    one = local_project.pack(root)
    (root / "src" / "m.py").touch()
    two = local_project.pack(root)
    assert one == two
    assert one.filename == "my_proj-0.2.tar.gz"
    assert one.files == 2  # not .venv, not the untracked file, not the symlink


def test_local_project_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 2000)
    monkeypatch.setattr(local_project, "MAX_PROJECT_BYTES", 1000)
    with pytest.raises(HostileArchive, match="exceed"):
        local_project.pack(tmp_path)


def test_summary_lines(tmp_path: Path) -> None:
    manifest = manifest_for({"a-1-py3-none-any.whl": Path(__file__)})
    disk = SetupDisk(
        tmp_path / "d.sqfs",
        manifest,
        "00",
        (HostFinding("test-dependency-dropped", "mypy: no wheels"),),
        {"a": "1"},
    )
    assert summary_lines(disk) == [
        str(tmp_path / "d.sqfs"),
        "a 1: 1 dists (wheel, no sdist), 0 test requirements, 1 dropped",
        "finding: test-dependency-dropped: mypy: no wheels",
    ]


async def test_many_test_deps_with_two_bad_ones_take_few_uv_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    bad = {"dep07", "dep23"}

    async def fake(
        requirements: Sequence[str], target: GuestTarget, options: resolve.Options
    ) -> tuple[resolve.Pin, ...]:
        nonlocal calls
        calls += 1
        if bad & set(requirements):
            # uv names no culprit here, so the search cannot take the shortcut
            raise ResolutionFailed("No solution found\n  cause: a conflict")
        return ()

    monkeypatch.setattr(resolve, "compile_pins", fake)
    tests = [f"dep{i:02}" for i in range(40)]
    result = await resolve.resolve(["pkg==1"], tests, PY311, resolve.Options(()))
    assert {r for r, _ in result.dropped} == bad
    assert result.kept == tuple(t for t in tests if t not in bad)
    assert calls <= 25  # bisection; one run per dependency would be 42


async def test_culprits_named_by_uv_are_tried_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    async def fake(
        requirements: Sequence[str], target: GuestTarget, options: resolve.Options
    ) -> tuple[resolve.Pin, ...]:
        calls.append(list(requirements))
        if "certifi==9" in requirements:
            raise ResolutionFailed("No solution\n  cause: there is no version of certifi==9")
        return ()

    monkeypatch.setattr(resolve, "compile_pins", fake)
    tests = ["pytest", "certifi==9", "trustme", "certifi-extra"]
    result = await resolve.resolve(["pkg==1"], tests, PY311, resolve.Options(()))
    assert result.dropped == (("certifi==9", "there is no version of certifi==9"),)
    assert result.kept == ("pytest", "trustme", "certifi-extra")
    assert len(calls) == 3  # all, all but the suspect, the suspect alone
