"""The setup disk's manifest: validation and a byte-exact CBOR round trip."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyti.protocol.manifest import MAX_MANIFEST_BYTES, ManifestError, SetupManifest

SHA = "a" * 64


def make(**overrides: Any) -> SetupManifest:
    values: dict[str, Any] = {
        "spec": "iniconfig==2.3.1",
        "package_name": "iniconfig",
        "package_version": "2.3.1",
        "sdist": "iniconfig-2.3.1.tar.gz",
        "wheel": "iniconfig-2.3.1-py3-none-any.whl",
        "install": ("iniconfig==2.3.1", "pytest==9.2.0"),
        "build_requirements": (),
        "files": {"iniconfig-2.3.1.tar.gz": SHA, "iniconfig-2.3.1-py3-none-any.whl": "b" * 64},
        "runner_args": ("-x",),
        "test_requirements": ("pytest",),
    }
    values.update(overrides)
    return SetupManifest(**values)


def test_round_trip_gives_an_equal_manifest() -> None:
    manifest = make(runner="pytest", tasks=("metadata", "install", "test"))
    again = SetupManifest.from_cbor(manifest.to_cbor())
    assert again == manifest
    assert again.to_cbor() == manifest.to_cbor()


def test_defaults_match_the_contract() -> None:
    manifest = make()
    assert manifest.schema == 1
    assert manifest.runner == "auto"
    assert manifest.tasks == ("install", "test")


def test_lists_are_frozen_into_tuples_and_files_is_read_only() -> None:
    manifest = make(install=["a==1"])
    assert manifest.install == ("a==1",)
    with pytest.raises(TypeError):
        manifest.files["x"] = SHA  # type: ignore[index]


def test_encoding_does_not_depend_on_files_order() -> None:
    one = make(files={"iniconfig-2.3.1.tar.gz": SHA, "iniconfig-2.3.1-py3-none-any.whl": SHA})
    two = make(files={"iniconfig-2.3.1-py3-none-any.whl": SHA, "iniconfig-2.3.1.tar.gz": SHA})
    assert one.to_cbor() == two.to_cbor()


def test_unknown_keys_are_ignored_for_older_agents() -> None:
    data = make().to_dict() | {"limits": {"cpu": 2}}
    assert SetupManifest.from_cbor(cbor2.dumps(data)) == make()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"schema": 2}, "schema"),
        ({"schema": True}, "schema"),
        ({"spec": ""}, "spec"),
        ({"package_name": 3}, "package_name"),
        ({"sdist": "../evil.tar.gz"}, "plain file name"),
        ({"wheel": "dir/x.whl"}, "plain file name"),
        ({"sdist": None, "wheel": None}, "sdist or wheel"),
        ({"sdist": "other-1.0.tar.gz"}, "not listed"),
        ({"files": {"iniconfig-2.3.1.tar.gz": "XYZ"}}, "sha256"),
        ({"files": {".hidden": SHA}}, "plain file name"),
        ({"files": ["x"]}, "map"),
        ({"install": "a==1"}, "sequence"),
        ({"install": ("a\n==1",)}, "newline"),
        ({"runner": "nose"}, "runner"),
        ({"tasks": ("install", "fly")}, "unknown tasks"),
        ({"tasks": ("test", "test")}, "repeat"),
        ({"runner_args": ("x" * 5000,)}, "longer"),
    ],
)
def test_invalid_fields_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        make(**overrides)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xff",
        cbor2.dumps([1, 2]),
        cbor2.dumps({"spec": "x"}),
        b"\x00" * (MAX_MANIFEST_BYTES + 1),
    ],
)
def test_bad_bytes_raise_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError):
        SetupManifest.from_cbor(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_another_error(data: bytes) -> None:
    with contextlib.suppress(ManifestError):
        SetupManifest.from_cbor(make().to_cbor()[: len(data)] + data)
