"""The test process's side of the result pipe, and its audit hook. STDLIB ONLY.

This file is copied into the test venv as `_pyti_audit.py` and imported at
interpreter start by `_pyti_audit.pth` (see testrun.install_shim), so every
Python process of the venv (the runner and the suites' own subprocesses)
reports, through the pipe the agent passed down:

- network attempts (`socket.connect`, `socket.sendto`, `socket.getaddrinfo`)
  as findings of kind "network" (the guest has no network: they all fail);
- writes aimed at the read-only setup disk as kind "readonly-write" (they fail
  with EROFS; the hook sees the attempt, which always precedes the error).

Lines are JSON objects, one per line. The pipe is identified by fd *and* by
its (st_dev, st_ino): a child that did not inherit the fd may have reused the
number for an ordinary file, which must never receive our lines.
"""

from __future__ import annotations

import os
import stat  # already imported by os: free
import sys

# Nothing else at import time: this module is imported by every Python process of
# the test venv, and suites check what a bare `import pkg` pulls in (platformdirs
# asserts that `typing` is not imported). json is imported only when writing.

ENV_FD = "PYTI_RESULT_FD"
ENV_PIPE_ID = "PYTI_RESULT_PIPE_ID"
ENV_SETUP_DIR = "PYTI_SETUP_DIR"
ENV_TOP_LEVEL = "PYTI_TOP_LEVEL"
MAX_FINDINGS = 64
MAX_DETAIL = 512


class _State:
    """This process's pipe and what it has reported (one per interpreter)."""

    def __init__(self) -> None:
        self.pipe_fd: int | None = None
        self.pipe_checked = False
        self.seen: set[tuple[str, str]] = set()
        self.in_hook = False
        self.installed = False
        self.setup_prefix = "/mnt/setup/"


_state = _State()

_NETWORK_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.getaddrinfo"})
# Events whose first argument (or, for the two-path ones, the target) is
# written: opens are filtered further by mode below.
_WRITE_EVENTS = {
    "os.mkdir": 0,
    "os.remove": 0,
    "os.rmdir": 0,
    "os.chmod": 0,
    "os.chown": 0,
    "os.truncate": 0,
    "os.utime": 0,
    "os.rename": 1,
    "os.symlink": 1,
    "os.link": 1,
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def pipe_id(fd: int) -> str:
    """What the agent puts in PYTI_RESULT_PIPE_ID for the pipe it passes as `fd`."""
    st = os.fstat(fd)
    return f"{st.st_dev}:{st.st_ino}"


def _result_fd() -> int | None:
    if _state.pipe_checked:
        return _state.pipe_fd
    _state.pipe_checked = True
    try:
        fd = int(os.environ[ENV_FD])
        st = os.fstat(fd)
    except (KeyError, ValueError, OSError):
        return None
    if stat.S_ISFIFO(st.st_mode) and os.environ.get(ENV_PIPE_ID) == f"{st.st_dev}:{st.st_ino}":
        _state.pipe_fd = fd
    return _state.pipe_fd


def emit(record: dict[str, object]) -> bool:
    """Write one JSON line to the agent's pipe; False when there is no pipe."""
    fd = _result_fd()
    if fd is None:
        return False
    import json

    data = (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        return False
    return True


def record_finding(kind: str, detail: str) -> None:
    detail = detail[:MAX_DETAIL]
    key = (kind, detail)
    if key in _state.seen or len(_state.seen) >= MAX_FINDINGS:
        return
    _state.seen.add(key)
    emit({"finding": kind, "detail": detail})


def _describe_address(address: object) -> str | None:
    # Only internet addresses count: AF_UNIX paths are local IPC.
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return None


def _is_setup_path(path: object) -> bool:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        return False  # an fd: cannot tell cheaply, and opening it was already reported
    if not path.startswith("/"):
        path = os.path.join(os.getcwd(), path)
    path = os.path.normpath(path)
    return (path + "/").startswith(_state.setup_prefix)


def _network_detail(event: str, args: tuple[object, ...]) -> str:
    if event == "socket.getaddrinfo":
        return f"getaddrinfo {args[0]!s}:{args[1]!s}"
    where = _describe_address(args[1])
    return f"{event.split('.')[1]} {where}" if where else ""


def _written_path(event: str, args: tuple[object, ...]) -> object:
    """The path an event writes to, or None when it does not write."""
    if event == "open":
        path, mode, flags = args
        if isinstance(mode, str):
            return path if any(c in mode for c in "wax+") else None
        return path if isinstance(flags, int) and flags & _WRITE_FLAGS else None
    index = _WRITE_EVENTS[event]
    return args[index] if len(args) > index else None


def _hook(event: str, args: tuple[object, ...]) -> None:
    # Called for every audit event of the process: return fast when not ours.
    if _state.in_hook or (
        event not in _NETWORK_EVENTS and event != "open" and event not in _WRITE_EVENTS
    ):
        return
    _state.in_hook = True
    try:
        if event in _NETWORK_EVENTS:
            detail = _network_detail(event, args)
            if detail:
                record_finding("network", detail)
        else:
            path = _written_path(event, args)
            if path is not None and _is_setup_path(path):
                shown = os.fsdecode(path) if isinstance(path, bytes) else str(path)
                record_finding("readonly-write", f"{event} {shown}")
    except Exception:  # an audit hook that raises would abort the audited call
        pass
    finally:
        _state.in_hook = False


def report_import_paths() -> None:
    """Which file each of the package's top-level modules came from (if imported)."""
    for name in os.environ.get(ENV_TOP_LEVEL, "").split(","):
        module = sys.modules.get(name) if name else None
        if module is not None:
            record_finding("import-path", f"{name} -> {getattr(module, '__file__', None)}")


def install() -> None:
    """Add the audit hook, once, when the agent passed a result pipe down."""
    if _state.installed or _result_fd() is None:
        return
    _state.installed = True
    setup = os.path.normpath(os.environ.get(ENV_SETUP_DIR, "/mnt/setup"))
    _state.setup_prefix = setup.rstrip("/") + "/"
    sys.addaudithook(_hook)
