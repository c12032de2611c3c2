"""Backstory downloads against a server that answers badly or with hostile content (issue 22), and downloads
that stream (issue 20): every case ends within bounded time and memory with one clear error line and a
non-zero exit, or with the correct records.

Real sandbox (`hostile_*` knobs), real `tap-backstory` executable; peak RSS is that very process's (wait4)."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backstory_support import expected_uids, run, sandbox, tap_config, windows
from tests.tap_runner import TAP_EXE, tap_env, today_env

START = "2026-02-20"  # a few windows: enough to read, quick to fail
MAX_RSS_MB = 300
MAX_SECONDS = 90


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    rss_mb: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("tap-backstory: error:")]


def measured_run(sb, config: dict, env: dict | None = None) -> Measured:
    """The tap to its end, with its wall time and its own peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.json")
        path.write_text(json.dumps(config))
        out, err = Path(tmp, "out"), Path(tmp, "err")
        started = time.monotonic()
        with open(out, "w") as stdout, open(err, "w") as stderr:
            proc = subprocess.Popen([TAP_EXE, "--config", str(path)], stdout=stdout, stderr=stderr,
                                    env=tap_env(today_env(sb, env)))
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                proc.returncode = 0  # reaped by wait4
        seconds = time.monotonic() - started
        return Measured(os.waitstatus_to_exitcode(status), out.read_text(), err.read_text(), seconds,
                        usage.ru_maxrss / 1024)


def assert_one_clear_error(result: Measured, *phrases: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(result.error_lines) == 1, result.stderr[-3000:]
    line = result.error_lines[0]
    assert line.startswith("tap-backstory: error: activities: ") and "unexpected" not in line, line
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in line, line
    assert result.rss_mb < MAX_RSS_MB, f"peak RSS {result.rss_mb:.0f} MB"
    assert result.seconds < MAX_SECONDS


@pytest.mark.parametrize(
    ("kind", "phrases"),
    [
        ("gzip_bomb", ["fragment 0", "decompresses to more than"]),
        ("gzip_bomb_encoded", ["fragment 0", "decompresses to more than"]),
        ("endless_line", ["fragment 0", "a line longer than"]),
        ("deep_nesting", ["line 1 ", "nested deeper"]),
        ("huge_int", ["line 1 ", "number out of range"]),
        ("huge_exponent", ["line 1 ", "number out of range"]),
    ],
)
def test_hostile_data_ends_in_one_clear_error_within_bounds(kind, phrases):
    with sandbox(hostile_data=kind, hostile_bytes=2_000_000_000) as sb:
        result = measured_run(sb, tap_config(sb, "activities", start_date=START))
        assert_one_clear_error(result, "export job ", *phrases)
        print(f"{kind}: {result.seconds:.1f}s, peak RSS {result.rss_mb:.0f} MB")


def test_a_bad_line_is_named_by_its_job_fragment_and_line():
    with sandbox(hostile_data="huge_int", fragment_param="ignore") as sb:
        result = measured_run(sb, tap_config(sb, "activities", start_date=START))
        assert_one_clear_error(result, "export job ", "line 1 ", "fragment 0")


def test_a_billion_fragments_are_refused_against_results_size():
    with sandbox(hostile_fragments=1_000_000_000) as sb:
        result = measured_run(sb, tap_config(sb, "activities", start_date=START))
        assert_one_clear_error(result, "1000000000 fragments is not a fragment count")


def test_a_job_id_that_looks_like_a_path_stays_one_path_segment():
    with sandbox(hostile_job_id="../../auth/v1/tokens?job=") as sb:
        result = run(sb, tap_config(sb, "activities", start_date=START), check=True)
        uids = [record["uid"] for record in result.records("activities")]
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, windows(sb))
        assert not [event for event in sb.events() if event["kind"] == "unrouted"]


def test_a_job_id_with_control_characters_is_refused():
    with sandbox(hostile_job_id="job\x1b[31m") as sb:
        result = measured_run(sb, tap_config(sb, "activities", start_date=START))
        assert_one_clear_error(result, "unusable export job id")
        assert "\x1b" not in result.stderr


def test_records_stream_while_a_slow_download_goes_on_with_progress_lines():
    """A 25 kB/s link (about 7 s per fragment): the first RECORD arrives long before the export's last byte,
    and progress is logged."""
    with sandbox(bandwidth_bytes_per_sec=25_000, activities_per_day=300) as sb:
        config = tap_config(sb, "activities", start_date="2026-02-27", fragment_concurrency=4)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "config.json")
            path.write_text(json.dumps(config))
            err = Path(tmp, "err")
            with open(err, "w") as stderr:
                env = tap_env(today_env(sb, {"TAP_BACKSTORY_PROGRESS_SECONDS": "1"}))
                proc = subprocess.Popen([TAP_EXE, "--config", str(path)], stdout=subprocess.PIPE, stderr=stderr,
                                        text=True, env=env)
                assert proc.stdout is not None
                first_record = None
                uids = []
                for line in proc.stdout:
                    message = json.loads(line)
                    if message["type"] == "RECORD":
                        first_record = first_record or time.monotonic()
                        uids.append(message["record"]["uid"])
                assert proc.wait(timeout=120) == 0, err.read_text()[-3000:]
                ended = time.monotonic()
            log = err.read_text()
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, windows(sb))
        assert first_record is not None and ended - first_record > 3, log[-3000:]  # the download went on
        progress = [line for line in log.splitlines() if "bytes received (" in line and "% of " in line]
        assert progress, log[-3000:]
        # Downloads start one at a time and widen while the reader waits: on this slow link, to all 4.
        assert sb.stats()["max_data_streams"] == 4, log[-3000:]


def test_a_bad_line_read_by_batch_line_workers_is_the_same_one_line_error(tmp_path):
    """In a BATCH run the lines are read by worker processes (tap_backstory/line_workers.py): the error names the
    same job, fragment and line as in RECORD mode, and no file is announced for the failed window."""
    batch = {"encoding": {"format": "jsonl", "compression": "gzip"}, "storage": {"root": tmp_path.as_uri()}}
    with sandbox(hostile_data="huge_int", fragment_param="ignore") as sb:
        plain = measured_run(sb, tap_config(sb, "activities", start_date=START))
        batched = measured_run(sb, tap_config(sb, "activities", start_date=START, batch_config=batch),
                               env={"TAP_BACKSTORY_BATCH_WORKERS": "2"})
    assert_one_clear_error(batched, "export job ", "line 1 ", "fragment 0")
    assert "JSON Lines read by 2 worker processes" in batched.stderr
    same_job = functools.partial(re.sub, r"export job \S+", "export job J")  # each run creates its own job
    assert [same_job(line) for line in batched.error_lines] == [same_job(line) for line in plain.error_lines]
    assert not [json.loads(line) for line in batched.stdout.splitlines() if '"type":"BATCH"' in line]
    assert not list(tmp_path.rglob("*.gz"))
