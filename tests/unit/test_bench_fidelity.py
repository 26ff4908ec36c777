"""bench/fidelity.py's pure parts: folding pytest's reports, node ids, dist-info names."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

FIDELITY = Path(__file__).resolve().parents[2] / "bench" / "fidelity.py"


@pytest.fixture(scope="module")
def fidelity() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fidelity", FIDELITY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _reports(nodeid: str, *phases: tuple[str, str], xfail: bool = False) -> list[dict[str, object]]:
    return [
        {"nodeid": nodeid, "when": when, "outcome": outcome, "wasxfail": xfail}
        for when, outcome in phases
    ]


def test_reports_fold_as_pytest_summary_counts_them(fidelity: ModuleType) -> None:
    ok = ("setup", "passed"), ("call", "passed"), ("teardown", "passed")
    records = [
        *_reports("t::pass", *ok),
        *_reports("t::fail", ("setup", "passed"), ("call", "failed"), ("teardown", "failed")),
        *_reports("t::setup_error", ("setup", "failed"), ("teardown", "passed")),
        *_reports(
            "t::teardown_error", ("setup", "passed"), ("call", "passed"), ("teardown", "failed")
        ),
        *_reports("t::skip", ("setup", "skipped"), ("teardown", "passed")),
        *_reports(
            "t::xfail", ("setup", "passed"), ("call", "skipped"), ("teardown", "passed"), xfail=True
        ),
        *_reports("t::xpass", *ok, xfail=True),
        {"nodeid": "t_broken.py", "when": "collect", "outcome": "failed"},
        {"nodeid": "m.T.test_a", "when": "unittest", "outcome": "failed"},
        {"nodeid": "m.T.test_a", "when": "unittest", "outcome": "failed"},  # two subtests
    ]
    assert fidelity.fold(records) == [
        ("t::pass", "passed"),
        ("t::fail", "failed"),
        ("t::setup_error", "error"),
        ("t::teardown_error", "error"),
        ("t::skip", "skipped"),
        ("t::xfail", "xfailed"),
        ("t::xpass", "xpassed"),
        ("t_broken.py", "error"),
        ("m.T.test_a", "failed"),
        ("m.T.test_a", "failed"),
    ]


def test_installed_copy_node_ids_lose_the_site_packages_part(fidelity: ModuleType) -> None:
    long = "../../venv/lib/python3.11/site-packages/pkg/tests/test_a.py::t[x]"
    assert fidelity.normalise(long) == "pkg/tests/test_a.py::t[x]"
    assert fidelity.normalise("tests/test_a.py::t") == "tests/test_a.py::t"


def test_differences_name_tests_missing_on_one_side(fidelity: ModuleType) -> None:
    ours, theirs = fidelity.Side(), fidelity.Side()
    ours.add("a::t", "passed")
    ours.add("b::t", "failed")
    theirs.add("a::t", "passed")
    theirs.add("b::t", "passed")
    theirs.add("c::t", "skipped")
    assert fidelity.differences(ours, theirs) == [
        {"nodeid": "b::t", "pyti": "failed", "native": "passed"},
        {"nodeid": "c::t", "pyti": "absent", "native": "skipped"},
    ]


def test_top_levels_come_from_the_distributions_record(
    fidelity: ModuleType, tmp_path: Path
) -> None:
    info = tmp_path / "Some_Pkg-1.0.dist-info"
    info.mkdir()
    (info / "RECORD").write_text(
        "some_pkg/__init__.py,sha256=x,1\n"
        "helper.py,sha256=y,2\n"
        "Some_Pkg-1.0.dist-info/RECORD,,\n"
        "../../bin/tool,sha256=z,3\n"
    )
    assert fidelity.top_levels(tmp_path, "some-pkg") == ["helper", "some_pkg"]
    assert fidelity.top_levels(tmp_path, "other") == []
