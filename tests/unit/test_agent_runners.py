"""The stdlib-only test-process side (pytest plugin, unittest runner, audit hook), run for
real on the host in a subprocess against tiny fixture projects written here."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
from pathlib import Path

AGENT_DIR = Path(__file__).resolve().parents[2] / "guest_agent"
sys.path.insert(0, str(AGENT_DIR))

from pyti_agent import audit, privileges, testrun  # noqa: E402

# Stands in for the venv's interpreter start: process the shim's .pth (as site.py
# does for site-packages), then run a module as `python -m` would.
BOOT = (
    "import runpy, site, sys; site.addsitedir(sys.argv.pop(1)); mod = sys.argv.pop(1); "
    "sys.argv[0] = mod; runpy.run_module(mod, run_name='__main__', alter_sys=True)"
)


class Collected:
    def __init__(self) -> None:
        self.results: list[testrun.ResultLine] = []
        self.findings: list[tuple[str, str]] = []
        self.output = bytearray()

    def outcomes(self) -> dict[str, str]:
        return {r.nodeid: r.outcome for r in self.results}


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def run_module(
    tmp_path: Path, project: Path, module: str, *args: str
) -> tuple[privileges.RunResult, Collected, testrun.ResultReader]:
    site_dir = tmp_path / "site"
    site_dir.mkdir(exist_ok=True)
    testrun.install_shim(site_dir, tmp_path / "shim")
    got = Collected()
    read_fd, write_fd = os.pipe()
    reader = testrun.ResultReader(
        read_fd, got.results.append, lambda k, d: got.findings.append((k, d))
    )
    reader.start()
    env = privileges.clean_env(
        tmp_path,
        {
            audit.ENV_FD: str(write_fd),
            audit.ENV_PIPE_ID: audit.pipe_id(write_fd),
            audit.ENV_SETUP_DIR: str(tmp_path / "setup"),
            "PYTI_SITE_PACKAGES": str(site_dir),
            # The host venv's plugins (trio, hypothesis) only slow these runs down.
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        },
    )

    def on_output(stream: str, data: bytes) -> None:
        got.output.extend(data)

    try:
        result = privileges.run(
            [sys.executable, "-c", BOOT, str(site_dir), module, *args],
            cwd=project,
            env=env,
            on_output=on_output,
            cancelled=threading.Event(),
            user=privileges.User(uid=None, gid=None),
            timeout=60,
            pass_fds=[write_fd],
        )
    finally:
        os.close(write_fd)
    reader.join(10)
    return result, got, reader


PYTEST_PROJECT = {
    "pyproject.toml": """
        [tool.pytest.ini_options]
        xfail_strict = false
        testpaths = ["tests"]
    """,
    "tests/test_mix.py": """
        import socket
        import pytest

        def test_pass():
            pass

        def test_fail():
            assert 1 == 2, "one is not two"

        @pytest.mark.skip(reason="not today")
        def test_skip():
            pass

        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert False

        @pytest.mark.xfail(reason="fixed already")
        def test_xpass():
            pass

        @pytest.fixture
        def broken():
            raise RuntimeError("setup went wrong")

        def test_error(broken):
            pass

        def test_connect():
            sock = socket.socket()
            sock.settimeout(2)
            try:
                sock.connect(("127.0.0.1", 9))
            except OSError:
                pass
            finally:
                sock.close()
    """,
}


def test_pytest_plugin_streams_one_line_per_test_with_outcomes(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write(project, PYTEST_PROJECT)

    result, got, reader = run_module(
        tmp_path, project, "pytest", "-p", "_pyti_pytest_plugin", "-p", "no:cacheprovider"
    )

    assert result.returncode == 1, got.output.decode()
    assert got.outcomes() == {
        "tests/test_mix.py::test_pass": "passed",
        "tests/test_mix.py::test_fail": "failed",
        "tests/test_mix.py::test_skip": "skipped",
        "tests/test_mix.py::test_xfail": "xfailed",
        "tests/test_mix.py::test_xpass": "xpassed",
        "tests/test_mix.py::test_error": "error",
        "tests/test_mix.py::test_connect": "passed",
    }
    by_id = {r.nodeid: r for r in got.results}
    assert "one is not two" in by_id["tests/test_mix.py::test_fail"].report
    assert "setup went wrong" in by_id["tests/test_mix.py::test_error"].report
    assert by_id["tests/test_mix.py::test_skip"].report == "Skipped: not today"
    assert all(r.duration >= 0 for r in got.results)
    assert reader.stats.bad_lines == 0
    assert reader.stats.exitstatus == 1
    assert b"1 failed" in got.output  # pytest's own terminal output is untouched
    # The audit hook saw test_connect's attempt on the discard port.
    assert got.findings == [("network", "connect 127.0.0.1:9")]


def test_audit_hook_records_writes_to_the_setup_dir_once(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    setup = tmp_path / "setup"
    setup.mkdir()
    (setup / "manifest.cbor").write_bytes(b"x")
    write(
        project,
        {
            "test_ro.py": f"""
                import os

                def test_write_setup():
                    for _ in range(3):
                        with open({str(setup / "new.txt")!r}, "w") as f:
                            f.write("x")
                    os.remove({str(setup / "manifest.cbor")!r})

                def test_read_setup():
                    with open({str(setup / "manifest.cbor")!r}) as f:
                        f.read()
            """
        },
    )

    _, got, _ = run_module(tmp_path, project, "pytest", "-p", "_pyti_pytest_plugin")

    kinds = [f for f in got.findings if f[0] == "readonly-write"]
    assert kinds == [
        ("readonly-write", f"open {setup / 'new.txt'}"),
        ("readonly-write", f"os.remove {setup / 'manifest.cbor'}"),
    ]


def test_pytest_collection_error_is_reported_as_error(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write(
        project,
        {"test_broken.py": "import does_not_exist\n", "test_ok.py": "def test_ok(): pass\n"},
    )

    result, got, _ = run_module(tmp_path, project, "pytest", "-p", "_pyti_pytest_plugin")

    assert result.returncode == 2
    assert got.outcomes() == {"test_broken.py": "error"}
    assert "does_not_exist" in got.results[0].report


def test_installed_tests_get_the_node_ids_of_a_native_run(tmp_path: Path) -> None:
    # pkg/tests inside site-packages (the installed copy), collected from the sdist root.
    site_dir = tmp_path / "site"
    write(
        site_dir,
        {
            "pkg/__init__.py": "",
            "pkg/tests/__init__.py": "",
            "pkg/tests/test_inside.py": "def test_inside(): pass\n",
            "pkg/tests/test_broken.py": "import nowhere\n",
        },
    )
    project = tmp_path / "proj"
    write(project, {"pyproject.toml": "[tool.pytest.ini_options]\n"})

    _, got, _ = run_module(
        tmp_path,
        project,
        "pytest",
        "-p",
        "_pyti_pytest_plugin",
        "--continue-on-collection-errors",
        ".",
        str(site_dir / "pkg"),
    )

    assert got.outcomes() == {
        "pkg/tests/test_inside.py::test_inside": "passed",
        "pkg/tests/test_broken.py": "error",
    }


UNITTEST_PROJECT = {
    "mypkg/__init__.py": '''
        def double(x):
            """
            >>> double(2)
            4
            >>> double(3)
            7
            """
            return 2 * x
    ''',
    "tests/__init__.py": "",
    "tests/test_mod.py": """
        import doctest
        import unittest

        import mypkg

        def load_tests(loader, tests, pattern):
            tests.addTests(doctest.DocTestSuite(mypkg))
            return tests

        class T(unittest.TestCase):
            def test_ok(self):
                self.assertEqual(mypkg.double(1), 2)

            def test_bad(self):
                self.assertEqual(mypkg.double(1), 3)

            @unittest.skip("later")
            def test_skipped(self):
                pass

            @unittest.expectedFailure
            def test_expected(self):
                self.fail("known")

            def test_sub(self):
                for i in range(3):
                    with self.subTest(i=i):
                        self.assertNotEqual(i, 1)
    """,
}


def test_unittest_runner_counts_load_tests_suites_fully(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write(project, UNITTEST_PROJECT)

    result, got, reader = run_module(
        tmp_path, project, "_pyti_unittest_runner", "discover", "-s", "tests", "-t", "."
    )

    assert result.returncode == 1, got.output.decode()
    assert got.outcomes() == {
        "tests.test_mod.T.test_ok": "passed",
        "tests.test_mod.T.test_bad": "failed",
        "tests.test_mod.T.test_skipped": "skipped",
        "tests.test_mod.T.test_expected": "xfailed",
        "tests.test_mod.T.test_sub (i=1)": "failed",
        "mypkg.double": "failed",  # the doctest suite added by load_tests
    }
    assert "Expected:\n    7" in {r.nodeid: r for r in got.results}["mypkg.double"].report
    assert reader.stats.exitstatus == 1
    assert b"FAILED (failures=3, skipped=1, expected failures=1)" in got.output


def test_unittest_runner_exits_5_when_nothing_ran(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write(project, {"mypkg/__init__.py": ""})

    result, got, _ = run_module(tmp_path, project, "_pyti_unittest_runner")

    assert result.returncode == 5
    assert got.results == []


def test_unittest_runner_passes_with_exit_0(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write(
        project,
        {"test_x.py": "import unittest\nclass A(unittest.TestCase):\n def test_a(self): pass\n"},
    )

    result, got, _ = run_module(tmp_path, project, "_pyti_unittest_runner")

    assert result.returncode == 0
    assert got.outcomes() == {"test_x.A.test_a": "passed"}


def test_the_shim_imports_nothing_a_suite_could_notice(tmp_path: Path) -> None:
    # Every Python of the test venv imports the audit shim; platformdirs, for one,
    # asserts that importing it does not pull in `typing`.
    project = tmp_path / "proj"
    write(
        project,
        {
            "probe.py": """
                import sys
                hooked = "_pyti_audit" in sys.modules
                extra = sorted({"typing", "json", "re"} & set(sys.modules))
                print("LOADED" if hooked else "MISSING", extra)
            """
        },
    )

    _, got, _ = run_module(tmp_path, project, "probe")

    assert got.output.decode().strip() == "LOADED []"
