# Shared by scripts/demo.sh and scripts/e2e.sh (sourced, not run).
export UV_PYTHON_DOWNLOADS=never MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
SANDBOX_PORT=8765   # meltano.yml's `sandbox` environment points here
MELTANO=(uv tool run --from 'meltano==4.4.1' meltano)

ensure_tools() {
  command -v uv >/dev/null || python3 -m pip install -q 'uv==0.13.9'
  uv sync --locked --quiet
}

# start_sandbox LOGFILE [extra sandbox flags]: start the emulator on $SANDBOX_PORT, wait for "ready".
start_sandbox() {
  local log="$1"; shift
  if (echo >"/dev/tcp/127.0.0.1/$SANDBOX_PORT") 2>/dev/null; then
    echo "port $SANDBOX_PORT is busy: stop whatever listens there (an earlier sandbox?) and retry" >&2; return 1
  fi
  uv run --frozen tap-backstory-sandbox --port "$SANDBOX_PORT" "$@" >"$log" 2>&1 &
  SANDBOX_PID=$!
  for _ in $(seq 100); do
    grep -q '^ready' "$log" 2>/dev/null && return 0
    kill -0 "$SANDBOX_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "the sandbox did not start:" >&2; cat "$log" >&2; return 1
}

stop_sandbox() { if [ -n "${SANDBOX_PID:-}" ]; then kill "$SANDBOX_PID" 2>/dev/null || true; wait "$SANDBOX_PID" 2>/dev/null || true; fi; }
