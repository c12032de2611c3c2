"""How a run that cannot finish ends (docs/reliability.md, "Stopped runs: exit codes"): SIGTERM and SIGINT in
the middle of a download, and a target that stops reading. The real executable, the real sandbox over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tap_backstory_sandbox.data import expected_activity_uids
from tests import conftest, tap_runner
from tests.conftest import TODAY

START, END = dt.date(2026, 2, 1), dt.date(2026, 2, 28)
WINDOW_DAYS = 10
BANDWIDTH = 16_000  # bytes/s per connection: each ~50 kB fragment takes ~3 s, one at a time
RERUN = (
    "a rerun from the last STATE written resumes at its first unfinished window or page, reusing the export "
    "jobs and exports it names; records sent after that STATE are sent again"
)
STOPPED_BY = {
    signal.SIGTERM: (143, f"tap-backstory: error: stopped by SIGTERM (exit 143) before the run finished; {RERUN}"),
    signal.SIGINT: (130, f"tap-backstory: error: stopped by SIGINT (exit 130) before the run finished; {RERUN}"),
}
TARGET_GONE = (
    "tap-backstory: error: the target stopped reading (its end of the pipe closed) before the run finished, see "
    "the target's log for why; a rerun from the last STATE the target saved resumes at its first unfinished "
    "window or page"
)


def activities_config(sb) -> dict:
    return tap_runner.tap_config(
        sb,
        "activities",
        start_date=START.isoformat(),
        end_date=END.isoformat(),
        snapshot_window_days=WINDOW_DAYS,
        job_poll_interval_seconds=0.1,
        fragment_concurrency=1,
    )


def window_uids(sb, start: dt.date) -> set[str]:
    end = min(start + dt.timedelta(days=WINDOW_DAYS - 1), END)
    return expected_activity_uids(sb.settings, start, end, "snapshot", today=TODAY)


def uids(messages: list[dict]) -> list[str]:
    return [m["record"]["uid"] for m in messages if m["type"] == "RECORD" and m["stream"] == "activities"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_download_exits_non_zero_in_one_line_after_a_consistent_state(signum):
    exit_code, cause = STOPPED_BY[signum]
    with conftest.sandbox(activities_per_day=10, fragments=3, job_queue_seconds=0.1, job_run_seconds=0.2) as sb:
        config = activities_config(sb)
        clean = set().union(*(window_uids(sb, START + dt.timedelta(days=d)) for d in range(0, 28, WINDOW_DAYS)))
        sb.configure(bandwidth_bytes_per_sec=BANDWIDTH)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "config.json").write_text(json.dumps(config))
            stderr_path = Path(tmp, "stderr.txt")
            with open(stderr_path, "w") as stderr:
                proc = subprocess.Popen(
                    [tap_runner.TAP_EXE, "--config", str(Path(tmp, "config.json"))],
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    env=tap_runner.tap_env(tap_runner.today_env(sb)),
                )
            assert proc.stdout is not None
            messages = []
            for line in proc.stdout:  # up to the first record: fragment 0 is out, fragments 1 and 2 download
                messages.append(json.loads(line))
                if messages[-1]["type"] == "RECORD":
                    break
            proc.send_signal(signum)
            signalled = time.monotonic()
            messages += [json.loads(line) for line in proc.stdout]  # what a target would still receive
            returncode = proc.wait(timeout=30)
            stopped_after = time.monotonic() - signalled
            proc.stdout.close()
            stderr_text = stderr_path.read_text()

        assert returncode == exit_code, stderr_text[-2000:]
        # Worker threads do not keep it alive: the window's last fragment alone needs ~3 s more.
        assert stopped_after < 2.0
        assert stderr_text.splitlines()[-1] == cause
        assert [line for line in stderr_text.splitlines() if "tap-backstory: error:" in line] == [cause]
        assert "Traceback" not in stderr_text and "Gracefully shutting down" not in stderr_text

        # The last STATE claims nothing that was not sent: it does not close window 1, which was cut short.
        last = max(i for i, m in enumerate(messages) if m["type"] == "STATE")
        state = messages[last]["value"]
        first_window = window_uids(sb, START)
        sent = uids(messages)
        assert 0 < len(sent) < len(first_window)
        assert "bookmark" not in state["bookmarks"]["activities"]
        [pending_job, *_] = state["bookmarks"]["activities"]["pending_jobs"]

        # A rerun from it loses nothing and sends again at most the cut window's records (the documented overlap).
        sb.configure(bandwidth_bytes_per_sec=0)
        resumed = tap_runner.run(sb, config, state=state, check=True)
        committed, again = uids(messages[:last]), [r["uid"] for r in resumed.records("activities")]
        assert not [uid for uid, n in Counter(again).items() if n > 1]
        assert not set(committed) & set(again)
        assert set(committed) | set(again) == clean
        assert set(sent) - set(committed) <= first_window
        assert f"resuming export job {pending_job['job_id']}" in resumed.stderr  # the same job, no new one


TARGET = "import sys\nfor _ in range(8):\n    sys.stdin.readline()\n"
"""A target that reads eight messages and exits (closing its end of the pipe), as a crashed loader does."""


def test_a_target_that_stops_reading_gets_one_line_and_a_non_zero_exit():
    with conftest.sandbox(activities_per_day=40, fragments=3, job_queue_seconds=0.1, job_run_seconds=0.2) as sb:
        config = activities_config(sb)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "config.json").write_text(json.dumps(config))
            target = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.PIPE)
            tap = subprocess.Popen(
                [tap_runner.TAP_EXE, "--config", str(Path(tmp, "config.json"))],
                stdout=target.stdin,
                stderr=subprocess.PIPE,
                text=True,
                env=tap_runner.tap_env(tap_runner.today_env(sb)),
            )
            assert target.stdin is not None
            target.stdin.close()  # only the tap holds the write end now
            assert target.wait(timeout=60) == 0
            target_gone = time.monotonic()
            _, stderr_text = tap.communicate(timeout=60)
            stopped_after = time.monotonic() - target_gone

    assert tap.returncode == 1, stderr_text[-2000:]
    assert stopped_after < 5.0  # the next message it writes fails: no job is waited for
    assert stderr_text.splitlines()[-1] == TARGET_GONE
    assert [line for line in stderr_text.splitlines() if "tap-backstory: error:" in line] == [TARGET_GONE]
    assert "Traceback" not in stderr_text and "Exception ignored" not in stderr_text


def test_a_signal_in_a_batch_run_ends_its_line_workers_too(tmp_path):
    """BATCH JSON Lines are read by worker processes (tap_backstory/line_workers.py): a SIGTERM mid-download ends
    the run as in RECORD mode, and its workers with it (they ignore the signal themselves and end with the tap)."""
    with conftest.sandbox(activities_per_day=10, fragments=3, job_queue_seconds=0.1, job_run_seconds=0.2) as sb:
        config = activities_config(sb)
        config["batch_config"] = {"encoding": {"format": "jsonl", "compression": "gzip"},
                                  "storage": {"root": (tmp_path / "batches").as_uri()}}
        sb.configure(bandwidth_bytes_per_sec=BANDWIDTH)
        Path(tmp_path, "config.json").write_text(json.dumps(config))
        stderr_path = tmp_path / "stderr.txt"
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(
                [tap_runner.TAP_EXE, "--config", str(tmp_path / "config.json")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=tap_runner.tap_env(tap_runner.today_env(sb, {"TAP_BACKSTORY_BATCH_WORKERS": "2"})),
            )
        deadline = time.monotonic() + 30
        while "downloading" not in stderr_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        workers = [pid for pid in children if "line_workers" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        returncode = proc.wait(timeout=30)
        stopped_after = time.monotonic() - signalled
        stderr_text = stderr_path.read_text()

    assert returncode == 143, stderr_text[-2000:]
    assert stopped_after < 2.0
    # A BATCH run writes its STATE after its files: none yet here.
    cause = ("tap-backstory: error: stopped by SIGTERM (exit 143) before the run finished; no STATE was written yet, "
             "so a rerun starts from the same input state (or start_date)")
    assert [line for line in stderr_text.splitlines() if "tap-backstory: error:" in line] == [cause]
    assert "Traceback" not in stderr_text
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert not [p for p in (tmp_path / "batches").rglob("*") if p.is_file()]  # no file of the cut window
