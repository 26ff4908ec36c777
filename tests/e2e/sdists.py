"""Fixture sdists written by the test suite with tarfile (no build backend runs on the host).

Each builder returns the path of a `name-version.tar.gz` with a PKG-INFO, a pyproject.toml
(setuptools backend) and whatever the case needs.
"""

from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

# flit_core builds in well under a second in the guest; setuptools takes ~20 s under TCG,
# so the fixtures that are not about setuptools use flit_core.
FLIT_PYPROJECT = """\
[build-system]
requires = ["flit_core>=3.9,<4"]
build-backend = "flit_core.buildapi"

[project]
name = "{name}"
version = "{version}"
description = "a pyti test fixture"
requires-python = ">=3.9"
dependencies = {dependencies}
"""


def pkg_info(name: str, version: str, requires: list[str] | None = None) -> str:
    lines = ["Metadata-Version: 2.2", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {req}" for req in requires or []]
    return "\n".join(lines) + "\n"


def write_sdist(directory: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """Write `files` (relative path -> text) under `name-version/` into a reproducible tar.gz."""
    root = f"{name}-{version}"
    target = directory / f"{root}.tar.gz"
    with tarfile.open(target, "w:gz") as archive:
        for relative in sorted(files):
            data = textwrap.dedent(files[relative]).encode()
            info = tarfile.TarInfo(f"{root}/{relative}")
            info.size = len(data)
            info.mtime = 1_700_000_000
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return target


def simple_project(
    directory: Path,
    name: str,
    tests: dict[str, str],
    *,
    version: str = "1.0",
    module: str = "",
    dependencies: list[str] | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """A src-layout flit package `name` (imported as `name` with dashes made underscores)."""
    import_name = name.replace("-", "_")
    files = {
        "PKG-INFO": pkg_info(name, version, dependencies),
        "pyproject.toml": FLIT_PYPROJECT.format(
            name=name,
            version=version,
            dependencies=repr(dependencies or []).replace("'", '"'),
        ),
        f"src/{import_name}/__init__.py": module or "VALUE = 42\n",
        **{f"tests/{file}": text for file, text in tests.items()},
        **(extra_files or {}),
    }
    return write_sdist(directory, name, version, files)


PASSING_TESTS = {
    "test_basic.py": """\
        import pytest
        import pyti_fixture_ok as pkg

        def test_value():
            assert pkg.VALUE == 42

        @pytest.mark.skip(reason="shows a skip")
        def test_skipped():
            pass
        """,
}

FAILING_TESTS = {
    "test_fails.py": """\
        def test_good():
            assert True

        def test_broken():
            assert 1 + 1 == 3, "arithmetic is broken"
        """,
}

SOCKET_TESTS = {
    "test_net.py": """\
        import socket

        def test_tries_the_network():
            try:
                socket.create_connection(("198.51.100.7", 80), timeout=1)
            except OSError:
                pass
        """,
}


NO_TESTS: dict[str, str] = {}


def broken_wheel(
    directory: Path, name: str = "pyti_fixture_badwheel", version: str = "1.0"
) -> Path:
    """A wheel that no installer may install: its WHEEL file claims format version 9.0."""
    import zipfile

    dist_info = f"{name}-{version}.dist-info"
    target = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", "VALUE = 1\n")
        wheel.writestr(f"{dist_info}/METADATA", pkg_info(name, version))
        wheel.writestr(
            f"{dist_info}/WHEEL",
            "Wheel-Version: 9.0\nGenerator: pyti-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr(f"{dist_info}/RECORD", "")
    return target
