"""`pyti fetch`: the exact output and the exit code, with prepare() replaced."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import pyti.setup
from pyti.cli import main
from pyti.errors import NoSuchPackage
from pyti.protocol.manifest import SetupManifest
from pyti.setup.model import GuestTarget, HostFinding, SetupDisk

SHA = "c" * 64


def run(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["pyti", *args])
    with pytest.raises(SystemExit) as done:
        main()
        sys.exit(0)
    return int(done.value.code or 0)


def test_fetch_prints_the_disk_and_a_summary(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    async def fake(spec: str, *, target: GuestTarget, **kwargs: Sequence[str]) -> SetupDisk:
        seen.update(spec=spec, target=target, **kwargs)
        manifest = SetupManifest(
            spec=spec,
            package_name="attrs",
            package_version="23.2.0",
            sdist="attrs-23.2.0.tar.gz",
            wheel=None,
            install=("attrs==23.2.0", "pytest==9.2.0"),
            build_requirements=("hatchling==1.27.0",),
            files={"attrs-23.2.0.tar.gz": SHA, "pytest-9.2.0-py3-none-any.whl": SHA},
            test_requirements=("pytest",),
            runner="pytest",
            runner_args=("tests",),
        )
        finding = HostFinding("test-dependency-dropped", "mypy: no wheels")
        return SetupDisk(Path("/c/setup/x.sqfs"), manifest, "x", (finding,), {})

    monkeypatch.setattr(pyti.setup, "prepare", fake)
    code = run(
        monkeypatch, "fetch", "attrs==23.2.0", "--python", "3.13", "--with", "mock",
        "--index-url", "http://i/simple", "--extra-index-url", "http://j/simple",
    )  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "/c/setup/x.sqfs",
        "attrs 23.2.0: 2 dists (no wheel, sdist), 1 test requirements, 1 dropped",
        "runner: pytest tests",
        "finding: test-dependency-dropped: mypy: no wheels",
    ]
    assert seen["target"] == GuestTarget("3.13", "x86_64-manylinux_2_41")
    assert seen["index_urls"] == ("http://i/simple", "http://j/simple")
    assert list(seen["with_requirements"]) == ["mock"]
    assert seen["offline"] is False


def test_fetch_errors_are_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def fake(spec: str, **kwargs: object) -> SetupDisk:
        raise NoSuchPackage(f"no such package on https://pypi.org/simple: {spec}")

    monkeypatch.setattr(pyti.setup, "prepare", fake)
    assert run(monkeypatch, "fetch", "nope") == 1
    assert (
        capsys.readouterr().err == "pyti: error: no such package on https://pypi.org/simple: nope\n"
    )


def test_fetch_rejects_an_unknown_python(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, "fetch", "attrs", "--python", "2.7") == 2
    assert "no guest image has Python 2.7" in capsys.readouterr().err
