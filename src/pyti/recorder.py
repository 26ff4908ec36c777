"""The results side of one run, as one object the orchestration feeds.

`run.py` makes a `RunRecorder` when the run starts, passes it every host phase and
every guest message, then calls exactly one of `finish` (the VM ended, however),
`fail` (an exception cut the run short) or `interrupt` (Ctrl-C). The recorder
writes the rows, drives the renderer, picks the outcome with `classify`, and
returns the stored `RunResult` for the reports::

    with Store() as store, make_renderer(console, sys.stdout) as renderer:
        recorder = RunRecorder(store, renderer, RunInfo(spec=spec, accelerator=accel))
        recorder.phase(Phase.BOOT)
        async for message in channel:
            recorder.message(message)
        result = recorder.finish(VmEnd.from_channel(channel.end.kind), console=console_text)
    write_reports(result, json_path=..., junit_path=...)

Every call is synchronous and short (one SQLite commit, see store.py), so it runs
straight from the trio loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pyti.outcomes import Outcome, VmEnd, classify, outcome_for_error
from pyti.protocol.messages import Finding, TaskFinished
from pyti.render import Phase, Renderer
from pyti.results import RunEnd, RunInfo, RunResult
from pyti.store import Store

log = logging.getLogger(__name__)

MAX_KINDS = 100  # distinct finding kinds remembered for `classify` (the guest picks kinds)


class RunRecorder:
    def __init__(
        self,
        store: Store,
        renderer: Renderer,
        info: RunInfo,
        *,
        requested: Sequence[str] = ("install", "test"),
    ) -> None:
        self.store = store
        self.renderer = renderer
        self.requested = tuple(requested)
        self.run_id = store.start_run(info)
        self.result: RunResult | None = None
        self._tasks: list[tuple[str, str]] = []
        self._findings: dict[str, None] = {}  # distinct kinds, in order of arrival
        log.debug("run %d started: %s", self.run_id, info.spec)

    def update_info(self, **fields: Any) -> None:
        """Inputs learnt after the start: image id, resolved versions, setup digest, ..."""
        self.store.update_info(self.run_id, **fields)

    def phase(self, phase: Phase, detail: str = "") -> None:
        self.renderer.phase(phase, detail)

    def message(self, message: object) -> None:
        """One message from the guest: stored first, then shown."""
        self.store.record(self.run_id, message)
        match message:
            case TaskFinished():
                self._tasks.append((message.task, message.outcome))
            case Finding() if len(self._findings) < MAX_KINDS:
                self._findings.setdefault(message.kind)
            case _:
                pass
        self.renderer.message(message)

    def host_finding(self, kind: str, detail: str, task: str = "") -> None:
        """A finding the host made (e.g. "oom" or "disk-full" read off the console)."""
        self.message(Finding(kind=kind, detail=detail, task=task))
        self._findings.setdefault(kind)  # ours: counts even when the guest used up MAX_KINDS

    def finish(self, vm_end: VmEnd | str, *, error: str = "", console: str = "") -> RunResult:
        """The VM ended: classify what the guest reported and how it ended."""
        outcome = classify(self._tasks, vm_end, self._findings, requested=self.requested)
        return self._end(RunEnd(outcome=outcome, vm_end=str(vm_end), error=error, console=console))

    def fail(self, error: BaseException, *, vm_end: str = "", console: str = "") -> RunResult:
        """An exception cut the run short; its class picks the outcome."""
        outcome = outcome_for_error(error)
        detail = str(error) or type(error).__name__
        return self._end(RunEnd(outcome=outcome, vm_end=vm_end, error=detail, console=console))

    def interrupt(self, *, console: str = "") -> RunResult:
        """Ctrl-C: the run is stored as `interrupted` (exit 130)."""
        end = RunEnd(
            outcome=Outcome.INTERRUPTED,
            vm_end=str(VmEnd.CANCELLED),
            error="interrupted by the user",
            console=console,
        )
        return self._end(end)

    def _end(self, end: RunEnd) -> RunResult:
        if self.result is not None:
            return self.result  # the first end wins: a cleanup path may call again
        self.result = self.store.finish_run(self.run_id, end)
        log.debug("run %d ended: %s", self.run_id, end.outcome)
        self.renderer.finish(self.result)
        return self.result
