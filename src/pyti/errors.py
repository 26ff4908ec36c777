"""pyti's errors: one root, guest-caused kept apart from host-caused.

The CLI prints any `PytiError` as one line (`str(error)`, which names the fix)
and exits with its `exit_code`; a traceback only with `--debug`::

    PytiError                       exit 4: pyti's or the infrastructure's fault
    ├── UsageError                  exit 2: the command line is wrong
    ├── EnvironmentProblem          exit 3: the host lacks something; the message says how to fix it
    │   ├── MissingTool             a host program (QEMU, mksquashfs, ...) is not installed
    │   ├── MissingImage            a guest image is absent and may not be built (--offline)
    │   └── AcceleratorUnavailable  --accel kvm asked for, but KVM does not start a guest
    ├── PackageError                exit 1: the package under test (or its index) is at fault
    │   ├── NoSuchPackage           the index has no such project
    │   ├── NoCompatibleDistribution  nothing installable for the guest's Python
    │   ├── ResolutionFailed        the resolver's explanation
    │   ├── DownloadError           network failure or hash mismatch after a retry
    │   ├── HostileArchive          traversal, links, bombs, oversized members
    │   └── MalformedMetadata       pyproject/setup.cfg/tox.ini that does not parse
    ├── GuestError                  exit 1: caused by what runs in the guest
    │   ├── GuestProtocolError      a frame broke the protocol; the channel is closed
    │   ├── GuestLimitExceeded      the guest broke a channel limit (rate, bytes, events)
    │   └── GuestCrashed            kernel panic, or the agent vanished
    └── HostError                   exit 4: pyti's side failed
        ├── QemuFailed              QEMU exited unexpectedly (exit code and log path kept)
        ├── VmStateError            a Machine method called in a state that forbids it (a bug)
        ├── ImageBuildFailed        the guest image build failed (log path kept)
        └── StoreError              the results database is unusable
"""

from __future__ import annotations

from pathlib import Path

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class PytiError(Exception):
    """Root of every error pyti raises on purpose."""

    exit_code = EXIT_INTERNAL


class UsageError(PytiError):
    exit_code = EXIT_USAGE


class EnvironmentProblem(PytiError):
    exit_code = EXIT_ENVIRONMENT


class MissingTool(EnvironmentProblem):
    def __init__(self, tool: str, fix: str) -> None:
        super().__init__(f"{tool} is not installed; fix: {fix}")
        self.tool = tool
        self.fix = fix


class MissingImage(EnvironmentProblem):
    pass


class AcceleratorUnavailable(EnvironmentProblem):
    pass


class PackageError(PytiError):
    exit_code = EXIT_FAILED


class NoSuchPackage(PackageError):
    pass


class NoCompatibleDistribution(PackageError):
    pass


class ResolutionFailed(PackageError):
    pass


class DownloadError(PackageError):
    pass


class HostileArchive(PackageError):
    pass


class MalformedMetadata(PackageError):
    pass


class GuestError(PytiError):
    exit_code = EXIT_FAILED


class GuestProtocolError(GuestError):
    pass


class GuestLimitExceeded(GuestError):
    pass


class GuestCrashed(GuestError):
    pass


class HostError(PytiError):
    exit_code = EXIT_INTERNAL


class QemuFailed(HostError):
    def __init__(self, message: str, *, returncode: int | None, log: Path | None) -> None:
        detail = f" (exit {returncode})" if returncode is not None else ""
        where = f"; log: {log}" if log else ""
        super().__init__(f"{message}{detail}{where}")
        self.returncode = returncode
        self.log = log


class ImageBuildFailed(HostError):
    def __init__(self, message: str, *, log: Path | None = None) -> None:
        super().__init__(f"{message}; log: {log}" if log else message)
        self.log = log


class VmStateError(HostError):
    pass


class StoreError(HostError):
    pass
