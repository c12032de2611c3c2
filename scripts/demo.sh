#!/usr/bin/env bash
# The main job, end to end: start the bundled sandbox, run `meltano run tap-backstory target-duckdb`,
# print the row count of every table, stop the sandbox. Works on a fresh machine (installs uv and Meltano).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_tools
mkdir -p output                       # target-duckdb does not create its folder
start_sandbox output/sandbox.log
trap stop_sandbox EXIT
"${MELTANO[@]}" install
"${MELTANO[@]}" run tap-backstory target-duckdb
uv run --frozen python scripts/row_counts.py duckdb
