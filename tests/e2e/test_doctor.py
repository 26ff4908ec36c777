"""The setup step installed what the host needs; doctor sees it and names the accelerator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def test_doctor_reports_qemu_and_the_accelerator_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pyti", "doctor"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    qemu = next(line for line in lines if line.startswith("ok      qemu: "))
    assert qemu.split(": ", 1)[1][0].isdigit()
    accelerator = next(line for line in lines if " accelerator: " in line)
    kvm_works = os.environ.get("PYTI_EXPECT_KVM") == "1"
    assert (" kvm " in accelerator) if kvm_works else (" tcg " in accelerator)


def test_doctor_names_the_fix_when_qemu_is_missing(tmp_path: Path) -> None:
    # A PATH without QEMU: doctor must say what to install and exit non-zero.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dpkg-query",):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(bin_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "pyti", "doctor", "--accel", "tcg"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 3
    assert "fix: sudo apt-get install -y --no-install-recommends qemu-system-x86" in result.stdout
    assert "Traceback" not in result.stderr
