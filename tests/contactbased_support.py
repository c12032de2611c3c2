"""Expectations of the ContactBased end-to-end tests, and their sandbox and config presets."""

from __future__ import annotations

import functools
from collections import Counter
from datetime import date, timedelta

from tap_backstory_sandbox import FEED_A_ID, FEED_B_ID, Sandbox, data
from tests import conftest, tap_runner

FEEDS = (FEED_A_ID, FEED_B_ID)
INTENT = "intent_feed_exports"
ENRICHED = "enriched_contact_records"
# Small, fast data: feed A 40 rows/day, feed B 25 rows/day, 25-row pages.
sandbox = functools.partial(conftest.sandbox, page_size=25)


def tap_config(sb: Sandbox, **settings) -> dict:
    """Only the ContactBased key: the two ContactBased streams are the only ones discovered."""
    return tap_runner.tap_config(sb, INTENT, ENRICHED, **{"intent_lookback_days": 3, **settings})


def window(sb: Sandbox, lookback: int) -> tuple[date, date]:
    today = sb.settings.current_day()
    return today - timedelta(days=lookback - 1), today


def expected_rows(sb: Sandbox, feed_id: str, lookback: int, **kwargs) -> int:
    return data.expected_intent_rows(sb.settings, feed_id, *window(sb, lookback), **kwargs)


def expected_contact_ids(sb: Sandbox, feeds: tuple[str, ...], lookback: int) -> set[str]:
    return set().union(*(data.expected_intent_contact_ids(sb.settings, feed, *window(sb, lookback)) for feed in feeds))


def malformed_contact_ids(sb: Sandbox, feeds: tuple[str, ...], lookback: int) -> set[str]:
    rows = [row for feed in feeds for row in data.iter_intent_rows(sb.settings, feed, *window(sb, lookback))]
    return {row["contact_id"] for row in rows if row["contact_id"] and not data.is_valid_contact_id(row["contact_id"])}


def duplicates(keys) -> list:
    return [key for key, count in Counter(keys).items() if count > 1]


def row_keys(records: list[dict]) -> list[tuple[str, int]]:
    return [(record["export_id"], record["row_number"]) for record in records]


def run_until_state(sb: Sandbox, config: dict, predicate) -> tuple[list[dict], dict]:
    """Start the tap, read its stdout until a STATE satisfies `predicate`, then SIGKILL it.

    Returns the RECORD messages read before that STATE, and that STATE (what a target would have committed)."""
    killed = tap_runner.run_until(
        sb, config, lambda message, _: message["type"] == "STATE" and predicate(message["value"])
    )
    return [m for m in killed.messages if m["type"] == "RECORD"], killed.final_state


def feed_flight(state: dict, feed_id: str) -> dict:
    return state.get("bookmarks", {}).get(INTENT, {}).get("feeds", {}).get(feed_id, {}).get("in_flight", {})
