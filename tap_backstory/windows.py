"""Date windows, day bookmarks and the one clock every date computation reads.

Backstory export jobs take whole UTC days (`start_date` 0:00 to `end_date` 23:59), and ContactBased
searches take a lookback ending today, so everything here works in `datetime.date`.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

TODAY_ENV_VAR = "TAP_BACKSTORY_TODAY"
"""Set to YYYY-MM-DD to make the tap believe that is today (tests, replays). Unset in production."""


class Clock:
    """UTC wall clock that tests can move to another day.

    `today()` is the UTC date (or the date in `TAP_BACKSTORY_TODAY`); `now()` is the real UTC time shifted
    by the same number of days, so durations (polling, retention ages) stay real while dates move.
    """

    def __init__(self, today: dt.date | None = None) -> None:
        if today is None and os.environ.get(TODAY_ENV_VAR):
            today = parse_day(os.environ[TODAY_ENV_VAR], TODAY_ENV_VAR)
        self._shift = dt.timedelta(0)
        if today is not None:
            self._shift = today - dt.datetime.now(dt.UTC).date()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self._shift

    def today(self) -> dt.date:
        return self.now().date()


def parse_day(value: str, what: str) -> dt.date:
    """Parse a strict YYYY-MM-DD day, naming `what` in the error."""
    try:
        if len(value) != 10:
            raise ValueError
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a date in YYYY-MM-DD format, got {value!r}") from None


@dataclass(frozen=True)
class Window:
    """An inclusive range of whole UTC days."""

    start: dt.date
    end: dt.date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def plan_windows(start: dt.date, end: dt.date, max_days: int) -> list[Window]:
    """Split [start, end] into consecutive windows of at most `max_days` days each."""
    windows = []
    while start <= end:
        window_end = min(end, start + dt.timedelta(days=max_days - 1))
        windows.append(Window(start, window_end))
        start = window_end + dt.timedelta(days=1)
    return windows


def completed_through(window: Window, today: dt.date) -> dt.date:
    """The bookmark a finished window earns: its last day that had already ended when it was read.

    A window reaching today holds only part of today, so today is read again next run (at most one day
    twice, never a day skipped).
    """
    return min(window.end, today - dt.timedelta(days=1))


def next_start(bookmark: dt.date) -> dt.date:
    return bookmark + dt.timedelta(days=1)
