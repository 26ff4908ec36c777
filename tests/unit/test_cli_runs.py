from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyti import store as store_module
from pyti.cli import app
from pyti.outcomes import Outcome
from pyti.protocol.messages import Finding, Output, TaskFinished, TaskStarted, TestResult
from pyti.results import RunEnd, RunInfo
from pyti.store import Store

START = 1_764_000_000.0  # 2025-11-24 16:00:00 UTC


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYTI_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(store_module.time, "time", lambda: START + 14.25)
    return tmp_path


def _fill(data_dir: Path) -> None:
    info = RunInfo(
        spec="demo==1.0",
        package_name="demo",
        package_version="1.0",
        python="3.11",
        image_id="img-1",
        pyti_version="0.1.0",
        accelerator="tcg",
    )
    with Store(data_dir / "runs.sqlite3") as store:
        first = store.start_run(info, started_at=START)
        for message in (
            TaskStarted(task="install"),
            TaskFinished(task="install", outcome="passed", exit_code=0, duration=2.0),
            TaskStarted(task="test"),
            TestResult(nodeid="t.py::test_ok", outcome="passed", duration=0.1),
            TestResult(
                nodeid="t.py::test_bad",
                outcome="failed",
                duration=0.2,
                report="def test_bad():\n>   assert 1 == 2\nE   assert 1 == 2",
            ),
            Finding(kind="network", detail="connect 1.1.1.1:53", task="test"),
            Output(task="test", stream="stdout", data=b"collected 2 items"),
            TaskFinished(
                task="test",
                outcome="failed",
                exit_code=1,
                duration=9.5,
                counts={"passed": 1, "failed": 1},
            ),
        ):
            store.record(first, message)
        store.finish_run(
            first, RunEnd(outcome=Outcome.TEST_FAILED, vm_end="normal", console="Linux boot\n")
        )
        store.start_run(RunInfo(spec="other", accelerator="tcg"), started_at=START + 60)


def test_runs_with_an_empty_store(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["runs"])
    assert result.exit_code == 0
    assert result.output == "no runs yet: pyti run PACKAGE\n"


def test_runs_lists_newest_first_with_counts(data_dir: Path) -> None:
    _fill(data_dir)
    result = CliRunner().invoke(app, ["runs"])
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "ID  STARTED (UTC)     SPEC       PYTHON  OUTCOME      TESTS",
        " 2  2025-11-24 16:01  other      -       running      -",
        " 1  2025-11-24 16:00  demo==1.0  3.11    test-failed  1 passed, 1 failed",
    ]


def test_runs_limit(data_dir: Path) -> None:
    _fill(data_dir)
    result = CliRunner().invoke(app, ["runs", "--limit", "1"])
    assert result.exit_code == 0
    assert len(result.output.splitlines()) == 2
    assert CliRunner().invoke(app, ["runs", "--limit", "0"]).exit_code == 2


def test_show_a_run(data_dir: Path) -> None:
    _fill(data_dir)
    result = CliRunner().invoke(app, ["show", "1"])
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "run 1: demo==1.0",
        "  package:      demo 1.0",
        "  python:       3.11 (image img-1, tcg)",
        "  started:      2025-11-24 16:00:00 UTC, took 14.2 s",
        "  outcome:      test-failed (exit 1, fault: package)",
        "  vm end:       normal",
        "  pyti:         0.1.0, agent -",
        "tasks:",
        "  install   passed          exit 0       2.0 s",
        "  test      failed          exit 1       9.5 s  1 passed, 1 failed",
        "failed tests:",
        "  FAILED t.py::test_bad",
        "    def test_bad():",
        "    >   assert 1 == 2",
        "    E   assert 1 == 2",
        "findings:",
        "  network (test): connect 1.1.1.1:53",
        "console log: 11 characters stored: pyti show 1 --console",
        "1 passed, 1 failed in 14.2 s (tcg)",
    ]


@pytest.mark.parametrize("args", [["show", "2"], ["show"]])
def test_show_a_running_run_or_the_latest(data_dir: Path, args: list[str]) -> None:
    _fill(data_dir)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "run 2: other",
        "  package:      -",
        "  python:       - (image -, tcg)",
        "  started:      2025-11-24 16:01:00 UTC, took ?",
        "  outcome:      running",
        "console log: none stored",
        "running: no tests ran (tcg)",
    ]


def test_show_json(data_dir: Path) -> None:
    _fill(data_dir)
    result = CliRunner().invoke(app, ["show", "1", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert (data["id"], data["outcome"], data["exit_code"]) == (1, "test-failed", 1)
    assert [t["nodeid"] for t in data["tests"]] == ["t.py::test_ok", "t.py::test_bad"]


def test_show_console(data_dir: Path) -> None:
    _fill(data_dir)
    result = CliRunner().invoke(app, ["show", "1", "--console"])
    assert result.exit_code == 0
    assert result.output == "Linux boot\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "42"], "no run 42 in the store; `pyti runs` lists them"),
        (["show"], "no runs in the store yet: pyti run PACKAGE"),
    ],
)
def test_show_what_is_not_there_is_a_usage_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    env = dict(os.environ, PYTI_DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "pyti", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"pyti: error: {message}\n"
