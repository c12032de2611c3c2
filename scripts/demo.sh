#!/usr/bin/env bash
# The main job, end to end: start the bundled sandbox, run `meltano run tap-backstory target-duckdb`,
# print the DuckDB file, its rows per table and what this run added, stop the sandbox. Works on a fresh machine
# (installs uv and Meltano). Run it again: the second run resumes from the state Meltano stored.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_tools
mkdir -p output                       # target-duckdb does not create its folder
start_sandbox output/sandbox.log
trap stop_sandbox EXIT
"${MELTANO[@]}" install
uv run --frozen python scripts/row_counts.py duckdb --json output/rows-before.json >/dev/null
"${MELTANO[@]}" run tap-backstory target-duckdb
uv run --frozen python scripts/row_counts.py duckdb --since output/rows-before.json
echo "state Meltano stored for the next run: ${MELTANO[*]} state get sandbox:tap-backstory-to-target-duckdb"
