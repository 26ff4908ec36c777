from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pyti.outcomes import Outcome
from pyti.report import json_bytes, split_nodeid, write_json, write_junit
from pyti.results import (
    JSON_SCHEMA_VERSION,
    FindingRecord,
    OutputRecord,
    RunInfo,
    RunResult,
    TaskRecord,
    TestRecord,
)

INFO = RunInfo(
    spec="demo==1.0",
    package_name="demo",
    package_version="1.0",
    python="3.11",
    image_id="img-1",
    setup_digest="sha256:abc",
    pyti_version="0.1.0",
    accelerator="tcg",
    resolved={"demo": "1.0"},
    inputs={"image": "img-1"},
)

FAILURE = """    def test_bad():
>       assert 1 == 2
E       assert 1 == 2

tests/test_a.py:5: AssertionError"""

TESTS = (
    TestRecord(nodeid="tests/test_a.py::test_ok", outcome="passed", duration=0.25),
    TestRecord(nodeid="tests/test_a.py::test_bad", outcome="failed", duration=0.5, report=FAILURE),
    TestRecord(
        nodeid="tests/test_a.py::TestK::test_fixture[1.5]",
        outcome="error",
        duration=0.0,
        report="E   fixture 'db' not found",
    ),
    TestRecord(
        nodeid="tests/test_b.py::test_skip",
        outcome="skipped",
        duration=0.0,
        report="Skipped: needs linux\x00",
    ),
    TestRecord(nodeid="tests/test_b.py::test_xf", outcome="xfailed", duration=0.1),
    TestRecord(nodeid="tests/test_b.py::test_xp", outcome="xpassed", duration=0.1),
)


def _result(outcome: Outcome = Outcome.TEST_FAILED, **changes: object) -> RunResult:
    fields: dict[str, object] = {
        "id": 7,
        "info": INFO,
        "started_at": 1_764_000_000.0,
        "finished_at": 1_764_000_014.25,
        "outcome": outcome,
        "vm_end": "normal",
        "agent_version": "0.1.0",
        "tests": TESTS,
        "tasks": (
            TaskRecord(name="install", outcome="passed", exit_code=0, duration=2.0),
            TaskRecord(
                name="test",
                outcome="failed",
                exit_code=1,
                duration=9.0,
                counts={"passed": 1, "failed": 1},
            ),
        ),
        "findings": (FindingRecord(kind="network", detail="connect 1.1.1.1:53", task="test"),),
        "outputs": (
            OutputRecord(task="install", stream="stdout", text="Installed demo"),
            OutputRecord(task="test", stream="stdout", text="collected 6 items"),
            OutputRecord(task="test", stream="stderr", text="warning\x1b[0m", truncated=True),
        ),
    }
    fields.update(changes)
    return RunResult(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("nodeid", "classname", "name"),
    [
        ("tests/test_a.py::test_ok", "tests.test_a", "test_ok"),
        ("tests/test_a.py::TestK::test_f[1.5]", "tests.test_a.TestK", "test_f[1.5]"),
        ("test_top.py::test_x", "test_top", "test_x"),
        ("tests/test_a.py::TestK::test_f[a::b]", "tests.test_a.TestK.test_f[a", "b]"),
        ("tests/test_a.py", "", "tests.test_a"),
        ("pkg.tests.test_m.TestK.test_y", "pkg.tests.test_m.TestK", "test_y"),
        ("smoke", "", "smoke"),
    ],
)
def test_split_nodeid(nodeid: str, classname: str, name: str) -> None:
    assert split_nodeid(nodeid) == (classname, name)


def test_json_report_holds_every_test_and_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "out" / "run.json"
    write_json(_result(), path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == JSON_SCHEMA_VERSION
    assert data["id"] == 7
    assert data["outcome"] == "test-failed"
    assert data["exit_code"] == 1
    assert data["fault"] == "package"
    assert data["accelerator"] == "tcg"
    assert data["package"] == {"name": "demo", "version": "1.0"}
    assert data["started_at"] == "2025-11-24T16:00:00+00:00"
    assert data["duration"] == 14.25
    assert data["counts"] == {
        "passed": 1,
        "failed": 1,
        "error": 1,
        "skipped": 1,
        "xfailed": 1,
        "xpassed": 1,
    }
    assert [t["nodeid"] for t in data["tests"]] == [t.nodeid for t in TESTS]
    assert data["tests"][1]["report"] == FAILURE
    assert data["tasks"][1]["counts"] == {"passed": 1, "failed": 1}
    assert data["findings"] == [{"kind": "network", "detail": "connect 1.1.1.1:53", "task": "test"}]
    assert data["outputs"][2]["truncated"] is True
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary file left


def test_json_report_documents_every_top_level_key() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "json-schema.md").read_text()
    data = json.loads(json_bytes(_result()))
    for key in data:
        assert f"`{key}`" in doc, key
    for key in data["tests"][0]:
        assert f"`{key}`" in doc, key


def test_json_of_a_running_run_has_nulls() -> None:
    data = json.loads(json_bytes(_result(outcome=None, finished_at=None)))
    assert (data["outcome"], data["exit_code"], data["fault"]) == (None, None, None)
    assert (data["finished_at"], data["duration"]) == (None, None)


def _junit(tmp_path: Path, result: RunResult) -> ET.Element:
    path = tmp_path / "junit.xml"
    write_junit(result, path)
    assert path.read_bytes().startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    return ET.parse(path).getroot()


def test_junit_has_one_suite_and_one_testcase_per_test(tmp_path: Path) -> None:
    root = _junit(tmp_path, _result())
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    expected = {"tests": "6", "failures": "1", "errors": "1", "skipped": "2", "time": "14.250"}
    for element in (root, suite):
        assert {key: element.get(key) for key in expected} == expected
    assert suite.get("name") == "pyti demo==1.0 (python 3.11)"
    assert suite.get("timestamp") == "2025-11-24T16:00:00+00:00"
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name"), c.get("time")) for c in cases] == [
        ("tests.test_a", "test_ok", "0.250"),
        ("tests.test_a", "test_bad", "0.500"),
        ("tests.test_a.TestK", "test_fixture[1.5]", "0.000"),
        ("tests.test_b", "test_skip", "0.000"),
        ("tests.test_b", "test_xf", "0.100"),
        ("tests.test_b", "test_xp", "0.100"),
    ]
    assert [[child.tag for child in case] for case in cases] == [
        [],
        ["failure"],
        ["error"],
        ["skipped"],
        ["skipped"],
        [],
    ]


def test_junit_failures_carry_the_report_text(tmp_path: Path) -> None:
    suite = _junit(tmp_path, _result()).find("testsuite")
    assert suite is not None
    failure = suite.find("testcase[@name='test_bad']/failure")
    assert failure is not None
    assert failure.text == FAILURE
    assert failure.get("message") == "assert 1 == 2"
    error = suite.find("testcase[@name='test_fixture[1.5]']/error")
    assert error is not None
    assert error.get("message") == "fixture 'db' not found"
    skipped = suite.find("testcase[@name='test_skip']/skipped")
    assert skipped is not None
    # A NUL is not allowed in XML 1.0 even escaped: it is shown, not written raw.
    assert skipped.get("message") == "Skipped: needs linux\\x00"
    xfail = suite.find("testcase[@name='test_xf']/skipped")
    assert xfail is not None
    assert xfail.get("message") == "expected failure"


def test_junit_carries_output_findings_and_properties(tmp_path: Path) -> None:
    suite = _junit(tmp_path, _result()).find("testsuite")
    assert suite is not None
    out = suite.find("system-out")
    err = suite.find("system-err")
    assert out is not None
    assert err is not None
    assert (
        out.text == "--- install stdout ---\nInstalled demo\n--- test stdout ---\ncollected 6 items"
    )
    assert err.text == "--- test stderr ---\nwarning\\x1b[0m"
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["outcome"] == "test-failed"
    assert properties["accelerator"] == "tcg"
    assert properties["finding.network"] == "connect 1.1.1.1:53"


def test_junit_output_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pyti.report.SYSTEM_OUT_CAP", 100)
    big = (OutputRecord(task="test", stream="stdout", text="x" * 10_000),)
    suite = _junit(tmp_path, _result(outputs=big)).find("testsuite")
    assert suite is not None
    out = suite.find("system-out")
    assert out is not None
    assert out.text is not None
    assert len(out.text) == 100


def test_a_run_that_never_tested_shows_as_an_error_testcase(tmp_path: Path) -> None:
    result = _result(
        Outcome.INSTALL_FAILED, tests=(), error="uv pip install exited 1", console="boot log"
    )
    root = _junit(tmp_path, result)
    assert (root.get("tests"), root.get("errors"), root.get("failures")) == ("1", "1", "0")
    (case,) = root.iter("testcase")
    assert (case.get("classname"), case.get("name")) == ("pyti", "run")
    error = case.find("error")
    assert error is not None
    assert error.get("message") == "install-failed: uv pip install exited 1"
    assert error.get("type") == "install-failed"
    assert error.text == "boot log"


@pytest.mark.parametrize("outcome", [Outcome.PASSED, Outcome.NO_TESTS])
def test_a_passing_run_has_no_synthetic_testcase(tmp_path: Path, outcome: Outcome) -> None:
    ok = (TestRecord(nodeid="t.py::a", outcome="passed", duration=0.0),)
    root = _junit(tmp_path, _result(outcome, tests=ok))
    assert [c.get("name") for c in root.iter("testcase")] == ["a"]
    assert root.get("errors") == "0"
