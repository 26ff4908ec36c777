from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from rich.console import Console

from pyti.outcomes import Outcome
from pyti.protocol.messages import Finding, Heartbeat, TaskFinished, TaskStarted, TestResult
from pyti.render import (
    MAX_LISTED,
    LiveRenderer,
    Phase,
    PlainRenderer,
    clean,
    counts_text,
    failure_lines,
    make_renderer,
    show_lines,
    summary_line,
)
from pyti.results import RunInfo, RunResult, TaskRecord, TestRecord


def _tests(**numbers: int) -> tuple[TestRecord, ...]:
    return tuple(
        TestRecord(nodeid=f"t.py::{outcome}_{i}", outcome=outcome, duration=0.0)
        for outcome, number in numbers.items()
        for i in range(number)
    )


def _result(
    outcome: Outcome | None,
    tests: tuple[TestRecord, ...] = (),
    *,
    accel: str = "tcg",
    seconds: float | None = 14.2,
    error: str = "",
) -> RunResult:
    return RunResult(
        id=3,
        info=RunInfo(spec="demo", accelerator=accel),
        started_at=100.0,
        finished_at=None if seconds is None else 100.0 + seconds,
        outcome=outcome,
        tests=tests,
        error=error,
    )


@pytest.mark.parametrize(
    ("result", "line"),
    [
        (
            _result(Outcome.TEST_FAILED, _tests(passed=12, failed=1, skipped=2)),
            "12 passed, 1 failed, 2 skipped in 14.2 s (tcg)",
        ),
        (_result(Outcome.PASSED, _tests(passed=1), accel="kvm"), "1 passed in 14.2 s (kvm)"),
        (
            _result(Outcome.TEST_FAILED, _tests(error=2, xfailed=1, xpassed=1)),
            "2 errors, 1 xfailed, 1 xpassed in 14.2 s (tcg)",
        ),
        (_result(Outcome.TEST_FAILED, _tests(error=1)), "1 error in 14.2 s (tcg)"),
        (_result(Outcome.NO_TESTS), "no-tests: no tests ran in 14.2 s (tcg)"),
        (
            _result(Outcome.INSTALL_FAILED, seconds=3.14),
            "install-failed: no tests ran in 3.1 s (tcg)",
        ),
        (
            _result(Outcome.TIMEOUT, _tests(passed=3), seconds=600.0),
            "timeout: 3 passed in 600.0 s (tcg)",
        ),
        (
            _result(Outcome.RESOLVE_FAILED, accel=""),
            "resolve-failed: no tests ran in 14.2 s (no accelerator)",
        ),
        (_result(None, _tests(passed=2), seconds=None), "running: 2 passed (tcg)"),
    ],
)
def test_summary_line(result: RunResult, line: str) -> None:
    assert summary_line(result) == line


@pytest.mark.parametrize(
    ("counts", "text"),
    [
        ({}, ""),
        ({"passed": 0, "failed": 0}, ""),
        ({"skipped": 1, "passed": 2}, "2 passed, 1 skipped"),
        ({"error": 3}, "3 errors"),
    ],
)
def test_counts_text_follows_pytest_order_and_words(counts: dict[str, int], text: str) -> None:
    assert counts_text(counts) == text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("tests/test_a.py::test_ok", "tests/test_a.py::test_ok"),
        ("evil\x1b[2J\x1b]0;title\x07", "evil\\x1b[2J\\x1b]0;title\\x07"),
        ("two\nlines\r", "two\\x0alines\\x0d"),
        ("rtl\u202eoverride", "rtl\\x202eoverride"),
        ("zero\u200bwidth\ufeff", "zero\\x200bwidth\\xfeff"),
        ("c1\x9bcontrol", "c1\\x9bcontrol"),
        ("x" * 400, "x" * 297 + "..."),
    ],
)
def test_clean_makes_guest_text_safe_to_print(raw: str, shown: str) -> None:
    assert clean(raw) == shown


def test_failure_lines_name_each_failed_test_with_its_reason() -> None:
    tests = (
        TestRecord(nodeid="t.py::ok", outcome="passed", duration=0.0),
        TestRecord(
            nodeid="t.py::bad",
            outcome="failed",
            duration=0.0,
            report="x\nE   assert 1 == 2\nt.py:3",
        ),
        TestRecord(nodeid="t.py::err", outcome="error", duration=0.0),
    )
    assert failure_lines(_result(Outcome.TEST_FAILED, tests)) == [
        "FAILED t.py::bad - assert 1 == 2",
        "ERROR t.py::err",
    ]
    many = _result(Outcome.TEST_FAILED, _tests(failed=5))
    assert failure_lines(many, limit=2) == [
        "FAILED t.py::failed_0",
        "FAILED t.py::failed_1",
        "... and 3 more (pyti show 3)",
    ]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _feed(renderer: PlainRenderer | LiveRenderer, clock: Clock) -> None:
    steps: list[Callable[[], None]] = [
        lambda: renderer.phase(Phase.RESOLVE),
        lambda: renderer.phase(Phase.DOWNLOAD, "2 files"),
        lambda: renderer.phase(Phase.DOWNLOAD, "1 file left"),  # same phase: no new line
        lambda: renderer.phase(Phase.BOOT),
        lambda: renderer.message(TaskStarted(task="install")),
        lambda: renderer.message(
            TaskFinished(task="install", outcome="passed", exit_code=0, duration=2.0)
        ),
        lambda: renderer.message(TaskStarted(task="test")),
        *(
            lambda i=i: renderer.message(
                TestResult(nodeid=f"t.py::test_{i}", outcome="passed", duration=0.1)
            )
            for i in range(5)
        ),
        lambda: renderer.message(Heartbeat(seq=1)),
        lambda: renderer.message(
            TestResult(
                nodeid="t.py::test_\x1b[31mbad", outcome="failed", duration=0.1, report="E   boom"
            )
        ),
        lambda: renderer.message(
            Finding(kind="network", detail="connect 10.0.0.1:80", task="test")
        ),
        lambda: renderer.message(
            TaskFinished(
                task="test",
                outcome="failed",
                exit_code=1,
                duration=3.0,
                counts={"passed": 5, "failed": 1},
            )
        ),
    ]
    for step in steps:
        clock.now += 1.0
        step()


FINAL = _result(
    Outcome.TEST_FAILED,
    (
        *_tests(passed=5),
        TestRecord(nodeid="t.py::test_bad", outcome="failed", duration=0.1, report="E   boom"),
    ),
)


def test_plain_renderer_prints_phase_changes_failures_and_counts() -> None:
    out = io.StringIO()
    clock = Clock()
    with PlainRenderer(out, every=3, clock=clock) as renderer:
        _feed(renderer, clock)
        renderer.finish(FINAL)
    assert out.getvalue().splitlines() == [
        "[   1.0s] resolve",
        "[   2.0s] download: 2 files",
        "[   4.0s] boot",
        "[   5.0s] install",
        "[   6.0s] install: passed in 2.0 s",
        "[   7.0s] test",
        "[  10.0s] test: 3 tests (3 passed)",
        "[  14.0s] FAILED t.py::test_\\x1b[31mbad - boom",
        "[  14.0s] test: 6 tests (5 passed, 1 failed)",
        "[  15.0s] finding network (test): connect 10.0.0.1:80",
        "[  16.0s] test: failed in 3.0 s",
        "FAILED t.py::test_bad - boom",
        "5 passed, 1 failed in 14.2 s (tcg)",
        "run 3 stored: pyti show 3",
    ]


def test_plain_renderer_caps_a_flood_of_failures() -> None:
    out = io.StringIO()
    renderer = PlainRenderer(out, every=10**9, clock=lambda: 0.0)
    for i in range(MAX_LISTED + 20):
        renderer.message(TestResult(nodeid=f"t::f{i}", outcome="failed", duration=0.0))
    renderer.finish(_result(Outcome.TEST_FAILED))
    lines = out.getvalue().splitlines()
    assert sum(line.startswith("[   0.0s] FAILED") for line in lines) == MAX_LISTED
    assert "[   0.0s] 20 more failures or findings not shown" in lines


def test_plain_renderer_explains_an_outcome_that_is_not_the_tests() -> None:
    out = io.StringIO()
    PlainRenderer(out).finish(_result(Outcome.INSTALL_FAILED, error="no wheel\x1b[0m"))
    assert out.getvalue().splitlines() == [
        "install-failed: no wheel\\x1b[0m",
        "install-failed: no tests ran in 14.2 s (tcg)",
        "run 3 stored: pyti show 3",
    ]


def test_live_renderer_prints_failures_as_they_arrive_and_the_summary() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    clock = Clock()
    with LiveRenderer(console, clock=clock) as renderer:
        _feed(renderer, clock)
        renderer.finish(FINAL)
    text = out.getvalue()
    assert "FAILED t.py::test_\\x1b[31mbad - boom" in text
    assert "finding network (test): connect 10.0.0.1:80" in text
    assert text.rstrip().splitlines()[-2:] == [
        "5 passed, 1 failed in 14.2 s (tcg)",
        "run 3 stored: pyti show 3",
    ]
    assert "\x1b[31mbad" not in text  # the guest's escape never reaches the terminal


def test_live_view_shows_phases_and_the_running_count() -> None:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    clock = Clock()
    renderer = LiveRenderer(console, clock=clock)
    _feed(renderer, clock)
    renderer.message(TaskStarted(task="quality"))
    capture = Console(file=io.StringIO(), width=100, color_system=None)
    capture.print(renderer._render())
    view = capture.file.getvalue()  # type: ignore[attr-defined]
    for phase in ("resolve", "download", "boot", "install", "test", "quality"):
        assert phase in view
    assert "6 tests: 5 passed, 1 failed" in view


def test_make_renderer_picks_live_on_a_terminal_only() -> None:
    stream = io.StringIO()
    terminal = Console(file=io.StringIO(), force_terminal=True)
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert isinstance(make_renderer(terminal, stream), LiveRenderer)
    assert isinstance(make_renderer(pipe, stream), PlainRenderer)


def test_show_lines_say_what_the_caps_dropped() -> None:
    result = RunResult(
        id=1,
        info=RunInfo(spec="flood", accelerator="tcg"),
        started_at=0.0,
        finished_at=1.0,
        outcome=Outcome.PASSED,
        dropped_tests=5,
    )
    assert "dropped past the store's caps: 5 tests, 0 findings" in show_lines(result)


def test_show_lines_rank_quality_counts_per_rule() -> None:
    result = RunResult(
        id=1,
        info=RunInfo(spec="demo", accelerator="tcg"),
        started_at=0.0,
        finished_at=1.0,
        outcome=Outcome.PASSED,
        tasks=(
            TaskRecord(
                name="quality",
                outcome="passed",
                exit_code=0,
                duration=0.5,
                counts={"f401": 2, "e501": 7, "b006": 2},
            ),
        ),
    )
    assert "  quality   passed          exit 0       0.5 s  e501 7, b006 2, f401 2" in show_lines(
        result
    )


def test_a_closed_output_stream_does_not_end_the_run() -> None:
    class BrokenPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    renderer = PlainRenderer(BrokenPipe(), every=1)
    with renderer:
        renderer.phase(Phase.BOOT)
        renderer.message(TestResult(nodeid="t::a", outcome="failed", duration=0.0))
        renderer.finish(_result(Outcome.TEST_FAILED))
    closed = io.StringIO()
    closed.close()
    PlainRenderer(closed).finish(_result(Outcome.PASSED))
