"""Expectations of the Backstory export end-to-end tests, and their sandbox and config presets."""

from __future__ import annotations

import datetime as dt
import functools
import itertools

from tap_backstory_sandbox import Sandbox
from tap_backstory_sandbox.data import expected_activity_uids
from tests import conftest, tap_runner
from tests.conftest import TODAY

D = dt.date.fromisoformat
# Small data and tiny job durations, so a job takes well under a second.
sandbox = functools.partial(
    conftest.sandbox,
    activities_per_day=20,
    contacts_per_day=10,
    fragments=4,
    job_queue_seconds=0.1,
    job_run_seconds=0.2,
)
# Polling fast; `tap_config(sb, stream)` enables only that stream.
tap_config = functools.partial(tap_runner.tap_config, start_date="2026-01-01", job_poll_interval_seconds=0.1)
# A run that must succeed.
run = functools.partial(tap_runner.run, check=True)


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
