from __future__ import annotations

from pathlib import Path

import pytest

from pyti.config import Settings, load_settings
from pyti.errors import UsageError


@pytest.fixture(autouse=True)
def _isolated_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "user.toml"
    monkeypatch.setenv("PYTI_CONFIG", str(path))
    return path


def test_defaults_when_nothing_is_set() -> None:
    assert load_settings(environ={}) == Settings()


def test_flags_beat_environment_beat_project_beat_user_file(
    tmp_path: Path, _isolated_user_config: Path
) -> None:
    _isolated_user_config.write_text('memory_mb = 1000\ncpus = 2\npython = "3.13"\n')
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text("[tool.pyti]\nmemory-mb = 1100\ncpus = 3\n")
    settings = load_settings(
        {"memory_mb": 1300, "cpus": None},
        project_dir=project,
        environ={"PYTI_MEMORY_MB": "1200", "PYTI_CPUS": "4"},
    )
    assert settings.memory_mb == 1300  # flag
    assert settings.cpus == 4  # environment (the flag was not given)
    assert settings.python == "3.13"  # user file


def test_user_file_may_use_a_tool_pyti_table(_isolated_user_config: Path) -> None:
    _isolated_user_config.write_text('[tool.pyti]\naccel = "tcg"\n')
    assert load_settings(environ={}).accel == "tcg"


def test_environment_lists_split_on_whitespace() -> None:
    settings = load_settings(environ={"PYTI_EXTRA_INDEX_URLS": "http://a/ http://b/"})
    assert settings.extra_index_urls == ("http://a/", "http://b/")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PYTI_MEMORY_MB": "lots"}, "PYTI_MEMORY_MB"),
        ({"PYTI_ACCEL": "hvf"}, "unknown accelerator"),
        ({"PYTI_CPUS": "0"}, "cpus 0 is out of range"),
    ],
)
def test_bad_values_are_usage_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_settings(environ=environ)


def test_malformed_user_file_is_a_usage_error(_isolated_user_config: Path) -> None:
    _isolated_user_config.write_text("memory_mb = [\n")
    with pytest.raises(UsageError, match="cannot read"):
        load_settings(environ={})
