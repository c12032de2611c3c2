#!/usr/bin/env bash
# The test command (README "Run the tests"): lint, then the whole pytest suite against the bundled sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
command -v uv >/dev/null || python3 -m pip install -q 'uv==0.13.9'
uv sync --locked --quiet
uv run --frozen ruff check tap_backstory tap_backstory_sandbox tests
uv run --frozen pytest -q "$@"
