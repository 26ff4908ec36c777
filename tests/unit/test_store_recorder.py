from __future__ import annotations

import json
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import TracebackType

import pytest

from pyti.errors import NoSuchPackage
from pyti.outcomes import Outcome, VmEnd
from pyti.protocol import NEED_DATA, Connection, Role, Start, encode
from pyti.protocol.messages import (
    Finding,
    Goodbye,
    Heartbeat,
    Hello,
    Output,
    TaskFinished,
    TaskStarted,
    TestResult,
)
from pyti.recorder import RunRecorder
from pyti.render import Phase
from pyti.report import write_reports
from pyti.results import RunInfo, RunResult
from pyti.store import Store


class FakeRenderer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def __enter__(self) -> FakeRenderer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pass

    def phase(self, phase: Phase, detail: str = "") -> None:
        self.calls.append(("phase", phase))

    def message(self, message: object) -> None:
        self.calls.append(("message", type(message).__name__))

    def finish(self, result: RunResult) -> None:
        self.calls.append(("finish", result.outcome))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "runs.sqlite3") as opened:
        yield opened


def _guest(test_outcome: str, *tests: tuple[str, str]) -> list[object]:
    return [
        Hello(
            protocol_version=1,
            agent_version="0.1",
            python_version="3.11",
            image_id="i",
            boot_id="b",
        ),
        TaskStarted(task="install"),
        TaskFinished(task="install", outcome="passed", exit_code=0, duration=1.0),
        TaskStarted(task="test"),
        *(TestResult(nodeid=n, outcome=o, duration=0.1) for n, o in tests),
        Heartbeat(seq=1),
        Output(task="test", stream="stdout", data=b"ran"),
        TaskFinished(task="test", outcome=test_outcome, exit_code=0, duration=2.0),
        Goodbye(),
    ]


def test_a_failing_run_is_stored_classified_and_rendered(store: Store, tmp_path: Path) -> None:
    renderer = FakeRenderer()
    recorder = RunRecorder(store, renderer, RunInfo(spec="demo", accelerator="tcg"))
    recorder.phase(Phase.BOOT)
    recorder.update_info(image_id="img-9")
    for message in _guest("failed", ("t.py::ok", "passed"), ("t.py::bad", "failed")):
        recorder.message(message)
    result = recorder.finish(VmEnd.NORMAL, console="console text")
    assert result.outcome is Outcome.TEST_FAILED
    assert result.exit_code == 1
    assert result.vm_end == "normal"
    assert result.info.image_id == "img-9"
    assert [t.nodeid for t in result.failures()] == ["t.py::bad"]
    assert store.load_run(recorder.run_id) == result
    assert renderer.calls[0] == ("phase", Phase.BOOT)
    assert renderer.calls[-1] == ("finish", Outcome.TEST_FAILED)
    assert ("message", "TestResult") in renderer.calls

    json_path, junit_path = tmp_path / "r.json", tmp_path / "r.xml"
    write_reports(result, json_path=json_path, junit_path=junit_path)
    assert json.loads(json_path.read_text())["counts"]["failed"] == 1
    root = ET.parse(junit_path).getroot()
    assert (root.get("tests"), root.get("failures")) == ("2", "1")


def test_a_passing_run(store: Store) -> None:
    recorder = RunRecorder(store, FakeRenderer(), RunInfo(spec="demo"))
    for message in _guest("passed", ("t.py::ok", "passed")):
        recorder.message(message)
    result = recorder.finish("normal")
    assert result.outcome is Outcome.PASSED
    assert result


def test_a_full_disk_reported_by_the_host_names_the_cause(store: Store) -> None:
    recorder = RunRecorder(store, FakeRenderer(), RunInfo(spec="demo"))
    recorder.message(TaskStarted(task="install"))
    recorder.message(
        TaskFinished(task="install", outcome="install-failed", exit_code=1, duration=1.0)
    )
    recorder.host_finding("disk-full", "No space left on device (console)")
    result = recorder.finish(VmEnd.NORMAL)
    assert result.outcome is Outcome.DISK_FULL
    assert [(f.kind, f.task) for f in result.findings] == [("disk-full", "")]


def test_an_abnormal_vm_end_decides(store: Store) -> None:
    recorder = RunRecorder(store, FakeRenderer(), RunInfo(spec="demo"))
    recorder.message(TaskStarted(task="install"))
    result = recorder.finish(VmEnd.SILENCE, error="no frame for 240 s")
    assert result.outcome is Outcome.GUEST_CRASH
    assert result.error == "no frame for 240 s"
    assert [(t.name, t.outcome) for t in result.tasks] == [("install", "running")]


def test_fail_classifies_the_exception(store: Store) -> None:
    renderer = FakeRenderer()
    recorder = RunRecorder(store, renderer, RunInfo(spec="nope"))
    result = recorder.fail(NoSuchPackage("no project 'nope' on the index"))
    assert result.outcome is Outcome.RESOLVE_FAILED
    assert result.error == "no project 'nope' on the index"
    assert renderer.calls == [("finish", Outcome.RESOLVE_FAILED)]


def test_interrupt_then_a_second_end_keeps_the_first(store: Store) -> None:
    renderer = FakeRenderer()
    recorder = RunRecorder(store, renderer, RunInfo(spec="demo"))
    first = recorder.interrupt(console="half a boot")
    again = recorder.fail(RuntimeError("cleanup noise"))
    assert first is again
    assert first.outcome is Outcome.INTERRUPTED
    assert first.exit_code == 130
    assert first.console == "half a boot"
    assert store.load_run(recorder.run_id).outcome is Outcome.INTERRUPTED
    assert [c for c in renderer.calls if c[0] == "finish"] == [("finish", Outcome.INTERRUPTED)]


def test_rows_are_committed_as_frames_arrive_over_the_codec(store: Store) -> None:
    """Bytes in, rows out: what a crash would leave after each frame is already stored."""
    host = Connection(Role.HOST)
    recorder = RunRecorder(store, FakeRenderer(), RunInfo(spec="demo"))
    frames = [encode(m) for m in _guest("passed", ("t.py::a", "passed"), ("t.py::b", "passed"))]
    seen_tests: list[int] = []
    for frame in frames:
        for piece in (frame[:3], frame[3:]):  # a frame split across reads
            host.receive_data(piece)
            while (event := host.next_event()) is not NEED_DATA:
                recorder.message(event)
                if isinstance(event, Hello):
                    host.send(Start(run_id=str(recorder.run_id), tasks=("install", "test")))
        with closing(sqlite3.connect(store.path)) as other:
            seen_tests.append(other.execute("SELECT count(*) FROM tests").fetchone()[0])
    assert seen_tests == [0, 0, 0, 0, 1, 2, 2, 2, 2, 2]
    assert recorder.finish(VmEnd.NORMAL).outcome is Outcome.PASSED


def test_a_host_finding_counts_even_after_a_flood_of_guest_kinds(store: Store) -> None:
    recorder = RunRecorder(store, FakeRenderer(), RunInfo(spec="demo"))
    for i in range(200):
        recorder.message(Finding(kind=f"junk-{i}", detail=""))
    recorder.message(
        TaskFinished(task="install", outcome="install-failed", exit_code=1, duration=1.0)
    )
    recorder.host_finding("oom", "Out of memory: Killed process 123 (python3)")
    assert recorder.finish(VmEnd.NORMAL).outcome is Outcome.OOM
