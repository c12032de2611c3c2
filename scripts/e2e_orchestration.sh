#!/usr/bin/env bash
# The Dagster set-up (orchestration/) end to end: two organizations, each its own sandbox (its own Backstory limit
# of 2 running export jobs) and its own inherited extractor with its own credentials; every job of
# orchestration/definitions.py (one per org and stream, one per org and intent feed) started at once with the real
# `dagster job execute` against one Dagster instance, so the pools must keep the runs within the limits (each
# stream has several windows, so a run alone would keep 2 export jobs alive if it could); one
# PostgreSQL warehouse, a schema per org. Checks (scripts/orchestration_check.py): exact row counts per org, at
# most 2 export jobs alive (so at most 2 Running) at any moment in each sandbox's job log, one Meltano state id per
# job. Dagster lives in its own environment (.tools/dagster), not in the tap's locked one. Free ports everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_tools
tool_venv dagster 'dagster==1.13.27'   # the version dagster-webserver's latest release pins
DAGSTER_PY="$PWD/.tools/dagster/bin/python"
WORK="$(mktemp -d /tmp/tap-e2e.XXXXXX)"
PGROOT="$(mktemp -d /tmp/tap-pg.XXXXXX)"
export PGROOT PGPORT="$(free_port)"
ORGS=(acme globex)
declare -A ORG_PID
cleanup() {
  for org in "${ORGS[@]}"; do SANDBOX_PID="${ORG_PID[$org]:-}" stop_sandbox; done
  scripts/pg.sh stop; rm -rf "$WORK" "$PGROOT"
}
trap cleanup EXIT
export TAP_BACKSTORY_TODAY="$(date -u +%F)"    # one "today" for the sandboxes and the taps
START_DATE="$(sed -n 's/^TAP_BACKSTORY_START_DATE=//p' scripts/sandbox.env)"

# The Meltano project as a user deploys it, the tap from the built wheel (its `pip_url: -e ..` means this repo).
PROJECT="$WORK/orchestration"
cp -r orchestration "$PROJECT"
uv build --wheel --out-dir "$WORK/dist" --quiet
WHEELS=("$WORK"/dist/tap_backstory-*.whl)
sed -i "s#^    pip_url: -e \.\..*#    pip_url: ${WHEELS[0]}#" "$PROJECT/meltano.yml"
grep -q "pip_url: ${WHEELS[0]}" "$PROJECT/meltano.yml"

# The deployment's environment: nothing of the caller's, each org's credentials and sandbox, the warehouse.
for name in $(env | grep -oE '^(TAP_BACKSTORY|TARGET|MELTANO)_[A-Z0-9_]*' | grep -v '^TAP_BACKSTORY_TODAY$'); do
  unset "$name"
done
export MELTANO_COMMAND="${MELTANO[*]}" MELTANO_PROJECT_ROOT="$PROJECT" MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
export TARGET_POSTGRES_HOST=127.0.0.1 TARGET_POSTGRES_PORT="$PGPORT" TARGET_POSTGRES_USER=tap \
  TARGET_POSTGRES_PASSWORD=tap TARGET_POSTGRES_DATABASE=tap
CHECK_ARGS=()
for org in "${ORGS[@]}"; do
  SANDBOX_PORT="$(free_port)"
  # Export jobs that run 2 s, so that an org's parallel Backstory runs overlap in its job log.
  start_sandbox "$WORK/sandbox-$org.log" --today "$TAP_BACKSTORY_TODAY" --job-run-seconds 2
  ORG_PID[$org]="$SANDBOX_PID"
  ORG="TAP_BACKSTORY_${org^^}"
  export "${ORG}_API_URL=http://127.0.0.1:$SANDBOX_PORT/backstory" \
    "${ORG}_CONTACTBASED_API_URL=http://127.0.0.1:$SANDBOX_PORT/contactbased" \
    "${ORG}_START_DATE=$START_DATE" "${ORG}_JOB_POLL_INTERVAL_SECONDS=1" \
    "${ORG}_SNAPSHOT_WINDOW_DAYS=30"     # several windows per stream: each run would pipeline 2 jobs if it could
  while IFS='=' read -r key value; do export "${ORG}_${key#TAP_BACKSTORY_}=$value"; done \
    < <(grep -E '^TAP_BACKSTORY_(.*_CLIENT_(ID|SECRET)|CONTACTBASED_API_KEY)=' scripts/sandbox.env)
  CHECK_ARGS+=(--org "$org=http://127.0.0.1:$SANDBOX_PORT")
done

scripts/pg.sh start
(cd "$PROJECT" && "${MELTANO[@]}" install)
export DAGSTER_HOME="$WORK/dagster-home"
mkdir "$DAGSTER_HOME"
cp orchestration/dagster.yaml "$DAGSTER_HOME/"
"$DAGSTER_PY" "$PROJECT/definitions.py" set-pools

echo "== every job at once: dagster job execute, one process per job"
JOBS=($("$DAGSTER_PY" "$PROJECT/definitions.py" jobs))
declare -A JOB_PID
for job in "${JOBS[@]}"; do
  "${DAGSTER_PY%/python}/dagster" job execute -f "$PROJECT/definitions.py" -j "$job" >"$WORK/job-$job.log" 2>&1 &
  JOB_PID[$job]=$!
done
FAILED=0
for job in "${JOBS[@]}"; do
  if wait "${JOB_PID[$job]}"; then
    echo "  $job: succeeded ($(grep -c STEP_UP_FOR_RETRY "$WORK/job-$job.log" || true) retries)"
  else
    echo "  $job: FAILED"; tail -40 "$WORK/job-$job.log"; FAILED=1
  fi
done
[ "$FAILED" = 0 ] || { echo "END-TO-END CHECK FAILED: a Dagster job failed"; exit 1; }

STATE_IDS="$WORK/state-ids.txt"
(cd "$PROJECT" && "${MELTANO[@]}" state list 2>/dev/null) >"$STATE_IDS"
uv run --frozen python scripts/orchestration_check.py --start-date "$START_DATE" --meltano-yml "$PROJECT/meltano.yml" \
  --state-ids "$STATE_IDS" "${CHECK_ARGS[@]}"
