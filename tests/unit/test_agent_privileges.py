"""The agent's careful file access and process-group handling, on the host."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import pytest

AGENT_DIR = Path(__file__).resolve().parents[2] / "guest_agent"
sys.path.insert(0, str(AGENT_DIR))

from pyti_agent import privileges  # noqa: E402


def test_read_capped_reads_a_small_regular_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"hello")

    assert privileges.read_capped(tmp_path / "f", 5) == b"hello"


def test_read_capped_refuses_symlinks_fifos_and_oversized_files(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 10)
    (tmp_path / "link").symlink_to(tmp_path / "big")
    os.mkfifo(tmp_path / "fifo")  # opening it for reading must not block

    for name, limit in (("big", 9), ("link", 100), ("fifo", 100)):
        with pytest.raises(OSError):
            privileges.read_capped(tmp_path / name, limit)


def test_as_user_without_a_switch_runs_in_process(tmp_path: Path) -> None:
    target = tmp_path / "out"

    privileges.as_user(privileges.User(uid=None, gid=None), lambda: target.write_text("x"))

    assert target.read_text() == "x"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_as_user_writes_with_the_users_rights() -> None:
    # pytest's tmp_path sits under a 0700 directory that uid 1000 cannot enter.
    base = Path(tempfile.mkdtemp(prefix="pyti-as-user-"))
    try:
        base.chmod(0o755)
        shared = base / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        user = privileges.User(uid=privileges.PYTI_UID, gid=privileges.PYTI_GID)

        privileges.as_user(user, lambda: (shared / "mine").write_text("x"))

        assert (shared / "mine").stat().st_uid == privileges.PYTI_UID
        with pytest.raises(OSError):  # root's own directory is not writable for pyti
            privileges.as_user(user, lambda: (base / "nope").write_text("x"))
        assert not (base / "nope").exists()
    finally:
        shutil.rmtree(base)


def test_run_streams_output_and_times_out_killing_the_group(tmp_path: Path) -> None:
    chunks: list[tuple[str, bytes]] = []
    script = (
        "import sys, time; print('up', flush=True); sys.stderr.write('err'); "
        "sys.stderr.flush(); time.sleep(60)"
    )

    result = privileges.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=privileges.clean_env(tmp_path),
        on_output=lambda stream, data: chunks.append((stream, data)),
        cancelled=threading.Event(),
        user=privileges.User(uid=None, gid=None),
        timeout=0.5,
    )

    assert result.timed_out
    assert result.returncode is None
    assert result.duration < 10
    assert ("stdout", b"up\n") in chunks
    assert ("stderr", b"err") in chunks
