"""Helpers of the Backstory export end-to-end tests: an in-process sandbox, tap configs, expectations."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import typing as t

from tap_backstory_sandbox import Sandbox, SandboxSettings
from tap_backstory_sandbox.data import expected_activity_uids
from tests.tap_runner import TapRun, run_tap

TODAY = dt.date(2026, 3, 1)
D = dt.date.fromisoformat
KEYS = {
    "activities": ("activity_client_id", "activity_client_secret"),
    "enriched_contacts": ("object_client_id", "object_client_secret"),
}


@contextlib.contextmanager
def sandbox(**overrides: t.Any) -> t.Iterator[Sandbox]:
    """A sandbox with tiny job durations, so a job takes well under a second."""
    base = {
        "today": TODAY,
        "activities_per_day": 20,
        "contacts_per_day": 10,
        "fragments": 4,
        "job_queue_seconds": 0.1,
        "job_run_seconds": 0.2,
    }
    with Sandbox(SandboxSettings(**{**base, **overrides})) as sb:
        yield sb


def tap_config(sb: Sandbox, stream: str, **overrides: t.Any) -> dict:
    """Config enabling only `stream` (its key pair), polling fast."""
    config = {key: value for key, value in sb.tap_config().items() if key.endswith("_url")}
    for key in KEYS[stream]:
        config[key] = sb.tap_config()[key]
    config.update(start_date="2026-01-01", job_poll_interval_seconds=0.1)
    config.update(overrides)
    return config


def run(sb: Sandbox, config: dict, state: dict | None = None) -> TapRun:
    """Run the tap with its clock on the sandbox's today."""
    today = sb.settings.current_day().isoformat()
    result = run_tap(config, state=state, env={"TAP_BACKSTORY_TODAY": today}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def windows(sb: Sandbox, stream: str = "activities") -> list[dict]:
    """Jobs the sandbox saw created, in order: {stream, export_type, start_date, end_date, job_id}."""
    kind = "activities" if stream == "activities" else "contacts"
    return [w for w in sb.stats()["job_windows"] if w["stream"] == kind]


def expected_uids(sb: Sandbox, job_windows: list[dict], today: dt.date | None = None) -> set[str]:
    """Union of what correct jobs for these windows return (computed by the sandbox's own data model)."""
    uids: set[str] = set()
    for w in job_windows:
        uids |= expected_activity_uids(
            sb.settings, D(w["start_date"]), D(w["end_date"]), w["export_type"], today=today or TODAY
        )
    return uids


def stream_state(state: dict, stream: str) -> dict:
    return state.get("bookmarks", {}).get(stream, {})


def assert_contiguous(job_windows: list[dict], start: dt.date, end: dt.date, max_days: int) -> None:
    assert D(job_windows[0]["start_date"]) == start and D(job_windows[-1]["end_date"]) == end
    for earlier, later in itertools.pairwise(job_windows):
        assert D(later["start_date"]) == D(earlier["end_date"]) + dt.timedelta(days=1)
    for w in job_windows:
        assert (D(w["end_date"]) - D(w["start_date"])).days + 1 <= max_days
