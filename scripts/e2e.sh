#!/usr/bin/env bash
# End-to-end: the real Meltano pipeline against the bundled sandbox, configured the way a deployed pipeline is
# (the `prod` environment, every tap setting from TAP_BACKSTORY_* variables, the warehouse from TARGET_POSTGRES_*),
# into DuckDB and a real PostgreSQL; row counts checked against what the sandbox served, then a second and a third
# run that must use the stored state and leave exactly the distinct rows in both warehouses; a run in BATCH mode
# into PostgreSQL with the same exact counts; then the README's "add the tap to another Meltano project" in a fresh folder
# outside the repo (the built wheel, target-jsonl). Leaves the demo's output/warehouse.duckdb alone and removes
# its temporary folders when it ends, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_tools
WORK="$(mktemp -d /tmp/tap-e2e.XXXXXX)"
if [ -z "${PGROOT:-}" ]; then PGROOT="$(mktemp -d /tmp/tap-pg.XXXXXX)"; OWN_PGROOT="$PGROOT"; fi
export PGROOT
cleanup() { stop_sandbox; scripts/pg.sh stop; rm -rf "$WORK" ${OWN_PGROOT:+"$OWN_PGROOT"}; }
trap cleanup EXIT
demo_duckdb() { if [ -e output/warehouse.duckdb ]; then sha256sum <output/warehouse.duckdb; else echo absent; fi; }
DEMO_DUCKDB_BEFORE="$(demo_duckdb)"

# The tap's whole configuration comes from the environment; a developer's .env must not leak in.
set -a; source scripts/sandbox.env; set +a
: >"$WORK/empty.env"
MELTANO+=(--env-file "$WORK/empty.env")
export TARGET_POSTGRES_HOST=127.0.0.1 TARGET_POSTGRES_PORT=5433 TARGET_POSTGRES_USER=tap \
  TARGET_POSTGRES_PASSWORD=tap TARGET_POSTGRES_DATABASE=tap
export TARGET_DUCKDB_FILEPATH="$WORK/warehouse.duckdb"        # read by scripts/row_counts.py too
export MELTANO_DATABASE_URI="sqlite:///$WORK/meltano.db"     # fresh Meltano state for this check
# One "today" for the sandbox and the tap, so a run across midnight UTC cannot split them.
export TAP_BACKSTORY_TODAY="$(date -u +%F)"
SANDBOX="http://127.0.0.1:$SANDBOX_PORT"
CHECK=(uv run --frozen python scripts/e2e_check.py --sandbox "$SANDBOX" --start-date "$TAP_BACKSTORY_START_DATE")
# restart_sandbox NAME: a fresh sandbox (no jobs, full quotas), as when the demo runs again.
restart_sandbox() { stop_sandbox; start_sandbox "$WORK/sandbox-$1.log" --today "$TAP_BACKSTORY_TODAY"; }

scripts/pg.sh start
PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p 5433 -U postgres -qc "DROP SCHEMA IF EXISTS tap_backstory CASCADE" \
  -c "DROP SCHEMA IF EXISTS tap_backstory_batch CASCADE" tap >/dev/null  # no NOTICE
"${MELTANO[@]}" install
restart_sandbox config-test
"${MELTANO[@]}" --environment prod config test tap-backstory

echo "== first run (prod environment, configured from the environment): tap-backstory -> DuckDB and PostgreSQL"
restart_sandbox first
"${MELTANO[@]}" --environment prod run tap-backstory target-duckdb
"${MELTANO[@]}" --environment prod run tap-backstory target-postgres
"${CHECK[@]}" first --warehouses duckdb postgres

# The later runs re-read today (activities, and today's intent rows under new export ids and row numbers):
# upserts on the primary keys must leave every table of both warehouses at exactly the distinct rows.
for later in second third; do
  echo "== $later run: must resume from the stored state (against a restarted sandbox, as when the demo runs again)"
  restart_sandbox "$later"
  "${MELTANO[@]}" --environment prod state get prod:tap-backstory-to-target-postgres | head -c 600; echo
  "${MELTANO[@]}" --environment prod run tap-backstory target-duckdb
  "${MELTANO[@]}" --environment prod run tap-backstory target-postgres
  "${CHECK[@]}" "$later" --warehouses duckdb postgres
done

# BATCH mode (issue 21): the same pipeline with `batch_config` (gzip JSON Lines files; target-postgres reads
# BATCH), on its own state id (a full first run) into its own schema: exact rows of all four streams, the child
# `enriched_contact_records` synced while its parent's files are written included, each from its own BATCH files.
echo "== BATCH run: tap-backstory (batch_config, jsonl gzip) -> PostgreSQL (schema tap_backstory_batch)"
BATCHES="$WORK/batches"
restart_sandbox batch
TAP_BACKSTORY_BATCH_CONFIG="{\"encoding\": {\"format\": \"jsonl\", \"compression\": \"gzip\"}, \"storage\": {\"root\": \"file://$BATCHES\"}}" \
  TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA=tap_backstory_batch \
  "${MELTANO[@]}" --environment prod run --state-id-suffix batch tap-backstory target-postgres
for stream in activities enriched_contacts intent_feed_exports enriched_contact_records; do
  files=("$BATCHES"/tap-backstory--"$stream"-*.json.gz)
  [ -e "${files[0]}" ] || { echo "END-TO-END CHECK FAILED: no BATCH file of $stream in $BATCHES"; exit 1; }
  echo "  $stream: ${#files[@]} BATCH file(s)"
done
TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA=tap_backstory_batch "${CHECK[@]}" first --warehouses postgres

echo "== another Meltano project: the README's plugin definitions (tap: pip_url the built wheel; target-jsonl)"
uv build --wheel --out-dir "$WORK/dist" --quiet
WHEELS=("$WORK"/dist/tap_backstory-*.whl)
ELSEWHERE="$WORK/elsewhere"
mkdir "$ELSEWHERE"
{
  printf 'project_id: tap-backstory-elsewhere\ndefault_environment: dev\nenvironments:\n- name: dev\n'
  printf 'send_anonymous_usage_stats: false\n'
  uv run --frozen python scripts/readme_plugin.py --pip-url "${WHEELS[0]}"   # the tap and the loader, as pasted
} >"$ELSEWHERE/meltano.yml"
export TARGET_JSONL_DESTINATION_PATH="$ELSEWHERE/output"      # read by scripts/row_counts.py too
mkdir "$TARGET_JSONL_DESTINATION_PATH"
unset MELTANO_DATABASE_URI                                   # the new project's own system database
restart_sandbox elsewhere-test
(cd "$ELSEWHERE" && "${MELTANO[@]}" install && "${MELTANO[@]}" config test tap-backstory)
restart_sandbox elsewhere
(cd "$ELSEWHERE" && "${MELTANO[@]}" run tap-backstory target-jsonl)
"${CHECK[@]}" first --warehouses jsonl

DEMO_DUCKDB_AFTER="$(demo_duckdb)"
if [ "$DEMO_DUCKDB_AFTER" != "$DEMO_DUCKDB_BEFORE" ]; then
  echo "END-TO-END CHECK FAILED: the demo's output/warehouse.duckdb changed ($DEMO_DUCKDB_BEFORE -> $DEMO_DUCKDB_AFTER)"
  exit 1
fi
echo "the demo's output/warehouse.duckdb is untouched ($DEMO_DUCKDB_AFTER)"
