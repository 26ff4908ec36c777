from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from pyti import errors
from pyti.outcomes import OUTCOME_TABLE, Fault, Outcome, VmEnd, classify, outcome_for_error

DOCS = Path(__file__).parents[2] / "docs" / "outcomes.md"

OK = (("install", "passed"), ("test", "passed"))


def _doc_rows() -> dict[str, tuple[str, str, int]]:
    rows = {}
    for line in DOCS.read_text().splitlines():
        match = re.fullmatch(r"\| `([a-z-]+)` \| (.+) \| (\w+) \| (\d+) \|", line)
        if match:
            rows[match[1]] = (match[2], match[3], int(match[4]))
    return rows


def test_docs_table_matches_the_code_table() -> None:
    expected = {
        row.outcome.value: (row.ended, row.fault.value, row.exit_code)
        for row in OUTCOME_TABLE.values()
    }
    assert _doc_rows() == expected


@pytest.mark.parametrize(
    ("outcome", "exit_code", "fault"),
    [
        (Outcome.PASSED, 0, Fault.NONE),
        (Outcome.NO_TESTS, 0, Fault.NONE),
        (Outcome.TEST_FAILED, 1, Fault.PACKAGE),
        (Outcome.INSTALL_FAILED, 1, Fault.PACKAGE),
        (Outcome.BUILD_FAILED, 1, Fault.PACKAGE),
        (Outcome.RESOLVE_FAILED, 1, Fault.PACKAGE),
        (Outcome.TIMEOUT, 1, Fault.PACKAGE),
        (Outcome.OOM, 1, Fault.PACKAGE),
        (Outcome.DISK_FULL, 1, Fault.PACKAGE),
        (Outcome.GUEST_CRASH, 1, Fault.PACKAGE),
        (Outcome.LIMIT_EXCEEDED, 1, Fault.PACKAGE),
        (Outcome.INTERRUPTED, 130, Fault.USER),
        (Outcome.USAGE_ERROR, 2, Fault.USER),
        (Outcome.ENVIRONMENT_ERROR, 3, Fault.USER),
        (Outcome.ERROR, 4, Fault.HOST),
    ],
)
def test_exit_code_and_fault_of_each_outcome(
    outcome: Outcome, exit_code: int, fault: Fault
) -> None:
    assert outcome.exit_code == exit_code
    assert outcome.fault is fault


@pytest.mark.parametrize(
    ("tasks", "vm_end", "findings", "expected"),
    [
        (OK, "normal", (), Outcome.PASSED),
        ((*OK, ("quality", "failed")), "normal", (), Outcome.PASSED),
        (OK, "normal", ("network",), Outcome.PASSED),
        (OK, "normal", ("disk-full",), Outcome.PASSED),  # a full disk that broke nothing
        ((("install", "passed"), ("test", "no-tests")), "normal", (), Outcome.NO_TESTS),
        ((("install", "passed"), ("test", "failed")), "normal", (), Outcome.TEST_FAILED),
        ((("install", "passed"), ("test", "error")), "normal", (), Outcome.ERROR),
        (
            (("install", "passed"), ("test", "install-failed")),
            "normal",
            (),
            Outcome.INSTALL_FAILED,
        ),
        (
            (("install", "install-failed"), ("test", "skipped")),
            "normal",
            (),
            Outcome.INSTALL_FAILED,
        ),
        ((("install", "failed"),), "normal", (), Outcome.INSTALL_FAILED),
        ((("install", "build-failed"), ("test", "skipped")), "normal", (), Outcome.BUILD_FAILED),
        ((("install", "error"),), "normal", ("disk-full",), Outcome.ERROR),
        ((("metadata", "failed"), ("install", "passed")), "normal", (), Outcome.INSTALL_FAILED),
        ((("install", "install-failed"),), "normal", ("disk-full",), Outcome.DISK_FULL),
        ((("install", "passed"), ("test", "failed")), "normal", ("oom",), Outcome.OOM),
        ((("install", "passed"),), "normal", (), Outcome.ERROR),  # test never reported
        ((("install", "passed"), ("test", "skipped")), "normal", (), Outcome.ERROR),
        ((), "normal", (), Outcome.ERROR),
        (OK, "cancelled", (), Outcome.INTERRUPTED),
        ((), "qemu-crash", (), Outcome.ERROR),
        ((), "boot-timeout", (), Outcome.ERROR),
        ((("install", "passed"),), "panic", (), Outcome.GUEST_CRASH),
        ((("install", "passed"),), "silence", (), Outcome.GUEST_CRASH),
        ((("install", "passed"),), "protocol-error", (), Outcome.GUEST_CRASH),
        ((("install", "passed"),), "no-progress", (), Outcome.TIMEOUT),
        (OK, "total-timeout", (), Outcome.TIMEOUT),
        ((("install", "passed"),), "oom", (), Outcome.OOM),
        ((("install", "passed"),), "limit-exceeded", (), Outcome.LIMIT_EXCEEDED),
        ((("install", "passed"),), "eof", (), Outcome.GUEST_CRASH),
        ((), "version-mismatch", (), Outcome.ENVIRONMENT_ERROR),
    ],
)
def test_classify(
    tasks: tuple[tuple[str, str], ...], vm_end: str, findings: tuple[str, ...], expected: Outcome
) -> None:
    assert classify(tasks, vm_end, findings) is expected


def test_classify_knows_every_vm_end() -> None:
    for end in VmEnd:
        assert isinstance(classify(OK, end), Outcome)


def test_classify_checks_only_the_requested_tasks() -> None:
    assert classify((("install", "passed"),), "normal", requested=("install",)) is Outcome.PASSED


def test_classify_rejects_an_unknown_vm_end() -> None:
    with pytest.raises(ValueError, match="reboot"):
        classify(OK, "reboot")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (KeyboardInterrupt(), Outcome.INTERRUPTED),
        (errors.UsageError("bad"), Outcome.USAGE_ERROR),
        (errors.MissingTool("qemu", "apt"), Outcome.ENVIRONMENT_ERROR),
        (errors.NoSuchPackage("nope"), Outcome.RESOLVE_FAILED),
        (errors.ResolutionFailed("conflict"), Outcome.RESOLVE_FAILED),
        (errors.HostileArchive("traversal"), Outcome.RESOLVE_FAILED),
        (errors.GuestLimitExceeded("rate"), Outcome.LIMIT_EXCEEDED),
        (errors.GuestCrashed("panic"), Outcome.GUEST_CRASH),
        (errors.GuestProtocolError("frame"), Outcome.GUEST_CRASH),
        (errors.QemuFailed("died", returncode=1, log=None), Outcome.ERROR),
        (RuntimeError("bug"), Outcome.ERROR),
    ],
)
def test_outcome_for_error(error: BaseException, expected: Outcome) -> None:
    assert outcome_for_error(error) is expected


async def test_outcome_for_a_trio_cancellation() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.sleep(1)
        except trio.Cancelled as cancelled:
            assert outcome_for_error(cancelled) is Outcome.INTERRUPTED
            raise


def test_every_channel_end_is_a_vm_end() -> None:
    from pyti.channel import EndKind

    assert VmEnd.from_channel(EndKind.GOODBYE) is VmEnd.NORMAL
    for kind in EndKind:
        assert isinstance(VmEnd.from_channel(kind), VmEnd)
