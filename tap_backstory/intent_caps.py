"""How far back an intent feed may look, and what its export quota allows: no Singer inside.

The docs say a feed's lookback is 1..cap days and that `GET /organization/feeds` lists the cap, but not under
which key. When the listing gives none (key missing or null), the cap is learned from the server instead of
guessed (docs/decisions.md, "Feed caps"): the search asks for what the run wants (the configured
`intent_lookback_days`, the days since the last window, or on a first run without a setting
`PROBE_LOOKBACK_DAYS`), and a 403 teaches the cap, from the number its text states or, failing that, by
bisecting with `POST /intent/feeds/preview` (which saves nothing and spends nothing). Days a run cannot read
are always named in a WARNING.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import typing as t

from tap_backstory.client import ApiClient, ApiError, TapBackstoryError
from tap_backstory.windows import Clock, Window, lookback_since, lookback_window, out_of_reach

LOOKBACK_CAP_KEYS = ("lookback_days", "max_lookback_days", "lookback_days_cap", "lookback_cap")
"""Where a listed feed may hold its lookback cap (the docs name the cap, not its key); the first non-null wins."""

PROBE_LOOKBACK_DAYS = 365
"""First search of a feed listed without a cap when `intent_lookback_days` is not set: longer than any cap we
know of, so the server's answer (the window it searched, or its 403) tells the real cap."""

STATED_CAP = (
    re.compile(r"\b1\s*(?:\.\.|-|\u2013|to)\s*(\d{1,5})\b"),
    re.compile(r"\b(?:cap|max(?:imum)?|at most|up to|limit)\b\D{0,30}?(\d{1,5})\b", re.IGNORECASE),
)
"""A cap written in a 403's text, ranges first: `allowed range 1..90`, `1-90`, `cap is 90 days`, `at most 90`."""

MAX_CAP_PROBES = 12
"""Previews spent bisecting a cap the 403 does not state (log2 of PROBE_LOOKBACK_DAYS is under 9)."""


def lookback_cap(feed: dict) -> int | None:
    """The feed's lookback cap, under whichever key it is listed; None when none is listed (or it is null)."""
    for key in LOOKBACK_CAP_KEYS:
        if feed.get(key) is not None:
            return int(feed[key])
    return None


def quota_remaining(feed: dict) -> t.Any:
    """`export_rows_remaining` for a log line; an uncapped feed lists it as null."""
    remaining = feed.get("export_rows_remaining")
    return "no cap" if remaining is None else remaining


def stated_cap(message: str, asked: int) -> int | None:
    """The cap a refusal's text states, if one below what was asked can be read from it."""
    for pattern in STATED_CAP:
        for match in pattern.finditer(message):
            cap = int(match.group(1))
            if 1 <= cap < asked:
                return cap
    return None


def days_left_out(today: dt.date, wanted: int, got: int) -> Window | None:
    """The oldest days of a `wanted`-day lookback that a `got`-day one does not reach."""
    if got >= wanted:
        return None
    return Window(lookback_window(today, wanted).start, lookback_window(today, got).start - dt.timedelta(days=1))


class FeedCaps:
    """The lookback of each search, within the feed's cap (listed, or learned from the server's answers)."""

    def __init__(self, api: ApiClient, configured_days: int | None, clock: Clock, log: logging.Logger) -> None:
        self.api = api
        self.configured_days = configured_days
        self.clock = clock
        self.log = log

    @property
    def today(self) -> dt.date:
        return self.clock.today()

    def wanted_days(self, feed: dict, last_window_end: str | None) -> int:
        """First run: `intent_lookback_days` (default the cap, or a probe when none is listed); later runs: the
        last window's end day (inclusive, it was only partly over when read) through today. Never more than a
        listed cap, with a WARNING naming the days that leaves out."""
        feed_id, cap = feed["feed_id"], lookback_cap(feed)
        if last_window_end is None:
            wanted = self.configured_days or cap or PROBE_LOOKBACK_DAYS
            if cap is not None and wanted > cap:
                self.log.warning(
                    "intent feed %s: intent_lookback_days %d exceeds the feed's cap; using %d days",
                    feed_id,
                    wanted,
                    cap,
                )
                return cap
            return wanted
        last_end = dt.date.fromisoformat(last_window_end)
        since = lookback_since(last_end, self.today)
        if cap is not None:
            self.warn_out_of_reach(feed_id, last_end, cap, "the feed looks back at most")
            return min(since, cap)
        return since

    def is_probe(self, feed: dict, last_window_end: str | None) -> bool:
        """True when the first search's length is only a probe for a cap nobody stated."""
        return last_window_end is None and self.configured_days is None and lookback_cap(feed) is None

    def warn_out_of_reach(self, feed_id: str, last_end: dt.date, cap: int, how: str) -> None:
        lost = out_of_reach(last_end, self.today, cap)
        if lost is not None:
            self.log.warning(
                "intent feed %s: the last window ended %s, %d days ago, but %s %d days: days %s..%s can no longer "
                "be fetched",
                feed_id,
                last_end.isoformat(),
                (self.today - last_end).days,
                how,
                cap,
                lost.start.isoformat(),
                lost.end.isoformat(),
            )

    def warn_left_out(self, feed_id: str, wanted: int, got: int, why: str, last_window_end: str | None) -> None:
        """A WARNING naming the days a shorter search than wanted leaves out (none for a probe)."""
        if last_window_end is not None:
            self.warn_out_of_reach(feed_id, dt.date.fromisoformat(last_window_end), got, why)
            return
        lost = days_left_out(self.today, wanted, got)
        if lost is not None:
            self.log.warning(
                "intent feed %s: %s %d days, fewer than the %d wanted (intent_lookback_days): days %s..%s "
                "(%d days) are left out",
                feed_id,
                why,
                got,
                wanted,
                lost.start.isoformat(),
                lost.end.isoformat(),
                (lost.end - lost.start).days + 1,
            )

    def learn_cap(self, feed_id: str, asked: int, refusal: ApiError) -> int:
        """The cap behind a 403 to a search of `asked` days: stated in its text, or bisected with previews."""
        cap = stated_cap(str(refusal), asked)
        if cap is not None:
            self.log.info("intent feed %s: the server refused %d days and states a cap of %d days", feed_id, asked, cap)
            return cap
        accepted, refused = 0, asked
        for _ in range(MAX_CAP_PROBES):
            if refused - accepted <= 1:
                break
            middle = (accepted + refused) // 2
            if self._preview_accepts(feed_id, middle, refusal):
                accepted = middle
            else:
                refused = middle
        if accepted == 0:
            raise TapBackstoryError(
                f"intent feed {feed_id}: every lookback was refused, down to 1 day ({refusal}); "
                "GET /organization/feeds lists no lookback cap for this feed"
            )
        self.log.info(
            "intent feed %s: the server refused %d days; previews found its cap: %d days", feed_id, asked, accepted
        )
        return accepted

    def _preview_accepts(self, feed_id: str, days: int, refusal: ApiError) -> bool:
        try:
            self.api.request("POST", "/intent/feeds/preview", json={"feed_id": feed_id, "lookback_days": days})
        except ApiError as exc:
            if exc.status == 403:
                return False
            raise TapBackstoryError(
                f"intent feed {feed_id}: the search was refused ({refusal}) without stating the feed's lookback cap, "
                f"and previewing a shorter window to find it failed ({exc}); set intent_lookback_days to at most "
                "the feed's cap"
            ) from None
        return True
