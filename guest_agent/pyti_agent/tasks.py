"""The agent's tasks: metadata, install, test, quality (contract in docs/architecture.md).

`run_task(name, ctx)` runs one task to completion and returns its TaskFinished;
frames produced on the way (Output, TestResult, Finding, Metadata) go out through
`ctx.send`. A task never raises for anything the package did: that is an outcome.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyti.protocol import Finding, Output, TaskFinished, TestResult

from . import install, privileges, testrun

if TYPE_CHECKING:
    from pyti.protocol.manifest import SetupManifest

# What one task may send as Output: the head live, the tail at the end. Beyond the
# channel's own limits, so a chatty suite loses its middle, not the run.
OUTPUT_HEAD = 2 << 20
OUTPUT_TAIL = 512 << 10
OUTPUT_CHUNK = 64 << 10
READER_JOIN = 10.0

_SMOKE = (
    "import importlib, sys\n"
    "for name in sys.argv[1:]:\n"
    "    module = importlib.import_module(name)\n"
    "    print(name, '->', getattr(module, '__file__', None))\n"
)


@dataclass
class TaskContext:
    send: Callable[[object], None]  # thread-safe: one frame to the host
    manifest: SetupManifest | None  # /mnt/setup/manifest.cbor, None without a setup disk
    setup_dir: Path  # /mnt/setup (read-only)
    work_dir: Path  # writable, on the scratch disk
    cancelled: threading.Event
    test_args: tuple[str, ...] = ()
    # Not in the contract's positional part: whom package code runs as (tests on a
    # host that is not root leave it None = "pyti when root, else the agent's user").
    user: privileges.User | None = field(default=None)

    def run_as(self) -> privileges.User:
        return self.user if self.user is not None else privileges.User.pyti()


class OutputSink:
    """Forwards a task's output as Output frames: the head live, the tail at close()."""

    def __init__(self, task: str, send: Callable[[object], None]) -> None:
        self.task = task
        self.send = send
        self.sent = 0
        self.omitted = 0
        self.tail: list[tuple[str, bytes]] = []
        self.tail_size = 0
        self.lock = threading.Lock()

    def __call__(self, stream: str, data: bytes) -> None:
        with self.lock:
            room = max(OUTPUT_HEAD - self.sent, 0)
            head, rest = data[:room], data[room:]
            for i in range(0, len(head), OUTPUT_CHUNK):
                self.send(Output(task=self.task, stream=stream, data=head[i : i + OUTPUT_CHUNK]))
            self.sent += len(head)
            if rest:
                self.tail.append((stream, rest))
                self.tail_size += len(rest)
                while self.tail_size - len(self.tail[0][1]) >= OUTPUT_TAIL:
                    self.omitted += len(self.tail[0][1])
                    self.tail_size -= len(self.tail.pop(0)[1])

    def note(self, text: str) -> None:
        """A line from the agent itself, in the task's stderr."""
        self("stderr", f"[pyti] {text}\n".encode())

    def close(self) -> None:
        with self.lock:
            tail, self.tail, self.tail_size = self.tail, [], 0
            omitted, self.omitted = self.omitted, 0
        if omitted:
            message = f"\n[pyti: {omitted} bytes of output omitted]\n".encode()
            self.send(Output(task=self.task, stream="stderr", data=message))
        for stream, data in tail:
            for i in range(0, len(data), OUTPUT_CHUNK):
                self.send(Output(task=self.task, stream=stream, data=data[i : i + OUTPUT_CHUNK]))


def finished(
    task: str,
    outcome: str,
    exit_code: int | None,
    began: float,
    counts: dict[str, int] | None = None,
) -> TaskFinished:
    duration = min(max(time.monotonic() - began, 0.0), 1e9)
    return TaskFinished(
        task=task, outcome=outcome, exit_code=exit_code, duration=duration, counts=counts or {}
    )


def _finding(ctx: TaskContext, task: str, kind: str, detail: str) -> None:
    ctx.send(Finding(kind=kind, detail=detail[:8192], task=task))


def run_task(name: str, ctx: TaskContext) -> TaskFinished:
    began = time.monotonic()
    out = OutputSink(name, ctx.send)
    try:
        if ctx.manifest is None:
            out.note(f"no setup disk manifest: nothing to {name}")
            return finished(name, "skipped", None, began)
        if name == "install":
            return _install(ctx, out, began)
        if name == "test":
            return _test(ctx, out, began)
        if name == "quality":
            from . import quality

            return quality.run(ctx, out, began)
        if name == "metadata":
            from . import metadata

            return metadata.run(ctx, out, began)
        out.note(f"unknown task {name!r}")
        return finished(name, "error", None, began)
    except Exception as exc:  # the agent's own failure: reported, never a crash
        out.note(f"internal error in task {name}: {type(exc).__name__}: {exc}")
        return finished(name, "error", None, began)
    finally:
        out.close()


def verify_setup(ctx: TaskContext, out: OutputSink) -> bool:
    assert ctx.manifest is not None
    problems = install.verify_dists(ctx.setup_dir / "dists", ctx.manifest.files)
    for problem in problems:
        out.note(f"setup disk: {problem}")
    return not problems


def _install(ctx: TaskContext, out: OutputSink, began: float) -> TaskFinished:
    manifest = ctx.manifest
    assert manifest is not None
    if not verify_setup(ctx, out):
        return finished("install", "error", None, began)
    out.note(f"verified {len(manifest.files)} dists in {time.monotonic() - began:.2f} s")
    user = ctx.run_as()
    layout = install.WorkLayout(ctx.work_dir)
    layout.prepare(user)
    venv = install.make_venv(layout, on_output=out, cancelled=ctx.cancelled, user=user)
    if not venv.ok:
        out.note(f"uv venv failed (exit {venv.returncode})")
        return finished("install", "error", venv.returncode, began)
    out.note(f"venv in {venv.duration:.2f} s")
    dists = ctx.setup_dir / "dists"
    step, result = install.install_packages(
        layout,
        dists=dists,
        targets=install.install_targets(dists, manifest.install, manifest.files),
        may_build=install.has_sdists(manifest.files),
        on_output=out,
        cancelled=ctx.cancelled,
        user=user,
    )
    out.note(f"install {step.outcome} in {result.duration:.2f} s")
    if step.outcome == "passed" and manifest.bytecode:
        _unpack_bytecode(ctx, out, layout, user)
    return finished("install", step.outcome, step.exit_code, began)


def _unpack_bytecode(
    ctx: TaskContext, out: OutputSink, layout: install.WorkLayout, user: privileges.User
) -> None:
    """The host's pycs for the installed wheels: the first import need not compile."""
    manifest = ctx.manifest
    assert manifest is not None
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = layout.venv / "lib" / version / "site-packages"
    if str(site) != manifest.bytecode_site:
        out.note(f"host bytecode is for {manifest.bytecode_site}, not {site}: not used")
        return
    trees = [
        ctx.setup_dir / "bytecode" / name.removesuffix(".pyti-bytecode")
        for name in manifest.bytecode
    ]
    started = time.monotonic()
    try:
        for tree in trees:
            if tree.is_dir():
                privileges.as_user(
                    user, lambda tree=tree: install.link_bytecode(tree, site) and None
                )
    except OSError as exc:  # only a speed-up: the imports compile as usual
        out.note(f"host bytecode not used: {exc}")
        return
    out.note(f"host bytecode linked in {time.monotonic() - started:.2f} s")


# ---------------------------------------------------------------- test


def extract_sdist(ctx: TaskContext, out: OutputSink, dest: Path) -> Path | None:
    """Extract the package's sdist as pyti; the sdist root, or None without an sdist."""
    manifest = ctx.manifest
    assert manifest is not None
    if manifest.sdist is None:
        return None
    user = ctx.run_as()
    dest.mkdir(parents=True, exist_ok=True)
    if user.uid is not None and user.gid is not None:
        os.chown(dest, user.uid, user.gid)
    archive = ctx.setup_dir / "dists" / manifest.sdist
    started = time.monotonic()
    try:
        privileges.as_user(user, lambda: testrun.safe_extract(archive, dest))
    except (OSError, testrun.UnsafeArchive) as exc:
        raise RuntimeError(f"extracting {manifest.sdist} failed: {exc}") from exc
    out.note(f"extracted {manifest.sdist} as pyti in {time.monotonic() - started:.2f} s")
    return testrun.sdist_root(dest)


def _outcome(runner: str, result: privileges.RunResult, counts: Counter[str], ended: bool) -> str:
    if result.cancelled or result.timed_out:
        return "error"
    code = result.returncode
    bad = counts["failed"] + counts["error"]
    if code == 5:
        return "no-tests"
    if code == 0:
        if not ended and not counts:
            return "error"  # the runner never said it finished, and reported nothing
        return "failed" if bad else "passed"
    if code == 1:
        return "failed" if bad or runner == "pytest" else "error"
    if runner == "pytest" and code == 2 and bad:
        return "failed"  # collection errors (pytest stops before running tests)
    return "error"


def _test(ctx: TaskContext, out: OutputSink, began: float) -> TaskFinished:
    manifest = ctx.manifest
    assert manifest is not None
    layout = install.WorkLayout(ctx.work_dir)
    if not (layout.venv / "bin" / "python").exists():
        out.note("no venv: the install task did not run or failed")
        return finished("test", "error", None, began)
    user = ctx.run_as()
    site_dir = testrun.site_packages(layout.venv)
    root = extract_sdist(ctx, out, layout.src) or layout.src
    layout.src.mkdir(parents=True, exist_ok=True)
    top_levels = testrun.installed_top_levels(site_dir, manifest.package_name)
    moved = testrun.move_aside(root, top_levels, layout.aside)
    if moved:
        out.note(f"flat layout: moved {', '.join(moved)} aside so the installed copy is tested")
    testrun.install_shim(site_dir, layout.shim, user)
    plan = testrun.plan_tests(
        root=root,
        venv=layout.venv,
        site_dir=site_dir,
        runner=manifest.runner,
        runner_args=manifest.runner_args,
        test_args=ctx.test_args,
        top_levels=top_levels,
        moved=moved,
    )
    for note in plan.notes:
        out.note(note)
    out.note(f"prepared the tree in {time.monotonic() - began:.2f} s")
    uid = user.uid if user.uid is not None else os.getuid()
    python = "{}.{}.{}".format(*sys.version_info[:3])
    tz = layout.env().get("TZ", "")
    environment = f"TZ={tz} tzdata={testrun.tzdata_version()} uid={uid} python={python}"
    _finding(ctx, "test", "environment", environment)
    counts: Counter[str] = Counter()
    result, outcome = _execute(
        ctx, out, layout, plan, site_dir=site_dir, top_levels=top_levels, counts=counts
    )
    fallback = _unittest_fallback(ctx, manifest, root, plan) if outcome == "no-tests" else None
    if fallback is not None:
        # pytest's patterns (test_*.py) found nothing, but the project keeps unittest
        # modules its maintainers run directly (decorator: `python tests/test.py`).
        out.note("pytest collected nothing: trying unittest discovery, as `test*.py` allows")
        plan = fallback
        result, outcome = _execute(
            ctx, out, layout, plan, site_dir=site_dir, top_levels=top_levels, counts=counts
        )
    if outcome == "no-tests":
        outcome = _smoke_import(
            ctx,
            out=out,
            layout=layout,
            root=root,
            top_levels=top_levels,
            counts=counts,
            runner=plan.runner,
        )
    return finished("test", outcome, result.returncode, began, dict(counts))


def _execute(
    ctx: TaskContext,
    out: OutputSink,
    layout: install.WorkLayout,
    plan: testrun.TestPlan,
    *,
    site_dir: Path,
    top_levels: tuple[str, ...],
    counts: Counter[str],
) -> tuple[privileges.RunResult, str]:
    """Run `plan` as the package's user, streaming each result; (its result, outcome)."""
    out.note("run: " + " ".join(plan.argv))

    def on_result(line: testrun.ResultLine) -> None:
        counts[line.outcome] += 1
        ctx.send(
            TestResult(
                nodeid=line.nodeid, outcome=line.outcome, duration=line.duration, report=line.report
            )
        )

    read_fd, write_fd = os.pipe()
    reader = testrun.ResultReader(
        read_fd, on_result, lambda kind, detail: _finding(ctx, "test", kind, detail)
    )
    reader.start()
    from . import audit

    env = layout.env(
        {
            audit.ENV_FD: str(write_fd),
            audit.ENV_PIPE_ID: audit.pipe_id(write_fd),
            audit.ENV_SETUP_DIR: str(ctx.setup_dir),
            audit.ENV_TOP_LEVEL: ",".join(top_levels),
            "PYTI_SITE_PACKAGES": str(site_dir),
            "VIRTUAL_ENV": str(layout.venv),
            "PATH": f"{layout.venv / 'bin'}:{privileges.DEFAULT_PATH}",
        }
    )
    launched = time.monotonic()
    try:
        result = privileges.run(
            plan.argv,
            cwd=plan.cwd,
            env=env,
            on_output=out,
            cancelled=ctx.cancelled,
            user=ctx.run_as(),
            pass_fds=[write_fd],
        )
    finally:
        os.close(write_fd)
    reader.join(READER_JOIN)
    stats = reader.stats
    if stats.started_at is not None:
        out.note(f"{plan.runner} started up in {stats.started_at - launched:.2f} s")
    if stats.bad_lines or stats.dropped:
        out.note(f"result pipe: {stats.bad_lines} bad lines, {stats.dropped} dropped")
    outcome = _outcome(plan.runner, result, counts, stats.exitstatus is not None)
    out.note(f"{plan.runner} exit {result.returncode}: {outcome} in {result.duration:.2f} s")
    return result, outcome


def _unittest_fallback(
    ctx: TaskContext, manifest: SetupManifest, root: Path, plan: testrun.TestPlan
) -> testrun.TestPlan | None:
    """A unittest plan for a test directory pytest's patterns miss, when pyti chose
    pytest by itself (no runner, runner arguments or test arguments given), else None."""
    if plan.runner != "pytest" or manifest.runner != "auto":
        return None
    if manifest.runner_args or ctx.test_args:
        return None
    return testrun.unittest_discovery_plan(root, plan)


def _smoke_import(
    ctx: TaskContext,
    *,
    out: OutputSink,
    layout: install.WorkLayout,
    root: Path,
    top_levels: tuple[str, ...],
    counts: Counter[str],
    runner: str,
) -> str:
    """No tests collected: at least import the package's top-level modules."""
    if not top_levels:
        _finding(ctx, "test", "no-tests", f"{runner} collected no tests; no modules to import")
        return "no-tests"
    result = privileges.run(
        [str(layout.venv / "bin" / "python"), "-c", _SMOKE, *top_levels],
        cwd=root,
        env=layout.env({"PATH": f"{layout.venv / 'bin'}:{privileges.DEFAULT_PATH}"}),
        on_output=out,
        cancelled=ctx.cancelled,
        user=ctx.run_as(),
        timeout=600,
    )
    names = ", ".join(top_levels)
    if result.ok:
        _finding(ctx, "test", "no-tests", f"{runner} collected no tests; import of {names} works")
        return "no-tests"
    counts["failed"] += 1
    ctx.send(
        TestResult(
            nodeid=f"<pyti import {names}>",
            outcome="failed",
            duration=result.duration,
            report="importing the installed package failed; see the test output",
        )
    )
    _finding(ctx, "test", "no-tests", f"{runner} collected no tests; import of {names} fails")
    return "failed"
