"""A run's results as files: JSON (docs/json-schema.md) and JUnit XML for CI.

The JUnit layout follows what pytest's `--junit-xml` writes (xunit2 flavour), which
Jenkins, GitLab and the GitHub test-report actions all read: one `<testsuite>` per
run, one `<testcase>` per test with `classname`/`name` split from the node id,
`<failure>`/`<error>`/`<skipped>` children carrying the report text, and the
captured output, capped, in the suite's `<system-out>`/`<system-err>`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from pyti.outcomes import Outcome
from pyti.protocol.messages import truncate_text
from pyti.results import RunResult, TestRecord, failure_reason, iso_time

SYSTEM_OUT_CAP = 256 * 1024  # characters per stream in the JUnit file
MESSAGE_CAP = 1024  # characters of a failure's `message` attribute

# Outcomes that are the package's tests' own verdict: the testcases say it all.
# Any other outcome adds one synthetic testcase, so CI shows a run that never
# got to (or through) its tests as failed instead of as an empty green suite.
_TEST_VERDICTS = frozenset({Outcome.PASSED, Outcome.NO_TESTS, Outcome.TEST_FAILED})

# XML 1.0 forbids most control characters even when escaped: show them as \xNN.
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub(lambda match: f"\\x{ord(match[0]):02x}", text)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(result: RunResult) -> bytes:
    return (json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n").encode()


def write_json(result: RunResult, path: Path) -> None:
    _write_atomic(path, json_bytes(result))


def split_nodeid(nodeid: str) -> tuple[str, str]:
    """(classname, name) the way pytest's junitxml mangles a node id.

    "tests/test_a.py::TestX::test_y[1.5]" -> ("tests.test_a.TestX", "test_y[1.5]");
    a unittest id "pkg.tests.TestX.test_y" -> ("pkg.tests.TestX", "test_y").
    """
    if "::" in nodeid:
        parts = nodeid.split("::")
        parts[0] = re.sub(r"\.py$", "", parts[0].replace("/", "."))
        return ".".join(parts[:-1]), parts[-1]
    if nodeid.endswith(".py") or "/" in nodeid:  # a module-level error, e.g. collection
        return "", re.sub(r"\.py$", "", nodeid.replace("/", "."))
    classname, _, name = nodeid.rpartition(".")
    return classname, name


def _first_line(report: str, default: str) -> str:
    return truncate_text(failure_reason(report) or default, MESSAGE_CAP)


def _testcase(suite: ET.Element, test: TestRecord) -> None:
    classname, name = split_nodeid(test.nodeid)
    case = ET.SubElement(
        suite,
        "testcase",
        classname=_xml_text(classname),
        name=_xml_text(name),
        time=f"{test.duration:.3f}",
    )
    report = _xml_text(test.report)
    if test.outcome == "failed":
        child = ET.SubElement(case, "failure", message=_first_line(report, "failed"))
        child.text = report
    elif test.outcome == "error":
        child = ET.SubElement(case, "error", message=_first_line(report, "error"))
        child.text = report
    elif test.outcome in ("skipped", "xfailed"):
        default = "expected failure" if test.outcome == "xfailed" else "skipped"
        child = ET.SubElement(
            case, "skipped", type="pytest.xfail" if test.outcome == "xfailed" else "pytest.skip"
        )
        child.set("message", _first_line(report, default))
        child.text = report or None
    # passed and xpassed (a non-strict xfail that passed) have no child, as in pytest.


def junit_tree(result: RunResult) -> ET.ElementTree[ET.Element]:
    counts = result.counts
    synthetic = result.outcome is not None and result.outcome not in _TEST_VERDICTS
    tests = len(result.tests) + synthetic
    failures = counts["failed"]
    errors = counts["error"] + synthetic
    skipped = counts["skipped"] + counts["xfailed"]
    duration = result.duration or 0.0
    info = result.info
    totals = {
        "tests": str(tests),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": f"{duration:.3f}",
    }
    root = ET.Element("testsuites", {"name": "pyti", **totals})
    python = f" (python {info.python})" if info.python else ""
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": _xml_text(f"pyti {info.spec}{python}"),
            **totals,
            "timestamp": iso_time(result.started_at) or "",
            "hostname": "pyti-guest",
        },
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("run_id", str(result.id)),
        ("outcome", "" if result.outcome is None else result.outcome.value),
        ("package", f"{info.package_name} {info.package_version}".strip()),
        ("python", info.python),
        ("accelerator", info.accelerator),
        ("image_id", info.image_id),
        ("pyti_version", info.pyti_version),
    ):
        ET.SubElement(properties, "property", name=key, value=_xml_text(value))
    for finding in result.findings:
        ET.SubElement(
            properties,
            "property",
            name=f"finding.{finding.kind}",
            value=_xml_text(truncate_text(finding.detail, MESSAGE_CAP)),
        )
    for test in result.tests:
        _testcase(suite, test)
    if synthetic:
        assert result.outcome is not None
        case = ET.SubElement(suite, "testcase", classname="pyti", name="run", time="0.000")
        outcome = result.outcome.value
        message = f"{outcome}: {result.error}" if result.error else outcome
        child = ET.SubElement(case, "error", type=outcome)
        child.set("message", _xml_text(truncate_text(message, MESSAGE_CAP)))
        child.text = _xml_text(truncate_text(result.console, SYSTEM_OUT_CAP)) or None
    for stream, tag in (("stdout", "system-out"), ("stderr", "system-err")):
        parts = [
            f"--- {output.task} {stream} ---\n{output.text}"
            for output in result.outputs
            if output.stream == stream
        ]
        if parts:
            ET.SubElement(suite, tag).text = _xml_text(
                truncate_text("\n".join(parts), SYSTEM_OUT_CAP)
            )
    return ET.ElementTree(root)


def junit_bytes(result: RunResult) -> bytes:
    tree = junit_tree(result)
    ET.indent(tree)
    data: bytes = ET.tostring(tree.getroot(), encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def write_junit(result: RunResult, path: Path) -> None:
    _write_atomic(path, junit_bytes(result))


def write_reports(
    result: RunResult, *, json_path: Path | None = None, junit_path: Path | None = None
) -> None:
    """The files `pyti run --json PATH --junit-xml PATH` asked for."""
    if json_path is not None:
        write_json(result, json_path)
    if junit_path is not None:
        write_junit(result, junit_path)
