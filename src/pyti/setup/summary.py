"""What `pyti fetch` prints about a setup disk (pure, so it is tested with a table)."""

from __future__ import annotations

from pyti.setup.model import SetupDisk


def summary_lines(disk: SetupDisk) -> list[str]:
    manifest = disk.manifest
    dropped = [f for f in disk.findings if f.kind == "test-dependency-dropped"]
    kinds = (
        f"{'wheel' if manifest.wheel else 'no wheel'}, {'sdist' if manifest.sdist else 'no sdist'}"
    )
    dists = len(manifest.files) - len(manifest.bytecode)  # bytecode archives are not dists
    lines = [
        str(disk.path),
        f"{manifest.package_name} {manifest.package_version}: {dists} dists"
        f" ({kinds}), {len(manifest.test_requirements)} test requirements, {len(dropped)} dropped",
    ]
    if manifest.runner != "auto" or manifest.runner_args:
        lines.append(f"runner: {manifest.runner} {' '.join(manifest.runner_args)}".rstrip())
    lines += [f"finding: {finding}" for finding in disk.findings]
    return lines
