"""Ctrl-C of `meltano run` (SIGINT to its whole process group, as a terminal sends it), then a rerun: what
Meltano kept, what the warehouse holds, and what the rerun had to read again (README "Interrupted runs").

usage: flock /tmp/tap-8765.lock uv run --frozen python scripts/interrupt_check.py target-postgres|target-duckdb
       [--at download|paging]

`--at download`: Ctrl-C while the activities export downloads (one snapshot window of the whole backfill:
nothing of it is committed yet); `--at paging`: while the intent export pages are read, after the Backstory
streams' windows were emitted and confirmed. Runs the repo's meltano.yml (`sandbox` environment: the sandbox on
127.0.0.1:8765, PostgreSQL on 127.0.0.1:5433 started by scripts/pg.sh) with its own Meltano system database,
DuckDB file and PostgreSQL schema, and prints the figures. Exits 1 when the rerun does not end with exactly the
rows a full run loads. A measurement (docs/reliability.md), not part of CI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, "scripts")
from row_counts import SCHEMA, TABLES, connect

from tap_backstory_sandbox import Sandbox, SandboxSettings

MELTANO = ["uv", "tool", "run", "--from", "meltano==4.4.1", "meltano"]
WAREHOUSE = {"target-postgres": "postgres", "target-duckdb": "duckdb"}
PSQL = ["psql", "-h", "127.0.0.1", "-p", "5433", "-U", "postgres", "-qAt", "tap", "-c"]


def counts(warehouse: str) -> dict[str, int]:
    """Rows per table; a table the target has not created yet counts 0."""
    listing = "select table_name from information_schema.tables where table_schema = %s"
    if warehouse == "duckdb":
        import duckdb

        path = os.environ["TARGET_DUCKDB_FILEPATH"]
        if not Path(path).exists():
            return dict.fromkeys(TABLES, 0)
        connection, listing = duckdb.connect(path, read_only=True), listing.replace("%s", "?")
    else:
        connection = connect(warehouse)
    with connection as con:
        present = {row[0] for row in con.execute(listing, [SCHEMA]).fetchall()}
        return {
            t: con.execute(f"select count(*) from {SCHEMA}.{t}").fetchone()[0] if t in present else 0 for t in TABLES
        }


def meltano(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*MELTANO, *args], capture_output=True, text=True, check=False, **kwargs)


def interrupted_run(target: str, ready) -> tuple[int, str]:
    """`meltano run tap-backstory <target>` in its own process group, SIGINT to the group once `ready()`."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [*MELTANO, "run", "tap-backstory", target], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 300
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the run ended (or hung) before the interrupt point: {proc.returncode}")
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        returncode = proc.wait(timeout=120)
        log.seek(0)
        return returncode, log.read()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("target", choices=sorted(WAREHOUSE))
    parser.add_argument("--at", choices=["download", "paging"], default="download")
    parser.add_argument(
        "--batch-rows",
        type=int,
        help="the target's batch_size_rows (target-duckdb: with flush_all_streams), so that it emits STATE sooner",
    )
    args = parser.parse_args()
    warehouse = WAREHOUSE[args.target]
    today = dt.datetime.now(dt.timezone.utc).date()
    work = Path(tempfile.mkdtemp(prefix="tap-interrupt."))
    os.environ.update(
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_DATABASE_URI=f"sqlite:///{work}/meltano.db",
        TARGET_DUCKDB_FILEPATH=str(work / "warehouse.duckdb"),
        TAP_BACKSTORY_TODAY=today.isoformat(),
    )
    if args.batch_rows:
        prefix = args.target.upper().replace("-", "_")
        os.environ[f"{prefix}_BATCH_SIZE_ROWS"] = str(args.batch_rows)
        if warehouse == "duckdb":
            os.environ["TARGET_DUCKDB_FLUSH_ALL_STREAMS"] = "true"
    if warehouse == "postgres":
        subprocess.run([*PSQL, "DROP SCHEMA IF EXISTS tap_backstory CASCADE"], check=True, capture_output=True)
    state_id = f"sandbox:tap-backstory-to-{args.target}"
    # Slow answers so that the interrupt lands inside the download or the paging, not after the run.
    slow = {"bandwidth_bytes_per_sec": 60_000} if args.at == "download" else {"slow_seconds": 0.5}
    with Sandbox(SandboxSettings(today=today, **slow), port=8765) as sb:

        def ready() -> bool:
            stats = sb.stats()
            return stats["data_requests"] >= 2 if args.at == "download" else stats["page_requests"] >= 4

        started = time.monotonic()
        code, log = interrupted_run(args.target, ready)
        batch = f" (batch_size_rows {args.batch_rows})" if args.batch_rows else ""
        print(
            f"{args.target}{batch}, Ctrl-C at {args.at}: meltano run exited {code} "
            f"after {time.monotonic() - started:.1f}s"
        )
        for line in log.splitlines():
            if any(n in line for n in ("tap-backstory: error:", "Incremental state", "signal", "Interrupt", "exit")):
                print("  log:", line[-220:])
        stored = meltano("state", "get", state_id)
        print(f"  meltano state get: {stored.stdout.strip()[:400] or '(empty)'} {stored.stderr.strip()[-200:]}")
        after_interrupt = counts(warehouse)
        print(f"  rows after the interrupt: {json.dumps(after_interrupt)}")
        stats = sb.stats()
        print(
            f"  first run: jobs {stats['jobs_created']}, searches {stats['searches_created']}, "
            f"quota {stats['quota_spent']}"
        )

        sb.configure(bandwidth_bytes_per_sec=0, slow_seconds=0)
        before = sb.stats()
        rerun = meltano("run", "tap-backstory", args.target)
        after = sb.stats()
        print(f"rerun: meltano run exited {rerun.returncode}")
        reread = {
            "jobs_created": {k: v - before["jobs_created"].get(k, 0) for k, v in after["jobs_created"].items()},
            "searches_created": after["searches_created"] - before["searches_created"],
            "exports_created": after["exports_created"] - before["exports_created"],
        }
        for line in (rerun.stdout + rerun.stderr).splitlines():
            if "resuming export job" in line or "Window 1 of" in line:
                print("  log:", line.split("|")[-1].strip()[:200])
        print(f"  rerun asked for: {json.dumps(reread)}")
        print(f"  rows after the rerun: {json.dumps(counts(warehouse))}")
        check = subprocess.run(
            [
                sys.executable,
                "scripts/e2e_check.py",
                "first",
                "--sandbox",
                f"http://127.0.0.1:{sb.port}",
                "--start-date",
                "2026-09-01",
                "--warehouses",
                warehouse,
            ],
            check=False,
        )
        return 0 if rerun.returncode == 0 and check.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
