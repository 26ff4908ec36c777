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


def legacy_setup_py(
    directory: Path, name: str, files: dict[str, str], setup_py: str, version: str = "1.0"
) -> Path:
    """A setup.py project with Metadata-Version 2.1 PKG-INFO: nothing static to read."""
    info = pkg_info(name, version).replace("Metadata-Version: 2.2", "Metadata-Version: 2.1")
    return write_sdist(directory, name, version, {"PKG-INFO": info, "setup.py": setup_py, **files})


COMPUTED_DEPS_SETUP = """\
    import sys
    from setuptools import setup

    # Computed at build time: no static reader can know this list.
    deps = ["iniconfig" + (">=1" if sys.version_info >= (3, 8) else "<1")]
    setup(name="pyti-fixture-dyn", version="1.0", py_modules=["pyti_fixture_dyn"],
          install_requires=deps)
    """

COMPUTED_DEPS_FILES = {
    "pyti_fixture_dyn.py": "def answer():\n    return 42\n",
    "tests/test_dyn.py": """\
        import iniconfig
        import pyti_fixture_dyn

        def test_dependency_was_installed():
            assert iniconfig.IniConfig("x.ini", data="[a]\\nb = 1\\n")["a"]["b"] == "1"

        def test_module():
            assert pyti_fixture_dyn.answer() == 42
        """,
}

C_EXTENSION_SETUP = """\
    from setuptools import Extension, setup

    setup(
        name="pyti-fixture-cext",
        version="1.0",
        packages=["pyti_fixture_cext"],
        package_dir={"": "src"},
        ext_modules=[Extension("pyti_fixture_cext._speed", ["src/pyti_fixture_cext/speed.c"])],
    )
    """

C_EXTENSION_FILES = {
    "pyproject.toml": """\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        """,
    "src/pyti_fixture_cext/__init__.py": "from ._speed import add\n",
    "src/pyti_fixture_cext/speed.c": """\
        #define PY_SSIZE_T_CLEAN
        #include <Python.h>

        static PyObject *add(PyObject *self, PyObject *args) {
            long a, b;
            if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
            return PyLong_FromLong(a + b);
        }
        static PyMethodDef methods[] = {{"add", add, METH_VARARGS, "add"}, {NULL, NULL, 0, NULL}};
        static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speed", NULL, -1, methods};
        PyMODINIT_FUNC PyInit__speed(void) { return PyModule_Create(&module); }
        """,
    "tests/test_speed.py": """\
        import pyti_fixture_cext
        from pyti_fixture_cext import _speed

        def test_compiled_add():
            assert pyti_fixture_cext.add(2, 3) == 5
            assert _speed.__file__.endswith(".so")
        """,
}

UNITTEST_FILES = {
    "pyproject.toml": FLIT_PYPROJECT.format(
        name="pyti-fixture-ut", version="1.0", dependencies="[]"
    ),
    "tox.ini": """\
        [tox]
        envlist = py3

        [testenv]
        commands = python -m unittest discover -s tests -v
        """,
    "src/pyti_fixture_ut/__init__.py": '''\
        def double(x):
            """
            >>> double(2)
            4
            >>> double(-1)
            -2
            """
            return 2 * x
        ''',
    "tests/__init__.py": "",
    "tests/test_double.py": """\
        import doctest
        import unittest

        import pyti_fixture_ut

        class DoubleTest(unittest.TestCase):
            def test_double(self):
                self.assertEqual(pyti_fixture_ut.double(3), 6)

            def test_zero(self):
                self.assertEqual(pyti_fixture_ut.double(0), 0)

        def load_tests(loader, tests, ignore):
            # The doctests count as tests only through this protocol: pytest never sees them.
            tests.addTests(doctest.DocTestSuite(pyti_fixture_ut))
            return tests
        """,
}

FLAT_LAYOUT_FILES = {
    "pyproject.toml": FLIT_PYPROJECT.format(
        name="pyti-fixture-flat", version="1.0", dependencies="[]"
    ),
    "pyti_fixture_flat/__init__.py": "VALUE = 'flat'\n",
    "tests/test_installed.py": """\
        import pyti_fixture_flat

        def test_imports_the_installed_copy():
            assert "site-packages" in pyti_fixture_flat.__file__, pyti_fixture_flat.__file__
        """,
}


HANG_TESTS = {
    "test_hang.py": """\
        import time

        def test_quick():
            pass

        def test_hangs_forever():
            while True:
                time.sleep(1)
        """,
}

DISK_FILLING_TESTS = {
    "test_fill.py": """\
        def test_fills_the_disk(tmp_path):
            chunk = b"x" * (1 << 20)
            with open(tmp_path / "big", "wb") as handle:
                for _ in range(100_000):  # far past any scratch cap
                    handle.write(chunk)
                    handle.flush()
        """,
}

OUTPUT_FLOOD_TESTS = {
    "test_flood.py": """\
        import sys

        def test_prints_a_lot():
            line = "spam " * 200 + "\\n"
            for _ in range(40_000):  # about 40 MB on stdout
                sys.stdout.write(line)
            sys.stdout.flush()
            assert True
        """,
}


ST_DEV_TESTS = {
    "test_dev.py": """\
        import os

        def test_a_new_file_is_on_its_directorys_device(tmp_path):
            path = tmp_path / "x"
            path.write_text("a")
            assert os.stat(path).st_dev == os.stat(tmp_path).st_dev

        def test_a_root_file_is_on_its_directorys_device():
            assert os.stat("/etc/passwd").st_dev == os.stat("/etc").st_dev
        """,
}


# The node id carries 8 random bytes and the wall clock, both read in the guest when the
# tests are collected: a VM resumed from a snapshot must have neither from the snapshot.
FRESH_GUEST_TESTS = {
    "test_fresh.py": """\
        import os
        import time

        import pytest

        @pytest.mark.parametrize("state", [f"{os.urandom(8).hex()}-{time.time():.1f}"])
        def test_random_and_clock(state):
            assert state
        """,
}


# docopt 0.6.2 (2014) exists only as an sdist: pyti puts it on the disk and the guest builds it.
DOCOPT_TESTS = {
    "test_cli.py": '''\
        import docopt

        USAGE = """Usage: prog [--verbose] NAME"""

        def test_docopt_parses():
            args = docopt.docopt(USAGE, argv=["--verbose", "world"])
            assert args == {"--verbose": True, "NAME": "world"}

        def test_it_is_the_version_pinned():
            assert docopt.__version__ == "0.6.2"
        ''',
}


# A test that imports NumPy: its wheels assume x86-64-v2 (SSE4.2, POPCNT), which the
# guest CPU must offer under TCG too, or the import dies with "Illegal instruction".
NUMPY_TESTS = {
    "test_numpy.py": """\
        import numpy

        def test_numpy_computes():
            assert int(numpy.arange(10).sum()) == 45
        """,
}


# decorator 5.3.1's layout: its tests live in tests/test.py, a unittest module its README
# runs as a script; pytest's default patterns miss it, unittest's `test*.py` does not.
SCRIPT_STYLE_TESTS = {
    "test.py": """\
        import unittest

        import pyti_fixture_script

        class Tests(unittest.TestCase):
            def test_value(self):
                self.assertEqual(pyti_fixture_script.VALUE, 42)

            def test_failing_on_purpose(self):
                self.assertEqual(1, 2)

        if __name__ == "__main__":
            unittest.main()
        """,
}
