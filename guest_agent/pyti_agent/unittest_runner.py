"""`python -m unittest`, streaming each result to the agent's pipe. STDLIB ONLY.

Copied into the test venv as `_pyti_unittest_runner.py` and run as
`python -m _pyti_unittest_runner [the project's unittest arguments]`. It is
`unittest.main` with the standard loader (so `load_tests` suites, doctest
suites included, count in full) and a `TextTestResult` subclass that also
writes one JSON line per result. The text output stays as unittest prints it.

Exit status: 0 all passed, 1 some failed, 5 no tests ran (as Python 3.12+).
"""

from __future__ import annotations

import sys
import time
import unittest

import _pyti_audit as audit

MAX_REPORT = 16 << 10
EXIT_NO_TESTS = 5

audit.install()


def truncate(text: str, limit: int = MAX_REPORT) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: limit - 32].decode("utf-8", "ignore") + "\n[... truncated by pyti]"


def _test_id(test: object) -> str:
    try:
        return str(test.id())
    except Exception:  # a hostile or broken id() must not lose the result
        return f"<unnamed {type(test).__name__}>"


class StreamingResult(unittest.TextTestResult):
    """Writes a JSON line for every outcome unittest records (method names are unittest's)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._started: dict[str, float] = {}
        self.streamed = 0

    def _emit(self, test: object, outcome: str, report: str = "") -> None:
        nodeid = _test_id(test)
        start = self._started.pop(nodeid, None)
        duration = 0.0 if start is None else time.perf_counter() - start
        self.streamed += 1
        audit.emit(
            {
                "nodeid": nodeid,
                "outcome": outcome,
                "duration": round(duration, 6),
                "report": truncate(report),
            }
        )

    def _err_text(self, test: object, err: object) -> str:
        try:
            return str(self._exc_info_to_string(err, test))  # type: ignore[attr-defined]
        except Exception:
            return "<pyti: the traceback could not be rendered>"

    def startTest(self, test: object) -> None:
        self._started[_test_id(test)] = time.perf_counter()
        super().startTest(test)

    def addSuccess(self, test: object) -> None:
        super().addSuccess(test)
        self._emit(test, "passed")

    def addFailure(self, test: object, err: object) -> None:
        super().addFailure(test, err)
        self._emit(test, "failed", self._err_text(test, err))

    def addError(self, test: object, err: object) -> None:
        # Also reached for setUpClass/setUpModule failures (an _ErrorHolder) and
        # for modules that failed to import during discovery (_FailedTest).
        super().addError(test, err)
        self._emit(test, "error", self._err_text(test, err))

    def addSkip(self, test: object, reason: str) -> None:
        super().addSkip(test, reason)
        self._emit(test, "skipped", str(reason))

    def addExpectedFailure(self, test: object, err: object) -> None:
        super().addExpectedFailure(test, err)
        self._emit(test, "xfailed", self._err_text(test, err))

    def addUnexpectedSuccess(self, test: object) -> None:
        super().addUnexpectedSuccess(test)
        self._emit(test, "xpassed")

    def addSubTest(self, test: object, subtest: object, err: object) -> None:
        # unittest counts each failing subtest as a failure of its own and does
        # not count passing ones: report the same.
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._emit(subtest, "failed" if failed else "error", self._err_text(test, err))


class StreamingRunner(unittest.TextTestRunner):
    resultclass = StreamingResult


def main(argv: list[str]) -> int:
    audit.emit({"session": "started"})
    program = unittest.main(
        module=None,
        argv=["python -m unittest", *argv],
        testRunner=StreamingRunner,
        exit=False,
    )
    result = program.result
    if result.testsRun == 0 and not result.errors and not result.skipped:
        return EXIT_NO_TESTS
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    code = main(sys.argv[1:])
    audit.report_import_paths()
    audit.emit({"session": "finished", "exitstatus": code})
    sys.exit(code)
