from __future__ import annotations

import pytest

from pyti import hostdeps


def test_not_root_prints_the_one_apt_line_and_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hostdeps.os, "geteuid", lambda: 1000)
    assert hostdeps.install(["qemu-system-x86", "mmdebstrap"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "pyti needs these Debian packages; run: "
        "sudo apt-get install -y --no-install-recommends qemu-system-x86 mmdebstrap"
    ]


def test_nothing_missing_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_apt(*args: object, **kwargs: object) -> None:
        raise AssertionError("apt-get must not run")

    monkeypatch.setattr(hostdeps.subprocess, "run", no_apt)
    assert hostdeps.install([]) == 0


def test_missing_packages_asks_dpkg_once(monkeypatch: pytest.MonkeyPatch) -> None:
    class Done:
        stdout = "qemu-system-x86 installed\nmmdebstrap not-installed\n"

    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: object) -> Done:
        calls.append(argv)
        return Done()

    monkeypatch.setattr(hostdeps.subprocess, "run", fake_run)
    missing = hostdeps.missing_packages()
    assert "qemu-system-x86" not in missing
    assert "mmdebstrap" in missing
    assert len(calls) == 1
