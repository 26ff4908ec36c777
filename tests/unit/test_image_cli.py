"""`pyti image build/list/rm`: exact lines and exit codes (no image gets built here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _pyti(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTI_CACHE_DIR=str(cache))
    return subprocess.run(
        [sys.executable, "-m", "pyti", "image", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_unknown_suite_is_one_line_listing_the_known_ones(tmp_path: Path) -> None:
    result = _pyti(tmp_path, "build", "--suite", "sid")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pyti: error: unknown suite 'sid'; known suites: bookworm, trixie"
    ]


def test_list_with_no_images_says_how_to_build_one(tmp_path: Path) -> None:
    result = _pyti(tmp_path, "list")
    assert result.returncode == 0
    assert result.stdout == "no images; build one with: pyti image build\n"


def test_rm_needs_something_to_remove(tmp_path: Path) -> None:
    result = _pyti(tmp_path, "rm")
    assert result.returncode == 2
    assert result.stderr.strip() == "pyti: error: name an image, or pass --suite SUITE or --all"


def test_rm_all_on_an_empty_cache_frees_nothing(tmp_path: Path) -> None:
    result = _pyti(tmp_path, "rm", "--all")
    assert result.returncode == 0
    assert result.stdout == "freed 0.0 MB\n"
