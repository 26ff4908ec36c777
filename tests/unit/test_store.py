from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from pyti import store as store_module
from pyti.errors import StoreError
from pyti.outcomes import Outcome
from pyti.protocol.messages import (
    Finding,
    Goodbye,
    Heartbeat,
    Hello,
    Metadata,
    Output,
    TaskFinished,
    TaskStarted,
    TestResult,
)
from pyti.results import RunEnd, RunInfo
from pyti.store import SCHEMA_VERSION, Store

INFO = RunInfo(
    spec="iniconfig==2.3.1",
    package_name="iniconfig",
    package_version="2.3.1",
    python="3.11",
    image_id="img-1",
    setup_digest="sha256:abc",
    pyti_version="0.1.0",
    accelerator="tcg",
    resolved={"iniconfig": "2.3.1", "pytest": "9.2.0"},
    inputs={"image": "img-1", "setup": "sha256:abc"},
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "runs.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    with Store(db) as opened:
        yield opened


@contextmanager
def _raw(db: Path) -> Iterator[sqlite3.Connection]:
    """A second connection, committed and closed at the end (sqlite3's own `with` only commits)."""
    with closing(sqlite3.connect(db)) as connection, connection:
        yield connection


def _messages() -> list[object]:
    return [
        Hello(
            protocol_version=1,
            agent_version="0.1.0",
            python_version="3.11.2",
            image_id="img-1",
            boot_id="b",
        ),
        TaskStarted(task="install"),
        Output(task="install", stream="stdout", data=b"Installed 1 package"),
        TaskFinished(task="install", outcome="passed", exit_code=0, duration=1.5),
        TaskStarted(task="test"),
        Heartbeat(seq=1),
        TestResult(nodeid="tests/test_a.py::test_ok", outcome="passed", duration=0.01),
        TestResult(
            nodeid="tests/test_a.py::test_bad", outcome="failed", duration=0.02, report="assert 0"
        ),
        Finding(kind="network", detail="connect 1.1.1.1:53", task="test"),
        Output(task="test", stream="stdout", data="caf\u00e9".encode()[:4]),
        Output(task="test", stream="stdout", data="caf\u00e9".encode()[4:]),
        TaskFinished(
            task="test",
            outcome="failed",
            exit_code=1,
            duration=3.0,
            counts={"passed": 1, "failed": 1},
        ),
        Goodbye(),
    ]


def test_a_new_store_is_in_wal_mode_at_the_latest_schema(store: Store, db: Path) -> None:
    assert db.exists()
    assert store.schema_version() == SCHEMA_VERSION
    with _raw(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_defaults_to_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTI_DATA_DIR", str(tmp_path / "xdg"))
    with Store() as opened:
        assert opened.path == tmp_path / "xdg" / "runs.sqlite3"
    assert opened.path.exists()


def test_a_run_round_trips_through_the_store(store: Store) -> None:
    run_id = store.start_run(INFO, started_at=1000.0)
    for message in _messages():
        store.record(run_id, message)
    result = store.finish_run(
        run_id, RunEnd(outcome=Outcome.TEST_FAILED, vm_end="normal", console="boot ok")
    )
    assert result.id == run_id
    assert result.info == INFO
    assert result.started_at == 1000.0
    assert result.finished_at is not None
    assert result.outcome is Outcome.TEST_FAILED
    assert result.exit_code == 1
    assert not result
    assert result.vm_end == "normal"
    assert result.console == "boot ok"
    assert result.agent_version == "0.1.0"
    assert [(t.nodeid, t.outcome, t.report) for t in result.tests] == [
        ("tests/test_a.py::test_ok", "passed", ""),
        ("tests/test_a.py::test_bad", "failed", "assert 0"),
    ]
    assert [(t.name, t.outcome, t.exit_code, t.duration) for t in result.tasks] == [
        ("install", "passed", 0, 1.5),
        ("test", "failed", 1, 3.0),
    ]
    assert result.tasks[1].counts == {"passed": 1, "failed": 1}
    assert [(f.kind, f.detail, f.task) for f in result.findings] == [
        ("network", "connect 1.1.1.1:53", "test")
    ]
    # A character split across two chunks comes back whole.
    assert [(o.task, o.stream, o.text, o.truncated) for o in result.outputs] == [
        ("install", "stdout", "Installed 1 package", False),
        ("test", "stdout", "caf\u00e9", False),
    ]
    assert result.counts == {
        "passed": 1,
        "failed": 1,
        "error": 0,
        "skipped": 0,
        "xfailed": 0,
        "xpassed": 0,
    }


def test_rows_are_visible_to_another_connection_as_they_arrive(store: Store, db: Path) -> None:
    run_id = store.start_run(INFO)
    store.record(run_id, TestResult(nodeid="t::a", outcome="passed", duration=0.1))
    with _raw(db) as other:
        assert other.execute("SELECT nodeid FROM tests").fetchall() == [("t::a",)]
        assert other.execute("SELECT outcome FROM runs").fetchall() == [(None,)]


def test_a_running_task_is_recorded_at_its_start(store: Store) -> None:
    run_id = store.start_run(INFO)
    store.record(run_id, TaskStarted(task="install"))
    (task,) = store.load_run(run_id).tasks
    assert (task.name, task.outcome, task.exit_code) == ("install", "running", None)


def test_the_guest_fills_blanks_but_never_overwrites(store: Store) -> None:
    hello = Hello(
        protocol_version=1, agent_version="9", python_version="3.99", image_id="x", boot_id="y"
    )
    meta = Metadata(name="evil", version="6.6.6", metadata=b"")
    known = store.start_run(INFO)
    blank = store.start_run(RunInfo(spec="./pkg.tar.gz"))
    for run_id in (known, blank):
        store.record(run_id, hello)
        store.record(run_id, meta)
    kept = store.load_run(known).info
    assert (kept.python, kept.package_name, kept.package_version) == ("3.11", "iniconfig", "2.3.1")
    filled = store.load_run(blank).info
    assert (filled.python, filled.package_name, filled.package_version) == (
        "3.99",
        "evil",
        "6.6.6",
    )


@pytest.fixture
def small_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "OUTPUT_HEAD", 10)
    monkeypatch.setattr(store_module, "OUTPUT_TAIL", 8)


CHUNKS = (b"abcdef", b"ghijkl", b"mnop", b"qrst", b"uvwx", b"yz")


@pytest.mark.usefixtures("small_output")
def test_output_keeps_head_and_tail_per_task_and_stream(store: Store, db: Path) -> None:
    run_id = store.start_run(INFO)
    for chunk in CHUNKS:
        store.record(run_id, Output(task="test", stream="stdout", data=chunk))
    store.record(run_id, Output(task="test", stream="stderr", data=b"err"))
    store.finish_run(run_id, RunEnd(outcome=Outcome.PASSED))
    stdout, stderr = store.load_run(run_id).outputs
    assert stdout.truncated
    assert stdout.text == "abcdefghij\n[... 8 bytes omitted ...]\nstuvwxyz"
    assert (stderr.text, stderr.truncated) == ("err", False)
    with _raw(db) as raw:
        stored = raw.execute("SELECT sum(length(data)) FROM outputs WHERE stream = 'stdout'")
        assert stored.fetchone()[0] == 18


@pytest.mark.usefixtures("small_output")
def test_the_tail_is_written_by_time_and_at_close(
    store: Store, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def other_view() -> str:
        with Store(db) as other:
            return other.load_run(run_id).outputs[0].text

    run_id = store.start_run(INFO)
    monkeypatch.setattr(store_module, "TAIL_FLUSH", 0.0)
    for chunk in CHUNKS[:4]:
        store.record(run_id, Output(task="test", stream="stdout", data=chunk))
    assert other_view() == "abcdefghij\n[... 2 bytes omitted ...]\nmnopqrst"
    monkeypatch.setattr(store_module, "TAIL_FLUSH", 3600.0)
    for chunk in CHUNKS[4:]:
        store.record(run_id, Output(task="test", stream="stdout", data=chunk))
    assert other_view() == "abcdefghij\n[... 2 bytes omitted ...]\nmnopqrst"  # not yet
    store.close()  # e.g. the run loop died: what is in memory is still written
    assert other_view() == "abcdefghij\n[... 8 bytes omitted ...]\nstuvwxyz"


def test_output_under_the_cap_is_whole(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "OUTPUT_HEAD", 4)
    monkeypatch.setattr(store_module, "OUTPUT_TAIL", 100)
    run_id = store.start_run(INFO)
    for chunk in (b"abc", b"def", b"", b"ghi"):
        store.record(run_id, Output(task="install", stream="stdout", data=chunk))
    store.mark_interrupted(run_id)
    (out,) = store.load_run(run_id).outputs
    assert (out.text, out.truncated) == ("abcdefghi", False)


def test_update_info_fills_in_inputs_learnt_later(store: Store) -> None:
    run_id = store.start_run(RunInfo(spec="iniconfig"))
    store.update_info(run_id, image_id="img-2", resolved={"iniconfig": "2.3.1"})
    info = store.load_run(run_id).info
    assert (info.image_id, dict(info.resolved)) == ("img-2", {"iniconfig": "2.3.1"})
    with pytest.raises(ValueError, match="spec"):
        store.update_info(run_id, spec="other")


def test_mark_interrupted_keeps_a_finished_outcome(store: Store) -> None:
    done = store.start_run(INFO)
    store.finish_run(done, RunEnd(outcome=Outcome.PASSED, vm_end="normal"))
    cut = store.start_run(INFO)
    for run_id in (done, cut):
        store.mark_interrupted(run_id)
    assert store.load_run(done).outcome is Outcome.PASSED
    interrupted = store.load_run(cut)
    assert interrupted.outcome is Outcome.INTERRUPTED
    assert interrupted.exit_code == 130
    assert interrupted.error == "interrupted by the user"


def test_list_runs_newest_first_with_counts(store: Store) -> None:
    first = store.start_run(INFO)
    store.record(first, TestResult(nodeid="t::a", outcome="passed", duration=0.1))
    store.record(first, TestResult(nodeid="t::b", outcome="skipped", duration=0.1))
    store.finish_run(first, RunEnd(outcome=Outcome.PASSED))
    second = store.start_run(INFO)
    runs = store.list_runs(10)
    assert [r.id for r in runs] == [second, first]
    assert runs[0].outcome is None
    assert runs[1].outcome is Outcome.PASSED
    assert runs[1].counts["passed"] == 1
    assert runs[1].counts["skipped"] == 1
    assert [r.id for r in store.list_runs(1)] == [second]


def test_load_run_of_an_unknown_id_raises_key_error(store: Store) -> None:
    with pytest.raises(KeyError):
        store.load_run(42)


def test_a_run_left_by_a_dead_process_is_interrupted_at_open(db: Path) -> None:
    with Store(db) as first:
        run_id = first.start_run(INFO)
        mine = first.start_run(INFO)
    # Make the first run belong to a process that has exited.
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    with _raw(db) as raw:
        raw.execute("UPDATE runs SET pid = ? WHERE id = ?", (int(child.stdout), run_id))
    with Store(db) as second:
        dead = second.load_run(run_id)
        assert dead.outcome is Outcome.INTERRUPTED
        assert f"pid {int(child.stdout)}" in dead.error
        assert second.load_run(mine).outcome is None  # this process is alive


@pytest.mark.parametrize(
    ("column", "value"),
    [("boot_id", "another-boot"), ("pid_start", "1")],
)
def test_a_run_from_another_boot_or_a_reused_pid_is_interrupted(
    db: Path, column: str, value: str
) -> None:
    with Store(db) as first:
        run_id = first.start_run(INFO)
    with _raw(db) as raw:
        raw.execute(f"UPDATE runs SET {column} = ? WHERE id = ?", (value, run_id))
    with Store(db) as second:
        assert second.load_run(run_id).outcome is Outcome.INTERRUPTED


def test_migrations_apply_in_order_from_an_older_schema(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(db):
        pass
    monkeypatch.setattr(
        store_module,
        "MIGRATIONS",
        (*store_module.MIGRATIONS, "ALTER TABLE runs ADD COLUMN note TEXT NOT NULL DEFAULT ''"),
    )
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Store(db) as upgraded:
        assert upgraded.schema_version() == SCHEMA_VERSION + 1
    with _raw(db) as raw:
        columns = [row[1] for row in raw.execute("PRAGMA table_info(runs)")]
    assert "note" in columns


def test_a_store_from_a_newer_pyti_is_refused(db: Path) -> None:
    with Store(db):
        pass
    with _raw(db) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    with pytest.raises(StoreError, match="newer"):
        Store(db)


def test_an_unopenable_store_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open"):
        Store(blocker / "runs.sqlite3")


def test_a_corrupt_store_is_a_store_error(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        Store(db)


def test_process_start_tells_processes_apart() -> None:
    assert store_module.process_start(os.getpid()) != ""
    assert store_module.process_start(os.getpid()) == store_module.process_start(os.getpid())
    assert store_module.process_start(1 << 30) == ""


def test_tests_and_findings_past_the_caps_are_counted_not_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_TESTS", 3)
    monkeypatch.setattr(store_module, "MAX_FINDINGS", 2)
    run_id = store.start_run(INFO)
    for i in range(5):
        store.record(run_id, TestResult(nodeid=f"t::{i}", outcome="passed", duration=0.0))
        store.record(run_id, Finding(kind="network", detail=str(i)))
    result = store.finish_run(run_id, RunEnd(outcome=Outcome.PASSED))
    assert [t.nodeid for t in result.tests] == ["t::0", "t::1", "t::2"]
    assert [f.detail for f in result.findings] == ["0", "1"]
    assert (result.dropped_tests, result.dropped_findings) == (2, 3)
    assert result.to_json()["dropped"] == {"tests": 2, "findings": 3}


def test_reports_past_the_run_budget_are_cut(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "REPORT_BUDGET", 100)
    monkeypatch.setattr(store_module, "REPORT_CUT", 40)
    run_id = store.start_run(INFO)
    for i in range(3):
        store.record(
            run_id, TestResult(nodeid=f"t::{i}", outcome="failed", duration=0.0, report="x" * 60)
        )
    reports = [t.report for t in store.load_run(run_id).tests]
    assert reports[0] == "x" * 60
    assert [len(r) for r in reports[1:]] == [40, 40]
    assert "omitted" in reports[1]


def test_stores_opened_at_once_migrate_a_new_database_once(db: Path) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        barrier.wait()
        try:
            with Store(db) as opened:
                opened.start_run(INFO)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Store(db) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert len(store.list_runs(10)) == 4


def test_migrations_are_numbered_sql_files_in_order() -> None:
    from pyti import migrations

    scripts = migrations.load()
    assert len(scripts) == SCHEMA_VERSION >= 2
    assert scripts[0].startswith("-- 1: ")
    assert all("CREATE" in s or "ALTER" in s for s in scripts)
