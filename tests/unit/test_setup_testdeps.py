"""Static test-dependency and runner extraction from real-world style files."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyti.errors import MalformedMetadata
from pyti.setup.metadata import parse_core_metadata, static_dependencies
from pyti.setup.model import GuestTarget
from pyti.setup.testdeps import extract, runner_from_command, wanted_member

FIXTURES = Path(__file__).parent / "fixtures" / "setup"
PY311 = GuestTarget("3.11", "x86_64-manylinux_2_36")


def members(name: str) -> dict[str, bytes]:
    root = FIXTURES / name
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file()
    }


def test_pyproject_extras_groups_and_tool_pyti() -> None:
    config = extract(members("hatchlike"), package="hatch-like", target=PY311)
    assert config.requirements == (
        "pytest",
        "coverage[toml]>=7",
        # the markers are evaluated for the guest: hypothesis stays, the win32 one goes
        "hypothesis>=6",
        "tomli-w",  # from the package's own [toml] extra, named by its tests extra
        "pytest-timeout",
        "ruff",  # include-group lint, via test
        "pytest-mock",  # not pre-commit: the dev group is not read when a test group exists
    )
    assert config.runner == "pytest"
    assert config.runner_args == ("-k", "not slow", "tests")
    assert {f.kind for f in config.findings} == {"ignored-config"}
    assert sorted(f.detail for f in config.findings) == [
        "[tool.pyti] may not set 'accel'; ignored",
        "[tool.pyti] may not set 'timeout'; ignored",
    ]


DEV_ONLY = b"""
[project]
name = "devonly"
version = "1"
[dependency-groups]
dev = ["pytest-mock", "pre-commit-uv"]
"""


def test_dev_group_is_read_when_no_test_group_or_extra_exists() -> None:
    config = extract({"pyproject.toml": DEV_ONLY}, package="devonly", target=PY311)
    assert config.requirements == ("pytest", "pytest-mock", "pre-commit-uv")


@pytest.mark.parametrize(
    "pyproject",
    [
        DEV_ONLY + b'[project.optional-dependencies]\ntest = ["hypothesis"]\n',
        DEV_ONLY.replace(b"dev = [", b'tests = ["hypothesis"]\ndev = ['),
    ],
    ids=["test-extra", "tests-group"],
)
def test_dev_group_is_ignored_next_to_a_test_extra_or_group(pyproject: bytes) -> None:
    config = extract({"pyproject.toml": pyproject}, package="devonly", target=PY311)
    assert config.requirements == ("pytest", "hypothesis")


def test_setup_cfg_extras_and_requirements_files() -> None:
    config = extract(members("setuptoolslike"), package="setuptools-like", target=PY311)
    assert config.requirements == (
        "pytest>=6",  # the bare "pytest always" gives way to the extra's constraint
        "pytest-cov",  # and mock; python_version<"3.3" does not apply to the guest
        "responses",  # through -r requirements/base.txt
        "pytest-randomly==3.15.0",
        "freezegun>=1.2",  # a continued line
    )
    assert config.runner == "auto"


def test_tox_ini_deps_and_command() -> None:
    config = extract(members("toxlike"), package="toxlike", target=PY311)
    assert config.requirements == (
        "pytest",
        "trustme>=1.0",
        "pytest-xdist",
        "pytest-cov",
    )
    assert config.runner == "pytest"
    # xdist's -n and the coverage options are dropped: one process, no coverage in the guest
    assert config.runner_args == ("-p", "no:cacheprovider", "tests")


def test_the_extras_a_tox_env_installs_are_test_dependencies() -> None:
    # pyparsing 3.3.3: `extras = unit: diagrams`, and its tests import railroad
    pyproject = b"""
[project]
name = "pyparsing"
[project.optional-dependencies]
diagrams = ["railroad-diagrams", "jinja2"]
"""
    tox = b"""
[testenv]
deps =
    unit: pytest
extras = unit: diagrams
commands =
    unit: pytest tests examples/tiny/tests {posargs}
"""
    config = extract(
        {"pyproject.toml": pyproject, "tox.ini": tox}, package="pyparsing", target=PY311
    )
    assert {"railroad-diagrams", "jinja2"} <= set(config.requirements)
    assert config.sources["railroad-diagrams"] == "extra diagrams"
    assert (config.runner, config.runner_args) == ("pytest", ("tests", "examples/tiny/tests"))


def test_without_test_extras_the_extras_naming_pytest_are_used() -> None:
    # idna 3.20: pytest and hypothesis live in `all`; `docs` names no runner
    pyproject = b"""
[project]
name = "idna"
[project.optional-dependencies]
all = ["ruff >= 0.16.0", "pytest >= 8.3.2", "hypothesis >= 6.141.1"]
docs = ["sphinx"]
"""
    config = extract({"pyproject.toml": pyproject}, package="idna", target=PY311)
    assert "hypothesis>=6.141.1" in config.requirements
    assert not any(r.startswith("sphinx") for r in config.requirements)
    # ...but never next to a test extra by name
    named = pyproject + b'test = ["pytest"]\n'
    config = extract({"pyproject.toml": named}, package="idna", target=PY311)
    assert not any(r.startswith("hypothesis") for r in config.requirements)


def test_core_metadata_extras_are_read_with_guest_markers() -> None:
    files = members("toxlike")
    metadata = parse_core_metadata(files["PKG-INFO"])
    config = extract({}, package="toxlike", target=PY311, metadata=metadata)
    assert config.requirements == ("pytest", "pytest-benchmark")
    assert static_dependencies(metadata, None, PY311) == ("idna>=3",)


def test_dynamic_dependencies_are_not_static() -> None:
    metadata = parse_core_metadata(b"Metadata-Version: 2.2\nName: x\nDynamic: Requires-Dist\n")
    assert static_dependencies(metadata, None, PY311) is None
    old = parse_core_metadata(b"Metadata-Version: 2.1\nName: x\nRequires-Dist: a\n")
    assert static_dependencies(old, None, PY311) is None
    pyproject = {"project": {"name": "x", "dependencies": ["b; python_version < '3'", "c"]}}
    assert static_dependencies(old, pyproject, PY311) == ("c",)
    dynamic = {"project": {"name": "x", "dynamic": ["dependencies"]}}
    assert static_dependencies(None, dynamic, PY311) is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("pytest {posargs}", ("pytest", ())),
        ("py.test -x tests", ("pytest", ("-x", "tests"))),
        ("coverage run -m pytest -nauto --cov src tests", ("pytest", ("src", "tests"))),
        ("python -m pytest --numprocesses 4 --dist loadfile -q", ("pytest", ("-q",))),
        ("python -m unittest discover -s tests", ("unittest", ("discover", "-s", "tests"))),
        ("{envpython} -m pytest {toxinidir}/tests", ("pytest", ("tests",))),
        # python-dateutil 4.0.0: the default holds substitutions of its own
        (
            'python -m pytest {posargs: "{toxinidir}/tests" "{toxinidir}/docs"'
            ' --cov-config="{toxinidir}/tox.ini" --cov=dateutil}',
            ("pytest", ("tests", "docs")),
        ),
        ("pytest {posargs:-x {envtmpdir}} tests", ("pytest", ("-x", "tests"))),
        ("pytest {posargs:", ("pytest", ())),
        ("flake8 src", None),
        ("pytest 'unclosed", None),
    ],
)
def test_runner_from_tox_command(line: str, expected: tuple[str, tuple[str, ...]] | None) -> None:
    assert runner_from_command(line) == expected


@pytest.mark.parametrize(
    ("path", "wanted"),
    [
        ("pyproject.toml", True),
        ("PKG-INFO", True),
        ("requirements/test.txt", True),
        ("ci/requirements-dev.in", True),
        ("src/pkg/pyproject.toml", False),
        ("src/pkg/data.txt", False),
        ("a/b/c/requirements.txt", False),
    ],
)
def test_only_the_needed_members_are_read(path: str, wanted: bool) -> None:
    assert wanted_member(path) is wanted


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("pyproject.toml", b"[project\nname = 1"),
        ("tox.ini", b"[testenv]\ndeps\n  x\n[[["),
        ("setup.cfg", b"no section header\n"),
    ],
)
def test_malformed_config_is_a_clear_error(name: str, data: bytes) -> None:
    with pytest.raises(MalformedMetadata, match=name):
        extract({name: data}, package="x", target=PY311)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["pyproject.toml", "setup.cfg", "tox.ini", "requirements-test.txt"]),
    st.binary(max_size=400) | st.text(max_size=400).map(str.encode),
)
def test_fuzzed_config_raises_only_malformed_metadata(name: str, data: bytes) -> None:
    with contextlib.suppress(MalformedMetadata):
        extract({name: data}, package="x", target=PY311)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzzed_core_metadata_never_raises(data: bytes) -> None:
    parse_core_metadata(b"Metadata-Version: 2.2\n" + data)
