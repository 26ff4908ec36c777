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
ENV_SITE_PACKAGES = "PYTI_SITE_PACKAGES"

_tests: dict[str, dict[str, Any]] = {}
_sites: list[str] = []  # site-packages directories, real paths
_ids: dict[str, str] = {}  # pytest's node id -> the id a native run would show
_session = {"collected": 0}

audit.install()  # normally done by the .pth already; idempotent


def truncate(text: str, limit: int = MAX_REPORT) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: limit - 32].decode("utf-8", "ignore") + "\n[... truncated by pyti]"


def _site_relative(path: Any) -> str | None:
    real = os.path.realpath(str(path))
    for site in _sites:
        if real.startswith(site + os.sep):
            return real[len(site) + 1 :].replace(os.sep, "/")
    return None


def _remember(nodeid: str, path: Any) -> None:
    # Tests run from the installed copy (site-packages, outside the rootdir) get node
    # ids relative to their collection argument, e.g. "tests/test_a.py::t"; the
    # maintainers, running in a tree with the package in it, see
    # "pkg/tests/test_a.py::t". Rebuild that from the file's place in site-packages.
    relative = _site_relative(path) if path is not None else None
    if relative is not None:
        _, sep, rest = nodeid.partition("::")
        _ids[nodeid] = relative + sep + rest


def _norm(nodeid: str) -> str:
    return _ids.get(nodeid, nodeid)


def _text(report: Any) -> str:
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2])
    try:
        return str(report.longreprtext or "")
    except Exception:  # a broken repr in package code must not lose the result
        return "<pyti: the failure report could not be rendered>"


def pytest_configure(config: Any) -> None:
    given = [p for p in os.environ.get(ENV_SITE_PACKAGES, "").split(os.pathsep) if p]
    for path in given + [sysconfig.get_paths()[key] for key in ("purelib", "platlib")]:
        site = os.path.realpath(path)
        if site not in _sites:
            _sites.append(site)


def pytest_collectstart(collector: Any) -> None:
    _remember(collector.nodeid, getattr(collector, "path", None))


def pytest_itemcollected(item: Any) -> None:
    _remember(item.nodeid, getattr(item, "path", None))


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
