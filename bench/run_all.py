"""Run every bench/bench_*.py, in name order: `just bench [NAME ...]` (e.g. `just bench codec`).

Each benchmark runs as its own process with this interpreter, so one cannot skew
another's numbers and a new `bench/bench_<name>.py` is picked up without registering
it here. Exit status: 1 if any benchmark failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmarks() -> dict[str, Path]:
    return {path.stem.removeprefix("bench_"): path for path in sorted(HERE.glob("bench_*.py"))}


def main() -> int:
    found = benchmarks()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"run only these (of: {', '.join(found)})")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(found))
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(found)})")
    failed = []
    for name, path in found.items():
        if args.names and name not in args.names:
            continue
        print(f"== {name} ({path.name})", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(path)])
        print(f"== {name}: exit {code} after {time.perf_counter() - start:.1f} s\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
