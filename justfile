# pyti's tasks. Run through ./dev on a fresh machine (it fetches just and uv).
set positional-arguments
set shell := ["bash", "-euo", "pipefail", "-c"]

export UV_PYTHON_DOWNLOADS := "never"

pyti := ".venv/bin/pyti"

# List the recipes.
default:
    @just --list

# Idempotent: the host's Debian packages, then .venv from uv.lock (fast when nothing is missing).
setup:
    @python3 src/pyti/hostdeps.py --install
    @uv sync --frozen --quiet

# Test a package in a VM: just run iniconfig [pyti run options] [-- test args]
run *args: setup
    {{pyti}} run "$@"

# Any pyti command: just pyti doctor
pyti *args: setup
    {{pyti}} "$@"

# Lint, unit tests, then the end-to-end tests that boot real guests.
test: setup lint unit e2e

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
