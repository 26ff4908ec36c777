"""What a person sees while a run goes and after: live progress, plain lines, the summary.

Two `Renderer`s: `LiveRenderer` (rich Live, phases with a spinner, a running test
count, failures printed above as they arrive) when stdout is a terminal, and
`PlainRenderer` (one line per phase change, per failed test, per finding, and a
running count every N tests) otherwise. Both end with the same lines from the
pure functions `summary_line` and `failure_lines`.

Everything shown that the guest sent (node ids, reports, finding details) is
untrusted: `clean` turns control characters into visible escapes so a hostile
test name cannot move the cursor, recolour or rewrite the terminal.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Protocol, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from pyti.outcomes import TEST_OUTCOMES, Outcome
from pyti.protocol.messages import Finding, TaskFinished, TaskStarted, TestResult
from pyti.results import RunResult, RunSummary, failure_reason

log = logging.getLogger(__name__)

MAX_LISTED = 50  # failures and findings printed while running; the rest are counted
MAX_FIELD = 300  # characters of one guest-sent string on one line

# C0 and C1 controls, and the Unicode formatting marks that reorder or hide text.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


class Phase(enum.StrEnum):
    IMAGE = "image"
    RESOLVE = "resolve"
    DOWNLOAD = "download"
    BOOT = "boot"
    INSTALL = "install"
    TEST = "test"
    QUALITY = "quality"


# The guest's tasks, as phases.
TASK_PHASES = {
    "metadata": Phase.INSTALL,
    "install": Phase.INSTALL,
    "test": Phase.TEST,
    "quality": Phase.QUALITY,
}

FAILED = frozenset({"failed", "error"})


def clean(text: str, limit: int = MAX_FIELD) -> str:
    """One line of untrusted text, safe to print: escapes instead of control characters."""
    text = _CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plural(outcome: str, number: int) -> str:
    return "errors" if outcome == "error" and number != 1 else outcome


def counts_text(counts: dict[str, int] | None) -> str:
    """ "12 passed, 1 failed, 2 skipped", in pytest's words; "" when there are none."""
    if not counts:
        return ""
    parts = [f"{counts[o]} {_plural(o, counts[o])}" for o in TEST_OUTCOMES if counts.get(o)]
    return ", ".join(parts)


def _duration(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f} s"


def summary_line(result: RunResult | RunSummary) -> str:
    """The last line of a run, like pytest's: "12 passed, 1 failed in 14.2 s (tcg)".

    An outcome that is not what the counts already say leads the line
    ("install-failed: no tests ran in 3.1 s (tcg)"); the accelerator is always named.
    """
    counts = counts_text(dict(result.counts)) or "no tests ran"
    accel = result.info.accelerator or "no accelerator"
    if result.outcome is None:
        return f"running: {counts} ({accel})"
    line = f"{counts} in {_duration(result.duration)} ({accel})"
    if result.outcome in (Outcome.PASSED, Outcome.TEST_FAILED):
        return line
    return f"{result.outcome.value}: {line}"


def failure_lines(result: RunResult, limit: int = MAX_LISTED) -> list[str]:
    """ "FAILED nodeid - reason" per failed or errored test, pytest's short summary."""
    lines = []
    failures = result.failures()
    for test in failures[:limit]:
        reason = failure_reason(test.report)
        tail = f" - {clean(reason, 120)}" if reason else ""
        lines.append(f"{test.outcome.upper()} {clean(test.nodeid)}{tail}")
    if len(failures) > limit:
        lines.append(f"... and {len(failures) - limit} more (pyti show {result.id})")
    return lines


def final_lines(result: RunResult) -> list[str]:
    """What both renderers print at the end."""
    lines = failure_lines(result)
    if result.error and result.outcome not in (Outcome.PASSED, Outcome.TEST_FAILED):
        lines.append(f"{result.outcome}: {clean(result.error, 1000)}")
    lines.append(summary_line(result))
    lines.append(f"run {result.id} stored: pyti show {result.id}")
    return lines


class Renderer(Protocol):
    """Fed by the orchestration from the trio loop: each call is quick and never blocks."""

    def __enter__(self) -> Renderer: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def phase(self, phase: Phase, detail: str = "") -> None:
        """A host-side phase began (or its detail changed: same phase, new detail)."""

    def message(self, message: object) -> None:
        """A message from the guest (TaskStarted, TestResult, Finding, TaskFinished, ...)."""

    def finish(self, result: RunResult) -> None:
        """The run is over and stored: print the summary."""


class _Progress:
    """What both renderers track: the phase, counts, failures and findings so far."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.start = clock()
        self.phase: Phase | None = None
        self.detail = ""
        self.phase_started = self.start
        self.done: list[tuple[Phase, float, str]] = []  # phase, seconds, how it ended
        self.counts = dict.fromkeys(TEST_OUTCOMES, 0)
        self.tests = 0
        self.listed = 0  # failures and findings printed
        self.unlisted = 0

    def elapsed(self) -> float:
        return self.clock() - self.start

    def enter(self, phase: Phase, detail: str) -> bool:
        """Switch phase; False when it is the same phase (only the detail changed)."""
        self.detail = clean(detail)
        if phase is self.phase:
            return False
        now = self.clock()
        if self.phase is not None and (not self.done or self.done[-1][0] is not self.phase):
            self.done.append((self.phase, now - self.phase_started, "done"))
        self.phase, self.phase_started = phase, now
        return True

    def close(self) -> None:
        """The run is over: the current phase (if still open) is done."""
        if self.phase is not None and (not self.done or self.done[-1][0] is not self.phase):
            self.done.append((self.phase, self.clock() - self.phase_started, "done"))

    def task_finished(self, message: TaskFinished) -> None:
        phase = TASK_PHASES[message.task]
        if self.phase is not phase:
            return
        if self.done and self.done[-1][0] is phase:
            self.done.pop()  # metadata then install: one install phase, the last verdict
        self.done.append((phase, self.clock() - self.phase_started, message.outcome))

    def test(self, message: TestResult) -> None:
        self.tests += 1
        self.counts[message.outcome] += 1

    def may_list(self) -> bool:
        """Whether one more failure or finding may be printed (a flood is counted instead)."""
        if self.listed < MAX_LISTED:
            self.listed += 1
            return True
        self.unlisted += 1
        return False


def _failure_text(message: TestResult) -> str:
    reason = failure_reason(message.report)
    tail = f" - {clean(reason, 120)}" if reason else ""
    return f"{message.outcome.upper()} {clean(message.nodeid)}{tail}"


def _finding_text(message: Finding) -> str:
    where = f" ({message.task})" if message.task else ""
    return f"finding {clean(message.kind, 40)}{where}: {clean(message.detail)}"


class PlainRenderer:
    """Lines for logs and CI: phase changes, failures, findings, a count every `every` tests."""

    def __init__(
        self, stream: TextIO, *, every: int = 50, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream: TextIO | None = stream
        self._every = every
        self._progress = _Progress(clock)

    def __enter__(self) -> PlainRenderer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._write("")

    def _write(self, text: str) -> None:
        """Write and flush; a reader that went away (`pyti run x | head`) must not end the run."""
        if self._stream is None:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (BrokenPipeError, ValueError) as exc:  # ValueError: the stream was closed
            log.debug("output stream gone, rendering stops: %s", exc)
            self._stream = None

    def _line(self, text: str) -> None:
        self._write(f"[{self._progress.elapsed():6.1f}s] {text}\n")

    def phase(self, phase: Phase, detail: str = "") -> None:
        if self._progress.enter(phase, detail):
            progress = self._progress
            self._line(f"{phase}: {progress.detail}" if progress.detail else f"{phase}")

    def message(self, message: object) -> None:
        progress = self._progress
        match message:
            case TaskStarted():
                self.phase(TASK_PHASES[message.task])
            case TestResult():
                progress.test(message)
                if message.outcome in FAILED and progress.may_list():
                    self._line(_failure_text(message))
                if progress.tests % self._every == 0:
                    self._line(f"test: {progress.tests} tests ({counts_text(progress.counts)})")
            case Finding():
                if progress.may_list():
                    self._line(_finding_text(message))
            case TaskFinished():
                progress.task_finished(message)
                self._line(
                    f"{message.task}: {clean(message.outcome, 40)} in {message.duration:.1f} s"
                )
            case _:
                pass

    def finish(self, result: RunResult) -> None:
        if self._progress.unlisted:
            self._line(f"{self._progress.unlisted} more failures or findings not shown")
        self._write("".join(line + "\n" for line in final_lines(result)))


class LiveRenderer:
    """A rich Live view on a terminal: phases with times, the current one spinning."""

    def __init__(self, console: Console, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._console = console
        self._progress = _Progress(clock)
        self._spinner = Spinner("dots")
        self._live = Live(
            console=console,
            get_renderable=self._render,
            refresh_per_second=8,
            transient=False,  # the phases and their times stay above the summary
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> LiveRenderer:
        self._live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._live.stop()

    def _render(self) -> RenderableType:
        progress = self._progress
        table = Table.grid(padding=(0, 1))
        for phase, seconds, how in progress.done:
            mark = Text("✓", style="green") if how in ("done", "passed") else Text("✗", "red")
            table.add_row(mark, Text(str(phase)), Text(f"{seconds:5.1f} s  {how}", "dim"))
        if progress.phase is not None and (
            not progress.done or progress.done[-1][0] is not progress.phase
        ):
            seconds = progress.clock() - progress.phase_started
            what = Text(str(progress.phase), style="bold")
            if progress.detail:
                what.append(f"  {progress.detail}", style="dim")
            table.add_row(self._spinner, what, Text(f"{seconds:5.1f} s", "dim"))
        parts: list[RenderableType] = [table]
        if progress.tests:
            line = Text(f"{progress.tests} tests: {counts_text(progress.counts)}")
            parts.append(line)
        return Group(*parts)

    def phase(self, phase: Phase, detail: str = "") -> None:
        self._progress.enter(phase, detail)

    def message(self, message: object) -> None:
        progress = self._progress
        match message:
            case TaskStarted():
                self.phase(TASK_PHASES[message.task])
            case TestResult():
                progress.test(message)
                if message.outcome in FAILED and progress.may_list():
                    # Printed above the live view: stays in the scrollback as it arrives.
                    self._console.print(Text(_failure_text(message), style="red"))
            case Finding():
                if progress.may_list():
                    self._console.print(Text(_finding_text(message), style="yellow"))
            case TaskFinished():
                progress.task_finished(message)
            case _:
                pass

    def finish(self, result: RunResult) -> None:
        self._progress.close()
        self._live.stop()
        if self._progress.unlisted:
            self._console.print(f"{self._progress.unlisted} more failures or findings not shown")
        lines = final_lines(result)
        for line in lines[:-2]:
            self._console.print(Text(line))
        style = "green" if result else "red"
        self._console.print(Text(lines[-2], style=f"bold {style}"))
        self._console.print(Text(lines[-1], style="dim"))


def make_renderer(console: Console, stream: TextIO) -> Renderer:
    """Live progress on a terminal, plain lines otherwise (pipes, CI logs)."""
    if console.is_terminal:
        return LiveRenderer(console)
    return PlainRenderer(stream)


# -- `pyti runs` and `pyti show` ---------------------------------------------------------


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(timestamp))


def runs_lines(runs: list[RunSummary]) -> list[str]:
    """The `pyti runs` table: newest first, one line per run."""
    if not runs:
        return ["no runs yet: pyti run PACKAGE"]
    header = ("ID", "STARTED (UTC)", "SPEC", "PYTHON", "OUTCOME", "TESTS")
    rows = [
        (
            str(run.id),
            _when(run.started_at),
            clean(run.info.spec, 40),
            clean(run.info.python, 20) or "-",
            "running" if run.outcome is None else run.outcome.value,
            counts_text(dict(run.counts)) or "-",
        )
        for run in runs
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    lines = []
    for row in (header, *rows):
        cells = [row[0].rjust(widths[0])]
        cells += [cell.ljust(width) for cell, width in zip(row[1:-1], widths[1:], strict=True)]
        lines.append("  ".join([*cells, row[-1]]))
    return lines


def _block(text: str, indent: str = "    ") -> list[str]:
    """Multi-line untrusted text, each line cleaned and indented."""
    return [indent + clean(line, 1000) for line in text.splitlines()]


def _task_counts(task: str, counts: Mapping[str, int]) -> str:
    """Test counts in pytest's words; other tasks' counts (quality: per rule) most first."""
    if task == "test":
        return counts_text(dict(counts))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{clean(key, 40)} {number}" for key, number in ranked[:10])
    return shown + (f", ... {len(ranked) - 10} more" if len(ranked) > 10 else "")


def show_lines(result: RunResult) -> list[str]:
    """`pyti show RUN`: one run's inputs, tasks, failed tests with reports, findings."""
    info = result.info
    package = f"{info.package_name} {info.package_version}".strip() or "-"
    outcome = (
        "running"
        if result.outcome is None
        else f"{result.outcome} (exit {result.exit_code}, fault: {result.outcome.fault})"
    )
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(result.started_at))
    lines = [
        f"run {result.id}: {clean(info.spec)}",
        f"  package:      {clean(package)}",
        f"  python:       {clean(info.python, 40) or '-'} (image {info.image_id or '-'},"
        f" {info.accelerator or 'no accelerator'})",
        f"  started:      {when} UTC, took {_duration(result.duration)}",
        f"  outcome:      {outcome}",
    ]
    if result.vm_end:
        lines.append(f"  vm end:       {result.vm_end}")
    if result.error:
        lines.append(f"  error:        {clean(result.error, 1000)}")
    if info.pyti_version:
        agent = clean(result.agent_version, 40) or "-"
        lines.append(f"  pyti:         {info.pyti_version}, agent {agent}")
    if result.tasks:
        lines.append("tasks:")
        for task in result.tasks:
            exit_code = "-" if task.exit_code is None else str(task.exit_code)
            counts = _task_counts(task.name, task.counts)
            lines.append(
                f"  {task.name:<9} {clean(task.outcome, 20):<15} exit {exit_code:<4}"
                f" {_duration(task.duration):>8}{'  ' + counts if counts else ''}".rstrip()
            )
    failures = result.failures()
    if failures:
        lines.append("failed tests:")
        for test in failures:
            lines.append(f"  {test.outcome.upper()} {clean(test.nodeid)}")
            lines.extend(_block(test.report))
    if result.dropped_tests or result.dropped_findings:
        lines.append(
            f"dropped past the store's caps: {result.dropped_tests} tests,"
            f" {result.dropped_findings} findings"
        )
    if result.findings:
        lines.append("findings:")
        for finding in result.findings:
            where = f" ({finding.task})" if finding.task else ""
            lines.append(f"  {clean(finding.kind, 40)}{where}: {clean(finding.detail)}")
    if result.console:
        size = len(result.console)
        lines.append(f"console log: {size} characters stored: pyti show {result.id} --console")
    else:
        lines.append("console log: none stored")
    lines.append(summary_line(result))
    return lines
