"""The hostile-sdist reader: only wanted members, in memory, with caps; errors, not tracebacks."""

from __future__ import annotations

import contextlib
import gzip
import io
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyti.errors import HostileArchive
from pyti.setup.sdist import Limits, read_members
from pyti.setup.testdeps import wanted_member


def make_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            info.size = len(data) if data is not None else info.size
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_reads_only_wanted_members(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "pkg-1.0.tar.gz",
        [
            regular("pkg-1.0/pyproject.toml", b"[project]\nname='pkg'\n"),
            regular("pkg-1.0/PKG-INFO", b"Metadata-Version: 2.2\n"),
            regular("pkg-1.0/src/pkg/__init__.py", b"import os; os.system('boom')"),
        ],
    )
    found = read_members(archive, wanted_member)
    assert found == {
        "pyproject.toml": b"[project]\nname='pkg'\n",
        "PKG-INFO": b"Metadata-Version: 2.2\n",
    }
    assert not (tmp_path / "pkg-1.0").exists()  # nothing extracted


@pytest.mark.parametrize(
    "name", ["pkg-1.0/../../etc/passwd", "/etc/passwd", "pkg-1.0/a/../../../x"]
)
def test_path_traversal_is_refused(tmp_path: Path, name: str) -> None:
    archive = make_tar(tmp_path / "pkg-1.0.tar.gz", [regular(name, b"x")])
    with pytest.raises(HostileArchive, match="escapes"):
        read_members(archive, wanted_member)


@pytest.mark.parametrize(
    ("target", "kind"),
    [("/etc/passwd", tarfile.SYMTYPE), ("../../x", tarfile.SYMTYPE), ("../x", tarfile.LNKTYPE)],
)
def test_links_pointing_outside_are_refused(tmp_path: Path, target: str, kind: bytes) -> None:
    archive = make_tar(tmp_path / "pkg-1.0.tar.gz", [link("pkg-1.0/tox.ini", target, kind)])
    with pytest.raises(HostileArchive, match="points outside"):
        read_members(archive, wanted_member)


def test_links_inside_are_never_followed(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "pkg-1.0.tar.gz",
        [regular("pkg-1.0/real.toml", b"x = 1"), link("pkg-1.0/pyproject.toml", "real.toml")],
    )
    assert read_members(archive, wanted_member) == {}


def test_huge_member_is_refused_by_its_header(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "pkg-1.0.tar.gz", [regular("pkg-1.0/PKG-INFO", b"x" * 5000)])
    with pytest.raises(HostileArchive, match="larger than 4096"):
        read_members(archive, wanted_member, limits=Limits(member=4096))


def test_decompression_bomb_is_stopped(tmp_path: Path) -> None:
    # 64 MB of zeros in one unwanted member compress to ~64 KB; the walk cap stops it.
    path = tmp_path / "bomb-1.0.tar.gz"
    with gzip.open(path, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("bomb-1.0/zeros.bin")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(HostileArchive, match="decompression bomb"):
        read_members(path, wanted_member, limits=Limits(archive=8 << 20))


def test_too_many_members(tmp_path: Path) -> None:
    entries = [regular(f"pkg-1.0/f{i}", b"") for i in range(20)]
    archive = make_tar(tmp_path / "pkg-1.0.tar.gz", entries)
    with pytest.raises(HostileArchive, match="more than 10 members"):
        read_members(archive, wanted_member, limits=Limits(members=10))


def test_truncated_archive_is_a_clear_error(tmp_path: Path) -> None:
    good = make_tar(tmp_path / "pkg-1.0.tar.gz", [regular("pkg-1.0/PKG-INFO", b"x" * 100_000)])
    broken = tmp_path / "broken-1.0.tar.gz"
    broken.write_bytes(good.read_bytes()[:200])
    with pytest.raises(HostileArchive, match="unreadable"):
        read_members(broken, wanted_member)


def test_zip_sdist_with_a_lying_size_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "pkg-1.0.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg-1.0/PKG-INFO", b"Metadata-Version: 2.2\n")
        zf.writestr("pkg-1.0/setup.cfg", b"a" * 10_000)
    assert read_members(path, lambda p: p == "PKG-INFO") == {"PKG-INFO": b"Metadata-Version: 2.2\n"}
    with pytest.raises(HostileArchive, match="larger than"):
        read_members(path, wanted_member, limits=Limits(member=1000))


def test_zip_traversal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pkg-1.0.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(HostileArchive, match="escapes"):
        read_members(path, wanted_member)


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "pkg-1.0.zip"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(HostileArchive, match="unreadable"):
        read_members(path, wanted_member)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(["x-1.tar.gz", "x-1.zip", "x-1.tar"]))
def test_fuzzed_archives_raise_only_hostile_archive(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        # Random bytes, and random bytes behind a valid gzip header (reaches tarfile).
        for payload in (data, gzip.compress(data, mtime=0)):
            path.write_bytes(payload)
            with contextlib.suppress(HostileArchive):
                read_members(path, wanted_member)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 4000))
@example(noise=b"\x00\x00\x00", at=186)  # zipfile's IndexError, found by this test
def test_flipped_bytes_in_a_real_zip_raise_only_hostile_archive(noise: bytes, at: int) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x-1/PKG-INFO", b"Metadata-Version: 2.2\n" * 50)
        zf.writestr("x-1/pyproject.toml", b"[project]\n" * 50)
    data = bytearray(buffer.getvalue())
    at %= len(data)
    data[at : at + len(noise)] = noise
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x-1.zip"
        path.write_bytes(bytes(data))
        with contextlib.suppress(HostileArchive):
            read_members(path, wanted_member)
