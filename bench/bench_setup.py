"""Time to prepare the setup disk: cold (empty cache) and cached, for a small and a mid package.

    uv run --frozen python bench/bench_setup.py [--repeat N] [SPEC ...]

Each cold run uses a fresh temporary PYTI_CACHE_DIR (so uv's cache and pyti's
download cache are empty); each cached run repeats it in the same directory.
Needs the network (PyPI).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import trio

from pyti.setup import prepare, target_for_python

DEFAULT_SPECS = ("iniconfig", "requests", "httpx")


async def _once(spec: str) -> tuple[float, int]:
    start = time.perf_counter()
    disk = await prepare(spec, target=target_for_python("3.11"))
    return time.perf_counter() - start, len(disk.manifest.files)


def bench(spec: str, repeat: int) -> dict[str, object]:
    cold: list[float] = []
    cached: list[float] = []
    dists = 0
    for _ in range(repeat):
        folder = tempfile.mkdtemp(prefix="pyti-bench-")
        os.environ["PYTI_CACHE_DIR"] = folder
        try:
            seconds, dists = trio.run(_once, spec)
            cold.append(seconds)
            cached.append(trio.run(_once, spec)[0])
        finally:
            shutil.rmtree(folder)
            del os.environ["PYTI_CACHE_DIR"]
    return {
        "spec": spec,
        "dists": dists,
        "cold_min": min(cold),
        "cold_median": statistics.median(cold),
        "cached_min": min(cached),
        "cached_median": statistics.median(cached),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("specs", nargs="*", default=list(DEFAULT_SPECS))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("| spec | dists | cold min / median (s) | cached min / median (s) |")
    print("|---|---|---|---|")
    for spec in args.specs:
        row = bench(spec, args.repeat)
        print(
            f"| {row['spec']} | {row['dists']} | {row['cold_min']:.2f} / {row['cold_median']:.2f}"
            f" | {row['cached_min']:.2f} / {row['cached_median']:.2f} |"
        )


if __name__ == "__main__":
    main()
