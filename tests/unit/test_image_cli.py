"""`pyti image build/list/rm`: exact lines and exit codes (no image gets built here)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyti.cli import main


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> object:
    """`pyti image ARGS` in-process (a subprocess costs seconds on a loaded host)."""
    monkeypatch.setenv("PYTI_CACHE_DIR", str(tmp_path))

    def pyti(*args: str) -> Result:
        monkeypatch.setattr(sys, "argv", ["pyti", "image", *args])
        with pytest.raises(SystemExit) as exited:
            main()
            sys.exit(0)
        captured = capsys.readouterr()
        return Result(int(exited.value.code or 0), captured.out, captured.err)

    return pyti


def test_unknown_suite_is_one_line_listing_the_known_ones(run: Any) -> None:
    result = run("build", "--suite", "sid")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pyti: error: unknown suite 'sid'; known suites: bookworm, trixie"
    ]


def test_list_with_no_images_says_how_to_build_one(run: Any) -> None:
    result = run("list")
    assert result.returncode == 0
    assert result.stdout == "no images; build one with: pyti image build\n"


def test_rm_needs_something_to_remove(run: Any) -> None:
    result = run("rm")
    assert result.returncode == 2
    assert result.stderr.strip() == "pyti: error: name an image, or pass --suite SUITE or --all"


def test_rm_all_on_an_empty_cache_frees_nothing(run: Any) -> None:
    result = run("rm", "--all")
    assert result.returncode == 0
    assert result.stdout == "freed 0.0 MB\n"
