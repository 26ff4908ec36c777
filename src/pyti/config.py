"""Settings: CLI flags override `PYTI_*` variables, which override the user's `[tool.pyti]`.

The user's `[tool.pyti]` comes from a user config file (`~/.config/pyti/config.toml`, a
`[tool.pyti]` table or top-level keys) and, when testing a checkout of one's own project
(`pyti run .`), from that project's `pyproject.toml`. A package fetched from an index is
not the user's: its `[tool.pyti]` may only set its test command, test dependencies and
test arguments (see `pyti.setup`), never anything here.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from pyti.errors import UsageError

ACCELERATORS = ("auto", "kvm", "tcg")


@dataclass(frozen=True, kw_only=True)
class Settings:
    python: str = "3.11"
    accel: str = "auto"
    memory_mb: int = 1536
    cpus: int = 1
    scratch_mb: int = 4096
    total_timeout: float = 15 * 60.0
    no_progress_timeout: float = 5 * 60.0
    index_url: str = "https://pypi.org/simple/"
    extra_index_urls: tuple[str, ...] = ()
    offline: bool = False
    snapshots: bool = True  # resume a saved VM instead of booting (pyti.snapshot)

    def __post_init__(self) -> None:
        if self.accel not in ACCELERATORS:
            raise UsageError(f"unknown accelerator {self.accel!r}; use one of {ACCELERATORS}")
        if not 128 <= self.memory_mb <= 65536:
            raise UsageError(f"memory {self.memory_mb} MiB is out of range (128..65536)")
        if not 1 <= self.cpus <= 64:
            raise UsageError(f"cpus {self.cpus} is out of range (1..64)")
        if self.total_timeout <= 0 or self.no_progress_timeout <= 0:
            raise UsageError("timeouts must be positive")


_FIELDS = {field.name: field for field in dataclasses.fields(Settings)}


def user_config_path() -> Path:
    override = os.environ.get("PYTI_CONFIG")
    if override:
        return Path(override)
    return Path(platformdirs.user_config_dir("pyti")) / "config.toml"


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _FIELDS[name].type
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            return str(value).lower() in {"1", "true", "yes", "on"}
        if kind == "tuple[str, ...]":
            if isinstance(value, str):
                return tuple(part for part in value.split() if part)
            return tuple(str(part) for part in value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{source}: {name} = {value!r} is not a valid {kind}") from exc


def _from_table(table: Mapping[str, Any], source: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in _FIELDS:
            values[name] = _coerce(name, value, source)
    return values


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def _tool_table(document: Mapping[str, Any]) -> Mapping[str, Any]:
    tool = document.get("tool", {})
    table = tool.get("pyti", {}) if isinstance(tool, Mapping) else {}
    return table if isinstance(table, Mapping) else {}


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in _FIELDS:
        raw = environ.get(f"PYTI_{name.upper()}")
        if raw is not None and raw != "":
            values[name] = _coerce(name, raw, f"PYTI_{name.upper()}")
    return values


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    project_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Layer the sources, lowest first: user file, own project, environment, flags."""
    values: dict[str, Any] = {}
    user_doc = _read_toml(user_config_path())
    user_table = _tool_table(user_doc) or user_doc
    values.update(_from_table(user_table, str(user_config_path())))
    if project_dir is not None:
        pyproject = project_dir / "pyproject.toml"
        values.update(_from_table(_tool_table(_read_toml(pyproject)), str(pyproject)))
    values.update(from_environment(os.environ if environ is None else environ))
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    return Settings(**values)
