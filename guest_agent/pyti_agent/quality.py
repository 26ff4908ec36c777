"""The quality task: ruff statistics over the package's source, counts by rule.

Reported, never failing: the outcome is "passed" when ruff ran and "skipped"
when it is not available or did not produce statistics. ruff runs as user pyti
with `--isolated` (the project's own ruff config is not read: the same rule set
for every package makes the counts comparable) and `--no-cache`.

Where ruff comes from, first found: `<setup>/tools/ruff`, a `ruff-*.whl` listed
in the manifest under dists/ (its binary is taken out of the wheel), or `ruff`
on the image's PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from . import install, privileges

if TYPE_CHECKING:
    from pyti.protocol import TaskFinished

    from .tasks import OutputSink, TaskContext

RULES = "E,F,W,B,UP,SIM,PL"
MAX_STDOUT = 4 << 20
MAX_BINARY = 256 << 20
MAX_DETAIL = 8000
TIMEOUT = 900.0


def _from_wheel(wheel: Path, dest: Path) -> Path | None:
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".data/scripts/ruff") and info.file_size <= MAX_BINARY:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out)
                dest.chmod(0o755)
                return dest
    return None


def find_ruff(ctx: TaskContext, layout: install.WorkLayout) -> str | None:
    tool = ctx.setup_dir / "tools" / "ruff"
    if tool.is_file() and os.access(tool, os.X_OK):
        return str(tool)
    manifest = ctx.manifest
    assert manifest is not None
    dists = ctx.setup_dir / "dists"
    for name in sorted(manifest.files):
        if name.startswith("ruff-") and name.endswith(".whl"):
            wheel = dists / name
            # Checked like every dist before use: the binary will be executed.
            if wheel.is_file() and install.sha256_file(wheel) == manifest.files[name]:
                found = _from_wheel(wheel, layout.work / "tools" / "ruff")
                if found is not None:
                    return str(found)
    return shutil.which("ruff", path=privileges.DEFAULT_PATH)


def parse_statistics(stdout: bytes) -> dict[str, int] | None:
    """ruff's `--statistics --output-format json`: [{"code": .., "count": ..}, ...]."""
    try:
        data = json.loads(stdout)
    except ValueError:
        return None
    if not isinstance(data, list):
        return None
    counts: dict[str, int] = {}
    for item in data:
        if not isinstance(item, dict):
            return None
        code, count = item.get("code"), item.get("count")
        if not isinstance(code, str) or type(count) is not int or count < 0 or len(code) > 32:
            return None
        counts[code] = counts.get(code, 0) + count
    return counts


def summary(counts: dict[str, int]) -> str:
    """The Finding detail: JSON, most frequent rules first, within the detail cap."""
    rules = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    detail = {"tool": "ruff", "select": RULES, "total": sum(counts.values()), "rules": rules}
    text = json.dumps(detail, separators=(",", ":"))
    while len(text) > MAX_DETAIL and rules:
        rules.popitem()
        detail["truncated"] = True
        text = json.dumps(detail, separators=(",", ":"))
    return text


def run(ctx: TaskContext, out: OutputSink, began: float) -> TaskFinished:
    from pyti.protocol import Finding

    from .tasks import extract_sdist, finished

    layout = install.WorkLayout(ctx.work_dir)
    layout.prepare(ctx.run_as())
    ruff = find_ruff(ctx, layout)
    if ruff is None:
        out.note("ruff is not available on the setup disk or the image: quality skipped")
        return finished("quality", "skipped", None, began)
    root = extract_sdist(ctx, out, layout.work / "quality-src")
    if root is None:
        out.note("no sdist: quality skipped")
        return finished("quality", "skipped", None, began)
    stdout = bytearray()

    def collect(stream: str, data: bytes) -> None:
        if stream == "stdout":
            if len(stdout) < MAX_STDOUT:
                stdout.extend(data[: MAX_STDOUT - len(stdout)])
        else:
            out(stream, data)

    argv = [ruff, "check", "--isolated", "--no-cache", "--exit-zero", "--statistics"]
    argv += ["--output-format", "json", "--select", RULES, "."]
    started = time.monotonic()
    result = privileges.run(
        argv,
        cwd=root,
        env=layout.env(),
        on_output=collect,
        cancelled=ctx.cancelled,
        user=ctx.run_as(),
        timeout=TIMEOUT,
    )
    counts = parse_statistics(bytes(stdout)) if result.ok else None
    if counts is None:
        out.note(f"ruff gave no statistics (exit {result.returncode}): quality skipped")
        return finished("quality", "skipped", result.returncode, began)
    ctx.send(Finding(kind="quality", detail=summary(counts), task="quality"))
    out.note(f"ruff: {sum(counts.values())} findings over {len(counts)} rules")
    out.note(f"ruff ran in {time.monotonic() - started:.2f} s")
    return finished(
        "quality",
        "passed",
        0,
        began,
        {"violations": sum(counts.values()), "rules": len(counts)},
    )
