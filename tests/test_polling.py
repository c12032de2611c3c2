"""The one job poll schedule (Backstory export jobs and ContactBased exports building), without sleeping."""

from __future__ import annotations

from tap_backstory.polling import MAX_POLL_INTERVAL, PollSchedule, next_interval


def intervals(first: float, ages: list[float]) -> list[float]:
    """The waits a schedule starting at `first` gives after polls at these job ages."""
    cap = PollSchedule(first, timeout=3600).cap
    waits = [first]
    for age in ages:
        waits.append(next_interval(waits[-1], age, cap))
    return waits


def test_the_interval_grows_with_the_jobs_age_by_at_most_half_a_step():
    assert intervals(10, [10, 40, 80, 200]) == [10, 10, 10, 15, 22.5]
    assert intervals(10, [1000] * 5) == [10, 15, 22.5, 33.75, 50.625, 60]


def test_the_cap_is_60_seconds_or_the_configured_interval_if_larger():
    assert PollSchedule(10, timeout=3600).cap == MAX_POLL_INTERVAL == 60
    assert intervals(61, [1000] * 4) == [61, 61, 61, 61, 61]
    assert intervals(90, [30, 1000, 1000]) == [90, 90, 90, 90]


def test_a_restart_starts_short_again_and_the_timeout_counts_from_it():
    schedule = PollSchedule(0.01, timeout=0.05)
    schedule.interval = 40
    schedule.started -= 1  # as if a second old
    assert schedule.timed_out
    schedule.restart()
    assert schedule.interval == 0.01 and not schedule.timed_out
