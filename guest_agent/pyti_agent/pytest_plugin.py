"""pytest plugin in the test process: one JSON line per finished test. STDLIB ONLY.

Copied into the test venv as `_pyti_pytest_plugin.py` and loaded with
`-p _pyti_pytest_plugin`. It writes to the agent's pipe (see audit.py), never to
the port: package code shares this process, so nothing here may need more
than the standard library, and nothing written here is trusted by the agent.

A test's outcome folds its three phases the way pytest's summary does:
a failing setup is an `error`, a failing teardown after a passing call is an
`error`, an xfail-marked test that fails is `xfailed` and one that passes is
`xpassed` (or `failed` when strict). Collection errors are reported as
`error` under the collector's node id.
"""

from __future__ import annotations

import os
import sysconfig
from typing import Any

import _pyti_audit as audit

MAX_REPORT = 16 << 10

_tests: dict[str, dict[str, Any]] = {}
_strip_prefixes: list[str] = []
_session = {"collected": 0}

audit.install()  # normally done by the .pth already; idempotent


def truncate(text: str, limit: int = MAX_REPORT) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: limit - 32].decode("utf-8", "ignore") + "\n[... truncated by pyti]"


def _norm(nodeid: str) -> str:
    # Tests run from the installed copy (--pyargs) have node ids relative to the
    # rootdir, like "../venv/lib/python3.11/site-packages/pkg/tests/test_a.py::t";
    # the maintainers see "pkg/tests/test_a.py::t". Strip the site-packages part.
    for prefix in _strip_prefixes:
        if nodeid.startswith(prefix):
            return nodeid[len(prefix) :]
    return nodeid


def _text(report: Any) -> str:
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2])
    try:
        return str(report.longreprtext or "")
    except Exception:  # a broken repr in package code must not lose the result
        return "<pyti: the failure report could not be rendered>"


def pytest_configure(config: Any) -> None:
    root = str(config.rootpath)
    seen = set()
    for key in ("purelib", "platlib"):
        path = sysconfig.get_paths()[key]
        for base in (os.path.relpath(path, root), path.lstrip("/")):
            prefix = base.replace(os.sep, "/").rstrip("/") + "/"
            if prefix not in seen:
                seen.add(prefix)
                _strip_prefixes.append(prefix)


def pytest_sessionstart(session: Any) -> None:
    # Lets the agent measure the runner's start-up (imports, plugins) apart from the tests.
    audit.emit({"session": "started"})


def pytest_collectreport(report: Any) -> None:
    if report.failed:
        audit.emit(
            {
                "nodeid": _norm(report.nodeid) or "<collection>",
                "outcome": "error",
                "duration": 0.0,
                "report": truncate(_text(report)),
            }
        )


def pytest_collection_finish(session: Any) -> None:
    _session["collected"] = len(session.items)


def pytest_runtest_logreport(report: Any) -> None:
    entry = _tests.setdefault(report.nodeid, {"outcome": None, "duration": 0.0, "texts": []})
    entry["duration"] += float(getattr(report, "duration", 0.0) or 0.0)
    xfail = hasattr(report, "wasxfail")
    outcome = None
    if report.when == "setup":
        if report.failed:
            outcome = "error"
        elif report.skipped:
            outcome = "xfailed" if xfail else "skipped"
    elif report.when == "call":
        if report.passed:
            outcome = "xpassed" if xfail else "passed"
        elif report.failed:
            outcome = "failed"
        else:
            outcome = "xfailed" if xfail else "skipped"
    elif report.failed and entry["outcome"] != "failed":  # teardown
        outcome = "error"
    if outcome is not None:
        entry["outcome"] = outcome
    if report.failed or report.skipped:
        entry["texts"].append(_text(report))
    elif xfail and report.when == "call":
        entry["texts"].append(str(report.wasxfail))


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    entry = _tests.pop(nodeid, None)
    if entry is None:
        return
    audit.emit(
        {
            "nodeid": _norm(nodeid),
            "outcome": entry["outcome"] or "passed",
            "duration": round(entry["duration"], 6),
            "report": truncate("\n".join(entry["texts"])),
        }
    )


def pytest_sessionfinish(session: Any, exitstatus: Any) -> None:
    audit.report_import_paths()
    audit.emit(
        {"session": "finished", "exitstatus": int(exitstatus), "collected": _session["collected"]}
    )
