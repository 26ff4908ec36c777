"""Test planning (runner, argv, installed-copy targets), the result pipe's validation and
the careful sdist extraction: pure functions over files written to tmp_path."""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

AGENT_DIR = Path(__file__).resolve().parents[2] / "guest_agent"
sys.path.insert(0, str(AGENT_DIR))

from pyti_agent import testrun  # noqa: E402


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "src" / "pkg-1.0"
    venv = tmp_path / "venv"
    site_dir = venv / "lib" / "python3.11" / "site-packages"
    site_dir.mkdir(parents=True)
    root.mkdir(parents=True)
    return root, venv, site_dir


def plan(root: Path, venv: Path, site_dir: Path, **kwargs: object) -> testrun.TestPlan:
    options: dict[str, object] = {
        "runner": "auto",
        "runner_args": (),
        "test_args": (),
        "top_levels": ("pkg",),
        "moved": (),
    }
    options.update(kwargs)
    return testrun.plan_tests(root=root, venv=venv, site_dir=site_dir, **options)  # type: ignore[arg-type]


def pytest_args(p: testrun.TestPlan) -> list[str]:
    assert p.runner == "pytest"
    assert p.argv[1:7] == ("-m", "pytest", "-p", "_pyti_pytest_plugin", "-p", "no:cacheprovider")
    return list(p.argv[7:])


def test_tox_running_unittest_picks_the_unittest_runner_with_its_arguments(tree) -> None:
    root, venv, site_dir = tree
    write(
        root,
        {"tox.ini": "[testenv]\ncommands =\n    python -m unittest discover -s tests {posargs}\n"},
    )

    p = plan(root, venv, site_dir)

    assert p.runner == "unittest"
    assert p.argv == (
        str(venv / "bin/python"),
        "-m",
        "_pyti_unittest_runner",
        "discover",
        "-s",
        "tests",
    )


def test_tox_running_pytest_keeps_pytest(tree) -> None:
    root, venv, site_dir = tree
    write(
        root,
        {
            "tox.ini": "[testenv]\ncommands = pytest {posargs}\n",
            "Makefile": "test:\n\tpython -m unittest\n",
        },
    )

    assert plan(root, venv, site_dir).runner == "pytest"


def test_plain_project_runs_pytest_with_its_own_config_and_no_targets(tree) -> None:
    root, venv, site_dir = tree
    write(root, {"pyproject.toml": "[tool.pytest.ini_options]\ntestpaths = ['tests']\n"})

    p = plan(root, venv, site_dir)

    assert pytest_args(p) == []
    assert p.cwd == root


def test_tests_inside_a_moved_flat_package_run_from_the_installed_copy(tree) -> None:
    root, venv, site_dir = tree
    write(site_dir, {"pkg/__init__.py": "", "pkg/tests/test_a.py": "def test_a(): pass\n"})

    p = plan(root, venv, site_dir, moved=("pkg",))

    assert pytest_args(p) == [".", str(site_dir / "pkg")]


def test_testpaths_into_the_moved_package_are_rewritten_to_site_packages(tree) -> None:
    root, venv, site_dir = tree
    write(root, {"pytest.ini": "[pytest]\ntestpaths = pkg/tests docs\n"})
    write(site_dir, {"pkg/__init__.py": "", "pkg/tests/test_a.py": ""})

    p = plan(root, venv, site_dir, moved=("pkg",))

    assert pytest_args(p) == [str(site_dir / "pkg" / "tests"), "docs"]


def test_doctest_modules_point_at_the_installed_package(tree) -> None:
    root, venv, site_dir = tree
    write(
        root, {"setup.cfg": "[tool:pytest]\naddopts = --doctest-modules\n", "tests/test_x.py": ""}
    )
    write(site_dir, {"pkg/__init__.py": ""})

    p = plan(root, venv, site_dir, moved=("pkg",))

    assert pytest_args(p) == [".", str(site_dir / "pkg")]


def test_src_layout_doctests_ignore_the_source_tree(tree) -> None:
    root, venv, site_dir = tree
    write(
        root, {"pytest.ini": "[pytest]\naddopts = --doctest-modules\n", "src/pkg/__init__.py": ""}
    )
    write(site_dir, {"pkg/__init__.py": ""})

    assert pytest_args(plan(root, venv, site_dir)) == [
        "--ignore",
        "src",
        ".",
        str(site_dir / "pkg"),
    ]


def test_src_layout_testpaths_point_at_the_installed_package(tree) -> None:
    root, venv, site_dir = tree
    toml = (
        "[tool.pytest.ini_options]\ntestpaths = ['tests', 'src']\naddopts = '--doctest-modules'\n"
    )
    write(root, {"pyproject.toml": toml, "src/pkg/__init__.py": "", "src/pkg/mod.py": ""})
    write(site_dir, {"pkg/__init__.py": "", "helper.py": ""})

    p = plan(root, venv, site_dir, top_levels=("helper", "pkg"))
    explicit = plan(root, venv, site_dir, test_args=("src/pkg/mod.py",))

    assert pytest_args(p) == ["tests", str(site_dir / "helper.py"), str(site_dir / "pkg")]
    assert pytest_args(explicit) == [str(site_dir / "pkg" / "mod.py")]


def test_xdist_and_coverage_options_are_dropped_and_overridden(tree) -> None:
    root, venv, site_dir = tree
    write(site_dir, {"xdist/__init__.py": "", "pytest_cov/__init__.py": ""})

    p = plan(
        root,
        venv,
        site_dir,
        runner="pytest",
        runner_args=("-n", "auto", "--cov", "pkg", "--cov-report=xml", "-x", "tests"),
        test_args=("-nauto", "-k", "fast", "--dist=loadfile", "--cov"),
    )

    assert pytest_args(p) == ["-x", "tests", "-k", "fast", "-n", "0", "--no-cov"]


def test_cache_options_in_addopts_keep_the_cache_plugin_out_of_the_tree(tree) -> None:
    root, venv, site_dir = tree
    write(root, {"pytest.ini": "[pytest]\naddopts = --ff -ra\n"})

    p = plan(root, venv, site_dir)

    assert p.argv[3:7] == (
        "-p",
        "_pyti_pytest_plugin",
        "-o",
        f"cache_dir={venv.parent}/tmp/pytest-cache",
    )


def test_tox_testenv_sections_other_than_lint_decide_the_runner(tree) -> None:
    root, venv, site_dir = tree
    write(
        root,
        {
            "tox.ini": """
                [testenv:lint]
                commands = pytest --flake8
                [testenv:py311-unit]
                commands = coverage run -m unittest discover -v {posargs}
            """
        },
    )

    p = plan(root, venv, site_dir)

    assert p.runner == "unittest"
    assert p.argv[3:] == ("discover", "-v")


def test_explicit_targets_into_the_moved_package_are_rewritten(tree) -> None:
    root, venv, site_dir = tree

    p = plan(
        root,
        venv,
        site_dir,
        runner="pytest",
        test_args=("pkg/tests/test_a.py::test_x", "-k", "pkg"),
        moved=("pkg",),
    )

    assert pytest_args(p) == [f"{site_dir}/pkg/tests/test_a.py::test_x", "-k", "pkg"]


def test_unittest_with_tests_only_inside_the_package_discovers_the_installed_copy(tree) -> None:
    root, venv, site_dir = tree
    write(site_dir, {"pkg/__init__.py": "", "pkg/tests/__init__.py": "", "pkg/tests/test_a.py": ""})

    p = plan(root, venv, site_dir, runner="unittest", moved=("pkg",))

    assert p.argv[3:] == ("discover", "-s", str(site_dir / "pkg"), "-t", str(site_dir))


def test_installed_top_levels_come_from_record(tmp_path: Path) -> None:
    dist_info = tmp_path / "My_Pkg-2.0.dist-info"
    dist_info.mkdir()
    (dist_info / "RECORD").write_text(
        "my_pkg/__init__.py,sha256=x,1\nmy_pkg/sub/a.py,,\n_my_speedups.cpython-311-x86_64-linux-gnu.so,,\n"
        "helper.py,,\nMy_Pkg-2.0.dist-info/METADATA,,\n../../../bin/tool,,\nmy_pkg.pth,,\n"
    )

    assert testrun.installed_top_levels(tmp_path, "my-pkg") == ("_my_speedups", "helper", "my_pkg")
    assert testrun.installed_top_levels(tmp_path, "other") == ()


def test_move_aside_moves_packages_and_modules_only_when_present(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, {"pkg/__init__.py": "", "helper.py": "", "tests/test_a.py": ""})

    moved = testrun.move_aside(root, ("pkg", "helper", "absent"), tmp_path / "aside")

    assert moved == ("pkg", "helper")
    assert sorted(p.name for p in root.iterdir()) == ["tests"]
    assert (tmp_path / "aside" / "pkg" / "__init__.py").exists()


def read_lines(
    lines: list[bytes],
) -> tuple[list[testrun.ResultLine], list[tuple[str, str]], testrun.PipeStats]:
    read_fd, write_fd = os.pipe()
    results: list[testrun.ResultLine] = []
    findings: list[tuple[str, str]] = []
    reader = testrun.ResultReader(read_fd, results.append, lambda k, d: findings.append((k, d)))
    reader.start()
    with os.fdopen(write_fd, "wb") as f:
        for line in lines:
            f.write(line)
    reader.join(5)
    assert not reader.is_alive()
    return results, findings, reader.stats


def test_result_reader_drops_bad_lines_without_crashing() -> None:
    good = {"nodeid": "t.py::a", "outcome": "passed", "duration": 0.5, "report": ""}
    lines = [
        json.dumps(good).encode() + b"\n",
        b"not json\n",
        b"[1, 2]\n",
        json.dumps({**good, "outcome": "exploded"}).encode() + b"\n",
        json.dumps({**good, "duration": "slow"}).encode() + b"\n",
        json.dumps({**good, "nodeid": ""}).encode() + b"\n",
        b'{"nodeid": "' + b"x" * (testrun.MAX_LINE + 10) + b'"}\n',
        json.dumps({**good, "nodeid": "t.py::b", "duration": -3, "report": "r" * 30_000}).encode()
        + b"\n",
        b'{"finding": "network", "detail": "connect 1.2.3.4:80"}\n',
        b'{"finding": "network", "detail": "connect 1.2.3.4:80"}\n',
        b'{"finding": "BAD KIND", "detail": "x"}\n',
        b'{"session": "finished", "exitstatus": 1}\n',
        json.dumps({**good, "nodeid": "t.py::c"}).encode(),  # no final newline
    ]

    results, findings, stats = read_lines(lines)

    assert [r.nodeid for r in results] == ["t.py::a", "t.py::b", "t.py::c"]
    assert results[1].duration == 0.0
    assert len(results[1].report) <= testrun.MAX_REPORT
    assert findings == [("network", "connect 1.2.3.4:80")]
    assert stats.bad_lines == 7
    assert stats.exitstatus == 1


def _tar(path: Path, members: list[tarfile.TarInfo]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for member in members:
            data = b"data" if member.isfile() else None
            if data is not None:
                member.size = len(data)
            tf.addfile(member, io.BytesIO(data) if data is not None else None)


@pytest.mark.parametrize(
    ("name", "kind", "link"),
    [
        ("../evil.txt", tarfile.REGTYPE, ""),
        ("/abs.txt", tarfile.REGTYPE, ""),
        ("pkg-1.0/link", tarfile.SYMTYPE, "../../outside"),
        ("pkg-1.0/dev", tarfile.CHRTYPE, ""),
    ],
)
def test_safe_extract_refuses_hostile_members(
    tmp_path: Path, name: str, kind: bytes, link: str
) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = link
    archive = tmp_path / "bad-1.0.tar.gz"
    _tar(archive, [tarfile.TarInfo("pkg-1.0/ok.txt"), member])

    with pytest.raises((testrun.UnsafeArchive, tarfile.TarError)):
        testrun.safe_extract(archive, tmp_path / "out")

    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "outside").exists()


def test_safe_extract_fallback_checks_without_the_data_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bookworm's Python 3.11.2 has no tarfile.data_filter: the agent's own checks apply.
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    member = tarfile.TarInfo("pkg-1.0/link")
    member.type = tarfile.SYMTYPE
    member.linkname = "/etc/passwd"
    archive = tmp_path / "bad-1.0.tar.gz"
    _tar(archive, [member])

    with pytest.raises(testrun.UnsafeArchive, match="link outside"):
        testrun.safe_extract(archive, tmp_path / "out")


def test_safe_extract_unpacks_an_ordinary_sdist(tmp_path: Path) -> None:
    archive = tmp_path / "pkg-1.0.tar.gz"
    _tar(archive, [tarfile.TarInfo("pkg-1.0/setup.py"), tarfile.TarInfo("pkg-1.0/pkg/__init__.py")])

    testrun.safe_extract(archive, tmp_path / "out")

    root = testrun.sdist_root(tmp_path / "out")
    assert root == (tmp_path / "out" / "pkg-1.0").resolve() or root == tmp_path / "out" / "pkg-1.0"
    assert (root / "pkg" / "__init__.py").read_bytes() == b"data"


def test_result_reader_keeps_outcomes_but_drops_reports_past_the_byte_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(testrun, "MAX_RESULT_BYTES", 100)
    line = {"nodeid": "t.py::a", "outcome": "failed", "duration": 0.1, "report": "r" * 60}
    lines = [json.dumps({**line, "nodeid": f"t.py::{i}"}).encode() + b"\n" for i in range(4)]

    results, _, stats = read_lines(lines)

    assert [(r.nodeid, len(r.report)) for r in results] == [
        ("t.py::0", 60),
        ("t.py::1", 0),
        ("t.py::2", 0),
        ("t.py::3", 0),
    ]
    assert stats.dropped == 0


def test_unittest_discovery_is_planned_only_for_modules_pytest_does_not_match(
    tmp_path: Path,
) -> None:
    pytest_plan = testrun.TestPlan("pytest", ("/venv/bin/python", "-m", "pytest"), tmp_path)
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_things.py").write_text("")
    assert testrun.unittest_discovery_plan(tmp_path, pytest_plan) is None  # pytest's own
    (tests / "test.py").write_text("")  # decorator 5.3.1 keeps its tests here
    plan = testrun.unittest_discovery_plan(tmp_path, pytest_plan)
    assert plan is not None and plan.runner == "unittest"
    assert plan.argv == (
        "/venv/bin/python", "-m", "_pyti_unittest_runner", "discover", "-s", "tests", "-t", "tests"
    )  # fmt: skip
    (tests / "__init__.py").write_text("")  # a package: imported as tests.test
    plan = testrun.unittest_discovery_plan(tmp_path, pytest_plan)
    assert plan is not None and plan.argv[-2:] == ("-s", "tests")
