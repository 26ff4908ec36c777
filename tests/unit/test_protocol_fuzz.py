"""A short run of bench/fuzz_codec.py (`just fuzz` runs a million inputs)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

FUZZ = Path(__file__).resolve().parents[2] / "bench" / "fuzz_codec.py"


def load_fuzzer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_codec", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_twenty_thousand_mutated_inputs_raise_only_protocol_error() -> None:
    report = load_fuzzer().fuzz(20_000, seed=1)
    assert report.failure is None, report.failure
    assert report.count == 20_000
    # The corpus is valid: some mutants must still decode, or the fuzzer tests nothing.
    assert report.outcomes["protocol-error"] < report.count
    assert report.outcomes["closed"] + report.outcomes["decoded"] > 0


def test_the_unmutated_corpus_is_accepted() -> None:
    fuzzer = load_fuzzer()
    for seed in fuzzer.corpus():
        assert fuzzer.feed(seed, random.Random(0)) == "closed"
