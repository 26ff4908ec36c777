"""A run's results as frozen data: what the store returns and the reports render.

Rendering lives elsewhere (`report.py`, `render.py`); these classes only hold
values and turn themselves into JSON-ready dicts (`to_json`), whose layout is
documented in docs/json-schema.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pyti.outcomes import TEST_OUTCOMES, Outcome

JSON_SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What is known when a run starts: its inputs (given to `Store.start_run`)."""

    spec: str
    package_name: str = ""
    package_version: str = ""
    python: str = ""  # the guest's Python (e.g. "3.11")
    image_id: str = ""
    setup_digest: str = ""  # sha256 of the setup disk
    pyti_version: str = ""
    accelerator: str = ""  # kvm | tcg
    resolved: Mapping[str, str] = field(default_factory=dict)  # name -> version
    inputs: Mapping[str, str] = field(default_factory=dict)  # input -> hash


@dataclass(frozen=True, kw_only=True)
class RunEnd:
    """How a run ended (given to `Store.finish_run`)."""

    outcome: Outcome
    vm_end: str = ""  # a `VmEnd` value, or "" when no VM was booted
    error: str = ""  # one line for outcomes that are not the package's verdict
    console: str = ""  # the guest console, already capped by the caller


@dataclass(frozen=True, kw_only=True)
class TestRecord:
    __test__: ClassVar[bool] = False  # not a pytest test class
    nodeid: str
    outcome: str  # one of TEST_OUTCOMES
    duration: float
    report: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "outcome": self.outcome,
            "duration": self.duration,
            "report": self.report,
        }


@dataclass(frozen=True, kw_only=True)
class TaskRecord:
    name: str
    outcome: str  # "running" until the guest reports TaskFinished
    exit_code: int | None = None
    duration: float | None = None
    counts: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "duration": self.duration,
            "counts": dict(self.counts),
        }


@dataclass(frozen=True, kw_only=True)
class FindingRecord:
    kind: str
    detail: str
    task: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "task": self.task}


@dataclass(frozen=True, kw_only=True)
class OutputRecord:
    """One task's stream, joined from its chunks and capped by the store."""

    task: str
    stream: str  # stdout | stderr
    text: str
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "stream": self.stream,
            "text": self.text,
            "truncated": self.truncated,
        }


def failure_reason(report: str) -> str:
    """The line of a failure report that says most: pytest's last "E   ..." line, else the last."""
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return errors[-1] if errors else (lines[-1] if lines else "")


def iso_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """One line of `pyti runs`: a run without its tests and outputs, with its counts."""

    id: int
    info: RunInfo
    started_at: float
    finished_at: float | None
    outcome: Outcome | None
    counts: Mapping[str, int]

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """One run as stored: its inputs, what the guest reported, and how it ended."""

    id: int
    info: RunInfo
    started_at: float  # unix time
    finished_at: float | None = None  # None while running
    outcome: Outcome | None = None  # None while running
    vm_end: str = ""
    error: str = ""
    console: str = ""
    agent_version: str = ""
    tests: tuple[TestRecord, ...] = ()
    tasks: tuple[TaskRecord, ...] = ()
    findings: tuple[FindingRecord, ...] = ()
    outputs: tuple[OutputRecord, ...] = ()
    dropped_tests: int = 0  # results past the store's per-run cap: counted, not kept
    dropped_findings: int = 0

    @property
    def exit_code(self) -> int | None:
        return None if self.outcome is None else self.outcome.exit_code

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    @property
    def counts(self) -> dict[str, int]:
        """Tests per outcome, every per-test outcome present (zero when none)."""
        counts = dict.fromkeys(TEST_OUTCOMES, 0)
        for test in self.tests:
            counts[test.outcome] = counts.get(test.outcome, 0) + 1
        return counts

    def failures(self) -> tuple[TestRecord, ...]:
        return tuple(t for t in self.tests if t.outcome in ("failed", "error"))

    def __bool__(self) -> bool:
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        info = self.info
        return {
            "schema_version": JSON_SCHEMA_VERSION,
            "id": self.id,
            "spec": info.spec,
            "package": {"name": info.package_name, "version": info.package_version},
            "python": info.python,
            "accelerator": info.accelerator,
            "image_id": info.image_id,
            "setup_digest": info.setup_digest,
            "pyti_version": info.pyti_version,
            "agent_version": self.agent_version,
            "resolved": dict(info.resolved),
            "inputs": dict(info.inputs),
            "started_at": iso_time(self.started_at),
            "finished_at": iso_time(self.finished_at),
            "duration": self.duration,
            "outcome": None if self.outcome is None else self.outcome.value,
            "exit_code": self.exit_code,
            "fault": None if self.outcome is None else self.outcome.fault.value,
            "vm_end": self.vm_end,
            "error": self.error,
            "counts": self.counts,
            "tasks": [t.to_json() for t in self.tasks],
            "tests": [t.to_json() for t in self.tests],
            "findings": [f.to_json() for f in self.findings],
            "outputs": [o.to_json() for o in self.outputs],
            "dropped": {"tests": self.dropped_tests, "findings": self.dropped_findings},
            "console": self.console,
        }
