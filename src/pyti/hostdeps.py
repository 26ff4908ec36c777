"""The Debian packages the host needs, in one place, and the step that installs them.

Standard library only: the setup step runs this file with the system python3
before any virtualenv exists (`python3 src/pyti/hostdeps.py --install`).
What goes *into* the guest (kernel, modules, busybox) is fetched by the image
build from the suite's own archive, never installed on the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# package -> the command that proves it is there (for `pyti doctor`)
HOST_PACKAGES: dict[str, str] = {
    "qemu-system-x86": "qemu-system-x86_64",
    "qemu-utils": "qemu-img",
    "mmdebstrap": "mmdebstrap",
    "squashfs-tools": "mksquashfs",
    "e2fsprogs": "mkfs.ext4",
    "kmod": "depmod",
    "cpio": "cpio",
    "zstd": "zstd",
    "xz-utils": "xz",
    "git": "git",
}

EXIT_ENVIRONMENT = 3

# Debian puts admin tools in /usr/sbin, which a non-root PATH often lacks.
_SBIN = ("/usr/sbin", "/sbin")


def which(command: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(_SBIN)
    return shutil.which(command, path=path)


def missing_packages() -> list[str]:
    """Packages not installed, asked of dpkg (fast: one call for all)."""
    names = list(HOST_PACKAGES)
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = {
        line.split()[0] for line in result.stdout.splitlines() if line.endswith(" installed")
    }
    return [name for name in names if name not in installed]


def install_line(packages: list[str]) -> str:
    return "sudo apt-get install -y --no-install-recommends " + " ".join(packages)


def install(packages: list[str]) -> int:
    if not packages:
        return 0
    if os.geteuid() != 0:
        print(f"pyti needs these Debian packages; run: {install_line(packages)}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"setup: apt-get install {' '.join(packages)}", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return 0


def main(argv: list[str]) -> int:
    missing = missing_packages()
    if "--install" in argv:
        return install(missing)
    for name in missing:
        print(name)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
