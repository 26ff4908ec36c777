"""Suites, and the content hashes that key the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyti.errors import UsageError
from pyti.image.rootfs import read_packages
from pyti.image.sources import Sources, digest
from pyti.image.suites import SUITES, get_suite


def test_known_suites_and_their_pythons() -> None:
    assert SUITES == {"bookworm": "3.11", "trixie": "3.13"}
    assert get_suite("trixie").platform_tag == "x86_64-manylinux_2_41"


def test_unknown_suite_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown suite 'sid'; known suites: bookworm, trixie"):
        get_suite("sid")


def test_digest_depends_on_names_contents_and_boundaries() -> None:
    base = digest([("a", b"1"), ("b", b"2")])
    assert digest([("a", b"1"), ("b", b"2")]) == base
    assert digest([("a", b"1"), ("b", b"3")]) != base
    assert digest([("a", b"1"), ("c", b"2")]) != base
    # moving bytes across the boundary must not collide
    assert digest([("ab", b"")]) != digest([("a", b"b")])


def test_image_id_covers_agent_codec_and_init() -> None:
    names = [name for name, _ in Sources.locate().image_inputs()]
    assert "init" in names
    assert "pyti_agent/__main__.py" in names
    assert "pyti/protocol/codec.py" in names


def test_package_lists_of_every_suite_parse(tmp_path: Path) -> None:
    sources = Sources.locate()
    for suite in SUITES:
        packages = read_packages(sources.packages_file(suite))
        assert {"python3", "python3-venv", "python3-cbor2", "tzdata"} <= set(packages)
        assert "python3-pip" not in packages
    listing = tmp_path / "list"
    listing.write_text("# comment\n a  # trailing\n\nb\n")
    assert read_packages(listing) == ["a", "b"]
