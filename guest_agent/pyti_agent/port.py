"""Find the agent's virtio-serial port by its name, not by its device number."""

from __future__ import annotations

import os
import time

PORT_NAME = "pyti.0"
SYS_PORTS = "/sys/class/virtio-ports"


def find_port(
    name: str = PORT_NAME,
    *,
    sys_dir: str = SYS_PORTS,
    dev_dir: str = "/dev",
    timeout: float = 5.0,
) -> str:
    """The /dev path of the port called `name` (e.g. /dev/vport0p1).

    Polls until `timeout`: the port's sysfs entry can trail the module load by a moment.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            entries = sorted(os.listdir(sys_dir))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            try:
                with open(os.path.join(sys_dir, entry, "name")) as f:
                    found = f.read().strip()
            except OSError:
                continue
            if found == name:
                device = os.path.join(dev_dir, entry)
                if os.path.exists(device):
                    return device
        if time.monotonic() >= deadline:
            raise FileNotFoundError(f"no virtio port named {name!r} under {sys_dir}")
        time.sleep(0.01)
