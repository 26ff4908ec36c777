"""The results store: SQLite in WAL mode, one row per message as frames arrive.

Rows are committed one message at a time (autocommit), so a crash of the host
loses nothing already received (output past its 512 KiB head is the exception: its
tail is written every 0.5 s and at the end, see OUTPUT_HEAD). In WAL mode with
`synchronous=NORMAL` a commit appends to the WAL without an fsync. Measured on
this machine (2 cores, ext4): 26-37 µs per message committed alone (up to 76 µs
while other VMs load both cores), 5-6 µs when batched in one transaction; output
past the head 4 µs a chunk; 10,000 test rows load in 26-35 ms. At the channel's
sustained cap (5,000 frames/s) per-message commits cost at most 15-40% of a core,
and a real test run sends far fewer, so batching by time was not worth its window
of loss. That is also why `record` is called straight from the trio loop: each
call is a short write that never waits on the disk (the `busy_timeout` only bites
if two pyti processes commit at the very same moment).

The schema carries a version (`PRAGMA user_version`); `MIGRATIONS` are applied in
order at open. A run left `running` by a process that is gone (its pid, the pid's
start time and the boot id no longer match) is marked `interrupted` at open.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pyti import migrations, paths
from pyti.errors import StoreError
from pyti.outcomes import TEST_OUTCOMES, Outcome
from pyti.protocol.messages import (
    Finding,
    Hello,
    Metadata,
    Output,
    TaskFinished,
    TaskStarted,
    TestResult,
    truncate_text,
)
from pyti.results import (
    FindingRecord,
    OutputRecord,
    RunEnd,
    RunInfo,
    RunResult,
    RunSummary,
    TaskRecord,
    TestRecord,
)

log = logging.getLogger(__name__)

# Output kept per (run, task, stream): the head, row by row as it arrives, then a tail held
# in memory and written to one row at most every TAIL_FLUSH seconds and when the run ends;
# the middle is counted. The start says what ran, the end how it failed. Rewriting a tail
# row per chunk instead measured 150 µs a 4 KiB chunk, too slow for an output flood.
OUTPUT_HEAD = 512 * 1024
OUTPUT_TAIL = 512 * 1024
TAIL_FLUSH = 0.5
# Per-run caps on what the guest can make the store keep (the channel caps bytes and rate;
# these cap rows). Past MAX_TESTS and MAX_FINDINGS rows are counted, not stored; past the
# report budget a test's report is cut to REPORT_CUT characters.
MAX_TESTS = 200_000
MAX_FINDINGS = 1_000
REPORT_BUDGET = 64 * 1024 * 1024
REPORT_CUT = 1024
CONSOLE_CAP = 1 << 20  # characters of console kept per run: head and tail
ERROR_CAP = 8192

MIGRATIONS = migrations.MIGRATIONS  # src/pyti/migrations/NNNN_*.sql
SCHEMA_VERSION = len(MIGRATIONS)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot: tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    return not start or process_start(pid) == start


class Store:
    """One connection to the results database. Not thread-safe: use from one thread."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else paths.store_path()
        self._outputs: dict[int, dict[tuple[str, str], _KeptOutput]] = {}
        self._budgets: dict[int, _RunBudget] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the results store {self.path}: {exc}") from exc
        try:
            self._setup()
            self._reap_stale()
        except BaseException:
            self._db.close()
            raise

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Write what is still only in memory (output tails), then close."""
        try:
            for run_id in list(self._outputs):
                self._flush_tails(run_id)
        except sqlite3.Error as exc:
            log.warning("results store %s: output tails not written: %s", self.path, exc)
        finally:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"results store {self.path}: {doing} failed: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _setup(self) -> None:
        with self._errors("opening"):
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            while self._migrate_one():
                pass

    def _migrate_one(self) -> bool:
        """Apply the next migration; False when the schema is current.

        The version is read inside the write transaction, so two pyti processes
        opening a new store at once do not both apply the same step.
        """
        with self._transaction():
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the results store {self.path} has schema {version}, newer than this"
                    f" pyti's {SCHEMA_VERSION}; upgrade pyti or set PYTI_DATA_DIR"
                )
            if version == SCHEMA_VERSION:
                return False
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    self._db.execute(statement)
            # PRAGMA takes no parameters; the number is ours, not input.
            self._db.execute(f"PRAGMA user_version = {version + 1}")
        log.info("results store %s migrated to schema %d", self.path, version + 1)
        return True

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _reap_stale(self) -> None:
        """Mark `interrupted` the runs whose process died without finishing them."""
        me = boot_id()
        with self._errors("checking unfinished runs"):
            rows = self._db.execute(
                "SELECT id, pid, pid_start, boot_id FROM runs WHERE outcome IS NULL"
            ).fetchall()
            for run_id, pid, start, boot in rows:
                if boot == me and _alive(pid, start):
                    continue
                log.info("run %d was left running by a dead process: interrupted", run_id)
                self._end(
                    run_id,
                    RunEnd(
                        outcome=Outcome.INTERRUPTED,
                        error=f"the pyti process (pid {pid}) ended without finishing the run",
                    ),
                    only_unfinished=True,
                )

    # -- writing -------------------------------------------------------------------

    def start_run(self, info: RunInfo, *, started_at: float | None = None) -> int:
        pid = os.getpid()
        with self._errors("starting a run"):
            cursor = self._db.execute(
                """INSERT INTO runs (spec, package_name, package_version, python, image_id,
                    setup_digest, pyti_version, accelerator, resolved, inputs, started_at,
                    pid, pid_start, boot_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    info.spec,
                    info.package_name,
                    info.package_version,
                    info.python,
                    info.image_id,
                    info.setup_digest,
                    info.pyti_version,
                    info.accelerator,
                    _dumps(info.resolved),
                    _dumps(info.inputs),
                    time.time() if started_at is None else started_at,
                    pid,
                    process_start(pid),
                    boot_id(),
                ),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def update_info(self, run_id: int, **fields: Any) -> None:
        """Fill in inputs learnt after the start (image id, resolved versions, ...)."""
        allowed = set(RunInfo.__dataclass_fields__) - {"spec"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not run info fields: {sorted(unknown)}")
        for name, value in fields.items():
            stored = _dumps(value) if name in ("resolved", "inputs") else value
            with self._errors("updating a run"):
                # Column names come from the allow-list above, never from input.
                self._db.execute(f"UPDATE runs SET {name} = ? WHERE id = ?", (stored, run_id))

    def record(self, run_id: int, message: object) -> None:
        """Store one message from the guest (messages without a row are ignored)."""
        with self._errors("recording a message"):
            match message:
                case TestResult():
                    self._record_test(run_id, message)
                case Output():
                    self._record_output(run_id, message)
                case Finding():
                    self._record_finding(run_id, message)
                case TaskStarted():
                    self._db.execute(
                        """INSERT INTO tasks (run_id, seq, name, outcome)
                        VALUES (?, (SELECT count(*) FROM tasks WHERE run_id = ?), ?, 'running')
                        ON CONFLICT (run_id, name) DO NOTHING""",
                        (run_id, run_id, message.task),
                    )
                case TaskFinished():
                    self._db.execute(
                        """INSERT INTO tasks (run_id, seq, name, outcome, exit_code, duration,
                            counts)
                        VALUES (?, (SELECT count(*) FROM tasks WHERE run_id = ?), ?, ?, ?, ?, ?)
                        ON CONFLICT (run_id, name) DO UPDATE SET outcome = excluded.outcome,
                            exit_code = excluded.exit_code, duration = excluded.duration,
                            counts = excluded.counts""",
                        (
                            run_id,
                            run_id,
                            message.task,
                            message.outcome,
                            message.exit_code,
                            message.duration,
                            _dumps(message.counts),
                        ),
                    )
                case Hello():
                    # The guest is untrusted: what it says fills blanks, never overwrites.
                    self._db.execute(
                        """UPDATE runs SET agent_version = ?,
                            python = CASE python WHEN '' THEN ? ELSE python END
                        WHERE id = ?""",
                        (message.agent_version, message.python_version, run_id),
                    )
                case Metadata():
                    self._db.execute(
                        """UPDATE runs SET
                            package_name = CASE package_name WHEN '' THEN ? ELSE package_name END,
                            package_version =
                                CASE package_version WHEN '' THEN ? ELSE package_version END
                        WHERE id = ?""",
                        (message.name, message.version, run_id),
                    )
                case _:
                    pass  # Heartbeat, Goodbye, UnknownMessage: nothing to keep

    def _budget(self, run_id: int) -> _RunBudget:
        budget = self._budgets.get(run_id)
        if budget is None:
            budget = self._budgets[run_id] = _RunBudget()
        return budget

    def _record_test(self, run_id: int, message: TestResult) -> None:
        budget = self._budget(run_id)
        if budget.tests >= MAX_TESTS:
            self._db.execute(
                "UPDATE runs SET dropped_tests = dropped_tests + 1 WHERE id = ?", (run_id,)
            )
            return
        report = message.report
        if budget.report_chars + len(report) > REPORT_BUDGET:
            report = truncate_text(report, REPORT_CUT)
        budget.tests += 1
        budget.report_chars += len(report)
        self._db.execute(
            "INSERT INTO tests (run_id, nodeid, outcome, duration, report) VALUES (?, ?, ?, ?, ?)",
            (run_id, message.nodeid, message.outcome, message.duration, report),
        )

    def _record_finding(self, run_id: int, message: Finding) -> None:
        budget = self._budget(run_id)
        if budget.findings >= MAX_FINDINGS:
            self._db.execute(
                "UPDATE runs SET dropped_findings = dropped_findings + 1 WHERE id = ?", (run_id,)
            )
            return
        budget.findings += 1
        self._db.execute(
            "INSERT INTO findings (run_id, kind, detail, task) VALUES (?, ?, ?, ?)",
            (run_id, message.kind, message.detail, message.task),
        )

    def _record_output(self, run_id: int, message: Output) -> None:
        streams = self._outputs.setdefault(run_id, {})
        kept = streams.get((message.task, message.stream))
        if kept is None:
            kept = streams[(message.task, message.stream)] = _KeptOutput()
        data = message.data
        room = OUTPUT_HEAD - kept.head
        if room > 0 and data:
            head, data = data[:room], data[room:]
            self._insert_output(run_id, message, head)
            kept.head += len(head)
        if not data:
            return
        if kept.row == 0:
            # The row after the head: holds the tail and how many bytes were dropped.
            kept.row = self._insert_output(run_id, message, b"")
        kept.tail += data
        if len(kept.tail) > OUTPUT_TAIL:
            cut = len(kept.tail) - OUTPUT_TAIL
            kept.dropped += cut
            del kept.tail[:cut]
        kept.dirty = True
        if time.monotonic() - kept.flushed_at >= TAIL_FLUSH:
            self._flush_tail(kept)

    def _flush_tail(self, kept: _KeptOutput) -> None:
        self._db.execute(
            "UPDATE outputs SET data = ?, dropped = ? WHERE id = ?",
            (bytes(kept.tail), kept.dropped, kept.row),
        )
        kept.dirty = False
        kept.flushed_at = time.monotonic()

    def _flush_tails(self, run_id: int) -> None:
        self._budgets.pop(run_id, None)
        for kept in self._outputs.pop(run_id, {}).values():
            if kept.dirty:
                self._flush_tail(kept)

    def _insert_output(self, run_id: int, message: Output, data: bytes) -> int:
        cursor = self._db.execute(
            "INSERT INTO outputs (run_id, task, stream, data) VALUES (?, ?, ?, ?)",
            (run_id, message.task, message.stream, data),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish_run(self, run_id: int, end: RunEnd) -> RunResult:
        """Record how the run ended and return it as stored."""
        with self._errors("finishing a run"):
            self._flush_tails(run_id)
            self._end(run_id, end, only_unfinished=False)
        return self.load_run(run_id)

    def mark_interrupted(self, run_id: int, reason: str = "interrupted by the user") -> None:
        """End a run cut short (Ctrl-C); a run already finished keeps its outcome."""
        with self._errors("marking a run interrupted"):
            self._flush_tails(run_id)
            self._end(
                run_id, RunEnd(outcome=Outcome.INTERRUPTED, error=reason), only_unfinished=True
            )

    def _end(self, run_id: int, end: RunEnd, *, only_unfinished: bool) -> None:
        guard = " AND outcome IS NULL" if only_unfinished else ""
        self._db.execute(
            """UPDATE runs SET finished_at = ?, outcome = ?, exit_code = ?, vm_end = ?,
                error = ?, console = CASE ? WHEN '' THEN console ELSE ? END
            WHERE id = ?"""
            + guard,
            (
                time.time(),
                end.outcome.value,
                end.outcome.exit_code,
                end.vm_end,
                truncate_text(end.error, ERROR_CAP),
                end.console,
                truncate_text(end.console, CONSOLE_CAP),
                run_id,
            ),
        )

    # -- reading -------------------------------------------------------------------

    def list_runs(self, limit: int = 20) -> list[RunSummary]:
        """The newest runs first, with their test counts."""
        with self._errors("listing runs"):
            rows = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?", (max(limit, 0),)
            ).fetchall()
            summaries = []
            for row in rows:
                counts = dict.fromkeys(TEST_OUTCOMES, 0)
                for outcome, number in self._db.execute(
                    "SELECT outcome, count(*) FROM tests WHERE run_id = ? GROUP BY outcome",
                    (row[0],),
                ):
                    counts[outcome] = number
                summaries.append(_summary(row, counts))
        return summaries

    def load_run(self, run_id: int) -> RunResult:
        with self._errors("loading a run"):
            row = self._db.execute(
                f"SELECT {_RUN_COLUMNS}, vm_end, error, console, agent_version,"
                " dropped_tests, dropped_findings FROM runs WHERE id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise KeyError(run_id)
            tests = tuple(
                TestRecord(nodeid=n, outcome=o, duration=d, report=r)
                for n, o, d, r in self._db.execute(
                    "SELECT nodeid, outcome, duration, report FROM tests"
                    " WHERE run_id = ? ORDER BY id",
                    (run_id,),
                )
            )
            tasks = tuple(
                TaskRecord(name=n, outcome=o, exit_code=e, duration=d, counts=json.loads(c))
                for n, o, e, d, c in self._db.execute(
                    "SELECT name, outcome, exit_code, duration, counts FROM tasks"
                    " WHERE run_id = ? ORDER BY seq",
                    (run_id,),
                )
            )
            findings = tuple(
                FindingRecord(kind=k, detail=d, task=t)
                for k, d, t in self._db.execute(
                    "SELECT kind, detail, task FROM findings WHERE run_id = ? ORDER BY id",
                    (run_id,),
                )
            )
            outputs = self._load_outputs(run_id)
        summary = _summary(row[:-6], {})
        vm_end, error, console, agent_version, dropped_tests, dropped_findings = row[-6:]
        return RunResult(
            id=summary.id,
            info=summary.info,
            started_at=summary.started_at,
            finished_at=summary.finished_at,
            outcome=summary.outcome,
            vm_end=vm_end,
            error=error,
            console=console,
            agent_version=agent_version,
            tests=tests,
            tasks=tasks,
            findings=findings,
            outputs=outputs,
            dropped_tests=dropped_tests,
            dropped_findings=dropped_findings,
        )

    def _load_outputs(self, run_id: int) -> tuple[OutputRecord, ...]:
        joined: dict[tuple[str, str], list[Any]] = {}  # -> [chunks, dropped]
        for task, stream, data, dropped in self._db.execute(
            "SELECT task, stream, data, dropped FROM outputs WHERE run_id = ? ORDER BY id",
            (run_id,),
        ):
            entry = joined.setdefault((task, stream), [[], 0])
            if dropped:
                entry[0].append(OMITTED % dropped)
            entry[0].append(data)
            entry[1] += dropped
        records = []
        for (task, stream), (chunks, dropped) in joined.items():
            # Chunks are bytes split anywhere: decode once joined, so no character breaks
            # (except at the omission, where a character may be cut in two).
            text = b"".join(chunks).decode("utf-8", errors="replace")
            records.append(
                OutputRecord(task=task, stream=stream, text=text, truncated=bool(dropped))
            )
        return tuple(records)


OMITTED = b"\n[... %d bytes omitted ...]\n"


@dataclass
class _RunBudget:
    """Rows and report characters one run has stored so far (for the per-run caps)."""

    tests: int = 0
    findings: int = 0
    report_chars: int = 0


@dataclass
class _KeptOutput:
    """One (run, task, stream) past its head: the tail in memory and the row it goes to."""

    head: int = 0  # bytes written as head rows
    row: int = 0  # the tail's row id, 0 until the head is full
    tail: bytearray = field(default_factory=bytearray)
    dropped: int = 0
    dirty: bool = False
    flushed_at: float = 0.0  # time.monotonic() of the last write of the tail


_RUN_COLUMNS = (
    "id, spec, package_name, package_version, python, image_id, setup_digest, pyti_version,"
    " accelerator, resolved, inputs, started_at, finished_at, outcome"
)


def _summary(row: tuple[Any, ...], counts: dict[str, int]) -> RunSummary:
    (
        run_id,
        spec,
        name,
        version,
        python,
        image_id,
        digest,
        pyti_version,
        accel,
        resolved,
        inputs,
        started,
        finished,
        outcome,
    ) = row
    info = RunInfo(
        spec=spec,
        package_name=name,
        package_version=version,
        python=python,
        image_id=image_id,
        setup_digest=digest,
        pyti_version=pyti_version,
        accelerator=accel,
        resolved=json.loads(resolved),
        inputs=json.loads(inputs),
    )
    return RunSummary(
        id=run_id,
        info=info,
        started_at=started,
        finished_at=finished,
        outcome=None if outcome is None else _outcome(outcome),
        counts=counts,
    )


def _outcome(value: str) -> Outcome:
    try:
        return Outcome(value)
    except ValueError:  # written by a newer pyti with an outcome this one lacks
        return Outcome.ERROR


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True)
