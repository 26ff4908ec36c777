"""Wall time of `pyti run` per phase, for a cached package with one trivial test.

`iniconfig -- -k <one test>` stands in for "a cached package with one trivial test": it
has a wheel (installed) and an sdist (its tests), pytest comes from the resolver, and
after the first run every download and the setup disk are cached. The phases come from
the plain-line renderer's timestamps (`[  t s] phase`), so this measures what a user
waits for, command to summary.

    python bench/bench_run.py [--runs 5] [--spec iniconfig] [--one-test NAME]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

LINE = re.compile(r"^\[\s*(?P<t>\d+\.\d)s\] (?P<phase>[a-z]+)(?P<rest>.*)$")
PHASES = ("image", "resolve", "boot", "install", "test")


def one_run(spec: str, test: str, data_dir: str) -> dict[str, float]:
    env = {**os.environ, "PYTI_DATA_DIR": data_dir}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pyti", "run", spec, "--", "-k", test],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pyti run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    starts: dict[str, float] = {}
    for line in done.stdout.splitlines():
        match = LINE.match(line)
        if match and match["phase"] in PHASES and match["phase"] not in starts:
            starts[match["phase"]] = float(match["t"])
    ordered = [p for p in PHASES if p in starts]
    times = {
        phase: (starts[ordered[i + 1]] if i + 1 < len(ordered) else wall) - starts[phase]
        for i, phase in enumerate(ordered)
    }
    times["total (command to summary)"] = wall
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--spec", default="iniconfig")
    parser.add_argument("--one-test", default="test_iniconfig_lineof")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyti-bench-run-") as data_dir:
        one_run(args.spec, args.one_test, data_dir)  # warm: image, downloads, setup disk
        runs = [one_run(args.spec, args.one_test, data_dir) for _ in range(args.runs)]
    print(
        f"pyti run {args.spec} -- -k {args.one_test}: {args.runs} cached runs (min / median / max)"
    )
    for key in runs[0]:
        values = [run[key] for run in runs if key in run]
        print(
            f"  {key:28} {min(values):6.2f} / {statistics.median(values):6.2f}"
            f" / {max(values):6.2f} s"
        )


if __name__ == "__main__":
    main()
