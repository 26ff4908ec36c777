"""One outcome per run, in one table, and the pure function that picks it.

`OUTCOME_TABLE` is the single source of truth for each outcome's meaning, whose
fault it is and its exit code; docs/outcomes.md renders the same table (a unit
test keeps the two equal). `classify` maps what the guest reported and how the
VM ended to an `Outcome`; `outcome_for_error` does the same for a run cut short
on the host by an exception.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyti.errors import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EnvironmentProblem,
    GuestCrashed,
    GuestLimitExceeded,
    GuestProtocolError,
    PackageError,
    UsageError,
)


class Outcome(enum.StrEnum):
    PASSED = "passed"
    NO_TESTS = "no-tests"
    TEST_FAILED = "test-failed"
    INSTALL_FAILED = "install-failed"
    BUILD_FAILED = "build-failed"
    RESOLVE_FAILED = "resolve-failed"
    TIMEOUT = "timeout"
    OOM = "oom"
    DISK_FULL = "disk-full"
    GUEST_CRASH = "guest-crash"
    LIMIT_EXCEEDED = "limit-exceeded"
    INTERRUPTED = "interrupted"
    USAGE_ERROR = "usage-error"
    ENVIRONMENT_ERROR = "environment-error"
    ERROR = "error"

    @property
    def row(self) -> OutcomeRow:
        return OUTCOME_TABLE[self]

    @property
    def exit_code(self) -> int:
        return self.row.exit_code

    @property
    def fault(self) -> Fault:
        return self.row.fault


class Fault(enum.StrEnum):
    NONE = "none"  # the package passed
    PACKAGE = "package"  # the package, its tests or what they did in the guest
    HOST = "host"  # pyti or the infrastructure it runs on
    USER = "user"  # the command line, the host setup, or Ctrl-C


class VmEnd(enum.StrEnum):
    """How the VM ended, as the machine and channel layers classify it."""

    NORMAL = "normal"  # the agent said Goodbye and the guest powered off
    PANIC = "panic"  # kernel panic seen on the console
    BOOT_TIMEOUT = "boot-timeout"  # no Hello in time
    SILENCE = "silence"  # no frame (not even a heartbeat) in time: the agent is lost
    NO_PROGRESS = "no-progress"  # heartbeats but no test or task event in time
    TOTAL_TIMEOUT = "total-timeout"  # the whole run's time budget ran out
    QEMU_CRASH = "qemu-crash"  # QEMU itself exited unexpectedly
    OOM = "oom"  # the guest kernel's OOM killer fired
    CANCELLED = "cancelled"  # the user interrupted the run
    LIMIT_EXCEEDED = "limit-exceeded"  # the guest broke a channel limit
    PROTOCOL_ERROR = "protocol-error"  # a frame broke the protocol
    EOF = "eof"  # the channel ended without Goodbye: the agent or the guest died
    VERSION_MISMATCH = "version-mismatch"  # the image's agent speaks another protocol

    @classmethod
    def from_channel(cls, kind: str) -> VmEnd:
        """The VM end for a `pyti.channel.EndKind` value (the names match but Goodbye's)."""
        return cls.NORMAL if kind == "goodbye" else cls(kind)


# Per-test outcomes, in the order summaries list them.
TEST_OUTCOMES: tuple[str, ...] = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


@dataclass(frozen=True)
class OutcomeRow:
    outcome: Outcome
    ended: str  # how the run ended, in words
    fault: Fault
    exit_code: int


_ROWS = (
    OutcomeRow(Outcome.PASSED, "the package installed and all its tests passed", Fault.NONE, 0),
    OutcomeRow(
        Outcome.NO_TESTS,
        "the package installed, has no tests, and its import smoke test passed",
        Fault.NONE,
        0,
    ),
    OutcomeRow(Outcome.TEST_FAILED, "a test failed or errored", Fault.PACKAGE, EXIT_FAILED),
    OutcomeRow(Outcome.INSTALL_FAILED, "installing the package failed", Fault.PACKAGE, EXIT_FAILED),
    OutcomeRow(
        Outcome.BUILD_FAILED, "building a wheel from the sdist failed", Fault.PACKAGE, EXIT_FAILED
    ),
    OutcomeRow(
        Outcome.RESOLVE_FAILED,
        "on the host: the package or its dependencies could not be resolved, downloaded or read",
        Fault.PACKAGE,
        EXIT_FAILED,
    ),
    OutcomeRow(
        Outcome.TIMEOUT,
        "no progress for too long, or the total time ran out",
        Fault.PACKAGE,
        EXIT_FAILED,
    ),
    OutcomeRow(Outcome.OOM, "the guest ran out of memory", Fault.PACKAGE, EXIT_FAILED),
    OutcomeRow(Outcome.DISK_FULL, "the guest's scratch disk filled up", Fault.PACKAGE, EXIT_FAILED),
    OutcomeRow(
        Outcome.GUEST_CRASH,
        "kernel panic, or the agent was lost (went silent or broke the protocol)",
        Fault.PACKAGE,
        EXIT_FAILED,
    ),
    OutcomeRow(
        Outcome.LIMIT_EXCEEDED,
        "the guest broke a channel limit (rate, bytes, events)",
        Fault.PACKAGE,
        EXIT_FAILED,
    ),
    OutcomeRow(
        Outcome.INTERRUPTED, "the user interrupted the run (Ctrl-C)", Fault.USER, EXIT_INTERRUPTED
    ),
    OutcomeRow(Outcome.USAGE_ERROR, "the command line is wrong", Fault.USER, EXIT_USAGE),
    OutcomeRow(
        Outcome.ENVIRONMENT_ERROR,
        "the host lacks something the run needs (the message names the fix)",
        Fault.USER,
        EXIT_ENVIRONMENT,
    ),
    OutcomeRow(
        Outcome.ERROR,
        "pyti's own or the infrastructure's fault (QEMU crash, boot timeout, agent error)",
        Fault.HOST,
        EXIT_INTERNAL,
    ),
)

OUTCOME_TABLE: dict[Outcome, OutcomeRow] = {row.outcome: row for row in _ROWS}
assert set(OUTCOME_TABLE) == set(Outcome), "every outcome needs a row"

# A VM that did not end normally decides the outcome whatever the tasks said.
_VM_END_OUTCOME: dict[VmEnd, Outcome] = {
    VmEnd.CANCELLED: Outcome.INTERRUPTED,
    VmEnd.QEMU_CRASH: Outcome.ERROR,
    # Nothing of the package runs before the agent's Hello: a boot hang is ours.
    VmEnd.BOOT_TIMEOUT: Outcome.ERROR,
    VmEnd.OOM: Outcome.OOM,
    VmEnd.PANIC: Outcome.GUEST_CRASH,
    VmEnd.SILENCE: Outcome.GUEST_CRASH,
    # The guest is untrusted: a broken frame counts as losing the agent.
    VmEnd.PROTOCOL_ERROR: Outcome.GUEST_CRASH,
    VmEnd.EOF: Outcome.GUEST_CRASH,
    # The Hello comes from the image before any package code runs: a stale image here.
    VmEnd.VERSION_MISMATCH: Outcome.ENVIRONMENT_ERROR,
    VmEnd.LIMIT_EXCEEDED: Outcome.LIMIT_EXCEEDED,
    VmEnd.NO_PROGRESS: Outcome.TIMEOUT,
    VmEnd.TOTAL_TIMEOUT: Outcome.TIMEOUT,
}

# Task outcome -> run outcome, per task; a task outcome absent here does not fail the run.
_TASK_FAILURES: dict[str, dict[str, Outcome]] = {
    "metadata": {"failed": Outcome.INSTALL_FAILED, "error": Outcome.ERROR},
    "install": {
        "failed": Outcome.INSTALL_FAILED,
        "install-failed": Outcome.INSTALL_FAILED,
        "build-failed": Outcome.BUILD_FAILED,
        "error": Outcome.ERROR,
    },
    "test": {
        "failed": Outcome.TEST_FAILED,
        "install-failed": Outcome.INSTALL_FAILED,  # installing the test dependencies
        "build-failed": Outcome.BUILD_FAILED,
        "error": Outcome.ERROR,
    },
    # quality is reported, never failing the run.
    "quality": {},
}

# Findings that explain a failure better than the failing task does.
_FINDING_OUTCOMES: dict[str, Outcome] = {"oom": Outcome.OOM, "disk-full": Outcome.DISK_FULL}


def classify(
    tasks: Iterable[tuple[str, str]],
    vm_end: VmEnd | str,
    findings: Iterable[str] = (),
    *,
    requested: Sequence[str] = ("install", "test"),
) -> Outcome:
    """The run's outcome.

    `tasks` is the (name, outcome) of each TaskFinished the guest sent, in order;
    `vm_end` how the VM ended; `findings` the kinds of the findings reported (the
    guest's and the console's, e.g. "disk-full", "oom"); `requested` the tasks the
    host asked for, so a normal end that skipped one is caught.
    """
    end = VmEnd(vm_end)
    if end is not VmEnd.NORMAL:
        return _VM_END_OUTCOME[end]
    finished = dict(tasks)
    verdict = _first_failure(finished)
    if verdict is Outcome.ERROR:
        return verdict
    if verdict is not None:
        # A full disk or an OOM kill makes install or tests fail: name the cause.
        causes = [_FINDING_OUTCOMES[kind] for kind in findings if kind in _FINDING_OUTCOMES]
        return causes[0] if causes else verdict
    if any(finished.get(name, "skipped") == "skipped" for name in requested if name != "quality"):
        return Outcome.ERROR  # the agent said goodbye without doing its work
    return Outcome.NO_TESTS if finished.get("test") == "no-tests" else Outcome.PASSED


def _first_failure(finished: dict[str, str]) -> Outcome | None:
    for name, outcome in finished.items():
        failure = _TASK_FAILURES.get(name, {}).get(outcome)
        if failure is not None:
            return failure
    return None


# Host-side errors that end a run, most specific first.
_ERROR_OUTCOMES: tuple[tuple[type[BaseException], Outcome], ...] = (
    (KeyboardInterrupt, Outcome.INTERRUPTED),
    (UsageError, Outcome.USAGE_ERROR),
    (EnvironmentProblem, Outcome.ENVIRONMENT_ERROR),
    (PackageError, Outcome.RESOLVE_FAILED),
    (GuestLimitExceeded, Outcome.LIMIT_EXCEEDED),
    (GuestCrashed, Outcome.GUEST_CRASH),
    (GuestProtocolError, Outcome.GUEST_CRASH),
)


def outcome_for_error(error: BaseException) -> Outcome:
    """The outcome of a run cut short on the host by `error` (anything else: `error`)."""
    import trio  # here, not at the top: `pyti runs` and `show` never need it

    table: tuple[tuple[type[BaseException], Outcome], ...] = (
        (trio.Cancelled, Outcome.INTERRUPTED),
        *_ERROR_OUTCOMES,
    )
    for kind, outcome in table:
        if isinstance(error, kind):
            return outcome
    return Outcome.ERROR
