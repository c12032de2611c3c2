"""What an export stream's state covers, and the backfill a config asking for more needs (issue 23).

The state's bookmark says how far a stream has read; `coverage` says what: entries `{"start_date": day,
**selection}`, each meaning that the records `selection` picks, from `start_date` through the bookmark, are
extracted. A selection is the settings that decide what a window holds (`activity_type`; the `contacts_*`
filters). A run whose config asks for more first fetches the difference with snapshot windows, newest first, so
the coverage stays one range up to the bookmark after every window. docs/state.md, "Changing settings between
runs"; the decisions: docs/decisions.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import typing as t

from tap_backstory.windows import Selection, Window, next_start, parse_day, plan_windows, plural

ACTIVITY_TYPES = ("email", "meeting", "call")
CONTACT_FILTERS = ("contacts_country", "contacts_state")
CONTACT_FLAGS = ("contacts_is_sourced_by_people_ai", "contacts_include_historical", "contacts_include_existing")


class Selector:
    """The settings of one export stream that decide what a window holds. Base: the selection is one part."""

    def __init__(self, config: t.Mapping[str, t.Any]) -> None:
        self.config = config

    def selection(self) -> Selection:
        """What this run's config selects (what its windows ask Backstory for)."""
        raise NotImplementedError

    def parts(self) -> list[Selection]:
        """The selection split into what coverage tracks separately."""
        return [self.selection()]

    def covers(self, covered: Selection, wanted: Selection) -> bool:
        """Whether every record `wanted` selects is one `covered` selected."""
        return covered == wanted

    def requests(self, parts: list[Selection]) -> list[tuple[Selection, list[Selection]]]:
        """How to ask Backstory for `parts` over one date range: (request selection, the parts it fills)."""
        return [(part, [part]) for part in parts]

    def of_body(self, body: dict) -> Selection:
        """The selection a job's request body asks for."""
        raise NotImplementedError

    def describe(self, selection: Selection) -> str:
        return ", ".join(f"{key} {'any' if value is None else value}" for key, value in selection.items())

    def backfill_note(self, covered_since: dt.date | None) -> str:
        """What a backfill reads twice (logged with it); `covered_since` None: the part was not covered."""
        raise NotImplementedError


class ActivitySelector(Selector):
    """`activities`: one part per activity type (`all` is email, meeting and call)."""

    def selection(self) -> Selection:
        return {"activity_type": self.config["activity_type"]}

    def parts(self) -> list[Selection]:
        wanted = self.config["activity_type"]
        return [{"activity_type": kind} for kind in ACTIVITY_TYPES if wanted in ("all", kind)]

    def covers(self, covered: Selection, wanted: Selection) -> bool:
        return covered["activity_type"] in ("all", wanted["activity_type"])

    def requests(self, parts: list[Selection]) -> list[tuple[Selection, list[Selection]]]:
        """Every type over one range: one `all` job per window; otherwise one job per type (the API takes one
        activity_type or `all`), so no activity of a covered type is read again."""
        if len(parts) == len(ACTIVITY_TYPES):
            return [({"activity_type": "all"}, parts)]
        return super().requests(parts)

    def of_body(self, body: dict) -> Selection:
        return {"activity_type": body["activity_type"]}

    def backfill_note(self, covered_since: dt.date | None) -> str:
        if covered_since is None:
            return (
                "no activity already extracted is read again, but those of the types added processed since the "
                "bookmark come in the deltas too (targets upsert on uid)"
            )
        return (
            "activities dated in it but processed since the deltas began came in them already and are read "
            "again (targets upsert on uid)"
        )


class ContactSelector(Selector):
    """`enriched_contacts`: one part, its five filters (`None`: any country or state)."""

    def selection(self) -> Selection:
        return {
            **{name: self.config.get(name) or None for name in CONTACT_FILTERS},
            **{name: bool(self.config[name]) for name in CONTACT_FLAGS},
        }

    def covers(self, covered: Selection, wanted: Selection) -> bool:
        """No filter of `covered` is narrower than `wanted`'s: a filter that was off, or had the same value."""
        return (
            all(covered[name] in (None, wanted[name]) for name in CONTACT_FILTERS)
            and (not covered["contacts_is_sourced_by_people_ai"] or wanted["contacts_is_sourced_by_people_ai"])
            and all(covered[name] or not wanted[name] for name in CONTACT_FLAGS[1:])
        )

    def of_body(self, body: dict) -> Selection:
        return {
            "contacts_country": body.get("country"),
            "contacts_state": body.get("state"),
            "contacts_is_sourced_by_people_ai": body["is_sourced_by_people_ai"],
            "contacts_include_historical": body["include_historical"],
            "contacts_include_existing": body["include_existing"],
        }

    def backfill_note(self, covered_since: dt.date | None) -> str:
        if covered_since is not None:
            return "contacts of those days extracted before with other filters, if any, are read again"
        return (
            "the contacts the old filters selected are read again (the API cannot select only those they left "
            "out; targets upsert on email)"
        )


class Coverage:
    """The `coverage` key of one export stream's state dict (the SDK's, mutated in place)."""

    def __init__(self, state: dict, selector: Selector) -> None:
        self.state = state
        self.selector = selector

    @property
    def entries(self) -> list[dict]:
        return self.state.get("coverage", [])

    def gaps(self, start_date: dt.date) -> tuple[list[tuple[Selection, Window]], bool]:
        """What the config asks for (its parts, from `start_date`) that the state does not cover: one range per
        part, ending at the bookmark at most. Also records the coverage the config leaves (a narrowing keeps
        the narrower selection, never the old wider one: the runs from now on extend only that).

        Returns (gaps, assumed): `assumed` when the state predates coverage and is taken to cover the parts
        from `start_date` (its first window is not known; the config of this run is the best guess)."""
        bookmark = self.state.get("bookmark")
        if not bookmark:
            self.state.pop("coverage", None)  # nothing read yet: the first window starts the coverage
            return [], False
        bookmark = parse_day(bookmark, "the state's bookmark")
        parts = self.selector.parts()
        assumed = "coverage" not in self.state
        if assumed:
            self.state["coverage"] = [{"start_date": start_date.isoformat(), **part} for part in parts]
        gaps, kept = [], []
        for part in parts:
            since = self.covered_since(part)
            if since is None or since > bookmark:
                since = next_start(bookmark)  # nothing of this part is covered yet
            else:
                kept.append({"start_date": since.isoformat(), **part})
            if start_date < since:
                gaps.append((part, Window(start_date, since - dt.timedelta(days=1))))
        self.state["coverage"] = kept
        return gaps, assumed

    def covered_since(self, part: Selection) -> dt.date | None:
        days = [_start(entry) for entry in self.entries if self.selector.covers(_selection(entry), part)]
        return min(days, default=None)

    def extend(self, parts: t.Iterable[Selection], start: dt.date) -> None:
        """`parts` are now covered from `start` through the bookmark (an earlier start is kept)."""
        entries = self.state.setdefault("coverage", [])
        for part in parts:
            entry = next((entry for entry in entries if _selection(entry) == part), None)
            if entry is None:
                entries.append({"start_date": start.isoformat(), **part})
            elif start < _start(entry):
                entry["start_date"] = start.isoformat()


def plan_backfill(
    coverage: Coverage,
    *,
    start_date: dt.date,
    snapshot_window_days: int,
    stretch: bool,
    log: logging.Logger,
    stream: str,
) -> list[tuple[Selection, list[Selection], Window]]:
    """(request selection, parts it fills, window) of the snapshot windows for what the config asks beyond the
    coverage, each part's windows newest first: the coverage then grows back one window at a time and stays
    one range up to the bookmark, so an interrupted backfill resumes where it stopped.

    `stretch`: the stream is past its first backfill (deltas from the bookmark on) and has no user end_date:
    a gap ending at the bookmark has its newest window stretched to its full length, as the first backfill's
    (activities dated after the bookmark but processed before it are in no delta; docs/decisions.md)."""
    selector = coverage.selector
    before = [dict(entry) for entry in coverage.entries]
    gaps, assumed = coverage.gaps(start_date)
    bookmark = coverage.state.get("bookmark")
    if assumed:
        log.warning(
            "%s: the state records no coverage (written by an older tap-backstory): taking it to cover %s "
            "from start_date %s through its bookmark %s. If start_date or these settings changed since the run "
            "that wrote it, the records the change adds are not read: to get them, run once with the old "
            "settings, then with the new ones",
            stream,
            selector.describe(selector.selection()),
            start_date,
            bookmark,
        )
    elif before and not gaps and _canonical(coverage.entries) != _canonical(before):
        log.info(
            "%s: the config selects less than the state covered; coverage is now %s (nothing is read again; "
            "the bookmark carries on)",
            stream,
            "; ".join(f"{selector.describe(_selection(e))} from {e['start_date']}" for e in coverage.entries),
        )
    by_range: dict[Window, list[Selection]] = {}
    for part, gap in gaps:
        by_range.setdefault(gap, []).append(part)
    planned = []
    for gap, parts in by_range.items():
        for chosen, filled in selector.requests(parts):
            windows = plan_windows(gap.start, gap.end, snapshot_window_days)[::-1]
            if stretch and gap.end.isoformat() == bookmark:
                newest = windows[0]
                windows[0] = Window(newest.start, newest.start + dt.timedelta(days=snapshot_window_days - 1))
            covered = [coverage.covered_since(part) for part in filled]
            log.info(
                "%s: the config asks for %s from %s, beyond what the state covers; backfilling %s with %s "
                "(newest first) before going on from the bookmark: %s",
                stream,
                selector.describe(chosen),
                start_date,
                gap,
                plural(len(windows), "snapshot window"),
                selector.backfill_note(min((day for day in covered if day is not None), default=None)),
            )
            planned += [(chosen, filled, window) for window in windows]
    return planned


def _selection(entry: dict) -> Selection:
    """The selection of a coverage entry (the entry less its `start_date`)."""
    return {key: value for key, value in entry.items() if key != "start_date"}


def _start(entry: dict) -> dt.date:
    return parse_day(entry["start_date"], "the state's coverage start_date")


def _canonical(entries: list[dict]) -> list[str]:
    return sorted(json.dumps(entry, sort_keys=True) for entry in entries)
