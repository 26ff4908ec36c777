"""The setup disk's `manifest.cbor`: what the guest agent installs and how it tests.

The host (`pyti.setup`) writes it next to `dists/` on the read-only setup disk;
the guest agent reads it. Both sides import this module, so it uses only the
stdlib and cbor2 (cbor2 5.4 in the bookworm guest, 6.x on the host) and
nothing else from pyti.

Field meanings (the contract in docs/architecture.md; details in docs/setup.md):

- `sdist`, `wheel`: file names under `dists/` of the package under test.
- `install`: what to install, in order, with `--no-deps` and `--no-index
  --find-links dists/`: the package first (its pin when it has a wheel, else its
  sdist's file name under `dists/`), then exact pins (`name==version`) of its
  runtime and test dependencies.
- `build_requirements`: pins whose dists sit under `dists/` for building an
  sdist in the guest (empty when no sdist needs building).
- `files`: every file under `dists/` (file name) -> lowercase hex sha256; the
  agent checks each before use.
- `test_requirements`: normalized names among `install` that are there for the
  tests only.

`from_cbor` validates everything: it may be handed a damaged disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import cbor2

SCHEMA = 1
RUNNERS = ("auto", "pytest", "unittest")
TASKS = ("metadata", "install", "test", "quality")

# Caps: a manifest is small; these only stop a damaged or hostile disk from
# making the agent allocate without bound.
MAX_MANIFEST_BYTES = 4 << 20
MAX_STRING = 4096
MAX_ITEMS = 10_000

_SHA256 = re.compile(r"[0-9a-f]{64}")
# A dist file name: one path component, no hidden files, printable ASCII.
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+!-]*")


class ManifestError(ValueError):
    """The manifest is malformed (bad CBOR, wrong types, or inconsistent fields)."""


def _check_str(name: str, value: object, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{name} must be a string, not {type(value).__name__}")
    if not value and not empty:
        raise ManifestError(f"{name} must not be empty")
    if len(value) > MAX_STRING:
        raise ManifestError(f"{name} is longer than {MAX_STRING} characters")
    if "\x00" in value or "\n" in value or "\r" in value:
        raise ManifestError(f"{name} contains a NUL or newline")
    return value


def _check_strings(name: str, value: object) -> tuple[str, ...]:
    # Lists are accepted (CBOR arrays decode to lists) and frozen into tuples.
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ManifestError(f"{name} must be a sequence of strings")
    items = tuple(value)
    if len(items) > MAX_ITEMS:
        raise ManifestError(f"{name} has more than {MAX_ITEMS} items")
    return tuple(_check_str(f"{name}[{i}]", item) for i, item in enumerate(items))


def _check_file_name(name: str, value: object) -> str:
    text = _check_str(name, value)
    if not _FILE_NAME.fullmatch(text) or ".." in text:
        raise ManifestError(f"{name} is not a plain file name: {text!r}")
    return text


def _check_files(value: object, sdist: str | None, wheel: str | None) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ManifestError("files must be a map of file name to sha256")
    if len(value) > MAX_ITEMS:
        raise ManifestError(f"files has more than {MAX_ITEMS} entries")
    files: dict[str, str] = {}
    for key in sorted(value, key=str):
        _check_file_name("files key", key)
        digest = value[key]
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ManifestError(f"files[{key!r}] is not a lowercase hex sha256")
        files[key] = digest
    for name, file_name in (("sdist", sdist), ("wheel", wheel)):
        if file_name is not None and file_name not in files:
            raise ManifestError(f"{name} {file_name!r} is not listed in files")
    # Sorted and read-only: equal manifests encode to equal bytes.
    return MappingProxyType(files)


@dataclass(frozen=True, kw_only=True)
class SetupManifest:
    schema: int = SCHEMA
    spec: str
    package_name: str
    package_version: str
    sdist: str | None
    wheel: str | None
    install: tuple[str, ...]
    build_requirements: tuple[str, ...]
    files: Mapping[str, str]
    runner: str = "auto"
    runner_args: tuple[str, ...] = ()
    test_requirements: tuple[str, ...] = ()
    tasks: tuple[str, ...] = field(default=("install", "test"))
    # Bytecode the host compiled for pure .py files of wheels (see pyti.setup.bytecode):
    # archive file names under dists/, valid only for a venv whose site-packages is
    # `bytecode_site`; an agent with another layout ignores them.
    bytecode: tuple[str, ...] = ()
    bytecode_site: str = ""

    def __post_init__(self) -> None:
        if type(self.schema) is not int or self.schema != SCHEMA:
            raise ManifestError(f"unsupported manifest schema {self.schema!r} (want {SCHEMA})")
        _check_str("spec", self.spec)
        _check_str("package_name", self.package_name)
        _check_str("package_version", self.package_version)
        for name in ("sdist", "wheel"):
            value = getattr(self, name)
            if value is not None:
                _check_file_name(name, value)
        if self.sdist is None and self.wheel is None:
            raise ManifestError("a manifest needs the package's sdist or wheel")
        object.__setattr__(self, "files", _check_files(self.files, self.sdist, self.wheel))
        for name in ("install", "build_requirements", "runner_args", "test_requirements"):
            object.__setattr__(self, name, _check_strings(name, getattr(self, name)))
        object.__setattr__(self, "bytecode", _check_strings("bytecode", self.bytecode))
        for archive in self.bytecode:
            if _check_file_name("bytecode", archive) not in self.files:
                raise ManifestError(f"bytecode {archive!r} is not listed in files")
        _check_str("bytecode_site", self.bytecode_site, empty=True)
        if self.runner not in RUNNERS:
            raise ManifestError(f"runner must be one of {', '.join(RUNNERS)}: {self.runner!r}")
        tasks = _check_strings("tasks", self.tasks)
        unknown = [task for task in tasks if task not in TASKS]
        if unknown:
            raise ManifestError(f"unknown tasks {unknown}; known: {', '.join(TASKS)}")
        if len(set(tasks)) != len(tasks):
            raise ManifestError(f"tasks repeat: {list(tasks)}")
        object.__setattr__(self, "tasks", tasks)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts) in field order."""
        out: dict[str, Any] = {}
        for spec_field in fields(self):
            value = getattr(self, spec_field.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[spec_field.name] = value
        return out

    def to_cbor(self) -> bytes:
        # Canonical CBOR: the same manifest gives the same bytes, so the setup
        # disk built around it is reproducible.
        data: bytes = cbor2.dumps(self.to_dict(), canonical=True)
        return data

    @classmethod
    def from_dict(cls, data: object) -> SetupManifest:
        if not isinstance(data, Mapping):
            raise ManifestError("the manifest must be a CBOR map")
        names = {spec_field.name for spec_field in fields(cls)}
        # Unknown keys are ignored so that an older agent (in a cached image)
        # can read a manifest that gained an optional field.
        kwargs = {key: value for key, value in data.items() if key in names}
        required = {"spec", "package_name", "package_version", "sdist", "wheel"}
        required |= {"install", "build_requirements", "files"}
        missing = sorted(required - kwargs.keys())
        if missing:
            raise ManifestError(f"the manifest lacks {', '.join(missing)}")
        try:
            return cls(**kwargs)
        except TypeError as exc:  # e.g. an unhashable key type slipped past
            raise ManifestError(f"malformed manifest: {exc}") from exc

    @classmethod
    def from_cbor(cls, data: bytes) -> SetupManifest:
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            decoded = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several types across 5.x and 6.x
            raise ManifestError(f"the manifest is not valid CBOR: {exc}") from exc
        return cls.from_dict(decoded)
