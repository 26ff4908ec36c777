"""The guest root: mmdebstrap minbase + the suite's package list, straight into squashfs.

mmdebstrap writes no output of its own (`null` format): its last customize hook runs
mksquashfs on the finished chroot, so the build needs no root-owned tree left behind.
squashfs lz4 is the format: 0.5 s to build and no boot difference to erofs or zstd
(guest-poc.md), only a bigger file.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from pyti.errors import EnvironmentProblem
from pyti.image.commands import require, run
from pyti.image.suites import MIRROR

# What never helps a test run and only costs build time and size.
_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)


def read_packages(path: Path) -> list[str]:
    """One package per line; `#` starts a comment."""
    names = []
    for line in path.read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def mode() -> str:
    """root when we are root; otherwise unshare (rootless), which needs user namespaces."""
    if os.geteuid() == 0:
        return "root"
    if (
        not Path("/proc/sys/kernel/unprivileged_userns_clone").exists()
        or Path("/proc/sys/kernel/unprivileged_userns_clone").read_text().strip() == "1"
    ):
        return "unshare"
    raise EnvironmentProblem(
        "building a guest image needs root or unprivileged user namespaces; "
        "fix: run `pyti image build` as root, or `sysctl kernel.unprivileged_userns_clone=1`"
    )


def build_root(
    *,
    suite: str,
    packages: list[str],
    customize: Path,
    uv_binary: Path,
    out_dir: Path,
    log_path: Path,
) -> None:
    """Write out_dir/root.sqfs, out_dir/python_version and out_dir/packages.txt."""
    require("mksquashfs")
    q = shlex.quote
    sqfs = out_dir / "root.sqfs"
    hooks = [
        f'sh {q(str(customize))} "$1"',
        f"copy-in {q(str(uv_binary))} /usr/local/bin",
        'chroot "$1" python3 -c "import platform; print(platform.python_version())"'
        f" > {q(str(out_dir / 'python_version'))}",
        "chroot \"$1\" dpkg-query -W -f '${Package} ${Version}\\n'"
        f" > {q(str(out_dir / 'packages.txt'))}",
        f'mksquashfs "$1" {q(str(sqfs))} -comp lz4 -noappend -quiet -no-progress'
        " -wildcards -e 'proc/*' 'sys/*' 'dev/*' 'run/*'",
    ]
    argv = [
        "mmdebstrap",
        f"--mode={mode()}",
        "--variant=minbase",
        "--format=null",
        f"--include={','.join(packages)}",
        *(f"--dpkgopt={option}" for option in _EXCLUDES),
        *(f"--customize-hook={hook}" for hook in hooks),
        suite,
        "/dev/null",
        MIRROR,
    ]
    run(argv, log_path=log_path, what=f"mmdebstrap {suite}")
