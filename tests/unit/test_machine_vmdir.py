from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyti.errors import EnvironmentProblem
from pyti.vmdir import LOCK_NAME, VmDir, sweep_stale


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_create_makes_a_private_locked_dir_and_close_removes_it(tmp_path: Path) -> None:
    with VmDir.create(tmp_path) as vmdir:
        assert vmdir.path.parent == tmp_path
        assert (vmdir.path / LOCK_NAME).exists()
        assert vmdir.path.stat().st_mode & 0o777 == 0o700
        (vmdir.path / "scratch").write_bytes(b"x")
    assert not vmdir.path.exists()
    vmdir.close()  # idempotent
    assert vmdir.closed


def test_sweep_removes_an_old_dir_whose_owner_died(tmp_path: Path) -> None:
    # A child process creates and locks a VM dir, then dies without cleaning up.
    code = (
        "import os, sys; from pathlib import Path; from pyti.vmdir import VmDir; "
        f"d = VmDir.create(Path({str(tmp_path)!r})); print(d.path); os._exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dead = Path(out.stdout.strip())
    assert dead.exists()
    age(dead, 60)
    assert sweep_stale(tmp_path) == [dead]
    assert not dead.exists()


def test_sweep_keeps_a_live_vm_and_a_young_dir(tmp_path: Path) -> None:
    with VmDir.create(tmp_path) as live:
        age(live.path, 60)
        young = tmp_path / "vm-young"
        young.mkdir()  # no lock yet: maybe between mkdtemp and flock in another process
        assert sweep_stale(tmp_path) == []
        assert live.path.exists()
        assert young.exists()
        age(young, 60)
        assert sweep_stale(tmp_path) == [young]
        assert live.path.exists()


def test_sweep_ignores_other_names(tmp_path: Path) -> None:
    other = tmp_path / "keep-me"
    other.mkdir()
    age(other, 60)
    assert sweep_stale(tmp_path) == []
    assert other.exists()


def test_too_deep_a_directory_for_unix_sockets_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    with pytest.raises(EnvironmentProblem, match="PYTI_CACHE_DIR"):
        VmDir.create(deep)
    assert list(deep.iterdir()) == []
