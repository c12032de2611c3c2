"""Checks of the `--state` file before any request: a state this tap did not write stops the run.

A state file from another tap, or one with a malformed bookmark, is refused with one line naming the problem:
silently starting from scratch would re-read (and, for ContactBased, re-spend export quota on) everything, and
the tap cannot tell whether the user mixed up files. Keys the SDK adds are left alone.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from tap_backstory.client import ConfigError
from tap_backstory.names import STREAM_ORDER
from tap_backstory.windows import parse_day, parse_timestamp

STREAMS = STREAM_ORDER
TOP_LEVEL_KEYS = ("bookmarks", "currently_syncing")
FOREIGN_STREAM_KEYS = ("replication_key", "replication_key_value")
"""Per-record replication keys: the SDK writes them for INCREMENTAL streams, which this tap has none of."""


class StateError(ConfigError):
    """The state file is not a state of this tap."""


def check_state(state: t.Any, today: dt.date | None = None) -> None:
    """Raise StateError (one line, naming the key) unless `state` is a state tap-backstory could have written.

    With `today` (the tap's clock), a day the tap could not have extracted yet is refused too."""
    if not isinstance(state, dict):
        _fail(f"it must be a JSON object, got {_kind(state)}")
    unknown = sorted(set(state) - set(TOP_LEVEL_KEYS))
    if unknown:
        hint = ""
        if "singer_state" in unknown:
            hint = " (it looks like `meltano state get` output: pass the value of its singer_state)"
        _fail(f"unexpected top-level key(s) {', '.join(unknown)}; a Singer state holds only 'bookmarks'{hint}")
    current = state.get("currently_syncing")
    if current is not None and current not in STREAMS:
        _fail(f"currently_syncing is {_short(current)}, not a stream of tap-backstory: is it another tap's state?")
    bookmarks = state.get("bookmarks", {})
    if not isinstance(bookmarks, dict):
        _fail(f"bookmarks must be an object, got {_kind(bookmarks)}")
    foreign = sorted(name for name in bookmarks if name not in STREAMS)
    if foreign:
        _fail(
            f"it has bookmarks for {', '.join(foreign)}, which tap-backstory does not have (its streams: "
            f"{', '.join(STREAMS)}): is it another tap's state?"
        )
    for stream, stream_state in bookmarks.items():
        where = f"bookmarks.{stream}"
        if not isinstance(stream_state, dict):
            _fail(f"{where} must be an object, got {_kind(stream_state)}")
        found = [key for key in FOREIGN_STREAM_KEYS if key in stream_state]
        if found:
            _fail(f"{where} has {'/'.join(found)}, which tap-backstory never writes: is it another tap's state?")
        CHECKS[stream](stream_state, where, today)


def _check_export(stream_state: dict, where: str, today: dt.date | None) -> None:
    _day(stream_state, "bookmark", where)
    if "snapshot_done" in stream_state and not isinstance(stream_state["snapshot_done"], bool):
        _fail(f"{where}.snapshot_done must be true or false, got {_short(stream_state['snapshot_done'])}")
    bookmark = stream_state.get("bookmark")
    if bookmark and today is not None and parse_day(bookmark, where) > today:
        _fail(
            f"{where}.bookmark {bookmark} is after today ({today} UTC), which tap-backstory never writes (its "
            f"bookmarks reach yesterday at most): set it to the last day really extracted"
        )
    if stream_state.get("snapshot_done") and not bookmark:
        _fail(
            f"{where} has snapshot_done but no bookmark, which tap-backstory never writes: remove snapshot_done "
            f"to backfill from start_date again, or set bookmark to the last day extracted"
        )
    for at, entry in _objects(stream_state, "coverage", where):
        _day(entry, "start_date", at, required=True)
        settings = SELECTION_KEYS[where.rpartition(".")[2]]
        unknown = sorted(set(entry) - {"start_date", *settings})
        if unknown:
            _fail(f"{at} has {', '.join(unknown)}, which is not a setting that selects its records")
        for setting, allowed in settings.items():
            if setting not in entry or not allowed(entry[setting]):
                _fail(f"{at}.{setting} is missing or not a value of that setting, got {_short(entry.get(setting))}")
    for at, entry in _objects(stream_state, "pending_jobs", where):
        for key in ("window_start", "window_end"):
            _day(entry, key, at, required=True)
        if "selection" in entry and not isinstance(entry["selection"], dict):
            _fail(f"{at}.selection must be an object, got {_kind(entry['selection'])}")
        if entry.get("export_type") not in ("snapshot", "delta"):
            _fail(f"{at}.export_type must be 'snapshot' or 'delta', got {_short(entry.get('export_type'))}")
        # A job being requested when the run stopped has no id yet, and the time of its request instead.
        requested = "job_id" in entry and entry["job_id"] is None
        if not requested and (not isinstance(entry.get("job_id"), str | int) or isinstance(entry.get("job_id"), bool)):
            _fail(f"{at}.job_id must be a string, got {_short(entry.get('job_id'))}")
        key = "requested_at" if requested else "created_at"
        moment = entry.get(key)
        parsed = parse_timestamp(moment) if isinstance(moment, str) else None
        if parsed is None or parsed.tzinfo is None:
            _fail(f"{at}.{key} must be a UTC timestamp like 2026-03-01T08:00:00Z, got {_short(moment)}")


def _check_intent(stream_state: dict, where: str, today: dt.date | None) -> None:
    feeds = stream_state.get("feeds", {})
    if not isinstance(feeds, dict):
        _fail(f"{where}.feeds must be an object, got {_kind(feeds)}")
    for feed_id, feed_state in feeds.items():
        at = f"{where}.feeds.{feed_id}"
        if not isinstance(feed_state, dict):
            _fail(f"{at} must be an object, got {_kind(feed_state)}")
        for key in ("last_window_start", "last_window_end"):
            _day(feed_state, key, at)
        covered = feed_state.get("coverage")
        if covered is not None:
            if not isinstance(covered, dict):
                _fail(f"{at}.coverage must be an object, got {_kind(covered)}")
            _day(covered, "start_date", f"{at}.coverage", required=True)
        last_end = feed_state.get("last_window_end")
        if last_end and today is not None and parse_day(last_end, at) > today:
            _fail(
                f"{at}.last_window_end {last_end} is after today ({today} UTC), which tap-backstory never writes "
                f"(a window ends today at most): set it to the last day really read"
            )
        flight = feed_state.get("in_flight")
        if flight is None:
            continue
        at += ".in_flight"
        if not isinstance(flight, dict):
            _fail(f"{at} must be an object, got {_kind(flight)}")
        if not isinstance(flight.get("job_id"), str) or not flight["job_id"]:
            _fail(f"{at}.job_id must be the search's job id (a string), got {_short(flight.get('job_id'))}")
        for key in ("window_start", "window_end"):
            _day(flight, key, at, required=True)
        if "export_id" in flight:
            if not isinstance(flight["export_id"], str) or not flight["export_id"]:
                _fail(f"{at}.export_id must be a string, got {_short(flight['export_id'])}")
            for key, low in (("total_pages", 0), ("page_size", 1), ("next_page", 1)):
                value = flight.get(key)
                if not isinstance(value, int) or isinstance(value, bool) or value < low:
                    _fail(f"{at}.{key} must be an integer >= {low}, got {_short(value)}")


def _check_enrichment(stream_state: dict, where: str, today: dt.date | None) -> None:
    _check_intent(stream_state, where, today)  # its own per-feed windows, shaped as the parent's
    pending = stream_state.get("pending_contact_ids", [])
    if not isinstance(pending, list) or not all(isinstance(item, str) for item in pending):
        _fail(f"{where}.pending_contact_ids must be a list of contact_id strings")


def _is_flag(value: t.Any) -> bool:
    return isinstance(value, bool)


def _is_filter(value: t.Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value))


SELECTION_KEYS: dict[str, dict[str, t.Callable[[t.Any], bool]]] = {
    "activities": {"activity_type": lambda value: value in ("email", "meeting", "call", "all")},
    "enriched_contacts": {
        "contacts_country": _is_filter,
        "contacts_state": _is_filter,
        "contacts_is_sourced_by_people_ai": _is_flag,
        "contacts_include_historical": _is_flag,
        "contacts_include_existing": _is_flag,
    },
}
"""The settings every coverage entry of each export stream names, and their values (`coverage.py` selectors'
`selection`)."""

CHECKS: dict[str, t.Callable[[dict, str, dt.date | None], None]] = {
    "activities": _check_export,
    "enriched_contacts": _check_export,
    "intent_feed_exports": _check_intent,
    "enriched_contact_records": _check_enrichment,
}


def _objects(holder: dict, key: str, where: str) -> t.Iterator[tuple[str, dict]]:
    """The entries of the list `holder[key]` (absent: none), each with its place; not a list of objects fails."""
    entries = holder.get(key, [])
    if not isinstance(entries, list):
        _fail(f"{where}.{key} must be a list, got {_kind(entries)}")
    for index, entry in enumerate(entries):
        at = f"{where}.{key}[{index}]"
        if not isinstance(entry, dict):
            _fail(f"{at} must be an object, got {_kind(entry)}")
        yield at, entry


def _day(holder: dict, key: str, where: str, *, required: bool = False) -> None:
    if key not in holder and not required:
        return
    value = holder.get(key)
    if not isinstance(value, str):
        _fail(f"{where}.{key} must be a date in YYYY-MM-DD format, got {_short(value)}")
    try:
        parse_day(value, f"{where}.{key}")
    except ValueError as exc:
        _fail(str(exc))


def _short(value: t.Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: t.Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _fail(problem: str) -> t.NoReturn:
    raise StateError(f"the state file (--state) is not a tap-backstory state: {problem}")
