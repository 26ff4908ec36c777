"""`pyti doctor`: what pyti needs on this host, and the one-line fix for each missing piece."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from pyti import __version__, accel, cache, hostdeps, paths


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True, kw_only=True)
class Report:
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def qemu_version(qemu: str = "qemu-system-x86_64") -> str | None:
    found = shutil.which(qemu)
    if not found:
        return None
    result = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
    first = result.stdout.splitlines()[0] if result.stdout else ""
    return first.removeprefix("QEMU emulator version ").strip() or None


def _image_for_probe() -> tuple[object, object]:
    """A cached guest image's kernel and initrd, to probe KVM with (None when none yet)."""
    try:
        from pyti import image
    except ImportError:
        return None, None
    for suite in getattr(image, "SUITES", {}):
        found = image.find_image(suite)
        if found is not None:
            return found.kernel, found.initrd
    return None, None


def check(*, accel: str | None = None) -> Report:
    checks: list[Check] = [Check(name="pyti", ok=True, detail=__version__)]
    missing = hostdeps.missing_packages()
    for package, command in hostdeps.HOST_PACKAGES.items():
        if package in missing or hostdeps.which(command) is None:
            checks.append(
                Check(
                    name=package,
                    ok=False,
                    detail=f"{command} not found",
                    fix=hostdeps.install_line([package]),
                )
            )
    version = qemu_version()
    checks.append(
        Check(
            name="qemu",
            ok=version is not None,
            detail=version or "qemu-system-x86_64 not found",
            fix="" if version else hostdeps.install_line(["qemu-system-x86"]),
        )
    )
    if version is not None:
        kernel, initrd = _image_for_probe()
        choice = accel_choice(accel, kernel, initrd)
        checks.append(Check(name="accelerator", ok=True, detail=str(choice)))
    for label, where in (("cache", paths.cache_dir()), ("data", paths.data_dir())):
        checks.append(Check(name=label, ok=True, detail=str(where)))
    for line in cache_lines():
        checks.append(Check(name="cache size", ok=True, detail=line))
    free = shutil.disk_usage(_existing_parent(paths.cache_dir())).free
    checks.append(
        Check(
            name="free disk",
            ok=free > 2 * 1024**3,
            detail=f"{free / 1024**3:.1f} GiB free under {paths.cache_dir()}",
            fix="free at least 2 GiB there, or set PYTI_CACHE_DIR to a roomier disk",
        )
    )
    return Report(checks=tuple(checks))


def accel_choice(requested: str | None, kernel: object, initrd: object) -> accel.AccelChoice:
    from pathlib import Path

    return accel.choose(
        requested or "auto",
        kernel=kernel if isinstance(kernel, Path) else None,
        initrd=initrd if isinstance(initrd, Path) else None,
    )


def _existing_parent(path: object) -> str:
    from pathlib import Path

    candidate = Path(str(path))
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    return str(candidate)


def cache_lines() -> list[str]:
    lines = []
    for label, where in cache.sections():
        size = cache.tree_size(where) if where.exists() else 0
        lines.append(f"{label}: {size / 1e6:.1f} MB in {where}")
    return lines


def render(report: Report, echo: Callable[[str], None]) -> None:
    for item in report.checks:
        mark = "ok " if item.ok else "MISSING"
        line = f"{mark:7} {item.name}: {item.detail}"
        if not item.ok and item.fix:
            line += f"; fix: {item.fix}"
        echo(line)
    echo("all good" if report.ok else "something is missing: run the fix lines above")
