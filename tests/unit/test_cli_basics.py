from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def _pyti(*args: str) -> subprocess.CompletedProcess[str]:
    # A refused `run` is still stored: keep it out of the user's own store.
    with tempfile.TemporaryDirectory(prefix="pyti-cli-test-") as data:
        return subprocess.run(
            [sys.executable, "-m", "pyti", *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTI_DATA_DIR": data},
        )


def test_unknown_subcommand_is_a_usage_error_without_traceback() -> None:
    result = _pyti("frobnicate")
    assert result.returncode == 2
    assert "No such command 'frobnicate'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_option_is_a_usage_error_without_traceback() -> None:
    result = _pyti("doctor", "--bogus")
    assert result.returncode == 2
    assert "No such option: --bogus" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = _pyti("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("pyti ")


def test_a_pyti_error_is_one_line_with_its_exit_code() -> None:
    result = _pyti("doctor", "--accel", "hvf")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pyti: error: unknown accelerator 'hvf'; use one of ('auto', 'kvm', 'tcg')"
    ]


def test_an_error_keeps_square_brackets_as_written() -> None:
    # errors quote requirements and uv's words ("pkg[extra]"): not console markup
    result = _pyti("run", "iniconfig", "--with", "bad[extra]!!")
    assert result.returncode == 2
    assert "bad[extra]!!" in result.stderr
