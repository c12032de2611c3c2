#!/usr/bin/env bash
# The test command (README "Run the tests", and what CI runs): lint, the pytest suite against the bundled
# sandbox, then the Meltano end-to-end check into DuckDB and PostgreSQL (scripts/e2e.sh), the users' GitHub Actions
# workflow with Meltano's S3 state backend (scripts/e2e_workflow.sh) and the Dagster set-up
# (scripts/e2e_orchestration.sh).
# `scripts/test.sh --quick` skips the end-to-end part.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_tools
uv run --frozen ruff check tap_backstory tap_backstory_sandbox tests scripts benchmarks orchestration
uv run --frozen pytest -q
if [ "${1:-}" != "--quick" ]; then
  scripts/e2e.sh
  scripts/e2e_workflow.sh     # the users' scheduled GitHub Actions workflow, state in S3 (moto)
  scripts/e2e_orchestration.sh   # the Dagster set-up (orchestration/): every job at once, two orgs
fi
