"""Preparing and planning the test run: the working tree, the runner and its argv.

How pyti tests the INSTALLED package rather than the sdist's source tree
(following docs/../shared/test-discovery-notes.md):

1. The sdist is extracted (as user pyti, with tarfile's "data" filter or an
   equivalent check on Pythons that lack it) into <work>/src; its single
   top-level directory is the sdist root, the working directory and the
   pytest rootdir, so the project's own configuration applies.
2. The installed distribution's RECORD names its top-level modules. Any of them
   present at the sdist root (a flat layout) is moved to <work>/aside, so the
   working directory on sys.path cannot shadow the installed copy.
3. Test locations that pointed into the moved package (testpaths entries, the
   arguments, tests shipped inside the package) are rewritten to the installed
   copy's absolute path under site-packages, which is what `--pyargs pkg`
   resolves to; the plugin reports node ids relative to site-packages, so they
   read `pkg/tests/test_x.py::t` as in a native run. `--doctest-modules` then
   collects the installed modules.
4. The test process imports the agent's stdlib-only shim (`_pyti_*` modules in
   <work>/shim, put on sys.path by a .pth in the venv): the audit hook in every
   process of the venv, the pytest plugin with `-p`, the unittest runner with `-m`.
   Which file each top-level module was imported from is reported as an
   "import-path" finding.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import tarfile
import threading
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import privileges

SHIM_MODULES = {
    "audit.py": "_pyti_audit.py",
    "pytest_plugin.py": "_pyti_pytest_plugin.py",
    "unittest_runner.py": "_pyti_unittest_runner.py",
}
PTH_NAME = "_pyti.pth"
TEST_OUTCOMES = frozenset({"passed", "failed", "error", "skipped", "xfailed", "xpassed"})

# Caps on what the test process may send through the pipe.
MAX_LINE = 64 << 10
MAX_REPORT = 16 << 10
MAX_NODEID = 4096
MAX_RESULTS = 200_000
# What all results of a run may carry (node ids + reports): well under the channel's
# 1 GiB per run, so a flood of results ends in dropped reports, not a killed channel.
MAX_RESULT_BYTES = 256 << 20
MAX_FINDINGS = 256
MAX_DETAIL = 2048

# Caps on the sdist (the host checked it too; the guest stays careful).
MAX_MEMBERS = 100_000
MAX_UNPACKED = 2 << 30

XDIST_VALUE_OPTS = ("-n", "--numprocesses", "--dist", "--maxprocesses", "--tx")
COV_VALUE_OPTS = ("--cov-report", "--cov-config", "--cov-fail-under", "--cov-context")
COV_FLAGS = ("--cov-append", "--cov-branch", "--no-cov-on-fail", "--no-cov")
# pytest options that take a separate value: needed to tell positional targets apart.
PYTEST_VALUE_OPTS = frozenset(
    {
        "-k", "-m", "-p", "-o", "-c", "-W", "-r", "--deselect", "--ignore", "--ignore-glob",
        "--rootdir", "--confcutdir", "--basetemp", "--maxfail", "--tb", "--durations",
        "--import-mode", "--junitxml", "--junit-xml", "--log-level", "--log-format",
        "--log-cli-level", "--log-file", "--override-ini", "--capture", "--doctest-glob",
        "--doctest-report", "--timeout", "--pythonwarnings", "--inifile", "--config-file",
        "--color", "--code-highlight", "--show-capture", "--assert", "--durations-min",
        "--hypothesis-seed", "--hypothesis-profile", "--benchmark-columns",
    }
)  # fmt: skip
CACHE_OPTIONS = frozenset(
    {"--lf", "--last-failed", "--ff", "--failed-first", "--nf", "--new-first", "--cache-clear"}
    | {"--cache-show", "--sw", "--stepwise", "--sw-skip", "--stepwise-skip", "--lfnf"}
    | {"--last-failed-no-failures"}
)
UNITTEST_PATH_OPTS = frozenset({"-s", "--start-directory", "-t", "--top-level-directory"})
TEST_DIRS = ("tests", "test", "testing")


# ---------------------------------------------------------------- result pipe


@dataclass(frozen=True)
class ResultLine:
    nodeid: str
    outcome: str
    duration: float
    report: str


@dataclass
class PipeStats:
    results: int = 0
    findings: int = 0
    bad_lines: int = 0
    dropped: int = 0
    exitstatus: int | None = None
    started_at: float | None = None  # time.monotonic() when the runner said it started


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 40] + "\n[... truncated by the pyti agent]"


class ResultReader(threading.Thread):
    """Reads the test process's JSON lines; validates, caps, and hands them on.

    Nothing read here is trusted: an oversized, non-JSON or ill-typed line is
    counted in `stats.bad_lines` and dropped, never raised.
    """

    def __init__(
        self,
        fd: int,
        on_result: Callable[[ResultLine], None],
        on_finding: Callable[[str, str], None],
    ) -> None:
        super().__init__(name="pyti-results", daemon=True)
        self.fd = fd
        self.on_result = on_result
        self.on_finding = on_finding
        self.stats = PipeStats()
        self._seen_findings: set[tuple[str, str]] = set()
        self._budget = MAX_RESULT_BYTES

    def run(self) -> None:
        buffer = b""
        skipping = False  # inside an oversized line: drop up to its newline
        try:
            while True:
                data = os.read(self.fd, 64 << 10)
                if not data:
                    break
                buffer += data
                while True:
                    newline = buffer.find(b"\n")
                    if newline < 0:
                        if len(buffer) > MAX_LINE:
                            if not skipping:
                                self.stats.bad_lines += 1
                            skipping = True
                            buffer = b""
                        break
                    line, buffer = buffer[:newline], buffer[newline + 1 :]
                    if skipping:
                        skipping = False
                        continue
                    self._line(line)
            if buffer and not skipping:
                self._line(buffer)
        finally:
            os.close(self.fd)

    def _line(self, raw: bytes) -> None:
        if len(raw) > MAX_LINE:
            self.stats.bad_lines += 1
            return
        try:
            record = json.loads(raw)
            handled = self._record(record)
        except (ValueError, TypeError, RecursionError):
            handled = False
        if not handled:
            self.stats.bad_lines += 1

    def _record(self, record: object) -> bool:
        if not isinstance(record, dict):
            return False
        if "nodeid" in record:
            return self._result(record)
        if "finding" in record:
            kind, detail = record.get("finding"), record.get("detail", "")
            if not isinstance(kind, str) or not isinstance(detail, str):
                return False
            if not re.fullmatch(r"[a-z0-9-]{1,64}", kind):
                return False
            key = (kind, detail[:MAX_DETAIL])
            if key in self._seen_findings:
                return True
            if len(self._seen_findings) >= MAX_FINDINGS:
                self.stats.dropped += 1
                return True
            self._seen_findings.add(key)
            self.stats.findings += 1
            self.on_finding(*key)
            return True
        if record.get("session") == "started":
            if self.stats.started_at is None:
                self.stats.started_at = time.monotonic()
            return True
        if record.get("session") == "finished":
            status = record.get("exitstatus")
            if type(status) is int:
                self.stats.exitstatus = status
            return True
        return False

    def _result(self, record: dict[str, object]) -> bool:
        nodeid, outcome = record.get("nodeid"), record.get("outcome")
        duration, report = record.get("duration", 0.0), record.get("report", "")
        if not isinstance(nodeid, str) or not nodeid or len(nodeid) > MAX_NODEID:
            return False
        if outcome not in TEST_OUTCOMES or not isinstance(report, str):
            return False
        if type(duration) not in (int, float):
            return False
        assert isinstance(duration, int | float) and isinstance(outcome, str)
        seconds = float(duration)
        seconds = min(max(seconds, 0.0), 1e9) if math.isfinite(seconds) else 0.0
        if self.stats.results >= MAX_RESULTS:
            self.stats.dropped += 1
            return True
        report = _truncate(report, MAX_REPORT)
        if len(nodeid) + len(report) > self._budget:
            report = ""  # keep the outcome, lose the text
            if len(nodeid) > self._budget:
                self.stats.dropped += 1
                return True
        self._budget -= len(nodeid) + len(report)
        self.stats.results += 1
        self.on_result(ResultLine(nodeid, outcome, seconds, report))
        return True


# ---------------------------------------------------------------- the shim


def install_shim(site_dir: Path, shim_dir: Path, user: privileges.User | None = None) -> None:
    """Put the stdlib-only modules where every Python of the venv finds them.

    The modules go to shim_dir (the agent's, read-only for pyti); the .pth goes into
    the venv, which belongs to pyti, so it is written with pyti's rights.
    """
    here = Path(__file__).parent
    shim_dir.mkdir(parents=True, exist_ok=True)
    for source, target in SHIM_MODULES.items():
        shutil.copyfile(here / source, shim_dir / target)
    # A .pth line starting with "import" runs at interpreter start (site.py).
    text = f"{shim_dir}\nimport _pyti_audit; _pyti_audit.install()\n"
    privileges.as_user(
        user or privileges.User(uid=None, gid=None), lambda: (site_dir / PTH_NAME).write_text(text)
    )


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise FileNotFoundError(f"no site-packages under {venv}")
    return found[0]


# ---------------------------------------------------------------- the sdist


class UnsafeArchive(Exception):
    """The sdist holds a member that must not be extracted."""


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    # The checks of tarfile's "data" filter, for Pythons without it (bookworm's 3.11.2).
    name = member.name
    if name.startswith("/") or ".." in Path(name).parts:
        raise UnsafeArchive(f"{name}: absolute or parent path")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchive(f"{name}: special file")
    if member.issym() or member.islnk():
        base = dest if member.islnk() else (dest / name).parent
        target = os.path.normpath(base / member.linkname)
        if member.linkname.startswith("/") or not target.startswith(str(dest) + os.sep):
            raise UnsafeArchive(f"{name}: link outside the tree")


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract an sdist (.tar.gz or .zip) into dest, refusing anything hostile."""
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS or sum(i.file_size for i in infos) > MAX_UNPACKED:
                raise UnsafeArchive("too many or too large members")
            for info in infos:
                parts = Path(info.filename).parts
                if info.filename.startswith("/") or ".." in parts:
                    raise UnsafeArchive(f"{info.filename}: absolute or parent path")
            zf.extractall(dest)
        return
    with tarfile.open(archive) as tf:
        members = []
        total = 0
        for member in tf:
            members.append(member)
            total += member.size
            if len(members) > MAX_MEMBERS or total > MAX_UNPACKED:
                raise UnsafeArchive("too many or too large members")
        # Our checks first, on every Python: the same refusals everywhere.
        for member in members:
            _check_member(member, dest)
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
            return
        for member in members:
            member.mode = (member.mode | 0o600) & 0o755 if member.isfile() else 0o755
            member.uid = member.gid = 0
            member.uname = member.gname = ""
        tf.extractall(dest, members=members)


def sdist_root(src_dir: Path) -> Path:
    """The sdist's one top-level directory (name-version/)."""
    entries = [p for p in src_dir.iterdir() if not p.name.startswith(".")]
    dirs = [p for p in entries if p.is_dir() and not p.is_symlink()]
    if len(dirs) == 1 and len(entries) == 1:
        return dirs[0]
    return src_dir


# ---------------------------------------------------------------- layout


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_top_levels(site_dir: Path, package_name: str) -> tuple[str, ...]:
    """Top-level import names installed by the package's distribution (from RECORD)."""
    want = _normalize(package_name)
    for dist_info in sorted(site_dir.glob("*.dist-info")):
        name = dist_info.name[: -len(".dist-info")].rsplit("-", 1)[0]
        if _normalize(name) != want:
            continue
        names: set[str] = set()
        try:
            record = privileges.read_text_capped(dist_info / "RECORD", 32 << 20)
        except OSError:
            return ()
        for line in record.splitlines():
            path = line.split(",", 1)[0]
            first = path.split("/", 1)[0]
            if not first or first.startswith("..") or first.endswith((".dist-info", ".data")):
                continue
            if first in {"__pycache__"} or first.endswith(".pth"):
                continue
            if "/" in path:
                names.add(first)
            elif first.endswith(".py"):
                names.add(first[:-3])
            elif ".cpython-" in first or first.endswith((".so", ".pyd", ".abi3.so")):
                names.add(first.split(".", 1)[0])
        return tuple(sorted(n for n in names if n.isidentifier()))
    return ()


def move_aside(root: Path, names: Iterable[str], aside: Path) -> tuple[str, ...]:
    """Move flat-layout source packages/modules out of the working directory."""
    moved = []
    for name in names:
        for candidate in (root / name, root / f"{name}.py"):
            if candidate.exists() and not candidate.is_symlink():
                aside.mkdir(parents=True, exist_ok=True)
                candidate.rename(aside / candidate.name)
                moved.append(name)
    return tuple(moved)


def has_tests(directory: Path) -> bool:
    for _, _, files in os.walk(directory):
        if any(
            f.endswith(".py") and (f.startswith("test") or f.endswith("_test.py")) for f in files
        ):
            return True
    return False


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PytestConfig:
    source: str = ""  # which file held it ("" when none)
    addopts: tuple[str, ...] = ()
    testpaths: tuple[str, ...] = ()


def _ini_section(path: Path, section: str) -> dict[str, str] | None:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(privileges.read_text_capped(path))
    except (OSError, configparser.Error):
        return None
    if not parser.has_section(section):
        return None
    return dict(parser.items(section))


def _split(value: object) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError:
            return tuple(value.split())
    return ()


def read_pytest_config(root: Path) -> PytestConfig:
    """The pytest configuration pytest itself would pick (same file order)."""
    for name in ("pytest.ini", ".pytest.ini"):
        if (root / name).is_file():
            ini = _ini_section(root / name, "pytest") or {}
            return PytestConfig(
                name, _split(ini.get("addopts", "")), _split(ini.get("testpaths", ""))
            )
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(privileges.read_text_capped(pyproject))
        except (OSError, tomllib.TOMLDecodeError):
            data = {}
        tool = data.get("tool", {}).get("pytest", {})
        options = tool.get("ini_options", tool) if isinstance(tool, dict) else {}
        if isinstance(options, dict) and options:
            return PytestConfig(
                "pyproject.toml",
                _split(options.get("addopts", "")),
                _split(options.get("testpaths", "")),
            )
    for name, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        section_items = _ini_section(root / name, section) if (root / name).is_file() else None
        if section_items is not None:
            return PytestConfig(
                name,
                _split(section_items.get("addopts", "")),
                _split(section_items.get("testpaths", "")),
            )
    return PytestConfig()


_UNITTEST_CMD = re.compile(r"-m\s+unittest\b(.*)")
_PYTEST_CMD = re.compile(r"(?:^|[\s/])(?:py\.test|pytest)\b")


_NOT_TEST_ENVS = re.compile(r"lint|doc|type|mypy|flake|style|fmt|format|pre-commit|release|build")


def tox_commands(path: Path) -> list[str]:
    """`commands` of tox.ini's [testenv] and of test-like [testenv:NAME] sections."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(privileges.read_text_capped(path))
    except (OSError, configparser.Error):
        return []
    commands = []
    for section in parser.sections():
        name = section.partition(":")[2]
        if section == "testenv" or (
            section.startswith("testenv:") and not _NOT_TEST_ENVS.search(name)
        ):
            commands.append(parser.get(section, "commands", fallback=""))
    return commands


def detect_unittest(root: Path) -> tuple[str, ...] | None:
    """The unittest arguments when tox.ini or a Makefile run `python -m unittest`, else None."""
    texts = tox_commands(root / "tox.ini") if (root / "tox.ini").is_file() else []
    makefile = root / "Makefile"
    if makefile.is_file():
        with contextlib.suppress(OSError):
            texts.append(privileges.read_text_capped(makefile))
    for text in texts:
        if _PYTEST_CMD.search(text):
            return None
        match = _UNITTEST_CMD.search(text)
        if match:
            args = [a for a in _split(match.group(1).split("\n", 1)[0]) if not a.startswith("{")]
            return tuple(a for a in args if a not in {";", "&&", "|", "||"})
    return None


def tzdata_version(zoneinfo: Path = Path("/usr/share/zoneinfo")) -> str:
    """The system tzdata release ("2025b"), which zone-dependent tests see."""
    try:
        with (zoneinfo / "tzdata.zi").open(errors="replace") as f:
            first = f.readline(200)
    except OSError:
        return "unknown"
    return first.removeprefix("# version").strip() or "unknown"


# ---------------------------------------------------------------- arguments


def drop_parallel_and_coverage(args: Sequence[str]) -> tuple[str, ...]:
    """Remove xdist (-n, --dist, ...) and coverage (--cov...) options: a 1-2 CPU guest
    runs serially, and neither changes outcomes."""
    out: list[str] = []
    skip_next = False
    for i, arg in enumerate(args):
        if skip_next:
            skip_next = False
            continue
        if arg in XDIST_VALUE_OPTS or arg in COV_VALUE_OPTS:
            skip_next = True
            continue
        if arg.startswith(tuple(f"{o}=" for o in XDIST_VALUE_OPTS + COV_VALUE_OPTS + ("--cov",))):
            continue
        if re.fullmatch(r"-n\S+", arg) or arg in COV_FLAGS:
            continue
        if arg == "--cov":
            # --cov takes an optional value: argparse gives it the next non-option word.
            nxt = args[i + 1] if i + 1 < len(args) else "-"
            skip_next = not nxt.startswith("-")
            continue
        out.append(arg)
    return tuple(out)


def pytest_positionals(args: Sequence[str]) -> list[int]:
    """Indexes of positional (target) arguments in a pytest command line."""
    found: list[int] = []
    skip_next = False
    for i, arg in enumerate(args):
        if skip_next:
            skip_next = False
        elif arg == "--":
            found.extend(range(i + 1, len(args)))
            break
        elif arg.startswith("--"):
            skip_next = "=" not in arg and arg in PYTEST_VALUE_OPTS
        elif arg.startswith("-") and len(arg) > 1:
            skip_next = arg[:2] in PYTEST_VALUE_OPTS and len(arg) == 2
        else:
            found.append(i)
    return found


@dataclass(frozen=True)
class Retarget:
    """Test paths into the source package (moved aside, or under src/) -> the installed copy."""

    site_dir: Path
    moved: Sequence[str]
    top_levels: Sequence[str]
    src_layout: bool

    def __call__(self, target: str) -> list[str]:
        path, sep, rest = target.partition("::")
        parts = Path(path).parts
        names = self.moved
        if self.src_layout and parts and parts[0] == "src":
            if len(parts) == 1:  # all of src/: every installed top-level module
                found = [self._installed(n) for n in self.top_levels]
                return [str(p) for p in found if p is not None] or [target]
            parts, names = parts[1:], self.top_levels
        if parts and (parts[0] in names or (parts[0].endswith(".py") and parts[0][:-3] in names)):
            return [str(self.site_dir.joinpath(*parts)) + sep + rest]
        return [target]

    def _installed(self, name: str) -> Path | None:
        for candidate in (self.site_dir / name, self.site_dir / f"{name}.py"):
            if candidate.exists():
                return candidate
        return None

    def all(self, targets: Iterable[str]) -> list[str]:
        return [new for target in targets for new in self(target)]


@dataclass(frozen=True)
class TestPlan:
    __test__ = False  # not a pytest test class

    runner: str  # pytest | unittest
    argv: tuple[str, ...]
    cwd: Path
    moved: tuple[str, ...] = ()
    top_levels: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())


def _unittest_args(
    args: list[str],
    *,
    root: Path,
    site_dir: Path,
    retarget: Retarget,
    tests_inside: Sequence[Path],
) -> list[str]:
    for i, arg in enumerate(args[:-1]):
        if arg in UNITTEST_PATH_OPTS:
            args[i + 1] = retarget(args[i + 1])[0]
    has_root_tests = any((root / d).is_dir() for d in TEST_DIRS)
    if not args and tests_inside and not has_root_tests:
        # `python -m unittest` from the root would have found pkg/tests in the
        # source tree: discover the installed copy instead, same module names.
        args = ["discover", "-s", str(tests_inside[0]), "-t", str(site_dir)]
    return args


def unittest_discovery_plan(root: Path, pytest_plan: TestPlan) -> TestPlan | None:
    """unittest discovery in the root's test directory, for a project in which pytest
    collected nothing but which has modules only unittest's default pattern `test*.py`
    matches (`test.py`, `testthings.py`), else None."""
    for name in TEST_DIRS:
        directory = root / name
        if not directory.is_dir():
            continue
        if not any(not p.name.startswith("test_") for p in directory.glob("test*.py")):
            continue
        args = ["discover", "-s", name]
        if not (directory / "__init__.py").exists():
            args += ["-t", name]  # not a package: its modules import as top-level ones
        argv = (pytest_plan.argv[0], "-m", "_pyti_unittest_runner", *args)
        return TestPlan("unittest", argv, root, pytest_plan.moved, pytest_plan.top_levels, ())
    return None


def plan_tests(
    *,
    root: Path,
    venv: Path,
    site_dir: Path,
    runner: str,
    runner_args: Sequence[str],
    test_args: Sequence[str],
    top_levels: Sequence[str],
    moved: Sequence[str],
) -> TestPlan:
    """The runner and its argv for the sdist at `root` (after move_aside)."""
    python = str(venv / "bin" / "python")
    notes: list[str] = []
    unittest_args = detect_unittest(root) if runner == "auto" else None
    if runner == "auto":
        runner = "unittest" if unittest_args is not None else "pytest"
        notes.append(f"runner {runner} (auto)")
    src_layout = (root / "src").is_dir() and any((root / "src" / n).exists() for n in top_levels)
    installed = [site_dir / n for n in top_levels if (site_dir / n).is_dir()]
    tests_inside = [p for p in installed if has_tests(p)]
    retarget = Retarget(site_dir, tuple(moved), tuple(top_levels), src_layout)
    if runner == "unittest":
        args = _unittest_args(
            [*(runner_args or unittest_args or ()), *test_args],
            root=root,
            site_dir=site_dir,
            retarget=retarget,
            tests_inside=tests_inside,
        )
        argv = (python, "-m", "_pyti_unittest_runner", *args)
        return TestPlan("unittest", argv, root, tuple(moved), tuple(top_levels), tuple(notes))

    config = read_pytest_config(root)
    args = list(drop_parallel_and_coverage([*runner_args, *test_args]))
    positions = pytest_positionals(args)
    if positions:
        chosen = set(positions)
        args = [new for i, a in enumerate(args) for new in (retarget(a) if i in chosen else [a])]
    doctests = "--doctest-modules" in args or "--doctest-modules" in config.addopts
    if not positions:
        targets: list[str] = []
        if config.testpaths:
            rewritten = retarget.all(config.testpaths)
            if rewritten != list(config.testpaths):
                targets = rewritten  # pytest reads testpaths only without targets: pass them all
        elif tests_inside or (doctests and (moved or src_layout)):
            # No testpaths: pytest would collect the whole root, source package included.
            targets = ["."] + [str(p) for p in (installed if doctests else tests_inside)]
            if src_layout:
                args += ["--ignore", "src"]
        args += targets
    base = [python, "-m", "pytest", "-p", "_pyti_pytest_plugin", "-p", "no:cacheprovider"]
    if any(a.split("=", 1)[0] in CACHE_OPTIONS for a in [*config.addopts, *args]):
        # These options need the cache plugin ("-p no:cacheprovider" would make them
        # unknown): keep it, with its directory out of the source tree.
        base[-2:] = ["-o", f"cache_dir={venv.parent / 'tmp' / 'pytest-cache'}"]
    # Options from the project's config (addopts) cannot be filtered out: override them.
    if (site_dir / "xdist").is_dir():
        # Not "-p no:xdist": a `-n auto` in addopts would then be an unknown option,
        # and suites may use xdist's fixtures (worker_id). "-n 0" runs in-process.
        args += ["-n", "0"]
    if (site_dir / "pytest_cov").is_dir():
        args.append("--no-cov")
    return TestPlan("pytest", (*base, *args), root, tuple(moved), tuple(top_levels), tuple(notes))
