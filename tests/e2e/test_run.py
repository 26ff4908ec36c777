"""`pyti run` end to end, as a user runs it: real QEMU, real images, real PyPI packages.

The fixture packages are written by the test suite (tests/e2e/sdists.py); no build
backend runs on the host.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.e2e import sdists


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def pyti_run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTI_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "pyti", "run", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=1200,
    )


def stored(data_dir: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(data_dir / "runs.sqlite3") as db:
        return db.execute(query).fetchall()


def test_iniconfig_passes_with_per_test_rows_in_sqlite_json_and_junit(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    report, junit = tmp_path / "run.json", tmp_path / "junit.xml"
    result = pyti_run(data_dir, "iniconfig", "--json", str(report), "--junit-xml", str(junit))
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-2]
    assert " passed in " in last
    assert last.endswith("(tcg)") or last.endswith("(kvm)")

    rows = stored(data_dir, "SELECT nodeid, outcome FROM tests")
    assert len(rows) >= 20
    assert {outcome for _, outcome in rows} <= {"passed", "skipped", "xfailed"}
    assert stored(data_dir, "SELECT outcome, accelerator FROM runs")[0][0] == "passed"

    document = json.loads(report.read_text())
    assert document["outcome"] == "passed"
    assert len(document["tests"]) == len(rows)

    suite = ET.parse(junit).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == len(rows)
    assert not suite.findall(".//failure")


def test_a_failing_test_gives_test_failed_naming_it(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    sdist = sdists.simple_project(tmp_path, "pyti-fixture-fail", sdists.FAILING_TESTS)
    junit = tmp_path / "junit.xml"
    result = pyti_run(data_dir, str(sdist), "--junit-xml", str(junit))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "test_broken" in result.stdout
    assert "1 passed, 1 failed" in result.stdout
    rows = dict(stored(data_dir, "SELECT nodeid, outcome FROM tests"))
    assert rows == {
        "tests/test_fails.py::test_good": "passed",
        "tests/test_fails.py::test_broken": "failed",
    }
    assert stored(data_dir, "SELECT outcome FROM runs") == [("test-failed",)]
    failures = ET.parse(junit).getroot().findall(".//testcase/failure")
    assert len(failures) == 1
    assert "arithmetic is broken" in (failures[0].text or "") + failures[0].get("message", "")


def test_a_package_with_no_tests_is_no_tests_after_an_import_check(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    sdist = sdists.simple_project(tmp_path, "pyti-fixture-empty", sdists.NO_TESTS)
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 0, result.stdout + result.stderr
    assert stored(data_dir, "SELECT outcome FROM runs") == [("no-tests",)]
    assert "no-tests" in result.stdout


def test_a_test_that_opens_a_socket_records_a_network_finding(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    sdist = sdists.simple_project(tmp_path, "pyti-fixture-net", sdists.SOCKET_TESTS)
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 0, result.stdout + result.stderr
    findings = stored(data_dir, "SELECT kind, detail FROM findings")
    network = [detail for kind, detail in findings if kind == "network"]
    assert network, findings
    assert any("198.51.100.7" in str(detail) for detail in network)


def test_a_wheel_that_cannot_install_gives_install_failed(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    wheel = sdists.broken_wheel(tmp_path)
    result = pyti_run(data_dir, str(wheel))
    assert result.returncode == 1, result.stdout + result.stderr
    assert stored(data_dir, "SELECT outcome FROM runs") == [("install-failed",)]


def test_setup_py_that_computes_its_dependencies_gets_them_from_a_guest_metadata_pass(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    sdist = sdists.legacy_setup_py(
        tmp_path, "pyti-fixture-dyn", sdists.COMPUTED_DEPS_FILES, sdists.COMPUTED_DEPS_SETUP
    )
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 0, result.stdout + result.stderr
    assert stored(data_dir, "SELECT outcome FROM runs") == [("passed",)]
    findings = stored(data_dir, "SELECT kind, detail FROM findings WHERE kind='dynamic-metadata'")
    assert any("iniconfig" in str(detail) for _, detail in findings), findings
    assert ("tests/test_dyn.py::test_dependency_was_installed", "passed") in stored(
        data_dir, "SELECT nodeid, outcome FROM tests"
    )


def test_a_c_extension_without_a_wheel_is_built_in_the_guest(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    sdist = sdists.legacy_setup_py(
        tmp_path, "pyti-fixture-cext", sdists.C_EXTENSION_FILES, sdists.C_EXTENSION_SETUP
    )
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 0, result.stdout + result.stderr
    assert stored(data_dir, "SELECT nodeid, outcome FROM tests") == [
        ("tests/test_speed.py::test_compiled_add", "passed")
    ]


def test_a_unittest_project_runs_with_unittest_and_its_load_tests(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    sdist = sdists.write_sdist(
        tmp_path,
        "pyti-fixture-ut",
        "1.0",
        {"PKG-INFO": sdists.pkg_info("pyti-fixture-ut", "1.0"), **sdists.UNITTEST_FILES},
    )
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = stored(data_dir, "SELECT nodeid, outcome FROM tests")
    # two TestCase methods plus the doctest that only load_tests adds
    assert len(rows) == 3, rows
    assert any("double" in str(nodeid) and "test_" not in str(nodeid) for nodeid, _ in rows)
    assert {outcome for _, outcome in rows} == {"passed"}


def test_a_flat_layout_tests_the_installed_copy(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    sdist = sdists.write_sdist(
        tmp_path,
        "pyti-fixture-flat",
        "1.0",
        {"PKG-INFO": sdists.pkg_info("pyti-fixture-flat", "1.0"), **sdists.FLAT_LAYOUT_FILES},
    )
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 0, result.stdout + result.stderr
    assert stored(data_dir, "SELECT nodeid, outcome FROM tests") == [
        ("tests/test_installed.py::test_imports_the_installed_copy", "passed")
    ]


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def test_ctrl_c_stores_the_run_as_interrupted_and_leaves_no_qemu(
    bookworm_image: object, data_dir: Path
) -> None:
    import signal
    import time

    env = {**os.environ, "PYTI_DATA_DIR": str(data_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "pyti", "run", "iniconfig"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    qemu: set[int] = set()
    deadline = time.monotonic() + 300
    while not qemu and time.monotonic() < deadline and process.poll() is None:
        qemu = {
            pid
            for pid in _children(process.pid)
            if b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes()
        }
        time.sleep(0.2)
    assert qemu, "pyti never started QEMU"
    time.sleep(2)  # mid-boot or mid-install
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "Traceback" not in output
    assert stored(data_dir, "SELECT outcome FROM runs") == [("interrupted",)]
    assert all(not Path(f"/proc/{pid}").exists() for pid in qemu)


def test_a_hung_test_ends_as_timeout_when_nothing_progresses(
    bookworm_image: object, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 s without progress (x4 under TCG): a hung test, not a dead guest (heartbeats go on).
    monkeypatch.setenv("PYTI_NO_PROGRESS_TIMEOUT", "5")
    sdist = sdists.simple_project(tmp_path, "pyti-fixture-hang", sdists.HANG_TESTS)
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 1, result.stdout + result.stderr
    assert stored(data_dir, "SELECT outcome, vm_end FROM runs") == [("timeout", "no-progress")]
    # what arrived before the hang is kept
    assert ("tests/test_hang.py::test_quick", "passed") in stored(
        data_dir, "SELECT nodeid, outcome FROM tests"
    )


def test_a_test_that_fills_the_scratch_disk_gives_disk_full(
    bookworm_image: object, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTI_SCRATCH_MB", "512")
    sdist = sdists.simple_project(tmp_path, "pyti-fixture-fill", sdists.DISK_FILLING_TESTS)
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 1, result.stdout + result.stderr
    assert stored(data_dir, "SELECT outcome FROM runs") == [("disk-full",)]
    kinds = {kind for (kind,) in stored(data_dir, "SELECT kind FROM findings")}
    assert "disk-full" in kinds


def test_an_output_flood_is_capped_and_the_run_still_passes(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    sdist = sdists.simple_project(tmp_path, "pyti-fixture-flood", sdists.OUTPUT_FLOOD_TESTS)
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 0, result.stdout + result.stderr
    assert stored(data_dir, "SELECT outcome FROM runs") == [("passed",)]
    kept = stored(data_dir, "SELECT sum(length(data)) FROM outputs")[0][0]
    assert isinstance(kept, int)
    assert kept < 8 << 20  # ~40 MB were printed; head and tail are kept


def test_files_and_their_directories_share_st_dev_as_on_a_plain_filesystem(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    # Suites compare st_dev (filelock does); the guest's overlay must not split them.
    sdist = sdists.simple_project(tmp_path, "pyti-fixture-stdev", sdists.ST_DEV_TESTS)
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 0, result.stdout + result.stderr
    assert {outcome for (outcome,) in stored(data_dir, "SELECT outcome FROM tests")} == {"passed"}


def test_test_args_reach_the_runner_once(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    sdist = sdists.simple_project(tmp_path, "pyti-fixture-args", sdists.FAILING_TESTS)
    # a positional target given twice would run the test twice
    result = pyti_run(data_dir, str(sdist), "--", "tests/test_fails.py::test_good")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stored(data_dir, "SELECT nodeid, outcome FROM tests") == [
        ("tests/test_fails.py::test_good", "passed")
    ]


def _fresh_state(data_dir: Path) -> tuple[str, float]:
    (nodeid,) = [row[0] for row in stored(data_dir, "SELECT nodeid FROM tests")]
    token, clock = str(nodeid).split("[", 1)[1].rstrip("]").split("-")
    return token, float(clock)


def test_resumed_guests_draw_fresh_randomness_and_keep_the_hosts_time(
    bookworm_image: object, tmp_path: Path
) -> None:
    sdist = sdists.simple_project(tmp_path, "pyti-fixture-fresh", sdists.FRESH_GUEST_TESTS)
    tokens = []
    for attempt in range(3):  # the first run may make the snapshot; the others resume it
        data_dir = tmp_path / f"data{attempt}"
        before = time.time()
        result = pyti_run(data_dir, str(sdist))
        after = time.time()
        assert result.returncode == 0, result.stdout + result.stderr
        if attempt:
            assert "resuming a saved VM" in result.stdout
        token, guest_clock = _fresh_state(data_dir)
        # seconds, not minutes: a snapshot's clock would be a whole run (~10 s) behind
        assert before - 2 <= guest_clock <= after + 2, (before, guest_clock, after)
        tokens.append(token)
    assert len(set(tokens)) == 3, tokens  # the same snapshot, three different CRNG streams


def test_a_snapshot_qemu_cannot_load_is_replaced_by_a_cold_boot(
    bookworm_image: object, tmp_path: Path
) -> None:
    from pyti import paths

    sdist = sdists.simple_project(tmp_path, "pyti-fixture-snapfail", sdists.FAILING_TESTS)
    shape = ("--memory", "704", "--", "tests/test_fails.py::test_good")  # a shape of its own
    first = pyti_run(tmp_path / "data0", str(sdist), *shape)
    assert first.returncode == 0, first.stdout + first.stderr
    (log,) = (tmp_path / "data0" / "logs").glob("run-*.log")
    resumed = [line for line in log.read_text().splitlines() if line.startswith("# resumed from ")]
    newest = Path(resumed[0].removeprefix("# resumed from "))
    assert newest.parent == paths.snapshots_dir()
    newest.write_bytes(b"QEVM\x00\x00\x00\x03 not a migration stream")
    second = pyti_run(tmp_path / "data1", str(sdist), *shape)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming a saved VM" in second.stdout  # it tried,
    assert not newest.exists()  # found it unusable, deleted it, and booted cold
    assert stored(tmp_path / "data1", "SELECT nodeid, outcome FROM tests") == [
        ("tests/test_fails.py::test_good", "passed")
    ]


def test_a_dependency_that_has_only_an_sdist_is_built_in_the_guest(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    from pyti.setup.sdist_only import LEGACY_NOTE

    sdist = sdists.simple_project(
        tmp_path, "pyti-fixture-docopt", sdists.DOCOPT_TESTS, dependencies=["docopt==0.6.2"]
    )
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sdist-only-dependency" in result.stdout
    assert "docopt 0.6.2" in result.stdout
    assert stored(data_dir, "SELECT outcome FROM runs") == [("passed",)]
    rows = dict(stored(data_dir, "SELECT nodeid, outcome FROM tests"))
    assert rows == {
        "tests/test_cli.py::test_docopt_parses": "passed",
        "tests/test_cli.py::test_it_is_the_version_pinned": "passed",
    }
    findings = stored(data_dir, "SELECT kind, detail FROM findings")
    assert [d for k, d in findings if k == "sdist-only-dependency"] == [
        f"docopt 0.6.2: no wheel for the guest; its sdist is built there ({LEGACY_NOTE})"
    ]


def test_a_wheel_built_for_x86_64_v2_runs_in_the_guest(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    sdist = sdists.simple_project(
        tmp_path, "pyti-fixture-numpy", sdists.NUMPY_TESTS, dependencies=["numpy"]
    )
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 0, result.stdout + result.stderr
    assert stored(data_dir, "SELECT nodeid, outcome FROM tests") == [
        ("tests/test_numpy.py::test_numpy_computes", "passed")
    ]


def test_tests_only_unittest_discovers_are_run_when_pytest_finds_none(
    bookworm_image: object, data_dir: Path, tmp_path: Path
) -> None:
    sdist = sdists.simple_project(tmp_path, "pyti-fixture-script", sdists.SCRIPT_STYLE_TESTS)
    result = pyti_run(data_dir, str(sdist))
    assert result.returncode == 1, result.stdout + result.stderr  # one test fails on purpose
    outcomes = {
        str(nodeid).rsplit(".", 1)[-1]: o
        for nodeid, o in stored(data_dir, "SELECT nodeid, outcome FROM tests")
    }
    assert outcomes == {"test_value": "passed", "test_failing_on_purpose": "failed"}
