"""Settings changed between runs (issue 23): run 1 is a finished backfill, then a setting changes, and run 2
starts from run 1's state. Each test is a row of the issue's table: the real tap against the sandbox, with
the tap's clock and the sandbox's on the same injected day."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from tap_backstory_sandbox import FEED_A_ID, FEED_B_ID
from tap_backstory_sandbox.data import expected_activity_uids, expected_contact_emails
from tests import contactbased_support as cb
from tests.backstory_support import D, run, sandbox, stream_state, tap_config, windows
from tests.conftest import TODAY
from tests.tap_runner import run_until

YESTERDAY = TODAY - dt.timedelta(days=1)
FAR = TODAY + dt.timedelta(days=400)  # after every activity date a run can see
TYPES = ("email", "meeting", "call")


def uids(result) -> list[str]:
    return [record["uid"] for record in result.records("activities")]


def emails(result) -> list[str]:
    return [record["email"] for record in result.records("enriched_contacts")]


def once(keys: list[str]) -> set[str]:
    """The keys, asserting none came twice in one run."""
    assert not [key for key, count in Counter(keys).items() if count > 1]
    return set(keys)


def twice(keys: list[str]) -> set[str]:
    return {key for key, count in Counter(keys).items() if count > 1}


def made(sb) -> list[tuple[str, str, str, str]]:
    """(export_type, activity_type, start, end) of every activities job, in creation order."""
    jobs = sb.stats()["job_windows"]
    return [(w["export_type"], w.get("activity_type", ""), w["start_date"], w["end_date"]) for w in jobs]


def processed_on(sb, day: dt.date, activity_type: str = "all", today: dt.date = TODAY) -> set[str]:
    """Activities Backstory processed on `day` (what two runs either side of a bookmark may both read)."""
    return expected_activity_uids(sb.settings, day, day, "delta", activity_type, today=today)


def coverage(state: dict, stream: str = "activities") -> list[dict]:
    return stream_state(state, stream)["coverage"]


def types_since(day: str, *types: str) -> list[dict]:
    return [{"start_date": day, "activity_type": kind} for kind in types]


def warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "WARNING" in line]


# --- start_date moved earlier ---------------------------------------------------------------------------


def test_start_date_moved_60_days_earlier_backfills_the_added_range_then_goes_on_with_deltas():
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date="2026-01-01", snapshot_window_days=15)
        first = run(sb, config)
        assert coverage(first.final_state) == types_since("2026-01-01", *TYPES)

        later = TODAY + dt.timedelta(days=2)
        sb.set_today(later)
        sb.reset_stats()
        earlier = {**config, "start_date": "2025-11-02"}  # 60 days earlier
        second = run(sb, earlier, state=first.final_state)

        # The added range in snapshot windows, newest first, then the delta from the bookmark.
        assert made(sb) == [
            ("snapshot", "all", "2025-12-17", "2025-12-31"),
            ("snapshot", "all", "2025-12-02", "2025-12-16"),
            ("snapshot", "all", "2025-11-17", "2025-12-01"),
            ("snapshot", "all", "2025-11-02", "2025-11-16"),
            ("delta", "all", TODAY.isoformat(), later.isoformat()),
        ]
        added = expected_activity_uids(sb.settings, D("2025-11-02"), D("2025-12-31"), "snapshot", today=later)
        assert len(added) > 1000
        assert "backfilling 2025-11-02..2025-12-31 with 4 snapshot windows" in second.stderr

        # Together the runs hold exactly what the sandbox has from the new start_date on, and only the
        # documented day (the bookmark + 1, read again by the first delta) came twice.
        one, two = once(uids(first)), once(uids(second))
        assert added <= two
        assert one | two == expected_activity_uids(sb.settings, D("2025-11-02"), FAR, "snapshot", today=later)
        assert one & two <= processed_on(sb, TODAY, today=later)
        state = stream_state(second.final_state, "activities")
        assert state["bookmark"] == (later - dt.timedelta(days=1)).isoformat() and state["pending_jobs"] == []
        assert state["coverage"] == types_since("2025-11-02", *TYPES)

        # Run 3 the same day: nothing is backfilled again.
        sb.reset_stats()
        third = run(sb, earlier, state=second.final_state)
        assert made(sb) == [("delta", "all", later.isoformat(), later.isoformat())]
        assert "backfilling" not in third.stderr


def test_a_gap_backfill_killed_midway_resumes_where_it_stopped_and_loses_nothing():
    with sandbox(job_run_seconds=0.3) as sb:
        config = tap_config(sb, "activities", start_date="2026-01-01", snapshot_window_days=15)
        first = run(sb, config)
        earlier = {**config, "start_date": "2025-11-02"}

        def second_window_saved(message: dict, _: list[dict]) -> bool:
            if message["type"] != "STATE":
                return False
            entries = stream_state(message["value"], "activities").get("coverage", [])
            return any(entry["start_date"] == "2025-12-02" for entry in entries)

        sb.reset_stats()
        killed = run_until(sb, earlier, second_window_saved, state=first.final_state)
        assert coverage(killed.final_state) == types_since("2025-12-02", *TYPES)
        sb.reset_stats()
        resumed = run(sb, earlier, state=killed.final_state)
        # The two windows left: their jobs made before the kill are resumed, or new ones made; no other.
        assert {job[2:] for job in made(sb)} <= {
            ("2025-11-17", "2025-12-01"),
            ("2025-11-02", "2025-11-16"),
            (TODAY.isoformat(), TODAY.isoformat()),
        }
        assert "backfilling 2025-11-02..2025-12-01 with 2 snapshot windows" in resumed.stderr
        got = set(uids(first)) | set(uids(killed)) | set(uids(resumed))
        assert got == expected_activity_uids(sb.settings, D("2025-11-02"), FAR, "snapshot")
        assert coverage(resumed.final_state) == types_since("2025-11-02", *TYPES)


# --- activity_type widened, narrowed, switched ------------------------------------------------------------


def test_activity_type_widened_from_email_to_all_backfills_meetings_and_calls_over_the_covered_range():
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=15, activity_type="email")
        first = run(sb, config)
        assert coverage(first.final_state) == types_since("2026-02-01", "email")
        assert {job[1] for job in made(sb)} == {"email"}

        later = TODAY + dt.timedelta(days=2)
        sb.set_today(later)
        sb.reset_stats()
        second = run(sb, {**config, "activity_type": "all"}, state=first.final_state)
        # One job per added type (no email read again), newest window first; the window that reaches the
        # deltas' start is stretched like the first backfill's, then the deltas go on with every type.
        assert made(sb) == [
            ("snapshot", "meeting", "2026-02-16", "2026-03-02"),
            ("snapshot", "meeting", "2026-02-01", "2026-02-15"),
            ("snapshot", "call", "2026-02-16", "2026-03-02"),
            ("snapshot", "call", "2026-02-01", "2026-02-15"),
            ("delta", "all", TODAY.isoformat(), later.isoformat()),
        ]
        one, two = once(uids(first)), set(uids(second))
        assert one | two == expected_activity_uids(sb.settings, D("2026-02-01"), FAR, "snapshot", today=later)
        # Read twice (docs/state.md): the day after the bookmark, by the first delta (any type); and in run 2,
        # the added types processed since the bookmark, by their snapshot (it sees what is processed until it
        # runs) and by the delta.
        assert one & two <= processed_on(sb, TODAY, today=later)
        processed_since = set().union(
            *(expected_activity_uids(sb.settings, TODAY, later, "delta", kind, today=later) for kind in TYPES[1:])
        )
        assert twice(uids(second)) <= processed_since
        coverage_after = coverage(second.final_state)
        assert sorted(coverage_after, key=lambda e: TYPES.index(e["activity_type"])) == types_since(
            "2026-02-01", *TYPES
        )


def test_start_date_earlier_and_activity_type_widened_at_once_backfill_each_type_its_own_range():
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=30, activity_type="email")
        first = run(sb, config)
        sb.reset_stats()
        second = run(sb, {**config, "start_date": "2026-01-15", "activity_type": "all"}, state=first.final_state)
        # Email only over the days added; meetings and calls over those and the covered range, one job per type
        # and window, newest first (the newest stretched to its full 30 days, as after a first backfill).
        assert made(sb) == [
            ("snapshot", "email", "2026-01-15", "2026-01-31"),
            ("snapshot", "meeting", "2026-02-14", "2026-03-15"),
            ("snapshot", "meeting", "2026-01-15", "2026-02-13"),
            ("snapshot", "call", "2026-02-14", "2026-03-15"),
            ("snapshot", "call", "2026-01-15", "2026-02-13"),
            ("delta", "all", TODAY.isoformat(), TODAY.isoformat()),
        ]
        one, two = once(uids(first)), set(uids(second))
        assert one | two == expected_activity_uids(sb.settings, D("2026-01-15"), FAR, "snapshot")
        assert not one & two - processed_on(sb, TODAY)  # no email of run 1 read again but the documented day
        assert sorted(coverage(second.final_state), key=lambda e: TYPES.index(e["activity_type"])) == types_since(
            "2026-01-15", *TYPES
        )


def test_a_job_pending_for_another_activity_type_is_not_resumed():
    with sandbox(job_run_seconds=0.5) as sb:
        config = tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=15, activity_type="email")

        def job_saved(message: dict, _: list[dict]) -> bool:
            if message["type"] != "STATE":
                return False
            return any(entry["job_id"] for entry in stream_state(message["value"], "activities")["pending_jobs"])

        killed = run_until(sb, config, job_saved)
        pending = stream_state(killed.final_state, "activities")["pending_jobs"]
        assert {entry["selection"]["activity_type"] for entry in pending} == {"email"}
        sb.reset_stats()
        resumed = run(sb, {**config, "activity_type": "all"}, state=killed.final_state)
        assert "resuming export job" not in resumed.stderr
        assert {job[1] for job in made(sb)} == {"all"}
        assert set(uids(killed)) | set(uids(resumed)) == expected_activity_uids(
            sb.settings, D("2026-02-01"), FAR, "snapshot"
        )


@pytest.mark.parametrize("change", ["activity_type_narrowed", "start_date_later"])
def test_a_narrowing_carries_the_bookmark_on_and_reads_nothing_again(change: str):
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=15)
        first = run(sb, config)
        later = TODAY + dt.timedelta(days=3)
        sb.set_today(later)
        sb.reset_stats()
        narrower = {"activity_type": "email"} if change == "activity_type_narrowed" else {"start_date": "2026-02-15"}
        second = run(sb, {**config, **narrower}, state=first.final_state)
        kind = narrower.get("activity_type", "all")
        assert made(sb) == [("delta", kind, TODAY.isoformat(), later.isoformat())]
        assert "backfilling" not in second.stderr and not warnings(second)
        assert once(uids(second)) == expected_activity_uids(sb.settings, TODAY, later, "delta", kind, today=later)
        if change == "activity_type_narrowed":  # recorded as the narrower setting: a widening backfills again
            assert coverage(second.final_state) == types_since("2026-02-01", "email")
            assert "coverage is now activity_type email from 2026-02-01" in second.stderr
        else:  # the days before the new start_date stay covered (the deltas still bring their updates)
            assert coverage(second.final_state) == types_since("2026-02-01", *TYPES)


def test_activity_type_switched_backfills_the_new_type_and_forgets_the_old_one():
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=30, activity_type="email")
        first = run(sb, config)
        sb.reset_stats()
        second = run(sb, {**config, "activity_type": "call"}, state=first.final_state)
        assert made(sb) == [
            ("snapshot", "call", "2026-02-01", "2026-03-02"),
            ("delta", "call", TODAY.isoformat(), TODAY.isoformat()),
        ]
        calls = expected_activity_uids(sb.settings, D("2026-02-01"), FAR, "snapshot", "call")
        assert set(uids(second)) == calls
        assert twice(uids(second)) <= processed_on(sb, TODAY, "call")  # by the stretched window and the delta
        assert not set(uids(first)) & calls
        assert coverage(second.final_state) == types_since("2026-02-01", "call")


# --- enriched_contacts filters ------------------------------------------------------------------------------

CONTACTS_ANY = {
    "contacts_country": None,
    "contacts_state": None,
    "contacts_is_sourced_by_people_ai": False,
    "contacts_include_historical": True,
    "contacts_include_existing": True,
}


def test_a_widened_contacts_filter_re_reads_the_covered_range_with_the_new_filters():
    with sandbox() as sb:
        config = tap_config(
            sb, "enriched_contacts", start_date="2026-02-01", snapshot_window_days=15, contacts_country="Germany"
        )
        first = run(sb, config)
        assert coverage(first.final_state, "enriched_contacts") == [
            {"start_date": "2026-02-01", **CONTACTS_ANY, "contacts_country": "Germany"}
        ]
        later = TODAY + dt.timedelta(days=2)
        sb.set_today(later)
        sb.reset_stats()
        widened = {key: value for key, value in config.items() if key != "contacts_country"}
        second = run(sb, widened, state=first.final_state)
        assert [(w["start_date"], w["end_date"]) for w in windows(sb, "enriched_contacts")] == [
            ("2026-02-16", "2026-02-28"),
            ("2026-02-01", "2026-02-15"),
            (TODAY.isoformat(), later.isoformat()),
        ]
        assert "the contacts the old filters selected are read again" in second.stderr
        one, two = once(emails(first)), once(emails(second))
        assert two == expected_contact_emails(sb.settings, D("2026-02-01"), later, today=later)
        assert one <= two  # the re-read the API makes unavoidable (targets upsert on email)
        assert coverage(second.final_state, "enriched_contacts") == [{"start_date": "2026-02-01", **CONTACTS_ANY}]


def test_contacts_start_date_moved_earlier_backfills_only_the_days_added():
    with sandbox() as sb:
        config = tap_config(sb, "enriched_contacts", start_date="2026-02-01", snapshot_window_days=15)
        first = run(sb, config)
        sb.reset_stats()
        second = run(sb, {**config, "start_date": "2026-01-15"}, state=first.final_state)
        assert [(w["start_date"], w["end_date"]) for w in windows(sb, "enriched_contacts")] == [
            ("2026-01-30", "2026-01-31"),
            ("2026-01-15", "2026-01-29"),
            (TODAY.isoformat(), TODAY.isoformat()),
        ]
        one, two = once(emails(first)), once(emails(second))
        assert one | two == expected_contact_emails(sb.settings, D("2026-01-15"), TODAY)
        assert one & two <= expected_contact_emails(sb.settings, TODAY, TODAY)  # the documented day
        assert coverage(second.final_state, "enriched_contacts") == [{"start_date": "2026-01-15", **CONTACTS_ANY}]


def test_a_narrowed_contacts_filter_goes_on_from_the_bookmark_and_records_the_narrower_filter():
    with sandbox() as sb:
        config = tap_config(sb, "enriched_contacts", start_date="2026-02-01", snapshot_window_days=15)
        first = run(sb, config)
        sb.reset_stats()
        narrowed = {**config, "contacts_include_existing": False, "contacts_state": "Texas"}
        second = run(sb, narrowed, state=first.final_state)
        assert [(w["start_date"], w["end_date"]) for w in windows(sb, "enriched_contacts")] == [
            (TODAY.isoformat(), TODAY.isoformat())
        ]
        assert once(emails(second)) == expected_contact_emails(
            sb.settings, TODAY, TODAY, include_existing=False, state="Texas"
        )
        assert coverage(second.final_state, "enriched_contacts") == [
            {"start_date": "2026-02-01", **CONTACTS_ANY, "contacts_include_existing": False, "contacts_state": "Texas"}
        ]


# --- states of other shapes ---------------------------------------------------------------------------------


def test_a_state_written_before_coverage_is_taken_to_cover_the_configured_selection_and_says_so_once():
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date="2026-02-01", activity_type="email")
        old = {"bookmarks": {"activities": {"bookmark": "2026-02-20", "snapshot_done": True, "pending_jobs": []}}}
        result = run(sb, config, state=old)
        assert made(sb) == [("delta", "email", "2026-02-21", TODAY.isoformat())]
        said = [line for line in result.stderr.splitlines() if "records no coverage" in line]
        assert len(said) == 1 and "WARNING" in said[0]
        assert "activity_type email from start_date 2026-02-01 through its bookmark 2026-02-20" in said[0]
        assert coverage(result.final_state) == types_since("2026-02-01", "email")
        sb.reset_stats()
        again = run(sb, config, state=result.final_state)
        assert "records no coverage" not in again.stderr


@pytest.mark.parametrize(
    ("stream_state_", "needle"),
    [
        ({"snapshot_done": True, "pending_jobs": []}, "bookmarks.activities has snapshot_done but no bookmark"),
        ({"bookmark": "2027-01-01", "snapshot_done": True}, "bookmarks.activities.bookmark 2027-01-01 is after today"),
        ({"bookmark": "01/02/2026"}, "bookmarks.activities.bookmark must be a date in YYYY-MM-DD format"),
        ({"bookmark": "2026-02-01", "coverage": [{"activity_type": "all"}]}, "coverage[0].start_date must be a date"),
        (
            {"bookmark": "2026-02-01", "coverage": [{"start_date": "2026-01-01", "country": "x"}]},
            "coverage[0] has country, which is not a setting",
        ),
        (
            {"bookmark": "2026-02-01", "coverage": [{"start_date": "2026-01-01"}]},
            "coverage[0].activity_type is missing or not a value of that setting",
        ),
    ],
)
def test_an_impossible_export_state_is_refused_in_one_line_before_any_request(stream_state_: dict, needle: str):
    with sandbox() as sb:
        result = run.func(sb, tap_config(sb, "activities"), state={"bookmarks": {"activities": stream_state_}})
        assert result.returncode == 1
        assert needle in result.error_line and result.error_line.startswith("tap-backstory: error: the state file")
        assert [line for line in result.stderr.splitlines() if line.startswith("tap-backstory: error:")] == [
            result.error_line
        ]
        assert sb.stats()["requests_total"] == 0 and result.stdout == ""


def test_a_bookmark_of_today_is_still_accepted():
    """Either side of midnight the tap's clocks may differ by a day: only a day after today is impossible."""
    with sandbox() as sb:
        state = {"bookmarks": {"activities": {"bookmark": TODAY.isoformat(), "snapshot_done": True}}}
        result = run(sb, tap_config(sb, "activities"), state=state)
        assert "nothing to do, the bookmark 2026-03-01 already reaches 2026-03-01" in result.stderr


def test_an_intent_window_ending_after_today_is_refused():
    with sandbox() as sb:
        state = {"bookmarks": {"intent_feed_exports": {"feeds": {FEED_A_ID: {"last_window_end": "2027-01-01"}}}}}
        result = run.func(sb, cb.tap_config(sb), state=state)
        assert result.returncode == 1 and "last_window_end 2027-01-01 is after today" in result.error_line
        assert sb.stats()["requests_total"] == 0


# --- rows that were fine and stay so ------------------------------------------------------------------------


def test_runs_either_side_of_utc_midnight_read_every_activity_and_only_the_boundary_day_twice():
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date="2026-02-10", snapshot_window_days=30)
        first = run(sb, config)  # late on TODAY
        sb.set_today(TODAY + dt.timedelta(days=1))  # just after midnight
        sb.reset_stats()
        second = run(sb, config, state=first.final_state)
        tomorrow = TODAY + dt.timedelta(days=1)
        assert made(sb) == [("delta", "all", TODAY.isoformat(), tomorrow.isoformat())]
        one, two = once(uids(first)), once(uids(second))
        assert one | two == expected_activity_uids(sb.settings, D("2026-02-10"), FAR, "snapshot", today=tomorrow)
        assert one & two <= processed_on(sb, TODAY, today=tomorrow)
        assert stream_state(second.final_state, "activities")["bookmark"] == TODAY.isoformat()


def test_snapshot_window_days_changed_after_a_kill_with_pending_jobs_drops_them_and_loses_nothing():
    with sandbox(job_run_seconds=0.5) as sb:
        config = tap_config(sb, "activities", start_date="2026-02-01", snapshot_window_days=10)

        def jobs_pending(message: dict, _: list[dict]) -> bool:
            if message["type"] != "STATE":
                return False
            return any(entry["job_id"] for entry in stream_state(message["value"], "activities")["pending_jobs"])

        killed = run_until(sb, config, jobs_pending)
        assert stream_state(killed.final_state, "activities")["pending_jobs"]
        sb.reset_stats()
        resumed = run(sb, {**config, "snapshot_window_days": 7}, state=killed.final_state)
        assert "resuming export job" not in resumed.stderr
        created = windows(sb)
        assert all((D(w["end_date"]) - D(w["start_date"])).days < 7 for w in created if w["end_date"] <= "2026-03-01")
        got = set(uids(killed)) | once(uids(resumed))
        assert got == expected_activity_uids(sb.settings, D("2026-02-01"), FAR, "snapshot")
        assert stream_state(resumed.final_state, "activities")["pending_jobs"] == []


def test_an_intent_feed_added_gets_its_first_window_and_the_other_goes_on_from_its_last_end():
    with cb.sandbox() as sb:
        first = run(sb, cb.tap_config(sb, intent_feed_ids=[FEED_A_ID]))
        later = TODAY + dt.timedelta(days=2)
        sb.set_today(later)
        second = run(sb, cb.tap_config(sb, intent_feed_ids=[FEED_A_ID, FEED_B_ID]), state=first.final_state)
        feeds = stream_state(second.final_state, cb.INTENT)["feeds"]
        assert feeds[FEED_A_ID]["last_window_start"] == TODAY.isoformat()  # from its last end day, inclusive
        assert feeds[FEED_B_ID]["last_window_start"] == (later - dt.timedelta(days=2)).isoformat()  # lookback 3
        rows = Counter(record["feed_id"] for record in second.records(cb.INTENT))
        assert rows[FEED_A_ID] == cb.data.expected_intent_rows(sb.settings, FEED_A_ID, TODAY, later)
        assert rows[FEED_B_ID] == cb.expected_rows(sb, FEED_B_ID, 3)


def test_intent_settings_that_ask_for_rows_already_passed_warn_once_naming_the_days():
    """A search always ends today: the rows a widened setting adds to days already read would cost the quota of
    every row since; the tap does not spend it silently, it says what is left out and how to get it."""
    with cb.sandbox() as sb:
        config = cb.tap_config(sb, intent_feed_ids=[FEED_A_ID], intent_require_contact_id=True)
        first = run(sb, config)
        start = (TODAY - dt.timedelta(days=2)).isoformat()
        assert stream_state(first.final_state, cb.INTENT)["feeds"][FEED_A_ID]["coverage"]["start_date"] == start
        later = TODAY + dt.timedelta(days=1)
        sb.set_today(later)
        widened = {**config, "intent_require_contact_id": False, "intent_lookback_days": 6}
        second = run(sb, widened, state=first.final_state)
        said = [line for line in second.stderr.splitlines() if "are not in any run" in line or "are not read" in line]
        assert len(said) == 2 and all("WARNING" in line for line in said)
        assert f"rows without a contact_id of {start}..{TODAY}" in said[0]
        assert f"remove bookmarks.intent_feed_exports.feeds.{FEED_A_ID}" in said[0]
        reaches = (later - dt.timedelta(days=5)).isoformat()
        assert f"reaches back to {reaches}" in said[1] and f"days {reaches}..2026-02-26 are not read" in said[1]
        sb.set_today(later + dt.timedelta(days=1))
        third = run(sb, {**widened, "intent_lookback_days": 3}, state=second.final_state)
        assert "are not in any run" not in third.stderr and "are not read" not in third.stderr
