"""Test dependencies and the test command, read statically from an sdist's files.

Sources, in order: extras test/tests/testing and those the tox env installs (`extras =`;
without any of these, the extras that name pytest, nose2 or hypothesis), PEP 735 groups
test/tests/testing (or dev when there is no test group or extra),
requirements-test*.txt, test-requirements.txt, requirements/test*.txt, tox.ini
`deps` (with its `-r` files) and its `commands`, a package's `[tool.pyti]`,
and pytest always. Nothing here runs package code.
"""

from __future__ import annotations

import configparser
import logging
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pyti.errors import MalformedMetadata
from pyti.setup.metadata import (
    CoreMetadata,
    applies,
    extra_requirements,
    load_toml,
    parse_requirements,
    project_table,
    requirement_list,
    without_marker,
)
from pyti.setup.model import GuestTarget, HostFinding

log = logging.getLogger(__name__)

TEST_EXTRAS = ("test", "tests", "testing")
TEST_GROUPS = ("test", "tests", "testing", "dev")
RUNNER_PROJECTS = frozenset({"pytest", "nose2", "hypothesis"})
PYTI_KEYS = {"runner", "test-requirements", "test-args"}
MAX_INCLUDE_DEPTH = 10

_REQ_FILE = re.compile(
    r"^(requirements[-_]test[^/]*|test[-_]requirements[^/]*|requirements/test[^/]*)\.(txt|in)$",
    re.IGNORECASE,
)


def wanted_member(path: str) -> bool:
    """Which sdist members the readers need (relative to the sdist's top directory)."""
    if path in {"pyproject.toml", "setup.cfg", "tox.ini", "PKG-INFO"}:
        return True
    parts = PurePosixPath(path).parts
    return path.endswith((".txt", ".in")) and len(parts) <= 3 and "req" in path.lower()


@dataclass(frozen=True)
class TestConfig:
    requirements: tuple[str, ...]  # pytest first, then in the order found, no duplicates
    runner: str = "auto"
    runner_args: tuple[str, ...] = ()
    findings: tuple[HostFinding, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)  # requirement -> where from


def _ini(name: str, data: bytes) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(data.decode("utf-8", "replace"), source=name)
    except configparser.Error as exc:
        raise MalformedMetadata(f"{name} does not parse: {exc}") from None
    return parser


def requirements_file(
    members: Mapping[str, bytes], path: str, depth: int = 0, seen: set[str] | None = None
) -> list[str]:
    """Requirement lines of a requirements file, following `-r` within the archive."""
    seen = seen if seen is not None else set()
    if path in seen or depth > MAX_INCLUDE_DEPTH or path not in members:
        return []
    seen.add(path)
    text = members[path].decode("utf-8", "replace").replace("\\\n", " ")
    out: list[str] = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        include = re.match(r"^(?:-r|--requirement)[\s=]*(\S+)$", line)
        if include:
            target = PurePosixPath(path).parent / include.group(1)
            out += requirements_file(members, _normalize(target), depth + 1, seen)
        elif line and not line.startswith(("-", ".", "/", "http:", "https:", "git+")):
            out.append(line)
    return out


def _normalize(path: PurePosixPath) -> str:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part not in {".", ""}:
            parts.append(part)
    return "/".join(parts)


def _tox_section(parser: configparser.RawConfigParser) -> str | None:
    if parser.has_section("testenv"):
        return "testenv"
    return next((s for s in parser.sections() if s.startswith("testenv:py")), None)


def _unfactored(raw: str) -> str:
    """A tox line without its factor condition: "py311,cov: pytest-cov" applies to some
    envs, and pyti keeps it (the maintainers' envs are many; pyti runs one)."""
    line = raw.strip()
    factor = re.match(r"^[\w.!,-]+:\s+(.*)$", line)
    return factor.group(1) if factor else line


def _tox_deps(members: Mapping[str, bytes], value: str) -> list[str]:
    out: list[str] = []
    for raw in value.splitlines():
        line = _unfactored(raw).replace("{toxinidir}/", "").replace("{toxinidir}", ".")
        include = re.match(r"^(?:-r|--requirement)[\s=]*(\S+)$", line)
        if include:
            out += requirements_file(members, _normalize(PurePosixPath(include.group(1))))
        elif line and "{" not in line and not line.startswith(("-", ".", "#")):
            out.append(line)
    return out


# --cov's value is optional (and usually attached): it never consumes the next word.
_DROP_WITH_VALUE = {"-n", "--numprocesses", "--cov-report", "--cov-config", "--dist"}
_DROP_PREFIX = ("-n", "--numprocesses=", "--cov", "--dist=", "-p xdist")


def _substitute(line: str) -> str:
    """A tox command line with {toxinidir} and {posargs[:default]} replaced as tox would
    with no positional arguments. The default may hold other substitutions (python-dateutil:
    `{posargs: "{toxinidir}/tests" "{toxinidir}/docs" ...}`), so braces are matched, not
    cut at the first "}". Other substitutions stay, and their words are dropped later."""
    line = line.replace("{toxinidir}/", "").replace("{toxinidir}", ".")
    out: list[str] = []
    done = 0
    while (start := line.find("{posargs", done)) >= 0:
        out.append(line[done:start])
        depth, end = 0, start
        for end in range(start, len(line)):
            depth += {"{": 1, "}": -1}.get(line[end], 0)
            if depth == 0:
                break
        default = line[start + len("{posargs") : end]
        out.append(default[1:] if default.startswith(":") else "")
        done = end + 1
    out.append(line[done:])
    return "".join(out)


def runner_from_command(line: str) -> tuple[str, tuple[str, ...]] | None:
    """("pytest" | "unittest", args) from one tox `commands` line, or None."""
    line = _substitute(line)
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    for i, word in enumerate(words):
        if word in {"pytest", "py.test"} or word.endswith(("/pytest", "/py.test")):
            return "pytest", _clean_args(words[i + 1 :])
        if word == "-m" and i + 1 < len(words) and words[i + 1] in {"pytest", "unittest"}:
            runner = words[i + 1]
            args = words[i + 2 :]
            return runner, _clean_args(args) if runner == "pytest" else tuple(args)
    return None


def _clean_args(words: list[str]) -> tuple[str, ...]:
    """Drop xdist and coverage options: the guest runs one process, without coverage."""
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word in _DROP_WITH_VALUE:
            skip = True
            continue
        if word.startswith(_DROP_PREFIX) and not word.startswith("--no"):
            continue
        if "{" in word:
            continue
        out.append(word)
    return tuple(out)


def _groups(pyproject: Mapping[str, Any], name: str, depth: int = 0) -> list[str]:
    groups = pyproject.get("dependency-groups")
    if not isinstance(groups, dict) or depth > MAX_INCLUDE_DEPTH:
        return []
    wanted = {canonicalize_name(k): v for k, v in groups.items()}.get(canonicalize_name(name))
    out: list[str] = []
    for item in wanted if isinstance(wanted, list) else []:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and isinstance(item.get("include-group"), str):
            out += _groups(pyproject, item["include-group"], depth + 1)
    return out


class _Collector:
    def __init__(self, package: str) -> None:
        self.package = canonicalize_name(package)
        self.by_name: dict[str, tuple[Requirement, str]] = {}
        self.self_extras: list[str] = []

    @property
    def items(self) -> dict[str, str]:
        return {str(req): source for req, source in self.by_name.values()}

    def add(self, requirement: str, source: str) -> None:
        try:
            parsed = Requirement(requirement)
        except InvalidRequirement:
            log.debug("ignoring unreadable test requirement %r from %s", requirement, source)
            return
        if parsed.url:
            return  # a direct reference cannot be fetched offline-safely; ignore
        if canonicalize_name(parsed.name) == self.package:
            self.self_extras += sorted(parsed.extras)  # expanded by the caller
            return
        # One entry per project: the first wins, unless it was bare and this one says more.
        key = canonicalize_name(parsed.name)
        if key not in self.by_name or (not self.by_name[key][0].specifier and parsed.specifier):
            self.by_name[key] = (parsed, source)


def _extras(
    members: Mapping[str, bytes],
    pyproject: Mapping[str, Any],
    metadata: CoreMetadata | None,
    target: GuestTarget,
) -> dict[str, list[Requirement]]:
    """Extras by normalized name: core metadata first, then pyproject, then setup.cfg."""
    extras: dict[str, list[Requirement]] = {}
    if metadata is not None:
        for extra in TEST_EXTRAS:
            extras[extra] = extra_requirements(metadata.requires_dist, extra, target)
    optional = project_table(pyproject).get("optional-dependencies")
    if isinstance(optional, dict):
        for key, value in optional.items():
            extras.setdefault(canonicalize_name(key), requirement_list(value))
    if "setup.cfg" in members:
        cfg = _ini("setup.cfg", members["setup.cfg"])
        if cfg.has_section("options.extras_require"):
            for key, value in cfg.items("options.extras_require"):
                extras.setdefault(canonicalize_name(key), parse_requirements(value.splitlines()))
    # Markers are decided here, for the guest; what is left goes to uv without them.
    return {
        key: [req for req in reqs if applies(req, target, key) or applies(req, target)]
        for key, reqs in extras.items()
    }


def _names_runner(requirements: list[Requirement]) -> bool:
    return any(canonicalize_name(req.name) in RUNNER_PROJECTS for req in requirements)


def _add_extras(
    found: _Collector, extras: Mapping[str, list[Requirement]], wanted: list[str]
) -> None:
    # A test extra may name the package's own other extras ("pkg[toml]"): follow them.
    pending = list(wanted)
    done: set[str] = set()
    while pending:
        extra = canonicalize_name(pending.pop(0))
        if extra in done:
            continue
        done.add(extra)
        for req in extras.get(extra, []):
            found.add(without_marker(req), f"extra {extra}")
        pending += found.self_extras
        found.self_extras = []


def _tox_extras(value: str) -> list[str]:
    """The extras a tox env installs: `extras = a, b` or factor-conditional lines
    (`unit: diagrams`, kept like factor-conditional deps)."""
    out: list[str] = []
    for raw in value.splitlines():
        line = _unfactored(raw)
        out += [word for word in re.split(r"[\s,]+", line) if re.fullmatch(r"[\w.-]+", word)]
    return out


def _tox_env(members: Mapping[str, bytes]) -> dict[str, str]:
    """The options of tox.ini's test env ({} without one)."""
    if "tox.ini" not in members:
        return {}
    tox = _ini("tox.ini", members["tox.ini"])
    section = _tox_section(tox)
    return dict(tox.items(section)) if section is not None else {}


def _tox(
    members: Mapping[str, bytes], env: Mapping[str, str], found: _Collector
) -> tuple[str, tuple[str, ...]]:
    for line in _tox_deps(members, env.get("deps", "")):
        found.add(line, "tox.ini")
    for line in env.get("commands", "").splitlines():
        command = runner_from_command(line)
        if command:
            return command
    return "auto", ()


def _tool_pyti(
    pyproject: Mapping[str, Any],
    found: _Collector,
    runner: str,
    runner_args: tuple[str, ...],
    findings: list[HostFinding],
) -> tuple[str, tuple[str, ...]]:
    """A package's [tool.pyti]: only its runner, test requirements and test args count."""
    tool = pyproject.get("tool")
    pyti = tool.get("pyti") if isinstance(tool, dict) else None
    if not isinstance(pyti, dict):
        return runner, runner_args
    for key in sorted(set(pyti) - PYTI_KEYS):
        findings.append(HostFinding("ignored-config", f"[tool.pyti] may not set {key!r}; ignored"))
    if pyti.get("runner") in {"pytest", "unittest", "auto"}:
        runner = pyti["runner"]
    for item in pyti.get("test-requirements") or []:
        if isinstance(item, str):
            found.add(item, "[tool.pyti]")
    args = pyti.get("test-args")
    if isinstance(args, list) and all(isinstance(a, str) for a in args):
        runner_args = tuple(args)
    return runner, runner_args


def extract(
    members: Mapping[str, bytes],
    *,
    package: str,
    target: GuestTarget,
    metadata: CoreMetadata | None = None,
) -> TestConfig:
    """Everything the tests need, from an sdist's members and/or wheel metadata."""
    findings: list[HostFinding] = []
    found = _Collector(package)
    found.add("pytest", "always")
    pyproject: dict[str, Any] = {}
    if "pyproject.toml" in members:
        pyproject = load_toml("pyproject.toml", members["pyproject.toml"])
    extras = _extras(members, pyproject, metadata, target)
    tox_env = _tox_env(members)
    wanted = [*TEST_EXTRAS, *_tox_extras(tox_env.get("extras", ""))]
    has_test_config = any(extras.get(e) for e in wanted) or any(
        _groups(pyproject, g) for g in TEST_GROUPS
    )
    if not has_test_config:
        # No test extra or group by name (idna: pytest and hypothesis are in `all`):
        # the extras that name a test runner are the test extras.
        wanted += sorted(key for key, reqs in extras.items() if _names_runner(reqs))
    _add_extras(found, extras, wanted)
    # `dev` often adds tools whose .pth files run in every interpreter (pre-commit-uv
    # imports typing at startup, failing platformdirs' own test): the maintainers'
    # test env uses `test`. So `dev` counts only when no test group or extra exists.
    groups = [g for g in TEST_GROUPS if g != "dev" and _groups(pyproject, g)]
    if not groups and not any(extras.get(extra) for extra in TEST_EXTRAS):
        groups = ["dev"]
    for group in groups:
        for item in _groups(pyproject, group):
            found.add(item, f"group {group}")
    for path in sorted(members):
        if _REQ_FILE.match(path):
            for line in requirements_file(members, path):
                found.add(line, path)
    runner, runner_args = _tox(members, tox_env, found)
    runner, runner_args = _tool_pyti(pyproject, found, runner, runner_args, findings)
    return TestConfig(
        requirements=tuple(found.items),
        runner=runner,
        runner_args=runner_args,
        findings=tuple(findings),
        sources=dict(found.items),
    )
