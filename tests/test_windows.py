"""Window planning and the export streams' state (pure functions, no HTTP)."""

from __future__ import annotations

import datetime as dt
import itertools

from tap_backstory.coverage import ActivitySelector, ContactSelector, Coverage
from tap_backstory.windows import (
    ExportState,
    Window,
    completed_through,
    lookback_since,
    lookback_window,
    out_of_reach,
    plan_windows,
)
from tests.conftest import TODAY

D = dt.date.fromisoformat


def plan(
    state: dict,
    *,
    delta: bool = True,
    start: str = "2025-01-01",
    end: dt.date = TODAY,
    snapshot_days=365,
    reach_future: bool = False,
):
    return ExportState(state).plan(
        start_date=D(start),
        end_date=end,
        snapshot_window_days=snapshot_days,
        delta_window_days=14 if delta else None,
        reach_future=reach_future,
    )


def assert_contiguous(windows: list[Window], start: dt.date, end: dt.date, max_days: int) -> None:
    assert windows[0].start == start and windows[-1].end == end
    for earlier, later in itertools.pairwise(windows):
        assert later.start == earlier.end + dt.timedelta(days=1)
    assert all(1 <= w.days <= max_days for w in windows)


def test_plan_windows_splits_into_contiguous_windows_of_at_most_n_days():
    windows = plan_windows(D("2026-01-01"), D("2026-03-01"), 20)
    assert [w.days for w in windows] == [20, 20, 20]
    assert_contiguous(windows, D("2026-01-01"), D("2026-03-01"), 20)
    assert plan_windows(D("2026-01-02"), D("2026-01-01"), 5) == []
    assert plan_windows(D("2026-01-01"), D("2026-01-01"), 5) == [Window(D("2026-01-01"), D("2026-01-01"))]


def test_first_run_is_a_snapshot_from_start_date_to_today():
    export_type, windows = plan({}, snapshot_days=100)
    assert export_type == "snapshot"
    assert_contiguous(windows, D("2025-01-01"), TODAY, 100)


def test_run_after_a_40_day_pause_issues_three_delta_windows_from_the_day_after_the_bookmark():
    bookmark = TODAY - dt.timedelta(days=41)
    export_type, windows = plan({"bookmark": bookmark.isoformat(), "snapshot_done": True})
    assert export_type == "delta"
    assert len(windows) == 3
    assert_contiguous(windows, bookmark + dt.timedelta(days=1), TODAY, 14)


def test_interrupted_snapshot_goes_on_with_snapshot_windows():
    export_type, windows = plan({"bookmark": "2025-06-30"}, snapshot_days=100)
    assert export_type == "snapshot"
    assert_contiguous(windows, D("2025-07-01"), TODAY, 100)


def test_a_stream_without_delta_always_uses_snapshot_windows():
    export_type, windows = plan({"bookmark": "2026-01-01", "snapshot_done": True}, delta=False, snapshot_days=30)
    assert export_type == "snapshot"
    assert_contiguous(windows, D("2026-01-02"), TODAY, 30)


def test_nothing_to_do_when_the_bookmark_reaches_the_end():
    assert plan({"bookmark": "2026-02-01", "snapshot_done": True}, end=D("2026-02-01"))[1] == []
    assert plan({"bookmark": "2026-02-05", "snapshot_done": True}, end=D("2026-02-01"))[1] == []


def test_bookmark_is_the_last_day_that_had_ended_and_never_moves_back():
    assert completed_through(Window(D("2026-02-01"), D("2026-02-14")), TODAY) == D("2026-02-14")
    assert completed_through(Window(D("2026-02-20"), TODAY), TODAY) == D("2026-02-28")  # today is read again
    state: dict = {}
    export = ExportState(state)
    export.window_done(Window(D("2026-02-20"), TODAY), "snapshot", TODAY, last=True)
    assert state == {"bookmark": "2026-02-28", "snapshot_done": True, "pending_jobs": []}
    export.window_done(Window(TODAY, TODAY), "delta", TODAY, last=True)  # a today-only window earns nothing
    assert state["bookmark"] == "2026-02-28"
    assert plan(state)[1] == [Window(TODAY, TODAY)]


def test_snapshot_is_done_only_after_its_last_window():
    state: dict = {}
    ExportState(state).window_done(Window(D("2026-01-01"), D("2026-01-31")), "snapshot", TODAY, last=False)
    assert "snapshot_done" not in state and state["bookmark"] == "2026-01-31"


def test_pending_jobs_are_recorded_found_and_dropped_per_window():
    state: dict = {}
    export = ExportState(state)
    first, second = Window(D("2026-01-01"), D("2026-01-14")), Window(D("2026-01-15"), D("2026-01-28"))
    created = dt.datetime(2026, 2, 1, 8, 30, tzinfo=dt.timezone.utc)
    export.job_created(first, "delta", 123, created)  # an integer job id is kept as a string
    export.job_created(second, "delta", "abc", created)
    assert state["pending_jobs"][0] == {
        "window_start": "2026-01-01",
        "window_end": "2026-01-14",
        "export_type": "delta",
        "job_id": "123",
        "created_at": "2026-02-01T08:30:00Z",
    }
    pending = export.pending_job(first, "delta")
    assert pending is not None and (pending.job_id, pending.created_at) == ("123", created)
    assert export.pending_job(first, "snapshot") is None  # another export type is another job
    export.job_created(first, "delta", "124", created)  # a retried window replaces its entry
    assert [entry["job_id"] for entry in state["pending_jobs"]] == ["abc", "124"]
    export.keep_pending([(second, "delta", None)])
    assert [entry["job_id"] for entry in state["pending_jobs"]] == ["abc"]
    export.window_done(second, "delta", TODAY, last=True)
    assert state["pending_jobs"] == []


def test_a_job_being_requested_is_announced_then_replaced_by_its_id():
    state: dict = {}
    export = ExportState(state)
    window = Window(D("2026-01-01"), D("2026-01-14"))
    asked = dt.datetime(2026, 2, 1, 8, 30, tzinfo=dt.timezone.utc)
    export.job_requested(window, "snapshot", asked)
    assert state["pending_jobs"] == [
        {
            "window_start": "2026-01-01",
            "window_end": "2026-01-14",
            "export_type": "snapshot",
            "job_id": None,
            "requested_at": "2026-02-01T08:30:00Z",
        }
    ]
    pending = export.pending_job(window, "snapshot")
    assert pending is not None and (pending.job_id, pending.created_at) == (None, asked)
    export.job_created(window, "snapshot", "777", asked + dt.timedelta(seconds=1))
    assert [(entry["job_id"], "requested_at" in entry) for entry in state["pending_jobs"]] == [("777", False)]


def test_contactbased_lookbacks_end_today_and_name_the_days_out_of_reach():
    assert lookback_window(TODAY, 3) == Window(D("2026-02-27"), TODAY)
    assert lookback_since(TODAY, TODAY) == 1  # today again: it was only partly over when read
    assert lookback_since(D("2026-02-20"), TODAY) == 10
    assert out_of_reach(D("2026-02-20"), TODAY, cap=10) is None
    assert out_of_reach(D("2026-02-20"), TODAY, cap=7) == Window(D("2026-02-20"), D("2026-02-22"))


def test_a_backfill_to_today_stretches_its_last_window_into_the_future_to_its_full_length():
    """Meetings dated after today but processed before it are in no delta (those start today): the last
    snapshot window takes them, as far as the window length (at most Backstory's one year) allows."""
    export_type, windows = plan({}, start="2026-02-10", snapshot_days=15, reach_future=True)
    assert export_type == "snapshot"
    assert windows == [Window(D("2026-02-10"), D("2026-02-24")), Window(D("2026-02-25"), D("2026-03-11"))]
    _, windows = plan({}, start="2025-03-02", reach_future=True)  # a year back: the one window is full already
    assert windows == [Window(D("2025-03-02"), TODAY)]
    _, windows = plan({}, start="2025-03-01", reach_future=True)  # 366 days: a 1-day window, stretched
    assert windows == [Window(D("2025-03-01"), D("2026-02-28")), Window(TODAY, D("2027-02-28"))]
    assert all(w.days <= 365 for w in windows)
    # An interrupted backfill resumed on a later day plans the very same last window (its pending job matches).
    assert plan({"bookmark": "2026-02-24"}, start="2026-02-10", snapshot_days=15, reach_future=True)[1] == [
        Window(D("2026-02-25"), D("2026-03-11"))
    ]
    later = TODAY + dt.timedelta(days=3)
    assert plan({"bookmark": "2026-02-24"}, start="2026-02-10", end=later, snapshot_days=15, reach_future=True)[
        1
    ] == [Window(D("2026-02-25"), D("2026-03-11"))]


def test_only_a_backfill_to_the_default_end_reaches_into_the_future():
    _, windows = plan({}, start="2026-02-10", snapshot_days=15)  # a user's end_date is the end
    assert windows[-1].end == TODAY
    state = {"bookmark": "2026-02-20", "snapshot_done": True}
    assert plan(state, reach_future=True)[1][-1].end == TODAY  # deltas select processing days: none ahead
    _, windows = plan({}, start="2026-02-10", snapshot_days=15, delta=False, reach_future=True)
    assert windows[-1].end == TODAY  # a stream without delta has no hand-off to cover


def test_a_window_reaching_into_the_future_earns_yesterday_like_one_ending_today():
    state: dict = {}
    ExportState(state).window_done(Window(D("2026-02-25"), D("2026-03-11")), "snapshot", TODAY, last=True)
    assert state["bookmark"] == "2026-02-28" and state["snapshot_done"] is True
    assert plan(state)[1] == [Window(TODAY, TODAY)]  # the first delta starts today: the hand-off has no gap


def test_a_job_created_on_an_earlier_day_earns_the_day_before_its_creation():
    """A run killed after creating the last window's job, resumed the next day, reuses the job: its data is
    as of its creation, so the days from then on must still come from the deltas."""
    state: dict = {}
    export = ExportState(state)
    window = Window(D("2026-02-25"), D("2026-03-11"))
    export.job_created(window, "snapshot", "42", dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc))
    export.window_done(window, "snapshot", TODAY + dt.timedelta(days=1), last=True)
    assert state["bookmark"] == "2026-02-28"


def test_a_window_retried_with_another_end_keeps_one_pending_entry():
    """Backstory refused the future end date: the window is asked for again ending today; the refused
    request's entry must not linger (a resumed run would look for a job that never existed)."""
    state: dict = {}
    export = ExportState(state)
    asked = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc)
    export.job_requested(Window(D("2026-02-25"), D("2026-03-11")), "snapshot", asked)
    export.job_requested(Window(D("2026-02-25"), TODAY), "snapshot", asked)
    assert [(e["window_start"], e["window_end"]) for e in state["pending_jobs"]] == [("2026-02-25", "2026-03-01")]


# --- coverage: what the bookmark stands for (issue 23) ---------------------------------------------------
EMAIL, MEETING, CALL = ({"activity_type": kind} for kind in ("email", "meeting", "call"))


def coverage_of(state: dict, activity_type: str = "all") -> Coverage:
    return Coverage(state, ActivitySelector({"activity_type": activity_type}))


def test_gaps_are_what_the_config_asks_beyond_the_coverage_each_ending_at_the_bookmark_at_most():
    state = {"bookmark": "2026-02-28", "coverage": [{"start_date": "2026-01-01", **EMAIL}]}
    gaps, assumed = coverage_of(state).gaps(D("2025-12-01"))
    assert not assumed
    assert gaps == [
        (EMAIL, Window(D("2025-12-01"), D("2025-12-31"))),  # start_date moved earlier
        (MEETING, Window(D("2025-12-01"), D("2026-02-28"))),  # types added: the whole covered range too
        (CALL, Window(D("2025-12-01"), D("2026-02-28"))),
    ]
    # A gap filled newest window first: the coverage grows back one window at a time.
    coverage_of(state).extend([MEETING], D("2026-02-01"))
    assert coverage_of(state).covered_since(MEETING) == D("2026-02-01")
    gaps, _ = coverage_of(state, "meeting").gaps(D("2025-12-01"))
    assert gaps == [(MEETING, Window(D("2025-12-01"), D("2026-01-31")))]
    assert state["coverage"] == [{"start_date": "2026-02-01", **MEETING}]  # a narrowing keeps only what is asked


def test_a_state_without_coverage_is_taken_to_cover_the_config_and_one_without_bookmark_covers_nothing():
    state: dict = {"bookmark": "2026-02-28", "snapshot_done": True}
    assert coverage_of(state, "email").gaps(D("2026-01-01")) == ([], True)
    assert state["coverage"] == [{"start_date": "2026-01-01", **EMAIL}]
    assert coverage_of(state, "email").gaps(D("2026-01-01")) == ([], False)
    fresh: dict = {"coverage": [{"start_date": "2026-01-01", **EMAIL}]}
    assert coverage_of(fresh, "email").gaps(D("2025-01-01")) == ([], False)
    assert "coverage" not in fresh  # the first window writes it


def test_an_all_entry_covers_each_type_and_contacts_filters_cover_narrower_ones():
    state = {"bookmark": "2026-02-28", "coverage": [{"start_date": "2026-01-01", "activity_type": "all"}]}
    assert coverage_of(state).gaps(D("2026-01-01")) == ([], False)
    assert [entry["activity_type"] for entry in state["coverage"]] == ["email", "meeting", "call"]
    contacts = ContactSelector({
        "contacts_country": "Germany",
        "contacts_is_sourced_by_people_ai": True,
        "contacts_include_historical": False,
        "contacts_include_existing": True,
    })
    narrow = contacts.selection()
    wide = {**narrow, "contacts_country": None, "contacts_is_sourced_by_people_ai": False}
    assert contacts.covers(wide, narrow) and not contacts.covers(narrow, wide)
    assert not contacts.covers({**narrow, "contacts_country": "Canada"}, narrow)
    assert contacts.covers({**narrow, "contacts_include_historical": True}, narrow)
    assert not contacts.covers(narrow, {**narrow, "contacts_include_historical": True})


def test_pending_jobs_are_kept_per_selection():
    state: dict = {}
    export = ExportState(state)
    window = Window(D("2026-02-01"), D("2026-02-14"))
    created = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc)
    export.job_created(window, "snapshot", "1", created, MEETING)
    export.job_created(window, "snapshot", "2", created, CALL)
    assert [entry["job_id"] for entry in state["pending_jobs"]] == ["1", "2"]
    assert export.pending_job(window, "snapshot", CALL).job_id == "2"  # type: ignore[union-attr]
    assert export.pending_job(window, "snapshot", EMAIL) is None  # another activity_type is another job
    export.window_done(window, "snapshot", TODAY, last=False, selection=MEETING)
    assert [entry["job_id"] for entry in state["pending_jobs"]] == ["2"]
    export.keep_pending([(window, "snapshot", EMAIL)])
    assert state["pending_jobs"] == []
