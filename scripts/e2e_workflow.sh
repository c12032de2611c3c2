#!/usr/bin/env bash
# The users' scheduled GitHub Actions workflow (examples/github-actions/tap-backstory.yml), its `run:` steps as
# written (scripts/run_workflow.py), twice, each time on a fresh "runner": a fresh copy of the repository, a fresh
# Python with nothing installed, a fresh uv tool folder, so a fresh Meltano with a fresh system database. The two
# runs share only the S3 bucket of Meltano's S3 state backend (moto's S3 server, on loopback) and the warehouse.
# The secrets point the tap at the sandbox and the warehouse at a throw-away PostgreSQL. Checks: the first run
# loads exactly what the sandbox serves; the state is in the bucket; the second run resumes from it (the sandbox,
# restarted, sees only `delta` activity windows) and leaves exactly the same distinct rows (no duplicate).
# Free ports everywhere, so it can run beside scripts/e2e.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_tools
tool_venv moto 'moto[server]==5.2.5'
WORK="$(mktemp -d /tmp/tap-e2e.XXXXXX)"
PGROOT="$(mktemp -d /tmp/tap-pg.XXXXXX)"
export PGROOT PGPORT="$(free_port)"
cleanup() { stop_sandbox; stop_moto; scripts/pg.sh stop; rm -rf "$WORK" "$PGROOT"; }
trap cleanup EXIT
SANDBOX_PORT="$(free_port)"
SANDBOX="http://127.0.0.1:$SANDBOX_PORT"
export TAP_BACKSTORY_TODAY="$(date -u +%F)"    # one "today" for the sandbox and the tap (runs across midnight)
restart_sandbox() { stop_sandbox; start_sandbox "$WORK/sandbox-$1.log" --today "$TAP_BACKSTORY_TODAY"; }

scripts/pg.sh start
start_moto "$WORK/moto.log"
BUCKET=tap-backstory-state
.tools/moto/bin/python - "$MOTO_URL" "$BUCKET" <<'PY'
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="ci-key",
             aws_secret_access_key="ci-secret").create_bucket(Bucket=sys.argv[2])
PY

# The repository secrets: the sandbox's demo credentials and start date (scripts/sandbox.env), the warehouse,
# and the state backend. The stand-ins: what points the tap at the sandbox instead of the real APIs.
SECRETS="$WORK/secrets.env"
grep -E '^TAP_BACKSTORY_(.*_CLIENT_(ID|SECRET)|CONTACTBASED_API_KEY|START_DATE)=' scripts/sandbox.env >"$SECRETS"
cat >>"$SECRETS" <<EOV
TARGET_POSTGRES_HOST=127.0.0.1
TARGET_POSTGRES_PORT=$PGPORT
TARGET_POSTGRES_USER=tap
TARGET_POSTGRES_PASSWORD=tap
TARGET_POSTGRES_DATABASE=tap
MELTANO_STATE_BACKEND_URI=s3://$BUCKET/tap-backstory
MELTANO_STATE_BACKEND_S3_AWS_ACCESS_KEY_ID=ci-key
MELTANO_STATE_BACKEND_S3_AWS_SECRET_ACCESS_KEY=ci-secret
MELTANO_STATE_BACKEND_S3_ENDPOINT_URL=$MOTO_URL
EOV
cat >"$WORK/stand-in.env" <<EOV
TAP_BACKSTORY_API_URL=$SANDBOX/backstory
TAP_BACKSTORY_CONTACTBASED_API_URL=$SANDBOX/contactbased
TAP_BACKSTORY_JOB_POLL_INTERVAL_SECONDS=1
TAP_BACKSTORY_TODAY=$TAP_BACKSTORY_TODAY
EOV
export TARGET_POSTGRES_PORT="$PGPORT"          # for scripts/row_counts.py
START_DATE="$(sed -n 's/^TAP_BACKSTORY_START_DATE=//p' scripts/sandbox.env)"
CHECK=(uv run --frozen python scripts/e2e_check.py --sandbox "$SANDBOX" --start-date "$START_DATE")
bucket_keys() {
  .tools/moto/bin/python - "$MOTO_URL" "$BUCKET" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="ci-key",
                  aws_secret_access_key="ci-secret")
for item in s3.list_objects_v2(Bucket=sys.argv[2]).get("Contents", []):
    print(f"  s3://{sys.argv[2]}/{item['Key']}  {item['Size']} bytes")
PY
}

for run in first second; do
  echo "== $run scheduled run: a fresh runner, the workflow's steps"
  RUNNER="$WORK/runner-$run"
  mkdir -p "$RUNNER/checkout"
  git ls-files -z | xargs -0 cp --parents -t "$RUNNER/checkout"     # actions/checkout (the work tree's files)
  uv venv --quiet --seed --python 3.11 "$RUNNER/python"              # actions/setup-python
  restart_sandbox "$run"
  UV_TOOL_DIR="$RUNNER/uv-tools" UV_TOOL_BIN_DIR="$RUNNER/bin" \
    uv run --frozen python scripts/run_workflow.py examples/github-actions/tap-backstory.yml --job elt \
      --checkout "$RUNNER/checkout" --python "$RUNNER/python" --secrets "$SECRETS" --stand-in "$WORK/stand-in.env"
  echo "  the state bucket now holds:"
  KEYS="$(bucket_keys)"; echo "$KEYS"
  if ! grep -q 'tap-backstory-to-target-postgres' <<<"$KEYS"; then
    echo "END-TO-END CHECK FAILED: no state of prod:tap-backstory-to-target-postgres in the bucket"; exit 1
  fi
  "${CHECK[@]}" "$run" --warehouses postgres
done
echo "scheduled workflow check: ok (two fresh runners, state shared through S3 only)"
