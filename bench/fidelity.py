"""Fidelity: pyti's per-test outcomes against a native run of the same sdist.

    uv run --frozen python bench/fidelity.py [--packages a,b,c] [--json PATH]

For each package: (a) `pyti run PKG --json` (bookworm guest, Python 3.11);
(b) a NATIVE run, the one place package code runs outside a VM (a developer
benchmark, never part of pyti): a throwaway venv on the host's /usr/bin/python3.11
(the same 3.11.2 as the bookworm guest) holding exactly the dist files pyti's
setup disk held (read from the setup manifest and pyti's download cache), the
sdist extracted to a temp dir, and the tests run the way the maintainers do:
their runner and configuration, the installed copy under test (a flat-layout
source package is moved aside), as an unprivileged user (`nobody`).

Per-test outcomes on the native side come from a tiny pytest plugin (or a
unittest result class) that writes JSON lines; node ids are normalised (the
site-packages prefix of tests run from the installed copy is stripped) so both
sides compare. Needs the network (PyPI) for `pyti run` and root for `setpriv`.
Temp dirs live under $TMPDIR, outside the repo, and are removed.
"""

from __future__ import annotations

import argparse
import collections
import configparser
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import trio

from pyti.setup import SetupDisk, prepare, target_for_python
from pyti.setup.resolve import uv_binary

log = logging.getLogger("fidelity")

DEFAULT_PACKAGES = (
    "iniconfig",
    "six",
    "click",
    "platformdirs",
    "filelock",
    "zipp",
    "tomlkit",
    "sortedcontainers",
    "colorama",
    "jinja2",
)
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
NATIVE_PYTHON = "/usr/bin/python3.11"
NATIVE_UID = 65534  # nobody: permission tests behave as for a maintainer, not root
PYTI = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "pyti"
PYTI_TIMEOUT = 4 * 3600  # filelock: ~3,700 tests, over an hour under TCG
NATIVE_TIMEOUT = 1800

# Written into the native run's temp dir; runs inside the throwaway venv.
# It records pytest's raw reports (like pytest-reportlog); folding happens here.
# A test file of the installed copy gets the id a maintainer sees in the source tree
# (pkg/mod.py::t): pytest names files outside the rootdir relative to the argument.
PYTEST_PLUGIN = """
import json, os, sysconfig
_out = open(os.environ["FIDELITY_LOG"], "a", encoding="utf-8")
_site = os.path.realpath(sysconfig.get_paths()["purelib"])
_ids = {}
def _remember(nodeid, path):
    real = os.path.realpath(str(path)) if path is not None else ""
    if real.startswith(_site + os.sep):
        _, sep, rest = nodeid.partition("::")
        _ids[nodeid] = os.path.relpath(real, _site).replace(os.sep, "/") + sep + rest
def _write(nodeid, when, outcome, xfail):
    record = {"nodeid": _ids.get(nodeid, nodeid) or "<collection>", "when": when,
              "outcome": outcome, "wasxfail": xfail}
    _out.write(json.dumps(record) + "\\n"); _out.flush()
def pytest_collectstart(collector):
    _remember(collector.nodeid, getattr(collector, "path", None))
def pytest_itemcollected(item):
    _remember(item.nodeid, getattr(item, "path", None))
def pytest_collectreport(report):
    if report.failed:
        _write(report.nodeid, "collect", "failed", False)
def pytest_runtest_logreport(report):
    _write(report.nodeid, report.when, report.outcome, hasattr(report, "wasxfail"))
"""

UNITTEST_RUNNER = """
import json, os, sys, unittest
_out = open(os.environ["FIDELITY_LOG"], "a", encoding="utf-8")
def _write(test, outcome):
    _out.write(json.dumps({"nodeid": test.id(), "when": "unittest", "outcome": outcome}) + "\\n")
    _out.flush()
class Result(unittest.TextTestResult):
    def addSuccess(self, t): super().addSuccess(t); _write(t, "passed")
    def addFailure(self, t, e): super().addFailure(t, e); _write(t, "failed")
    def addError(self, t, e): super().addError(t, e); _write(t, "error")
    def addSkip(self, t, r): super().addSkip(t, r); _write(t, "skipped")
    def addExpectedFailure(self, t, e): super().addExpectedFailure(t, e); _write(t, "xfailed")
    def addUnexpectedSuccess(self, t): super().addUnexpectedSuccess(t); _write(t, "xpassed")
    def addSubTest(self, t, s, e):
        super().addSubTest(t, s, e)
        if e is not None:
            _write(s, "failed" if issubclass(e[0], t.failureException) else "error")
class Runner(unittest.TextTestRunner):
    resultclass = Result
unittest.main(module=None, argv=["python -m unittest", *sys.argv[1:]], testRunner=Runner)
"""


@dataclass
class Side:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    tests: dict[str, list[str]] = field(default_factory=dict)
    note: str = ""

    def add(self, nodeid: str, outcome: str) -> None:
        self.counts[outcome] += 1
        self.tests.setdefault(normalise(nodeid), []).append(outcome)


@dataclass
class PackageResult:
    package: str
    version: str = ""
    pyti: Side = field(default_factory=Side)
    native: Side = field(default_factory=Side)
    differences: list[dict[str, str]] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


def normalise(nodeid: str) -> str:
    """Node ids of tests run from the installed copy: drop the site-packages part."""
    _, sep, rest = nodeid.rpartition("site-packages/")
    return rest if sep else nodeid


def _phase(when: object, outcome: object, xfail: bool, current: str | None) -> str | None:
    """One pytest report's effect on the test's outcome (None: no change)."""
    if when == "setup":
        if outcome == "failed":
            return "error"
        if outcome == "skipped":
            return "xfailed" if xfail else "skipped"
        return current or "passed"  # provisional until the call phase reports
    if when == "call":
        if outcome == "passed":
            return "xpassed" if xfail else "passed"
        if outcome == "failed":
            return "failed"
        return "xfailed" if xfail else "skipped"
    if outcome == "failed" and current != "failed":  # teardown
        return "error"
    return None


def fold(records: list[dict[str, object]]) -> list[tuple[str, str]]:
    """Raw reports -> one outcome per test, as pytest's summary counts them
    (a failing call plus a failing teardown counts once, as failed)."""
    outcomes: dict[str, str] = {}
    for record in records:
        nodeid, when, outcome = str(record["nodeid"]), record["when"], record["outcome"]
        if when == "unittest":
            outcomes[f"{nodeid}\x00{len(outcomes)}"] = str(outcome)  # unittest ids may repeat
        elif when == "collect":
            outcomes[nodeid] = "error"
        else:
            new = _phase(when, outcome, bool(record.get("wasxfail")), outcomes.get(nodeid))
            if new is not None:
                outcomes[nodeid] = new
    return [(key.split("\x00", 1)[0], value) for key, value in outcomes.items()]


# ---------------------------------------------------------------- pyti side


def run_pyti(package: str, work: Path, saved: Path | None) -> dict[str, object]:
    """pyti's JSON for the package; with `saved`, reuse (or keep) it there."""
    out = work / "pyti.json"
    if saved is not None:
        saved.mkdir(parents=True, exist_ok=True)
        out = saved / f"{package}.json"
        if out.is_file():
            data: dict[str, object] = json.loads(out.read_text())
            return data
    proc = subprocess.run(
        [str(PYTI), "run", package, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=PYTI_TIMEOUT,
        check=False,
    )
    if not out.is_file():
        raise RuntimeError(f"pyti run {package} wrote no JSON: {proc.stderr.strip()[-500:]}")
    data = json.loads(out.read_text())
    return data


# ---------------------------------------------------------------- native side


def extract(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    entries = list(dest.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


def top_levels(site: Path, name: str) -> list[str]:
    """Import names the package's distribution installed (its RECORD)."""
    want = re.sub(r"[-_.]+", "-", name).lower()
    for info in site.glob("*.dist-info"):
        dist = re.sub(r"[-_.]+", "-", info.name.removesuffix(".dist-info").rsplit("-", 1)[0])
        dist = dist.lower()
        if dist != want:
            continue
        names = set()
        for line in (info / "RECORD").read_text().splitlines():
            first = line.split(",", 1)[0].split("/", 1)[0]
            if first.endswith((".dist-info", ".data", ".pth")) or first == "__pycache__":
                continue
            names.add(first.split(".", 1)[0] if "." in first else first)
        return sorted(n for n in names if n.isidentifier())
    return []


def _words(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else str(value or "").split()


def pytest_config(root: Path) -> tuple[Path | None, list[str], list[str]]:
    """The config file pytest would pick at the root, its testpaths and addopts."""
    for name in ("pytest.ini", ".pytest.ini"):
        if (root / name).is_file():
            return root / name, *_ini_options(root / name, "pytest")
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        tool = tomllib.loads(pyproject.read_text()).get("tool", {}).get("pytest", {})
        # pytest 9 also reads native TOML keys straight under [tool.pytest].
        options = tool.get("ini_options", tool) if isinstance(tool, dict) else None
        if isinstance(options, dict) and options:
            testpaths, addopts = options.get("testpaths"), options.get("addopts")
            return pyproject, _words(testpaths), _words(addopts)
    for name, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        path = root / name
        if path.is_file():
            parser = configparser.RawConfigParser(strict=False)
            parser.read_string(path.read_text())
            if parser.has_section(section):
                return path, *_ini_options(path, section)
    return None, [], []


def _ini_options(path: Path, section: str) -> tuple[list[str], list[str]]:
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string(path.read_text())
    testpaths = parser.get(section, "testpaths", fallback="")
    return testpaths.split(), parser.get(section, "addopts", fallback="").split()


def unittest_args(root: Path) -> list[str] | None:
    """The maintainers' runner from tox.ini / Makefile: unittest arguments, or None for pytest."""
    texts = []
    if (root / "tox.ini").is_file():
        parser = configparser.RawConfigParser(strict=False)
        parser.read_string((root / "tox.ini").read_text())
        texts.append(parser.get("testenv", "commands", fallback=""))
    if (root / "Makefile").is_file():
        texts.append((root / "Makefile").read_text(errors="replace"))
    for text in texts:
        if re.search(r"(^|[\s/])(py\.test|pytest)\b", text):
            return None
        match = re.search(r"-m\s+unittest\b(.*)", text)
        if match:
            return [a for a in match.group(1).split() if not a.startswith("{")]
    return None


def install_native(disk: SetupDisk, work: Path) -> Path:
    manifest = disk.manifest
    # The setup disk itself holds the very dist files the guest installed (a cached
    # disk does not keep them in the download cache).
    subprocess.run(
        ["unsquashfs", "-q", "-n", "-d", str(work / "disk"), str(disk.path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    dists = work / "disk" / "dists"
    venv = work / "venv"
    uv = uv_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    env["UV_CACHE_DIR"] = str(work / "uv-cache")
    subprocess.run([uv, "venv", "-q", "--python", NATIVE_PYTHON, str(venv)], check=True, env=env)
    wanted = [str(dists / item) if (dists / item).is_file() else item for item in manifest.install]
    base = [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "--no-deps"]
    links = ["--find-links", str(dists)]
    done = subprocess.run([*base, "--no-index", *links, *wanted], env=env, check=False)
    if done.returncode != 0:
        # An sdist needs its build requirements in an isolated env: let uv fetch them.
        subprocess.run([*base, *links, *wanted], env=env, check=True)
    return venv


def move_aside(root: Path, names: list[str], aside: Path) -> list[str]:
    """A flat layout's source package would shadow the installed copy: move it out."""
    moved = []
    for name in names:
        for candidate in (root / name, root / f"{name}.py"):
            if candidate.exists():
                aside.mkdir(exist_ok=True)
                candidate.rename(aside / candidate.name)
                moved.append(name)
    return moved


def _has_tests(folder: Path) -> bool:
    return any(
        p.name.startswith("test") or p.name.endswith("_test.py") for p in folder.rglob("*.py")
    )


def unittest_only_dir(root: Path) -> str | None:
    """The test directory holding modules only unittest's `test*.py` matches, if any."""
    for name in ("tests", "test", "testing"):
        directory = root / name
        if directory.is_dir() and any(
            not p.name.startswith("test_") for p in directory.glob("test*.py")
        ):
            return name
    return None


def plan_native(
    disk: SetupDisk, root: Path, venv: Path, work: Path
) -> tuple[str, list[str], list[str]]:
    """(runner, argv, notes) the way the maintainers run their tests."""
    manifest = disk.manifest
    site = site_packages(venv)
    python = str(venv / "bin" / "python")
    notes: list[str] = []
    names = top_levels(site, manifest.package_name)
    moved = move_aside(root, names, work / "aside")
    if moved:
        notes.append(f"moved aside {moved}")
    runner = manifest.runner
    uargs = unittest_args(root) if runner == "auto" else None
    if runner == "auto":
        runner = "unittest" if uargs is not None else "pytest"
    inside = [site / n for n in names if (site / n).is_dir() and _has_tests(site / n)]
    if runner == "unittest":
        args = list(manifest.runner_args) or uargs or []
        if not args and inside and not any((root / d).is_dir() for d in ("tests", "test")):
            args = ["discover", "-s", str(inside[0]), "-t", str(site)]
        return "unittest", [python, str(work / "plugins" / "fidelity_unittest.py"), *args], notes
    config, testpaths, addopts = pytest_config(root)
    argv = [python, "-m", "pytest", "-p", "fidelity_plugin", "-p", "no:cacheprovider"]
    argv += ["--rootdir", str(root)]
    if config is not None:
        argv += ["-c", str(config)]
        notes.append(f"config {config.name}")
    if (site / "xdist").is_dir():
        argv += ["-n", "0"]
    if (site / "pytest_cov").is_dir():
        argv.append("--no-cov")
    args = list(manifest.runner_args)
    if not args:
        if testpaths:
            args = [str(site / t) if t.split("/")[0] in moved else t for t in testpaths]
        elif inside or ("--doctest-modules" in addopts and moved):
            # The maintainers' run collects the package's tests (or doctests) in the
            # source tree; here they come from the installed copy, same node ids.
            installed = [site / n for n in names if (site / n).is_dir()]
            doctests = "--doctest-modules" in addopts
            args = ["."] + [str(p) for p in (installed if doctests else inside)]
    return "pytest", argv + args, notes


def run_native(disk: SetupDisk, work: Path) -> Side:
    manifest = disk.manifest
    if manifest.sdist is None:
        return Side(note="no sdist: nothing to run natively")
    venv = install_native(disk, work)
    root = extract(work / "disk" / "dists" / manifest.sdist, work / "src")
    plugins = work / "plugins"  # alone on PYTHONPATH: nothing else importable from there
    plugins.mkdir()
    (plugins / "fidelity_plugin.py").write_text(PYTEST_PLUGIN)
    (plugins / "fidelity_unittest.py").write_text(UNITTEST_RUNNER)
    runner, argv, notes = plan_native(disk, root, venv, work)
    log = work / "native.jsonl"
    log.touch()
    for sub in ("home", "tmp"):
        (work / sub).mkdir()
    subprocess.run(["chown", "-R", f"{NATIVE_UID}:{NATIVE_UID}", str(work)], check=True)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(work / "home"),
        "TMPDIR": str(work / "tmp"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(work / "plugins"),
        "FIDELITY_LOG": str(log),
    }
    setpriv = ["setpriv", f"--reuid={NATIVE_UID}", f"--regid={NATIVE_UID}", "--clear-groups"]

    def run(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], list[dict[str, object]]]:
        proc = subprocess.run(
            [*setpriv, *argv],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=NATIVE_TIMEOUT,
            check=False,
        )
        (work / "native.out").write_text(proc.stdout + proc.stderr)
        return proc, [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    proc, records = run(argv)
    script_dir = unittest_only_dir(root)
    if not records and runner == "pytest" and manifest.runner == "auto" and script_dir:
        # decorator's maintainers run `python tests/test.py`: unittest over the modules
        # pytest's patterns do not match (pyti's agent falls back the same way)
        runner = "unittest"
        args = ["discover", "-s", script_dir]
        if not (root / script_dir / "__init__.py").exists():
            args += ["-t", script_dir]
        unittest_argv = [argv[0], str(work / "plugins" / "fidelity_unittest.py"), *args]
        proc, records = run(unittest_argv)
        notes.append("pytest found nothing: unittest discovery")
    side = Side(note=f"{runner} exit {proc.returncode}; " + "; ".join(notes))
    for nodeid, outcome in fold(records):
        side.add(nodeid, outcome)
    if not records:
        side.note += f"; output tail: {(proc.stdout + proc.stderr)[-400:]!r}"
    return side


# ---------------------------------------------------------------- comparison


def compare(package: str, saved: Path | None = None, keep: bool = False) -> PackageResult:
    result = PackageResult(package)
    start = time.monotonic()
    # A short path: AF_UNIX socket paths under TMPDIR must fit in 108 bytes
    # (filelock skips a test otherwise, as it would on a maintainer's /tmp).
    work = Path(tempfile.mkdtemp(prefix="pyti-fid-"))
    work.chmod(0o755)  # the native run's unprivileged user must reach native/
    try:
        data = run_pyti(package, work, saved)
        # The spec pyti ran: the same manifest, so the same setup disk digest.
        disk = trio.run(_prepare, str(data.get("spec") or package))
        if dict(disk.resolved) != data.get("resolved") and saved is not None:
            # Other dists than the saved run installed: that run is stale. (A disk
            # that differs in layout only, e.g. its bytecode tree, keeps the run.)
            (saved / f"{package}.json").unlink()
            data = run_pyti(package, work, saved)
        pkg = data.get("package")
        result.version = str(pkg.get("version", "")) if isinstance(pkg, dict) else ""
        tests = data.get("tests")
        for test in tests if isinstance(tests, list) else []:
            result.pyti.add(str(test["nodeid"]), str(test["outcome"]))
        result.pyti.note = f"run {data.get('id')} {data.get('outcome')}"
        if disk.digest != data.get("setup_digest"):
            result.pyti.note += "; setup disk rebuilt with another digest"
        native_work = work / "native"
        native_work.mkdir()
        result.native = run_native(disk, native_work)
        result.differences = differences(result.pyti, result.native)
    except Exception as exc:  # a benchmark reports a broken package and goes on
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if keep:
            log.warning("kept %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
        result.seconds = time.monotonic() - start
    return result


async def _prepare(spec: str) -> SetupDisk:
    return await prepare(spec, target=target_for_python("3.11"))


def differences(pyti: Side, native: Side) -> list[dict[str, str]]:
    out = []
    for nodeid in sorted(pyti.tests.keys() | native.tests.keys()):
        ours = collections.Counter(pyti.tests.get(nodeid, []))
        theirs = collections.Counter(native.tests.get(nodeid, []))
        if ours != theirs:
            out.append(
                {
                    "nodeid": nodeid,
                    "pyti": ",".join(sorted(ours.elements())) or "absent",
                    "native": ",".join(sorted(theirs.elements())) or "absent",
                }
            )
    return out


def _counts(side: Side) -> str:
    c = side.counts
    text = f"{c['passed']}/{c['failed']}/{c['skipped']}"
    extra = [f"{c[k]} {k}" for k in ("error", "xfailed", "xpassed") if c[k]]
    return text + (f" ({', '.join(extra)})" if extra else "")


def table(results: list[PackageResult]) -> str:
    head = f"{'package':<18} {'version':<10} {'pyti p/f/s':<26} {'native p/f/s':<26} diffs"
    lines = [head, "-" * len(head)]
    for r in results:
        if r.error:
            lines.append(f"{r.package:<18} {r.version:<10} ERROR {r.error}")
            continue
        lines.append(
            f"{r.package:<18} {r.version:<10} {_counts(r.pyti):<26} "
            f"{_counts(r.native):<26} {len(r.differences)}"
        )
    for r in results:
        for diff in r.differences:
            lines.append(
                f"  {r.package}: {diff['nodeid']}: pyti {diff['pyti']}, native {diff['native']}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--packages", default=",".join(DEFAULT_PACKAGES))
    parser.add_argument("--json", type=Path, help="save the figures and differences here")
    parser.add_argument(
        "--pyti-results",
        type=Path,
        help="a directory for pyti's JSON per package: reused when present (native-side work)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dirs (to look at a difference)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    for package in [p.strip() for p in args.packages.split(",") if p.strip()]:
        result = compare(package, args.pyti_results, args.keep)
        print(
            f"{package}: {len(result.differences)} differences "
            f"({result.seconds:.0f} s) {result.error or ''}".rstrip(),
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    print(table(results))
    if args.json:
        payload = [
            {
                "package": r.package,
                "version": r.version,
                "pyti": {"counts": r.pyti.counts, "note": r.pyti.note},
                "native": {"counts": r.native.counts, "note": r.native.note},
                "differences": r.differences,
                # Per test, to compare again later (e.g. with a longer or partial run).
                "tests": {"pyti": r.pyti.tests, "native": r.native.tests},
                "error": r.error,
                "seconds": round(r.seconds, 1),
            }
            for r in results
        ]
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
