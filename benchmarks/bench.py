"""tap-backstory benchmark: the tap against a bare extractor, memory, parallel fragments, pipelined backfills.

    uv run python benchmarks/bench.py [--n 300000] [--fragments 4] [--n-large 1000000] [--profile]

One run starts the sandbox in its own process (exports served from a pre-rendered cache, so the sandbox does
no rendering while anything is timed), pre-warms every export it will serve, and then measures, each process
run alone and timed from spawn to exit, peak RSS read from `wait4` (`ru_maxrss` of that very process):

  a) the tap extracting N activities (one snapshot job, `--fragments` fragments), stdout to a file, and (a')
     through a pipe to `cat`, as a target reads it;
  b) the bare extractor (`benchmarks/bare.py`) on the same export, stdout to a file: the floor any connector
     pays; (b') the same loop with msgspec instead of `json`: the floor with the fastest codec (issue 20);
  e) the tap in BATCH mode (gzip JSONL files + BATCH messages) on the same export, against (a);
  m) the tap's peak RSS at N = 100k (and `--n-large`), to show it does not grow with N;
  f) time to the first RECORD after the job is Completed, and the longest silence in the log, on a throttled
     link (`--first-n` activities, 4 fragments, `--first-bandwidth` bytes/s per connection);
  s) the cost of every declared property in every record (issue 21 §2), in process: shaping and encoding
     the export's records with the null template against the previous shaper (omitted keys left out);
  c) 1 vs 4 fragments under a per-connection bandwidth cap;
  d) a one-year backfill in 14-day windows, pipelined (`max_concurrent_jobs` 2, the most the
     setting allows) vs strictly sequential windows (1).

It prints each figure and the ratios (wall-clock ratios, the goals, and CPU-second ratios beside them: on a
loaded machine those are the steadier ones), the load average before and after, and writes them as JSON to
`benchmarks/results/` (git-ignored). `--profile` also runs the tap on (a) under cProfile and prints the top
functions.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec
import requests

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent
TODAY = dt.date(2026, 3, 1)
LAST_DAY = TODAY - dt.timedelta(days=5)  # every activity up to here is ingested: N is exact
PER_DAY = 10_000


@dataclass
class Run:
    label: str
    seconds: float
    rss_mb: float
    records: int
    bytes: int
    cpu_seconds: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds

    def line(self) -> str:
        return (
            f"  {self.label:<44} {self.seconds:7.2f} s {self.records_per_s:9,.0f} rec/s {self.mb_per_s:7.1f} MB/s "
            f"peak RSS {self.rss_mb:6.1f} MB  cpu {self.cpu_seconds:6.2f} s  ({self.records:,} records)"
        )


# --- the sandbox, in its own process ----------------------------------------------------------------------
class SandboxProcess:
    def __init__(self, cache_dir: str, **settings: t.Any) -> None:
        argv = [str(BIN / "tap-backstory-sandbox"), "--port", "0", "--today", TODAY.isoformat(),
                "--cache-exports-dir", cache_dir]
        for name, value in settings.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=child_env())
        self.values: dict[str, str] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line == "ready":
                break
            key, _, value = line.partition("=")
            self.values[key] = value
        self.admin = self.values["api_url"].rsplit("/backstory", 1)[0] + "/_sandbox"

    def configure(self, **overrides: t.Any) -> None:
        requests.post(f"{self.admin}/configure", json=overrides, timeout=30).raise_for_status()

    def bytes_sent(self) -> int:
        return int(requests.get(f"{self.admin}/stats", timeout=30).json()["data_bytes_sent"])

    def tap_config(self, days: int, **overrides: t.Any) -> dict:
        start = LAST_DAY - dt.timedelta(days=days - 1)
        config = {
            "api_url": self.values["api_url"],
            "activity_client_id": self.values["activity_client_id"],
            "activity_client_secret": self.values["activity_client_secret"],
            "start_date": start.isoformat(),
            "end_date": LAST_DAY.isoformat(),
            "job_poll_interval_seconds": 0.1,
        }
        config.update(overrides)
        return config

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# --- one measured process ----------------------------------------------------------------------------------
def measure(label: str, argv: list[str], sandbox: SandboxProcess, stdout: t.Any = subprocess.DEVNULL,
            env: dict | None = None) -> tuple[Run, str]:
    """Run `argv` to completion; wall time from spawn to exit and its own peak RSS (wait4's ru_maxrss).

    The page cache is written back first (untimed): the 1-2 GB an earlier run wrote to a file would otherwise
    be flushed to disk while this one runs, and charge it for another process's writes."""
    os.sync()
    before = sandbox.bytes_sent()
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        pipe = stdout == "pipe"  # through a pipe to `cat`, as a target would read it
        with tempfile.TemporaryFile() as out_file:  # stdout to a file ("file"), deleted once the child exits
            target = subprocess.PIPE if pipe else out_file if stdout == "file" else stdout
            proc = subprocess.Popen(argv, stdout=target, stderr=err, env=child_env(env))
        reader = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL) if pipe else None
        _, status, usage = os.wait4(proc.pid, 0)
        if reader is not None:
            proc.stdout.close()  # type: ignore[union-attr]
            reader.wait()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{label}: exit {proc.returncode}\n{stderr[-3000:]}")
    records = sum(int(n) for n in re.findall(r"Window .*?: (\d+) rows, \d+ bytes", stderr))
    if match := re.search(r"records=(\d+)", stderr):
        records = int(match.group(1))
    run = Run(label, seconds, usage.ru_maxrss / 1024, records, sandbox.bytes_sent() - before,
              usage.ru_utime + usage.ru_stime)
    print(run.line(), flush=True)
    return run, stderr


SCRUBBED_ENV = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")
"""Set in some shells and CI images, not in a normal install: unbuffered stdout makes every write a system
call, and no bytecode cache recompiles every module (~0.9 s CPU) at each start. Measured processes run
without them."""


def child_env(extra: dict | None = None) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV}
    return {**env, **(extra or {})}


def write_json(folder: Path, name: str, payload: dict) -> str:
    path = folder / name
    path.write_text(json.dumps(payload))
    return str(path)


def tap_argv(folder: Path, config: dict) -> list[str]:
    return [str(BIN / "tap-backstory"), "--config", write_json(folder, "config.json", config)]


def tap_env() -> dict:
    return {"TAP_BACKSTORY_TODAY": TODAY.isoformat()}


def run_tap(label: str, sandbox: SandboxProcess, folder: Path, config: dict, **kwargs: t.Any) -> Run:
    return measure(label, tap_argv(folder, config), sandbox, env=tap_env(), **kwargs)[0]


def run_bare(label: str, sandbox: SandboxProcess, folder: Path, config: dict, *flags: str) -> Run:
    argv = [sys.executable, str(ROOT / "benchmarks" / "bare.py"), write_json(folder, "bare.json", config), *flags]
    return measure(label, argv, sandbox)[0]


def prewarm(label: str, sandbox: SandboxProcess, folder: Path, config: dict) -> None:
    """Create the export's job and wait for it: the sandbox renders its bodies into the cache (untimed)."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "bare.py"), write_json(folder, "bare.json", config), "--prewarm"]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=child_env())
    if proc.returncode:
        raise SystemExit(f"{label}: {proc.stderr[-2000:]}")
    print(f"  {label:<44} {time.perf_counter() - started:7.2f} s (untimed)", flush=True)


def ratio(name: str, value: float, target: str, ok: bool) -> dict:
    print(f"  {name:<58} {value:6.2f}   target {target:<8} {'OK' if ok else 'MISSED'}", flush=True)
    return {"name": name, "value": round(value, 3), "target": target, "ok": ok}


# --- the scenarios -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300_000, help="activities in (a), (b), (e) (default 300000)")
    parser.add_argument("--fragments", type=int, default=4, help="fragments of that export (default 4)")
    parser.add_argument("--n-small", type=int, default=100_000, help="N of the memory run (default 100000)")
    parser.add_argument("--n-large", type=int, default=0, help="also measure peak RSS at this N (e.g. 1000000)")
    parser.add_argument("--bandwidth", type=int, default=1_000_000, help="(c) cap, bytes/s per connection")
    parser.add_argument("--bw-n", type=int, default=30_000, help="(c) activities (default 30000)")
    parser.add_argument("--backfill-per-day", type=int, default=100, help="(d) activities per day")
    parser.add_argument("--job-seconds", type=float, default=0.9, help="(d) queued+running time of a job")
    parser.add_argument("--first-n", type=int, default=40_000, help="(f) activities (default 40000)")
    parser.add_argument("--first-bandwidth", type=int, default=400_000,
                        help="(f) cap, bytes/s per connection (default 400000)")
    parser.add_argument("--only", default="apbemfscd", help="scenarios to run, e.g. 'ab' (default all)")
    parser.add_argument("--cache-dir", help="keep the sandbox's rendered exports here between runs (default: temp)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (a), (b') and (e), interleaved; ratios are the median of each round's "
                             "(default 3)")
    parser.add_argument("--profile", action="store_true", help="also profile the tap on (a) with cProfile")
    args = parser.parse_args()
    if args.n % PER_DAY or args.n_small % PER_DAY or args.n_large % PER_DAY or args.first_n % PER_DAY:
        raise SystemExit(f"N must be a multiple of {PER_DAY} (activities per day)")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results: dict[str, t.Any] = {
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "runs": {},
        "ratios": [],
    }
    print(f"tap-backstory benchmark, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average before {os.getloadavg()[0]:.2f}", flush=True)
    results["load_before"] = os.getloadavg()
    runs: dict[str, Run] = {}
    rounds: dict[str, list[Run]] = {}  # (a), (b'), (e): one run per round, interleaved

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        folder = Path(tmp)
        sandbox = SandboxProcess(args.cache_dir or str(folder / "cache"), activities_per_day=PER_DAY,
                                 fragments=args.fragments, job_queue_seconds=0.05, job_run_seconds=0.05)
        try:
            days = args.n // PER_DAY
            if set(args.only) & set("abpe"):
                config = sandbox.tap_config(days, fragment_concurrency=args.fragments)
                print(f"\n(a/b/e) {args.n:,} activities, {args.fragments} fragments; pre-warming", flush=True)
                prewarm("pre-warm: render the export once", sandbox, folder, config)
                for number in range(1, args.rounds + 1):
                    if args.rounds > 1:
                        print(f"  round {number} of {args.rounds}", flush=True)
                    if "a" in args.only:
                        rounds.setdefault("tap", []).append(
                            run_tap("(a) tap > file", sandbox, folder, config, stdout="file"))
                    if "b" in args.only:
                        rounds.setdefault("bare_msgspec", []).append(
                            run_bare("(b') bare extractor, msgspec > file", sandbox, folder, config, "--msgspec"))
                    if "e" in args.only:
                        rounds.setdefault("batch", []).append(run_batch(sandbox, folder, config, number))
                runs.update({key: median_run(each) for key, each in rounds.items()})
                if "p" in args.only:
                    runs["tap_pipe"] = run_tap("(a') tap | cat > /dev/null", sandbox, folder, config, stdout="pipe")
                if "b" in args.only:  # the slow `json` floor: one round
                    runs["bare"] = run_bare("(b) bare extractor > file", sandbox, folder, config)
                if args.profile:
                    profile(sandbox, folder, config, stamp)

            if "m" in args.only:
                print("\n(m) peak RSS against N", flush=True)
                for n in [args.n_small, *([args.n_large] if args.n_large else [])]:
                    if n == args.n and "tap" in runs:  # (a) was this very run: its RSS is the figure
                        runs[f"rss_{n}"] = runs["tap"]
                        print(f"  tap N={n:,}: the (a) run above, peak RSS {runs['tap'].rss_mb:.1f} MB", flush=True)
                        continue
                    config = sandbox.tap_config(n // PER_DAY, fragment_concurrency=args.fragments)
                    prewarm(f"pre-warm N={n:,}", sandbox, folder, config)
                    runs[f"rss_{n}"] = run_tap(f"tap N={n:,}", sandbox, folder, config)

            if "f" in args.only:
                results["first_record"] = first_record(sandbox, folder, args)

            if "s" in args.only:
                results["every_property"] = every_property_cost(Path(args.cache_dir or folder / "cache"))

            if "c" in args.only:
                per_day = 1_000
                days = args.bw_n // per_day
                print(f"\n(c) {args.bw_n:,} activities, bandwidth cap {args.bandwidth / 1e6:g} MB/s per connection",
                      flush=True)
                sandbox.configure(activities_per_day=per_day)
                for fragments in (1, 4):
                    sandbox.configure(fragments=fragments, bandwidth_bytes_per_sec=0)
                    config = sandbox.tap_config(days, fragment_concurrency=4)
                    prewarm(f"pre-warm {fragments} fragment(s)", sandbox, folder, config)
                    sandbox.configure(bandwidth_bytes_per_sec=args.bandwidth)
                    runs[f"frag{fragments}"] = run_tap(f"tap, {fragments} fragment(s), capped", sandbox, folder,
                                                       config)
                sandbox.configure(activities_per_day=PER_DAY, fragments=args.fragments, bandwidth_bytes_per_sec=0)

            if "d" in args.only:
                half = args.job_seconds / 3
                print(f"\n(d) one-year backfill, 14-day windows, {args.backfill_per_day}/day, jobs queued "
                      f"{half:.2f} s + running {2 * half:.2f} s (at most 2 running)", flush=True)
                sandbox.configure(activities_per_day=args.backfill_per_day, fragments=4, job_queue_seconds=0.05,
                                  job_run_seconds=0.05)
                config = sandbox.tap_config(365, snapshot_window_days=14, max_concurrent_jobs=2)
                run_tap("pre-warm: render the exports once (untimed)", sandbox, folder, config)
                sandbox.configure(job_queue_seconds=half, job_run_seconds=2 * half)
                for jobs in (2, 1):
                    config = sandbox.tap_config(365, snapshot_window_days=14, max_concurrent_jobs=jobs)
                    label = "sequential" if jobs == 1 else "pipelined"
                    runs[f"backfill{jobs}"] = run_tap(f"tap {label}, max_concurrent_jobs={jobs}", sandbox,
                                                      folder, config)
        finally:
            sandbox.stop()

    print("\nratios", flush=True)
    ratios = results["ratios"]
    throughput = {key: run.records_per_s for key, run in runs.items()}
    if "tap" in runs and "bare_msgspec" in runs:
        each = [b.seconds / a.seconds for a, b in zip(rounds["tap"], rounds["bare_msgspec"], strict=True)]
        r = statistics.median(each)
        ratios.append(ratio("(a)/(b') tap / bare extractor with msgspec (records/s)", r, ">= 0.8", r >= 0.8))
        print_rounds(each)
    if "tap" in runs and "bare" in runs:
        r = throughput["tap"] / throughput["bare"]
        ratios.append(ratio("(a)/(b) tap / bare extractor with json (records/s)", r, ">= 0.7", r >= 0.7))
    if "tap_pipe" in runs and "bare" in runs:
        r = throughput["tap_pipe"] / throughput["bare"]
        ratios.append(ratio("(a')/(b) tap through a pipe / bare extractor with json", r, "-", True))
    if "batch" in runs and "tap" in runs:
        each = [e.seconds / a.seconds for a, e in zip(rounds["tap"], rounds["batch"], strict=True)]
        r = statistics.median(each)
        ratios.append(ratio("(e)/(a) BATCH wall / record mode wall", r, "<= 1.0", r <= 1.0))
        print_rounds(each)
    rss = [run for key, run in runs.items() if key.startswith("rss_")] + rounds.get("tap", [])
    if rss:
        peak = max(run.rss_mb for run in rss)
        ratios.append(ratio("peak RSS of the tap runs (MB)", peak, "<= 200", peak <= 200))
    if f"rss_{args.n_large}" in runs and f"rss_{args.n_small}" in runs:
        r = runs[f"rss_{args.n_large}"].rss_mb / runs[f"rss_{args.n_small}"].rss_mb
        ratios.append(ratio(f"peak RSS N={args.n_large:,} / N={args.n_small:,}", r, "<= 1.1", r <= 1.1))
    if first := results.get("first_record"):
        if first["first_record_s"] is not None:
            r = first["first_record_s"]
            ratios.append(ratio("(f) first RECORD after job Completed (s)", r, "<= 3", r <= 3))
        r = first["longest_log_silence_s"]
        ratios.append(ratio("(f) longest log silence while downloading (s)", r, "<= 30", r <= 30))
    if "frag1" in runs and "frag4" in runs:
        r = runs["frag1"].seconds / runs["frag4"].seconds
        ratios.append(ratio("(c) speed-up of 4 fragments over 1, capped", r, ">= 3", r >= 3))
    if "backfill1" in runs and "backfill2" in runs:
        r = runs["backfill2"].seconds / runs["backfill1"].seconds
        ratios.append(ratio("(d) pipelined (2 jobs) / sequential backfill time", r, "<= 0.6", r <= 0.6))
    print("  CPU seconds instead of wall (steadier when other work loads the machine; no target):", flush=True)
    if "tap" in runs and "bare_msgspec" in runs:
        r = runs["bare_msgspec"].cpu_seconds / runs["tap"].cpu_seconds
        ratios.append(ratio("  (a)/(b') by CPU: bare msgspec CPU s / tap CPU s", r, "-", True))
    if "batch" in runs and "tap" in runs:
        r = runs["batch"].cpu_seconds / runs["tap"].cpu_seconds
        ratios.append(ratio("  (e)/(a) by CPU: BATCH CPU s / record mode CPU s", r, "-", True))
    results["rounds"] = {key: [asdict(run) for run in each] for key, each in rounds.items()}
    results["runs"] = {key: {**asdict(run), "records_per_s": run.records_per_s, "mb_per_s": run.mb_per_s}
                       for key, run in runs.items()}
    results["load_after"] = os.getloadavg()
    print(f"  load average (1 min) after: {results['load_after'][0]:.2f} (other work on the machine skews figures)")
    path = RESULTS / f"bench-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {path.relative_to(ROOT)}")


def run_batch(sandbox: SandboxProcess, folder: Path, config: dict, number: int) -> Run:
    """(e): the tap in BATCH mode (gzip JSON Lines files), its files counted and then deleted."""
    batch_root = folder / f"batches-{number}"
    batch = {**config, "batch_config": {
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": batch_root.as_uri(), "prefix": "activities-"},
    }}
    with open(folder / "batch.out", "wb") as out:
        run = run_tap("(e) tap BATCH (gzip JSONL files)", sandbox, folder, batch, stdout=out)
    messages = [json.loads(line) for line in (folder / "batch.out").read_text().splitlines()]
    files = sum(len(m["manifest"]) for m in messages if m["type"] == "BATCH")
    size = sum(f.stat().st_size for f in batch_root.rglob("*") if f.is_file())
    print(f"      {files} batch file(s), {size / 1e6:.1f} MB gzip", flush=True)
    shutil.rmtree(batch_root)
    return run


def median_run(each: list[Run]) -> Run:
    """The round with the median wall time (its RSS and CPU seconds come with it)."""
    return sorted(each, key=lambda run: run.seconds)[(len(each) - 1) // 2]


def print_rounds(each: list[float]) -> None:
    if len(each) > 1:
        print(f"      rounds: {', '.join(f'{value:.2f}' for value in each)} (median above)", flush=True)


def first_record(sandbox: SandboxProcess, folder: Path, args: argparse.Namespace) -> dict:
    """(f) The tap on a throttled link, its stdout and stderr read as they come: seconds from the log line
    saying the job is Completed to the first RECORD line, and the longest gap between two log lines from
    then until the tap exits."""
    days = args.first_n // PER_DAY
    print(f"\n(f) {args.first_n:,} activities, 4 fragments, {args.first_bandwidth / 1e3:g} kB/s per connection",
          flush=True)
    sandbox.configure(fragments=4, bandwidth_bytes_per_sec=0)
    config = sandbox.tap_config(days, fragment_concurrency=4)
    prewarm("pre-warm", sandbox, folder, config)
    sandbox.configure(bandwidth_bytes_per_sec=args.first_bandwidth)
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(tap_argv(folder, config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=child_env(tap_env()))
        log_times: list[float] = []
        marks: dict[str, float] = {}

        def read_log() -> None:
            for line in proc.stderr:  # type: ignore[union-attr]
                now = time.perf_counter()
                log_times.append(now)
                if b"-> Completed" in line:
                    marks.setdefault("completed", now)

        def read_records() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.startswith(b'{"type":"RECORD"'):
                    marks.setdefault("first_record", time.perf_counter())

        readers = [threading.Thread(target=read_log), threading.Thread(target=read_records)]
        for reader in readers:
            reader.start()
        proc.wait()
        ended = time.perf_counter()
        for reader in readers:
            reader.join()
    finally:
        sandbox.configure(fragments=args.fragments, bandwidth_bytes_per_sec=0)
    if proc.returncode != 0 or "completed" not in marks:
        raise SystemExit(f"(f): exit {proc.returncode}, job Completed seen: {'completed' in marks}")
    completed = marks["completed"]
    first = marks.get("first_record")
    during = [completed, *(t for t in log_times if t > completed), ended]
    silence = max(b - a for a, b in itertools.pairwise(during))
    figures = {
        "job_completed_s": round(completed - started, 2),
        "first_record_s": round(first - completed, 2) if first else None,
        "exit_s": round(ended - started, 2),
        "longest_log_silence_s": round(silence, 2),
    }
    print(f"  job Completed at {figures['job_completed_s']} s, first RECORD {figures['first_record_s']} s after it, "
          f"exit at {figures['exit_s']} s; longest log silence from Completed to exit "
          f"{figures['longest_log_silence_s']} s", flush=True)
    return figures


def every_property_cost(cache_dir: Path, limit: int = 100_000) -> dict | None:
    """(s) What a null for every omitted declared property costs (issue 21 §2): decode + shape + encode of the
    export's first records, with the tap's shaper and with the shaper as it was before (in place, omitted keys
    left out), best of three by CPU time, in this process."""
    from tap_backstory.formats import RecordShaper

    bodies = sorted(cache_dir.glob("activities-*.body"))
    if not bodies:
        return None
    with bodies[0].open("rb") as body:
        lines = list(itertools.islice(body, limit))
    schema = json.loads((ROOT / "tap_backstory" / "schemas" / "activities.json").read_text())
    shaper = RecordShaper(schema, "activities")
    declared, datetime_fields = shaper.declared, shaper.datetime_fields

    def previous(record: dict) -> dict:  # RecordShaper.shape before issue 21 §2
        if not declared.issuperset(record):
            shaper._move_extra(record)
        for name in datetime_fields:
            value = record.get(name)
            if isinstance(value, str) and len(value) == 19 and value[10] == "T":
                record[name] = value + "Z"
        return record

    decode, encode = msgspec.json.Decoder(dict).decode, msgspec.json.Encoder().encode

    def timed(shape: t.Callable[[dict], dict]) -> tuple[float, int]:
        best, size = float("inf"), 0
        for _ in range(3):
            started = time.process_time()  # CPU: steadier than the wall clock on a loaded machine
            size = sum(len(encode(shape(decode(line)))) for line in lines)
            best = min(best, time.process_time() - started)
        return best, size

    with_nulls, bytes_with = timed(shaper.shape)
    without, bytes_without = timed(previous)
    figures = {
        "records": len(lines),
        "us_per_record_with_nulls": round(with_nulls / len(lines) * 1e6, 2),
        "us_per_record_without": round(without / len(lines) * 1e6, 2),
        "bytes_ratio": round(bytes_with / bytes_without, 3),
    }
    print(f"\n(s) every declared property in every record, {len(lines):,} records decoded + shaped + encoded: "
          f"{figures['us_per_record_with_nulls']} us/record against {figures['us_per_record_without']} without "
          f"the nulls; records {100 * (figures['bytes_ratio'] - 1):.1f} % larger", flush=True)
    return figures


def profile(sandbox: SandboxProcess, folder: Path, config: dict, stamp: str) -> None:
    """The tap on the same export under cProfile (main thread: parsing and the SDK's record path)."""
    out = RESULTS / f"tap-{stamp}.prof"
    argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "tap_backstory",
            "--config", write_json(folder, "config.json", config)]
    measure("(a) tap under cProfile (slower)", argv, sandbox, env=tap_env())
    with contextlib.redirect_stdout(sys.stdout):
        stats = pstats.Stats(str(out))
        stats.strip_dirs().sort_stats("tottime").print_stats(22)
    print(f"profile: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
