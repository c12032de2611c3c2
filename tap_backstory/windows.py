"""Date windows, day bookmarks and the one clock every date computation reads.

Backstory export jobs take whole UTC days (`start_date` 0:00 to `end_date` 23:59), and ContactBased
searches take a lookback of whole days ending today (`lookback_*`), so everything here works in `datetime.date`.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import typing as t
from dataclasses import dataclass

TODAY_ENV_VAR = "TAP_BACKSTORY_TODAY"
"""Set to YYYY-MM-DD to make the tap believe that is today (tests, replays). Unset in production."""


class Clock:
    """UTC wall clock that tests can move to another day, and the one source of elapsed time and waits.

    `today()` is the UTC date (or the date in `TAP_BACKSTORY_TODAY`); `now()` is the real UTC time shifted
    by the same number of days, so durations (polling, retention ages) stay real while dates move.
    `monotonic()` and `sleep()` are the engines' timers: a test's clock advances on `sleep` instead of waiting.
    """

    def __init__(self, today: dt.date | None = None) -> None:
        if today is None and os.environ.get(TODAY_ENV_VAR):
            today = parse_day(os.environ[TODAY_ENV_VAR], TODAY_ENV_VAR)
        self._shift = dt.timedelta(0)
        if today is not None:
            self._shift = today - dt.datetime.now(dt.timezone.utc).date()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self._shift

    def today(self) -> dt.date:
        return self.now().date()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


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


def plural(count: int, word: str) -> str:
    """ "1 day", "2 days" (log lines)."""
    return f"{count} {word}{'' if count == 1 else 's'}"


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


# --- ContactBased lookbacks: a number of whole days ending today ----------------------------------------


def lookback_window(today: dt.date, days: int) -> Window:
    """The `days` whole days ending today (what a search of `lookback_days` covers)."""
    return Window(today - dt.timedelta(days=days - 1), today)


def lookback_since(last_end: dt.date, today: dt.date) -> int:
    """Days from a last window's end day (inclusive: it was only partly over when read) through today."""
    return max(1, (today - last_end).days + 1)


def out_of_reach(last_end: dt.date, today: dt.date, cap: int) -> Window | None:
    """The days from `last_end` on that a lookback of at most `cap` days no longer reaches, if any."""
    first_reachable = lookback_window(today, cap).start
    if last_end >= first_reachable:
        return None
    return Window(last_end, first_reachable - dt.timedelta(days=1))


# --- Export windows and their state (both Backstory streams; shape documented in docs/state.md) --------

Selection = dict[str, t.Any]
"""The settings that decide what a window holds, by setting name: `{"activity_type": "email"}` (see
`coverage.py`). Pending jobs are kept per selection."""

RETENTION = dt.timedelta(days=10)
"""Backstory keeps a job's files 10 days: an older job id in state is never reused."""


@dataclass(frozen=True)
class PendingJob:
    """A job created for a window that has not been emitted yet (kept in state to resume without a new job).

    `job_id` None: the job was being requested at `created_at` when the run stopped, before Backstory's answer
    arrived. Backstory may have made it all the same; a resumed run looks for it in the job list."""

    window: Window
    export_type: str
    job_id: str | None
    created_at: dt.datetime

    def age(self, now: dt.datetime) -> dt.timedelta:
        return now - self.created_at


class ExportState:
    """The tap-owned keys of one export stream's state dict, and the windows they imply.

    `bookmark`       last UTC day fully extracted after it had ended (absent before the first window).
    `snapshot_done`  the first (snapshot) backfill reached the end; later `activities` runs use delta.
    `coverage`       what the bookmark stands for (kept by `coverage.Coverage`).
    `pending_jobs`   jobs created (or being requested) for windows not yet emitted: reused by a resumed run.

    The dict is the SDK's stream state, mutated in place, so a STATE message emits it as is.
    """

    def __init__(self, state: dict) -> None:
        self.state = state

    @property
    def bookmark(self) -> dt.date | None:
        value = self.state.get("bookmark")
        return parse_day(value, "the state's bookmark") if value else None

    def plan(
        self,
        *,
        start_date: dt.date,
        end_date: dt.date,
        snapshot_window_days: int,
        delta_window_days: int | None,
        reach_future: bool = False,
    ) -> tuple[str, list[Window]]:
        """(export type, windows) of this run; `delta_window_days=None` means the stream has no delta type.

        The snapshot backfill runs until it reached the end once (even across interrupted runs: a delta
        window only covers days *processed* in it, not a backfill's activity days); after that, delta.

        `reach_future` (the end is the default, today): the backfill's last window is stretched past today to
        its full `snapshot_window_days`. The deltas that follow start at today's processing date, so an
        activity dated after today but processed before it (a meeting booked for next month) is in a
        snapshot or in nothing. Stretching costs no extra job, and the window's end no longer depends on
        today, so a run resumed on a later day plans the same window and finds its pending job.
        """
        bookmark = self.bookmark
        start = start_date if bookmark is None else next_start(bookmark)
        if delta_window_days is not None and self.state.get("snapshot_done"):
            return "delta", plan_windows(start, end_date, delta_window_days)
        windows = plan_windows(start, end_date, snapshot_window_days)
        if reach_future and delta_window_days is not None and windows:
            last = windows[-1]
            windows[-1] = Window(last.start, last.start + dt.timedelta(days=snapshot_window_days - 1))
        return "snapshot", windows

    # --- pending jobs ----------------------------------------------------------------------------------

    def pending_job(self, window: Window, export_type: str, selection: Selection | None = None) -> PendingJob | None:
        for entry in self.state.get("pending_jobs", []):
            if _matches(entry, window, export_type, selection):
                job_id = entry.get("job_id")
                at = entry.get("created_at") or entry["requested_at"]
                created = parse_timestamp(at)  # state_check has refused a state where it is not one
                if created is None:
                    raise ValueError(f"pending job timestamp {at!r} is not an ISO timestamp")
                return PendingJob(window, export_type, None if job_id is None else str(job_id), created)
        return None

    def keep_pending(self, jobs: t.Iterable[tuple[Window, str, Selection | None]]) -> None:
        """Forget pending jobs of windows this run will not read (a changed config or an old state).

        `jobs`: (window, export type, selection) of every job this run may make."""
        planned = list(jobs)
        self.state["pending_jobs"] = [
            entry
            for entry in self.state.get("pending_jobs", [])
            if any(_matches(entry, window, export_type, selection) for window, export_type, selection in planned)
        ]

    def job_requested(
        self, window: Window, export_type: str, requested_at: dt.datetime, selection: Selection | None = None
    ) -> None:
        """Written before the job is requested: if the run dies before the answer, the next one knows to look
        for the job Backstory may have made."""
        at = format_timestamp(requested_at)
        self._set_pending(window, export_type, selection, job_id=None, requested_at=at)

    def job_created(
        self,
        window: Window,
        export_type: str,
        job_id: str,
        created_at: dt.datetime,
        selection: Selection | None = None,
    ) -> None:
        at = format_timestamp(created_at)
        self._set_pending(window, export_type, selection, job_id=str(job_id), created_at=at)

    def _set_pending(self, window: Window, export_type: str, selection: Selection | None, **entry: t.Any) -> None:
        # One entry per window start: a window asked for again with another end (Backstory refused its end
        # date in the future) replaces the refused request's entry, for which no job exists.
        start = window.start.isoformat()
        self.state["pending_jobs"] = [
            other
            for other in self.state.get("pending_jobs", [])
            if (other.get("window_start"), other.get("export_type")) != (start, export_type)
            or other.get("selection", selection) != selection
        ]
        if selection is not None:
            entry = {"selection": selection, **entry}
        self.state.setdefault("pending_jobs", []).append(
            {
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
                "export_type": export_type,
                **entry,
            }
        )

    def window_done(
        self,
        window: Window,
        export_type: str,
        today: dt.date,
        *,
        last: bool,
        selection: Selection | None = None,
    ) -> None:
        """Advance the bookmark past a fully emitted window (never backwards).

        Its data is as of its job's creation: a job an earlier run created (and this one resumed) earns the
        day before the day it was created, not the day before today."""
        pending = self.pending_job(window, export_type, selection)
        as_of = today
        if pending is not None:
            created = pending.created_at
            as_of = min(today, (created.astimezone(dt.timezone.utc) if created.tzinfo else created).date())
        self._drop_pending(window, export_type, selection)
        reached = completed_through(window, as_of)
        if self.bookmark is None or reached > self.bookmark:
            self.state["bookmark"] = reached.isoformat()
        if last and export_type == "snapshot":
            self.state["snapshot_done"] = True

    def forget_job(self, window: Window, export_type: str, selection: Selection | None = None) -> None:
        """Drop a window's pending job (its data is out, or proved unreadable), keeping the bookmark where it is."""
        self._drop_pending(window, export_type, selection)

    def _drop_pending(self, window: Window, export_type: str, selection: Selection | None) -> None:
        self.state["pending_jobs"] = [
            entry
            for entry in self.state.get("pending_jobs", [])
            if not _matches(entry, window, export_type, selection)
        ]


def _matches(entry: dict, window: Window, export_type: str, selection: Selection | None) -> bool:
    """Whether a pending entry is the job of this window, export type and selection.

    An entry without `selection` was written by a tap before coverage (issue 23) for the selection of the
    config then: it is taken to be the one asked for now, as it was then. An entry naming another selection
    is another job (the config's activity_type changed while it was pending: its data would be wrong)."""
    if (entry.get("window_start"), entry.get("window_end"), entry.get("export_type")) != (
        window.start.isoformat(),
        window.end.isoformat(),
        export_type,
    ):
        return False
    return "selection" not in entry or entry["selection"] == selection


def format_timestamp(moment: dt.datetime) -> str:
    """The docs' `yyyy-MM-ddTHH:mm:ssZ`, in UTC."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: t.Any) -> dt.datetime | None:
    """An ISO timestamp (`Z` or an offset; naive if it has neither), or None if `value` is not one."""
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
