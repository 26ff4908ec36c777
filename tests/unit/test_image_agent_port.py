"""The agent finds its virtio port by name, whatever number the kernel gave it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "guest_agent"))

from pyti_agent.port import find_port


def fake_ports(root: Path, names: dict[str, str]) -> tuple[Path, Path]:
    sys_dir, dev_dir = root / "sys", root / "dev"
    dev_dir.mkdir()
    for entry, name in names.items():
        (sys_dir / entry).mkdir(parents=True)
        (sys_dir / entry / "name").write_text(name + "\n")
        (dev_dir / entry).touch()
    return sys_dir, dev_dir


def test_port_found_by_name_not_number(tmp_path: Path) -> None:
    sys_dir, dev_dir = fake_ports(tmp_path, {"vport0p1": "org.other", "vport0p2": "pyti.0"})
    assert find_port(sys_dir=str(sys_dir), dev_dir=str(dev_dir)) == str(dev_dir / "vport0p2")


def test_missing_port_times_out(tmp_path: Path) -> None:
    sys_dir, dev_dir = fake_ports(tmp_path, {"vport0p1": "org.other"})
    with pytest.raises(FileNotFoundError, match=r"pyti\.0"):
        find_port(sys_dir=str(sys_dir), dev_dir=str(dev_dir), timeout=0.05)
