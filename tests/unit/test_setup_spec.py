"""Spec parsing and choosing the package's files for the guest."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pyti.errors import NoCompatibleDistribution, UsageError
from pyti.setup.choose import choose
from pyti.setup.index import make_file, parse_html, parse_json
from pyti.setup.model import TARGETS, GuestTarget, target_for_python
from pyti.setup.spec import (
    LocalFileSpec,
    ProjectDirSpec,
    RequirementSpec,
    UrlSpec,
    parse_spec,
)

PY311 = GuestTarget("3.11", "x86_64-manylinux_2_36")


def test_requirement_specs() -> None:
    spec = parse_spec("Attrs==23.2.0")
    assert isinstance(spec, RequirementSpec)
    assert spec.name == "attrs"
    assert str(spec.requirement.specifier) == "==23.2.0"


def test_local_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "pkg-1.0.tar.gz").write_bytes(b"")
    (tmp_path / "pkg-1.0-py3-none-any.whl").write_bytes(b"")
    assert parse_spec("pkg-1.0.tar.gz", cwd=tmp_path) == LocalFileSpec(
        tmp_path / "pkg-1.0.tar.gz", "sdist", "pkg", "1.0"
    )
    wheel = parse_spec(str(tmp_path / "pkg-1.0-py3-none-any.whl"))
    assert isinstance(wheel, LocalFileSpec)
    assert wheel.kind == "wheel"
    assert parse_spec(".", cwd=tmp_path) == ProjectDirSpec(tmp_path)


def test_sdist_url_keeps_its_hash() -> None:
    spec = parse_spec("https://example.org/files/pkg-2.0.tar.gz#sha256=ABCD")
    assert spec == UrlSpec(
        "https://example.org/files/pkg-2.0.tar.gz", "pkg-2.0.tar.gz", "sdist", "pkg", "2.0", "abcd"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("./missing-1.0.tar.gz", "no such file"),
        ("https://example.org/archive.rar", "not a wheel or sdist"),
        ("pkg @ https://example.org/x.tar.gz", "direct reference"),
        ("not a spec!!", "not a requirement"),
    ],
)
def test_bad_specs(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_spec(text, cwd=tmp_path)


def test_python_table() -> None:
    assert target_for_python("3.13") == TARGETS["3.13"]
    with pytest.raises(UsageError, match=r"3\.11, 3\.13"):
        target_for_python("2.7")


def test_html_index_resolves_relative_urls_and_reads_attributes() -> None:
    page = """<html><body>
    <a href="../../packages/pkg-1.0.tar.gz#sha256=AA11" data-requires-python="&gt;=3.8">x</a>
    <a href="https://cdn.example/pkg-1.0-py3-none-any.whl" data-yanked="">y</a>
    <a href="pkg-1.0.egg">egg</a>
    </body></html>"""
    files = parse_html("https://idx.example/simple/pkg/", page)
    assert [(f.filename, f.url, f.sha256, f.requires_python, f.yanked) for f in files] == [
        ("pkg-1.0.tar.gz", "https://idx.example/packages/pkg-1.0.tar.gz", "aa11", ">=3.8", False),
        (
            "pkg-1.0-py3-none-any.whl",
            "https://cdn.example/pkg-1.0-py3-none-any.whl",
            None,
            None,
            True,
        ),
    ]


def test_json_index_page() -> None:
    page = (
        '{"meta": {"api-version": "1.1"}, "files": ['
        '{"filename": "pkg-2.0.tar.gz", "url": "/files/pkg-2.0.tar.gz",'
        ' "hashes": {"sha256": "BB"}, "requires-python": ">=3.12", "yanked": "bad"}]}'
    )
    (item,) = parse_json("https://idx.example/simple/pkg/", page)
    assert item.url == "https://idx.example/files/pkg-2.0.tar.gz"
    assert (item.sha256, item.yanked, item.python_ok("3.11")) == ("bb", True, False)


def listing(*names: str, requires_python: str | None = None) -> list:  # type: ignore[type-arg]
    made = [make_file(n, f"https://x/{n}", "0" * 64, requires_python, False) for n in names]
    return [m for m in made if m is not None]


def test_choose_prefers_the_newest_version_with_a_usable_file() -> None:
    files = listing(
        "pkg-1.0.tar.gz",
        "pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "pkg-2.0-cp312-cp312-manylinux_2_17_x86_64.whl",  # not for 3.11, and no sdist
        "pkg-1.5-cp311-cp311-manylinux_2_39_x86_64.whl",  # too new a glibc for bookworm
        "pkg-1.5-cp311-cp311-win_amd64.whl",
    )
    chosen = choose(files, Requirement("pkg"), PY311)
    assert str(chosen.version) == "1.0"
    assert chosen.sdist is not None
    assert chosen.sdist.filename == "pkg-1.0.tar.gz"
    assert chosen.wheel is not None
    assert "manylinux2014" in chosen.wheel.filename


def test_choose_best_wheel_tag() -> None:
    files = listing(
        "pkg-3.0-py3-none-any.whl",
        "pkg-3.0-cp311-abi3-manylinux_2_28_x86_64.whl",
        "pkg-3.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    )
    chosen = choose(files, Requirement("pkg"), PY311)
    assert chosen.wheel is not None
    assert chosen.wheel.filename == "pkg-3.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert chosen.sdist is None


def test_no_compatible_distribution_names_python_and_versions() -> None:
    files = listing("pkg-1.0-cp39-cp39-manylinux_2_17_x86_64.whl", "pkg-0.9-py2-none-any.whl")
    with pytest.raises(NoCompatibleDistribution) as caught:
        choose(files, Requirement("pkg"), PY311)
    assert str(caught.value) == (
        "no wheel or sdist of pkg for Python 3.11 (x86_64-manylinux_2_36);"
        " versions on the index: 0.9, 1.0"
    )


def test_requires_python_hides_files() -> None:
    files = listing("pkg-5.0.tar.gz", requires_python=">=3.12")
    with pytest.raises(NoCompatibleDistribution, match=r"Python 3\.11"):
        choose(files, Requirement("pkg"), PY311)
    assert str(choose(files, Requirement("pkg"), TARGETS["3.13"]).version) == "5.0"
