"""The install task: verify the setup disk, make the venv, install offline with uv.

Everything package-facing runs as user pyti (privileges.run): `uv pip install
--offline --no-index --find-links dists --no-deps <pins>` into a venv the agent
makes with the stdlib (see make_venv) and hands to pyti.
Sdists among the pins are built by uv in isolated build environments whose
build requirements come from the same find-links directory. No bytecode
compilation: measured at 11 s against 2 s without for pytest's five wheels,
more than the first test run then spends writing its own .pyc files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import privileges

SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")
# uv's words for a failed sdist build (uv 0.13: "Failed to build `name @ file://...`").
BUILD_FAILURE_MARKERS = (b"Failed to build", b"Build backend failed")
HASH_CHUNK = 1 << 20
INSTALL_TIMEOUT = 3600.0
VENV_TIMEOUT = 300.0
TAIL_BYTES = 64 << 10

OnOutput = Callable[[str, bytes], None]


@dataclass(frozen=True)
class WorkLayout:
    """Where each task keeps its files on the scratch disk."""

    work: Path

    @property
    def venv(self) -> Path:
        return self.work / "venv"

    @property
    def home(self) -> Path:
        return self.work / "home"

    @property
    def src(self) -> Path:
        return self.work / "src"

    @property
    def aside(self) -> Path:
        return self.work / "aside"

    @property
    def shim(self) -> Path:
        return self.work / "shim"

    @property
    def uv_cache(self) -> Path:
        return self.work / "uv-cache"

    @property
    def tmp(self) -> Path:
        return self.work / "tmp"

    def prepare(self, user: privileges.User) -> None:
        """Make the directories package code may write to, owned by pyti.

        The work directory itself is the agent's (root, 0755): pyti owns only the
        subdirectories made for it, so code run as pyti cannot swap an entry of
        work/ for a symlink that a later root operation (mkdir, chown, write) would
        follow. Run before any package code, so nothing here can have been planted.
        """
        self.work.mkdir(parents=True, exist_ok=True)
        if user.uid is not None and user.gid is not None:
            os.chown(self.work, 0, 0)
            self.work.chmod(0o755)
        for path in (self.home, self.uv_cache, self.tmp):
            if not os.path.lexists(path):
                path.mkdir(parents=True)
                if user.uid is not None and user.gid is not None:
                    os.lchown(path, user.uid, user.gid)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = privileges.clean_env(
            self.home,
            {
                "TMPDIR": str(self.tmp),
                "UV_CACHE_DIR": str(self.uv_cache),
                "UV_NO_CONFIG": "1",
                "UV_PYTHON_DOWNLOADS": "never",
                "UV_OFFLINE": "1",
                "UV_NO_PROGRESS": "1",
                "NO_COLOR": "1",
            },
        )
        if extra:
            env.update(extra)
        return env


@dataclass(frozen=True)
class StepResult:
    outcome: str  # passed | install-failed | build-failed | error
    exit_code: int | None
    message: str = ""


def find_uv() -> str:
    # The image has /usr/local/bin/uv; a venv with the uv package (the host's, in the
    # unit tests) has it next to its Python.
    beside = str(Path(sys.executable).parent / "uv")
    for candidate in ("/usr/local/bin/uv", shutil.which("uv"), beside):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return "uv"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_dists(dists: Path, files: Mapping[str, str]) -> list[str]:
    """Every file under dists/ against the manifest's sha256; the problems found."""
    expected = dict(files)
    problems: list[str] = []
    present = set()
    try:
        entries = sorted(os.listdir(dists))
    except OSError as exc:
        return [f"cannot list {dists}: {exc.strerror}"]
    for name in entries:
        present.add(name)
        path = dists / name
        if name not in expected:
            problems.append(f"{name}: not listed in the manifest")
            continue
        if not stat.S_ISREG(path.lstat().st_mode):
            problems.append(f"{name}: not a regular file")
            continue
        actual = sha256_file(path)
        if actual != expected[name]:
            problems.append(f"{name}: sha256 {actual} does not match the manifest")
    problems += [f"{name}: missing from dists/" for name in sorted(expected.keys() - present)]
    return problems


def install_targets(dists: Path, install: Sequence[str], files: Mapping[str, str]) -> list[str]:
    """The manifest's install entries: pins go to uv as they are, file names as paths."""
    return [str(dists / item) if item in files else item for item in install]


class _Tail:
    """Keeps the last bytes of a stream, to classify a failure after the fact."""

    def __init__(self, forward: OnOutput) -> None:
        self.forward = forward
        self.data = b""
        self.lock = threading.Lock()

    def __call__(self, stream: str, data: bytes) -> None:
        with self.lock:
            self.data = (self.data + data)[-TAIL_BYTES:]
        self.forward(stream, data)


def make_venv(
    layout: WorkLayout,
    *,
    on_output: OnOutput,
    cancelled: threading.Event,
    user: privileges.User,
    python: str | None = None,
    uv: str | None = None,
) -> privileges.RunResult:
    """The venv at layout.venv, owned by the pyti user.

    Made in-process by the stdlib's venv module without pip (no interpreter or uv
    start: ~0.1 s, where `uv venv` takes 1.2 s and `python -m venv` with Debian's
    ensurepip 30 s under TCG), then handed to pyti. No package code is involved in
    making it. `uv venv` as pyti is the fallback (another interpreter, or no venv
    module in the image).
    """
    if python is None or Path(python).resolve() == Path(sys.executable).resolve():
        began = time.monotonic()
        try:
            import venv

            venv.EnvBuilder(with_pip=False, symlinks=True).create(layout.venv)
            privileges.chown_tree(layout.venv, user)
        except Exception as exc:  # e.g. Debian's venv module is not installed
            on_output("stderr", f"[pyti] in-process venv failed ({exc}); using uv venv\n".encode())
            shutil.rmtree(layout.venv, ignore_errors=True)
        else:
            return privileges.RunResult(returncode=0, duration=time.monotonic() - began)
    layout.venv.mkdir(exist_ok=True)  # work/ is root's: uv (as pyti) fills an empty dir
    if user.uid is not None and user.gid is not None:
        os.lchown(layout.venv, user.uid, user.gid)
    argv = [uv or find_uv(), "venv", "--python", python or sys.executable, str(layout.venv)]
    return privileges.run(
        argv,
        cwd=layout.work,
        env=layout.env(),
        on_output=on_output,
        cancelled=cancelled,
        user=user,
        timeout=VENV_TIMEOUT,
    )


def install_packages(
    layout: WorkLayout,
    *,
    dists: Path,
    targets: Sequence[str],
    may_build: bool,
    on_output: OnOutput,
    cancelled: threading.Event,
    user: privileges.User,
    uv: str | None = None,
    no_deps: bool = True,
) -> tuple[StepResult, privileges.RunResult]:
    argv = [
        uv or find_uv(),
        "pip",
        "install",
        "--python",
        str(layout.venv / "bin" / "python"),
        "--offline",
        "--no-index",
        "--find-links",
        str(dists),
    ]
    if no_deps:
        argv.append("--no-deps")
    tail = _Tail(on_output)
    result = privileges.run(
        [*argv, *targets],
        cwd=layout.work,
        env=layout.env(),
        on_output=tail,
        cancelled=cancelled,
        user=user,
        timeout=INSTALL_TIMEOUT,
    )
    if result.ok:
        return StepResult("passed", 0), result
    if result.cancelled or result.timed_out:
        why = "cancelled" if result.cancelled else "timed out"
        return StepResult("error", None, f"uv pip install {why}"), result
    if may_build and any(marker in tail.data for marker in BUILD_FAILURE_MARKERS):
        return StepResult("build-failed", result.returncode, "an sdist failed to build"), result
    return StepResult("install-failed", result.returncode, "uv pip install failed"), result


def has_sdists(files: Mapping[str, str]) -> bool:
    return any(name.endswith(SDIST_SUFFIXES) for name in files)


def link_bytecode(tree: Path, site: Path) -> int:
    """Link the host's pyc directories (pyti.setup.bytecode) into the installed packages.

    `tree` mirrors site-packages with only `__pycache__` directories, on the read-only
    setup disk; each becomes a symlink in the venv where the install made the package
    directory and no `__pycache__` exists yet, so the first import reads the host's
    pycs instead of compiling. Nothing is copied. Runs as pyti. Returns links made.
    """
    linked = 0
    for cache in sorted(tree.rglob("__pycache__")):
        relative = cache.relative_to(tree)
        package_dir = site / relative.parent
        target = site / relative
        if cache.is_symlink() or not package_dir.is_dir() or os.path.lexists(target):
            continue
        os.symlink(cache, target)
        linked += 1
    return linked


def link_bytecode_trees(trees: Sequence[Path], site: Path) -> None:
    for tree in trees:
        if tree.is_dir() and not tree.is_symlink():
            link_bytecode(tree, site)
