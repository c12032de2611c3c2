"""`activities` end to end: the real tap executable against the sandbox's Backstory API."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tap_backstory_sandbox import Sandbox
from tap_backstory_sandbox.data import expected_activity_uids
from tests.backstory_support import (
    D,
    assert_contiguous,
    expected_uids,
    run,
    sandbox,
    stream_state,
    tap_config,
    windows,
)
from tests.conftest import TODAY
from tests.tap_runner import run_until


def all_types_since(day: str) -> list[dict]:
    """The coverage of a backfill of every activity type from `day` (docs/state.md)."""
    return [{"start_date": day, "activity_type": kind} for kind in ("email", "meeting", "call")]


def uids_of(result) -> list[str]:
    return [record["uid"] for record in result.records("activities")]


def test_first_snapshot_run_then_delta_windows_after_a_40_day_pause():
    with sandbox() as sb:
        config = tap_config(sb, "activities", snapshot_window_days=15, max_concurrent_jobs=2)
        first = run(sb, config)

        # Exact record set, no duplicates, from snapshot windows covering start_date..today.
        job_windows = windows(sb)
        assert {w["export_type"] for w in job_windows} == {"snapshot"}
        assert_contiguous(job_windows, D("2026-01-01"), TODAY, 15)
        assert len(job_windows) == 4
        uids = uids_of(first)
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, job_windows)
        state = stream_state(first.final_state, "activities")
        assert state == {
            "bookmark": "2026-02-28",
            "snapshot_done": True,
            "pending_jobs": [],
            "coverage": all_types_since("2026-01-01"),
        }

        # Never more than 2 of our jobs alive, and the next window's job was created before the
        # previous window's data was downloaded (pipelining).
        stats, events = sb.stats(), sb.events()
        assert stats["max_jobs_alive"] <= 2
        assert any(
            _index(events, "job_created", job_windows[k + 1]["job_id"])
            < _index(events, "fragment_served", job_windows[k]["job_id"])
            for k in range(len(job_windows) - 1)
        )
        # A user can follow each window in the log: dates, job id, rows.
        assert f"created export job {job_windows[0]['job_id']}" in first.stderr
        assert "Window 2026-01-01..2026-01-15 (snapshot): 300 rows" in first.stderr
        assert not [secret for key, secret in config.items() if key.endswith("_secret") and secret in first.stderr]

        # 40 days later: only delta windows, from the bookmark + 1 (today re-read) to the new today.
        later = TODAY + dt.timedelta(days=40)
        sb.set_today(later)
        sb.reset_stats()
        second = run(sb, config, state=first.final_state)
        delta_windows = windows(sb)
        assert {w["export_type"] for w in delta_windows} == {"delta"}
        assert len(delta_windows) == 3
        assert_contiguous(delta_windows, D("2026-02-28") + dt.timedelta(days=1), later, 14)
        uids = uids_of(second)
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, delta_windows, today=later)
        assert stream_state(second.final_state, "activities")["bookmark"] == (later - dt.timedelta(days=1)).isoformat()


def _index(events: list[dict], kind: str, job_id) -> int:
    return next(i for i, e in enumerate(events) if e["kind"] == kind and str(e.get("job_id")) == str(job_id))


def test_failed_and_canceled_jobs_are_retried_with_integer_ids_and_fragment_key():
    with sandbox(fail_jobs=1, cancel_jobs=1, integer_job_ids=True, fragment_count_key="fragment") as sb:
        result = run(sb, tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=15))
        job_windows = windows(sb)
        assert sb.stats()["faults_injected"] == {"fail_jobs": 1, "cancel_jobs": 1}
        final_windows = {(w["start_date"], w["end_date"]) for w in job_windows}
        assert len(job_windows) == len(final_windows) + 2  # one new job per Failed/Canceled one
        uids = uids_of(result)
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, job_windows)
        pending = [entry for s in result.states for entry in stream_state(s, "activities").get("pending_jobs", [])]
        created = [entry for entry in pending if entry["job_id"] is not None]  # None: being requested
        assert created and all(isinstance(entry["job_id"], str) for entry in created)  # integer ids kept as strings
        assert all(entry["requested_at"] for entry in pending if entry["job_id"] is None)
        assert "ended Failed" in result.stderr and "ended Canceled" in result.stderr


def test_dropped_fragments_and_429_bursts_lose_and_duplicate_nothing():
    with sandbox(drop_fragment=2, burst_429=3) as sb:
        result = run(sb, tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=15))
        assert sb.stats()["faults_injected"] == {"drop_fragment": 2, "burst_429": 3}
        uids = uids_of(result)
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, windows(sb))
        assert "fetching it again from the start" in result.stderr


def test_a_window_failing_every_time_stops_the_run_naming_the_job_and_keeps_the_bookmark():
    with sandbox(fail_jobs=3) as sb:
        state = {"bookmarks": {"activities": {"bookmark": "2026-02-20"}}}
        result = run(sb, tap_config(sb, "activities"), state=state, timeout=60, check=False)
        last_job = windows(sb)[-1]
        assert result.returncode != 0
        # An interrupted backfill: its last window runs its full 365 days, past today.
        assert f"export job {last_job['job_id']} for window 2026-02-21..2027-02-20" in result.error_line
        assert "Failed" in result.error_line and "gave up after 3 jobs" in result.error_line
        assert stream_state(result.final_state, "activities")["bookmark"] == "2026-02-20"
        assert len(windows(sb)) == 3


def test_a_job_that_never_completes_times_out_naming_the_job_and_the_setting():
    with sandbox(job_run_seconds=60) as sb:
        config = tap_config(sb, "activities", start_date="2026-02-20", job_timeout_seconds=1)
        result = run(sb, config, timeout=60, check=False)
        job_id = windows(sb)[0]["job_id"]
        assert result.returncode != 0
        assert f"export job {job_id} for window 2026-02-20..2027-02-19" in result.error_line  # stretched past today
        assert "job_timeout_seconds=1" in result.error_line


def test_a_run_killed_after_its_first_window_resumes_with_the_jobs_in_state():
    with sandbox(job_run_seconds=0.4) as sb:
        config = tap_config(sb, "activities", snapshot_window_days=15)
        killed_state, first_uids = _run_until_first_bookmark(sb, config)
        resumed_state = stream_state(killed_state, "activities")
        assert resumed_state["bookmark"] == "2026-01-15"
        pending_ids = {entry["job_id"] for entry in resumed_state["pending_jobs"]}
        assert pending_ids  # the next window's job was already created and saved

        created_before = windows(sb)
        second = run(sb, config, state=killed_state)
        all_windows = windows(sb)
        new_jobs = all_windows[len(created_before) :]
        # Window 1 is not exported again, and the saved jobs are reused rather than created again.
        assert all(w["start_date"] > "2026-01-15" for w in new_jobs)
        saved_windows = {(w["start_date"], w["end_date"]) for w in created_before if str(w["job_id"]) in pending_ids}
        assert not saved_windows & {(w["start_date"], w["end_date"]) for w in new_jobs}
        assert "resuming export job" in second.stderr

        uids = uids_of(second)
        assert len(uids) == len(set(uids)) and not set(uids) & set(first_uids)
        assert set(first_uids) | set(uids) == expected_uids(sb, _final_windows(all_windows))
        assert stream_state(second.final_state, "activities")["bookmark"] == "2026-02-28"


def _final_windows(job_windows: list[dict]) -> list[dict]:
    return list({(w["start_date"], w["end_date"]): w for w in job_windows}.values())


def _run_until_first_bookmark(sb: Sandbox, config: dict) -> tuple[dict, list[str]]:
    """Run the tap, SIGKILL it as soon as it emits a STATE with a bookmark; (that state, uids read so far)."""

    def first_bookmark(message: dict, _: list[dict]) -> bool:
        return message["type"] == "STATE" and bool(stream_state(message["value"], "activities").get("bookmark"))

    killed = run_until(sb, config, first_bookmark)
    return killed.final_state, [record["uid"] for record in killed.records("activities")]


def test_a_pending_job_past_the_retention_is_not_reused():
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=15)
        run(sb, config)
        old, young = windows(sb)
        now = dt.datetime.combine(TODAY, dt.datetime.now(dt.timezone.utc).time(), tzinfo=dt.timezone.utc)

        def entry(window: dict, age: dt.timedelta) -> dict:
            created = (now - age).strftime("%Y-%m-%dT%H:%M:%SZ")
            return {
                "window_start": window["start_date"],
                "window_end": window["end_date"],
                "export_type": "snapshot",
                "job_id": str(window["job_id"]),
                "created_at": created,
            }

        state = {
            "bookmarks": {
                "activities": {
                    "pending_jobs": [entry(old, dt.timedelta(days=10, hours=1)), entry(young, dt.timedelta(days=1))]
                }
            }
        }
        sb.reset_stats()
        result = run(sb, config, state=state)
        recreated = windows(sb)
        assert [(w["start_date"], w["end_date"]) for w in recreated] == [(old["start_date"], old["end_date"])]
        assert "past the 10-day retention" in result.stderr
        uids = uids_of(result)
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, [old, young])


def test_a_catalog_asking_for_incremental_replication_still_syncs():
    """Meltano may pass `replication-method: INCREMENTAL`; the day bookmarks are the tap's own either way."""
    schema = json.loads((Path(__file__).parents[1] / "tap_backstory/schemas/activities.json").read_text())
    metadata = {"selected": True, "forced-replication-method": "INCREMENTAL"}
    catalog = {
        "streams": [
            {
                "tap_stream_id": "activities",
                "stream": "activities",
                "schema": schema,
                "replication_method": "INCREMENTAL",
                "key_properties": ["uid"],
                "metadata": [{"breadcrumb": [], "metadata": metadata}],
            }
        ]
    }
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date="2026-02-25")
        result = run(sb, config, catalog=catalog, timeout=60, check=False)
        assert result.returncode == 0, result.error_line
        assert {r["uid"] for r in result.records("activities")} == expected_uids(sb, windows(sb))
        assert stream_state(result.final_state, "activities")["bookmark"] == "2026-02-28"


def test_a_refused_later_window_still_lets_the_earlier_windows_out_first():
    """The job of window 3 is refused (400: its end date is after the sandbox's today) while window 1 is
    still being read; windows 1 and 2 must still be emitted and bookmarked before the run fails."""
    with sandbox(refuse_future_end_date=True) as sb:
        config = tap_config(sb, "activities", start_date="2026-02-10", snapshot_window_days=7)
        tomorrow = (TODAY + dt.timedelta(days=1)).isoformat()  # the tap's clock runs one day ahead
        result = run(sb, config, env={"TAP_BACKSTORY_TODAY": tomorrow}, timeout=60, check=False)
        assert result.returncode == 1
        assert "answered 400" in result.error_line and "/pull/v1/export/activities/jobs" in result.error_line
        emitted = windows(sb)
        assert [(w["start_date"], w["end_date"]) for w in emitted] == [
            ("2026-02-10", "2026-02-16"),
            ("2026-02-17", "2026-02-23"),
        ]
        assert sorted(uids_of(result)) == sorted(expected_uids(sb, emitted))
        assert stream_state(result.final_state, "activities")["bookmark"] == "2026-02-23"


def test_a_fragment_count_meant_as_the_last_fragment_number_loses_nothing():
    """"fragment: Count of fragments ... (0-based)" read the other way: the server reports 3 for fragments 0..3."""
    with sandbox(fragment_count_key="fragment", fragment_count_is_last_index=True) as sb:
        result = run(sb, tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=15))
        uids = uids_of(result)
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, windows(sb))
        assert "fragment 3 exists too, reading it" in result.stderr


def test_fragments_adding_up_to_results_size_need_no_extra_request():
    with sandbox() as sb:
        run(sb, tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=15))
        stats = sb.stats()
        assert stats["fragment_requests"] == 4 * len(windows(sb))
        assert stats["requests_by_status"].get("400", 0) == 0


def _requested(window: dict, at: dt.datetime) -> dict:
    """A pending entry as a run killed while requesting this window's job leaves it (no job id yet)."""
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = {"window_start": window["start_date"], "window_end": window["end_date"], "export_type": "snapshot"}
    return {"bookmarks": {"activities": {"pending_jobs": [{**entry, "job_id": None, "requested_at": stamp}]}}}


def test_a_job_requested_by_a_killed_run_is_found_in_the_job_list_and_adopted():
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=15)
        run(sb, config)  # stands in for the killed run: Backstory made these jobs
        old, young = windows(sb)
        now = dt.datetime.combine(TODAY, dt.datetime.now(dt.timezone.utc).time(), tzinfo=dt.timezone.utc)
        sb.reset_stats()
        result = run(sb, config, state=_requested(old, now - dt.timedelta(minutes=1)))
        assert f"adopting export job {old['job_id']}" in result.stderr
        assert [(w["start_date"], w["end_date"]) for w in windows(sb)] == [(young["start_date"], young["end_date"])]
        uids = uids_of(result)
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, [old, young])


@pytest.mark.parametrize("mismatch", ["created_before_the_request", "another_activity_type"])
def test_a_listed_job_is_adopted_only_if_it_matches_the_request_and_followed_it(mismatch: str):
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=15)
        earlier = {**config, "activity_type": "email"} if mismatch == "another_activity_type" else config
        run(sb, earlier)
        old, _ = windows(sb)
        now = dt.datetime.combine(TODAY, dt.datetime.now(dt.timezone.utc).time(), tzinfo=dt.timezone.utc)
        asked = now + dt.timedelta(hours=1) if mismatch == "created_before_the_request" else now
        sb.reset_stats()
        result = run(sb, config, state=_requested(old, asked))
        assert "none in Backstory's job list" in result.stderr and "adopting" not in result.stderr
        assert len(windows(sb)) == 2  # both windows got new jobs
        assert set(uids_of(result)) == expected_uids(sb, windows(sb))


# --- the snapshot/delta hand-off: activities dated after today, processed before it ----------------------
AHEAD = 10  # the sandbox's meetings are booked up to this many days ahead


def _all_processed_by(sb, day: dt.date, start: dt.date) -> set[str]:
    """Every activity dated from `start` on that Backstory had processed by the end of `day`."""
    return expected_activity_uids(sb.settings, start, day + dt.timedelta(days=AHEAD), "snapshot", today=day)


def test_a_snapshot_then_a_delta_deliver_every_activity_including_those_dated_after_the_hand_off():
    with sandbox(future_activity_days=AHEAD) as sb:
        config = tap_config(sb, "activities", start_date="2026-02-10", snapshot_window_days=15)
        first = run(sb, config)
        snapshot_windows = windows(sb)
        # The last window runs to its full 15 days, 10 of them after today.
        assert [(w["start_date"], w["end_date"]) for w in snapshot_windows] == [
            ("2026-02-10", "2026-02-24"),
            ("2026-02-25", "2026-03-11"),
        ]
        assert "reaches 2026-03-11, 10 days after today" in first.stderr
        ahead = {r["uid"] for r in first.records("activities") if r["timestamp"][:10] > TODAY.isoformat()}
        assert ahead == expected_activity_uids(sb.settings, TODAY + dt.timedelta(days=1), D("2026-03-11"), "snapshot")
        assert ahead  # some meetings are booked ahead
        assert stream_state(first.final_state, "activities") == {
            "bookmark": "2026-02-28",
            "snapshot_done": True,
            "pending_jobs": [],
            "coverage": all_types_since("2026-02-10"),
        }

        later = TODAY + dt.timedelta(days=5)
        sb.set_today(later)
        sb.reset_stats()
        second = run(sb, config, state=first.final_state)
        assert [(w["export_type"], w["start_date"], w["end_date"]) for w in windows(sb)] == [
            ("delta", "2026-03-01", later.isoformat())
        ]
        uids = uids_of(first) + uids_of(second)
        assert set(uids) == _all_processed_by(sb, later, D("2026-02-10"))
        assert len(uids_of(first)) == len(set(uids_of(first))) and len(uids_of(second)) == len(set(uids_of(second)))


def test_a_backstory_refusing_a_future_end_date_falls_back_to_today_once_and_says_what_it_misses():
    with sandbox(future_activity_days=AHEAD, refuse_future_end_date=True) as sb:
        config = tap_config(sb, "activities", start_date="2026-02-10", snapshot_window_days=15)
        result = run(sb, config)
        created = windows(sb)
        assert [(w["start_date"], w["end_date"]) for w in created] == [
            ("2026-02-10", "2026-02-24"),
            ("2026-02-25", "2026-03-01"),
        ]
        assert sb.stats()["requests_by_status"].get("400") == 1  # one refusal, then it is remembered
        warnings = [line for line in result.stderr.splitlines() if "refused the end date 2026-03-11" in line]
        assert len(warnings) == 1
        assert "activities dated after 2026-03-01 and processed before it are in no export" in warnings[0]
        uids = uids_of(result)
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, created)
        assert stream_state(result.final_state, "activities") == {
            "bookmark": "2026-02-28",
            "snapshot_done": True,
            "pending_jobs": [],
            "coverage": all_types_since("2026-02-10"),
        }


def job_saved_for_window_ending(window_end: str):
    """A kill point: the first STATE naming the job of the activities window that ends on `window_end`."""

    def saved(message: dict, _: list[dict]) -> bool:
        if message["type"] != "STATE":
            return False
        pending = stream_state(message["value"], "activities").get("pending_jobs", [])
        return any(entry["window_end"] == window_end and entry["job_id"] for entry in pending)

    return saved


def test_a_backfill_killed_after_its_future_window_job_was_made_resumes_it_the_next_day():
    """The stretched window does not depend on today: a run resumed a day later finds its pending job, and
    the bookmark it earns is the day before that job's creation, so the first delta misses nothing."""
    with sandbox(future_activity_days=AHEAD, job_run_seconds=0.5) as sb:
        config = tap_config(sb, "activities", start_date="2026-02-10", snapshot_window_days=15)

        killed = run_until(sb, config, job_saved_for_window_ending("2026-03-11"))
        made = windows(sb)
        sb.set_today(TODAY + dt.timedelta(days=1))
        sb.reset_stats()
        resumed = run(sb, config, state=killed.final_state)
        assert "resuming export job" in resumed.stderr
        assert all(w["end_date"] != "2026-03-11" for w in windows(sb))  # no second job for the stretched window
        assert stream_state(resumed.final_state, "activities")["bookmark"] == "2026-02-28"
        assert set(uids_of(killed)) | set(uids_of(resumed)) == expected_uids(sb, made)


def test_a_run_killed_after_falling_back_resumes_the_fallback_job_without_asking_again():
    with sandbox(future_activity_days=AHEAD, refuse_future_end_date=True, job_run_seconds=0.5) as sb:
        config = tap_config(sb, "activities", start_date="2026-02-10", snapshot_window_days=15)

        killed = run_until(sb, config, job_saved_for_window_ending("2026-03-01"))
        made = windows(sb)
        sb.reset_stats()
        resumed = run(sb, config, state=killed.final_state)
        assert "resuming export job" in resumed.stderr and "refused" not in resumed.stderr
        assert windows(sb) == [] and sb.stats()["requests_by_status"].get("400") is None
        assert set(uids_of(killed)) | set(uids_of(resumed)) == expected_uids(sb, made)
        assert stream_state(resumed.final_state, "activities")["pending_jobs"] == []
