# pyti's tasks. Run through ./dev on a fresh machine (it fetches just and uv).
set positional-arguments
set shell := ["bash", "-euo", "pipefail", "-c"]

export UV_PYTHON_DOWNLOADS := "never"

# Absolute, so `run` can work in the directory ./dev was called from (`./dev run .`).
pyti := justfile_directory() / ".venv/bin/pyti"

# List the recipes.
default:
    @just --list

# Idempotent: the host's Debian packages, then .venv from uv.lock (fast when nothing is missing).
setup:
    @python3 src/pyti/hostdeps.py --install
    @uv sync --frozen --quiet

# Test a package in a VM: just run iniconfig [pyti run options] [-- test args]
run *args: setup
    @cd "{{invocation_directory()}}" && "{{pyti}}" run "$@"

# Any pyti command: just pyti doctor
pyti *args: setup
    @cd "{{invocation_directory()}}" && "{{pyti}}" "$@"

# Lint, unit tests, then the end-to-end tests that boot real guests.
test: setup lint unit codec-compat e2e

lint:
    uv run --frozen ruff check src tests bench guest_agent dev
    uv run --frozen ruff format --check src tests bench guest_agent dev
    uv run --frozen mypy --strict src

unit *args:
    uv run --frozen pytest -m unit -q "$@"

e2e *args:
    uv run --frozen pytest -m e2e -q "$@"

# Format the code in place.
fmt:
    uv run --frozen ruff format src tests bench guest_agent dev
    uv run --frozen ruff check --fix src tests bench guest_agent dev

bench *args: setup
    uv run --frozen python bench/run_all.py "$@"

# The codec's unit tests against the cbor2 the guests carry: bookworm 5.4.6 (C), trixie 5.6.5 (pure Python).
codec-compat:
    #!/usr/bin/env bash
    set -euo pipefail
    stub=$(mktemp -d)
    trap 'rm -rf "$stub"' EXIT
    # An `_cbor2` that fails to import makes cbor2 5.x fall back to its pure-Python code.
    echo 'raise ImportError("codec-compat: force the pure-Python cbor2")' > "$stub/_cbor2.py"
    tests=(tests/unit/test_protocol_*.py)
    PYTI_EXPECT_CBOR2="5.4.6 native" uv run --frozen --with cbor2==5.4.6 pytest -q -p no:cacheprovider "${tests[@]}"
    PYTI_EXPECT_CBOR2="5.6.5 native" uv run --frozen --with cbor2==5.6.5 pytest -q -p no:cacheprovider "${tests[@]}"
    PYTI_EXPECT_CBOR2="5.6.5 pure" PYTHONPATH="$stub" uv run --frozen --with cbor2==5.6.5 pytest -q -p no:cacheprovider "${tests[@]}"

# Mutation fuzzing of the codec: just fuzz [--count N] (default 1,000,000 inputs).
fuzz *args:
    uv run --frozen python bench/fuzz_codec.py "$@"
