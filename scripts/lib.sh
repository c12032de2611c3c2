# Shared by scripts/demo.sh and scripts/e2e.sh (sourced, not run).
export UV_PYTHON_DOWNLOADS=never MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
SANDBOX_PORT=8765   # meltano.yml's `sandbox` environment points here
MELTANO=(uv tool run --from 'meltano==4.4.1' meltano)

# uv from PATH, else bootstrapped into a private virtual environment (.tools/uv, git-ignored): a stock Debian
# python3 refuses `pip install` into the system Python (externally-managed-environment, PEP 668).
ensure_uv() {
  if ! command -v uv >/dev/null; then
    if [ ! -x .tools/uv/bin/uv ]; then
      if ! python3 -m venv .tools/uv >/dev/null 2>&1; then
        rm -rf .tools/uv
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then   # Debian ships venv apart from python3
          apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
          python3 -m venv .tools/uv || return 1
        else
          echo "uv is missing and python3 cannot create a virtual environment: install uv, or python3-venv" >&2
          return 1
        fi
      fi
      .tools/uv/bin/python -m pip install -q --disable-pip-version-check 'uv==0.13.9' || return 1
    fi
    export PATH="$PWD/.tools/uv/bin:$PATH"
    echo "uv is not on your PATH; the scripts use $PWD/.tools/uv/bin/uv. For the README's uv commands, first run:" >&2
    echo "  export PATH=\"$PWD/.tools/uv/bin:\$PATH\"" >&2
  fi
}

ensure_tools() { ensure_uv && uv sync --locked --quiet; }

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

# tool_venv NAME SPEC...: a virtual environment of its own for a test tool (moto, Dagster) under .tools/NAME
# (git-ignored, kept between runs), so the tap's locked environment stays small; re-made when the specs change.
tool_venv() {
  local name="$1"; shift
  local dir=".tools/$name" wanted="$*"
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/.specs" 2>/dev/null)" != "$wanted" ]; then
    rm -rf "$dir"
    uv venv --quiet --python 3.11 "$dir" && uv pip install --quiet --python "$dir/bin/python" "$@" || return 1
    echo "$wanted" >"$dir/.specs"
  fi
}

# free_port: a TCP port nobody listens on now (for servers that need their port before they start).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_moto LOGFILE: moto's S3 server on a free loopback port (MOTO_PID, MOTO_URL); needs tool_venv moto.
start_moto() {
  .tools/moto/bin/moto_server -H 127.0.0.1 -p 0 >"$1" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 100); do
    MOTO_URL="$(grep -o 'http://127.0.0.1:[0-9]*' "$1" | head -1 || true)"
    [ -n "$MOTO_URL" ] && return 0
    kill -0 "$MOTO_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "moto did not start:" >&2; cat "$1" >&2; return 1
}

stop_moto() { if [ -n "${MOTO_PID:-}" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi; }
