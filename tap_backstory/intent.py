"""ContactBased intent feeds, with no Singer inside.

`IntentFeeds` does, per feed: listing and validation of the configured feeds, search (its lookback within the
feed's cap: `intent_caps.py`), quota guard, export creation (waiting while it builds, on the one
`polling.PollSchedule`), its pages (checked by `intent_pages.py`), and making an export again from its saved
search when the server says it is gone; `row_key`, the rows' primary key. Contact enrichment is in
`enrichment.py`. The streams (`streams/contactbased.py`) keep the Singer side: state, checkpoints, lineage fields
and shaping.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import typing as t

from tap_backstory.client import ApiClient, ApiError, TapBackstoryError, path_segment, read_json
from tap_backstory.enrichment import (  # noqa: F401  (re-exported: the engine's public names)
    CANONICAL_CONTACT_ID,
    LEGACY_CONTACT_ID,
    SINGLE_ENRICH_REQUESTS_PER_SECOND,
    ContactEnricher,
    envelope_record,
    is_contact_id,
)
from tap_backstory.formats import DataError, unwrap_list
from tap_backstory.intent_caps import LOOKBACK_CAP_KEYS, FeedCaps, lookback_cap, quota_remaining
from tap_backstory.intent_exports import FeedExports
from tap_backstory.intent_pages import check_page
from tap_backstory.names import ENRICHMENT_SECTIONS
from tap_backstory.windows import Clock, lookback_window, plural

LINEAGE_FIELDS = frozenset({"feed_id", "export_id", "page", "row_number", "window_start", "window_end"})
"""Where a row was read from: a new export of the same day gives the same row new values, so they are data, not key."""

OPTIONAL_ROW_FIELDS = frozenset({
    "first_name", "last_name", "address", "city", "state", "zip", "gender", "age_range", "income_range", "net_worth",
    "linkedin_url", "job_title", "department", "company_size", "company_revenue",
})  # fmt: skip
"""Row fields sent only with `get_pii` / `include_business_info`: settings must not change a row's key."""


def row_key(feed_id: str, record: dict) -> str:
    """The primary key of an intent row: sha256 of the canonical JSON of its feed and its identifying content
    (every non-null field but the lineage, the optional PII/business fields and `_extra`), the same in every
    export that re-reads the row's day (docs/decisions.md). Null and omitted are one: the APIs omit empty keys."""
    content = {
        name: value
        for name, value in record.items()
        if value is not None
        and name not in LINEAGE_FIELDS
        and name not in OPTIONAL_ROW_FIELDS
        and name not in ("_extra", "row_key")
    }
    canonical = json.dumps([feed_id, content], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class ContactBasedOptions:
    """The settings of the ContactBased streams, read once (the SDK hands config numbers over as Decimal)."""

    feed_ids: tuple[str, ...]  # empty: every feed of the organization
    lookback_days: int | None  # first run; None: the feed's cap
    get_pii: bool
    include_business_info: bool
    require_contact_id: bool
    max_rows: int | None
    poll_interval: float
    job_timeout: float
    enrichment_sections: tuple[str, ...]
    enrichment_batch_size: int

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> ContactBasedOptions:
        return cls(
            feed_ids=tuple(config.get("intent_feed_ids") or ()),
            lookback_days=int(config["intent_lookback_days"]) if config.get("intent_lookback_days") else None,
            get_pii=bool(config.get("intent_get_pii")),
            include_business_info=bool(config.get("intent_include_business_info")),
            require_contact_id=bool(config.get("intent_require_contact_id")),
            max_rows=int(config["intent_max_rows"]) if config.get("intent_max_rows") else None,
            poll_interval=float(config["job_poll_interval_seconds"]),
            job_timeout=float(config["job_timeout_seconds"]),
            enrichment_sections=tuple(config.get("enrichment_sections") or ENRICHMENT_SECTIONS),
            enrichment_batch_size=int(config["enrichment_batch_size"]),
        )


class IntentFeeds:
    """Search → export → pages of the configured intent feeds.

    A *flight* is the dict of one window in progress (search job_id, window, counts; then export id, pages),
    kept by the stream in state (docs/state.md) so an interrupted run resumes without spending quota again."""

    def __init__(self, api: ApiClient, options: ContactBasedOptions, clock: Clock, log: logging.Logger) -> None:
        self.api = api
        self.options = options
        self.clock = clock
        self.log = log
        self.caps = FeedCaps(api, options.lookback_days, clock, log)
        self.exports = FeedExports(api, options, clock, log)
        self.made_this_run: set[str] = set()
        """Exports made or adopted by this run: their layout is fresh; a flight's from state is refreshed."""

    def feeds(self) -> list[dict]:
        """The configured feeds (default: all), with their options, cap and quota; checked before any search."""
        body = self.api.request_json("GET", "/organization/feeds")
        listed = unwrap_list(body, "ContactBased GET /organization/feeds")
        by_id = {str(feed.get("feed_id") or feed.get("id")): feed for feed in listed}
        wanted = list(self.options.feed_ids) or list(by_id)
        unknown = [feed_id for feed_id in wanted if feed_id not in by_id]
        if unknown:
            raise TapBackstoryError(
                f"intent_feed_ids: {', '.join(unknown)} is not a feed of this organization "
                f"(GET /organization/feeds lists {', '.join(by_id) or 'none'})"
            )
        for feed_id in wanted:
            for setting, asked, option in (
                ("intent_get_pii", self.options.get_pii, "allow_pii"),
                ("intent_include_business_info", self.options.include_business_info, "allow_business_info"),
            ):
                if asked and not by_id[feed_id].get(option, True):
                    raise TapBackstoryError(
                        f"{setting} is set, but intent feed {feed_id} does not allow it ({option} is false)"
                    )
        return [{**by_id[feed_id], "feed_id": feed_id} for feed_id in wanted]

    def lookback_days(self, feed: dict, last_window_end: str | None) -> int:
        """The days the next search asks for (see `FeedCaps.wanted_days`)."""
        return self.caps.wanted_days(feed, last_window_end)

    def search(self, feed: dict, last_window_end: str | None) -> dict:
        """Search the next window: the new flight. Without a listed cap, a 403 teaches the cap (`FeedCaps`)."""
        feed_id, cap = feed["feed_id"], lookback_cap(feed)
        lookback = wanted = self.caps.wanted_days(feed, last_window_end)
        probe = self.caps.is_probe(feed, last_window_end)
        if cap is None:
            self.log.info(
                "intent feed %s: the feed lists no lookback cap (none of %s); searching %d days%s",
                feed_id,
                ", ".join(LOOKBACK_CAP_KEYS),
                lookback,
                " (a probe: the server's answer tells the cap)" if probe else "",
            )
        try:
            search = self._post_search(feed_id, lookback)
        except ApiError as exc:
            if exc.status != 403 or cap is not None:
                raise
            lookback = self.caps.learn_cap(feed_id, lookback, exc)
            if not probe:
                self.caps.warn_left_out(feed_id, wanted, lookback, "the server allows at most", last_window_end)
            search = self._post_search(feed_id, lookback)
        if not isinstance(search, dict) or search.get("job_id") is None:
            raise DataError(f"intent feed {feed_id}: POST /intent/feeds/search answered without a job_id")
        answered = int(search.get("lookback_days") or lookback)
        if answered < lookback and not probe:  # a server that shortens the window instead of refusing it
            self.caps.warn_left_out(feed_id, lookback, answered, "the search's answer covers only", last_window_end)
        window = lookback_window(self.clock.today(), answered)  # if the answer does not name its dates
        total = int(search.get("total_records") or 0)
        with_id = search.get("records_with_contact_id", search.get("records_with_cb_id"))
        flight = {
            "job_id": str(search["job_id"]),
            "window_start": search.get("start_date") or window.start.isoformat(),
            "window_end": search.get("end_date") or window.end.isoformat(),
            "total_records": total,
            "records_with_contact_id": total if with_id is None else int(with_id),
        }
        path_segment(flight["job_id"], f"intent feed {feed_id}: search job_id")  # no control characters
        self.log.info(
            "intent feed %s: window %s..%s (%s): %d rows found, %d with a contact_id; export quota remaining: %s",
            feed_id,
            flight["window_start"],
            flight["window_end"],
            plural(answered, "day"),
            total,
            flight["records_with_contact_id"],
            quota_remaining(feed),
        )
        return flight

    def _post_search(self, feed_id: str, lookback: int) -> dict:
        body = {"feed_id": feed_id, "lookback_days": lookback}
        return self.api.request_json("POST", "/intent/feeds/search", json=body)

    def check_quota(self, feed: dict, flight: dict) -> None:
        self.exports.check_quota(feed, flight)

    def export(self, feed: dict, flight: dict, *, resumed: bool) -> dict:
        export = self.exports.export(feed, flight, resumed=resumed)
        self.made_this_run.add(export["export_id"])
        return export

    def pages(self, feed_id: str, flight: dict) -> t.Iterator[tuple[int, list[dict]]]:
        """(page number, rows) of the flight's export, from its `next_page` on, each page checked against the
        export's layout. An export the server says is gone (404/410) is made again from the flight's saved
        search, once per run, and read on from the same page (the flight is updated in place)."""
        page = first_page = flight["next_page"]
        made_again = False
        refresh = flight["export_id"] not in self.made_this_run
        while page <= flight["total_pages"] or refresh:
            export_id = flight["export_id"]
            try:
                if refresh:  # a flight resumed from state: its export as the server describes it now
                    refresh, page = False, self.exports.refresh(feed_id, flight, page)
                    continue
                body = self.api.request(
                    "POST", "/intent/feeds/exports/page", json={"export_id": export_id, "page": page}
                )
            except ApiError as exc:
                if exc.status not in (404, 410) or made_again:
                    raise
                made_again = True
                page = self._export_gone(feed_id, flight, page, first_page, exc)
                continue
            where = f"ContactBased POST /intent/feeds/exports/page (export {export_id}, page {page})"
            rows = unwrap_list(read_json(body, where), where)
            check_page(feed_id, flight, page, rows)
            yield page, rows
            self.log.info(
                "intent feed %s: export %s page %d of %d read (%d rows)",
                feed_id,
                export_id,
                page,
                flight["total_pages"],
                len(rows),
            )
            page += 1

    def _export_gone(self, feed_id: str, flight: dict, page: int, first_page: int, gone: ApiError) -> int:
        """Make a gone export again from the flight's saved search; the page to read on from. When the search is
        gone too, a flight that emitted nothing yet in this run searches its window again (rows an earlier run
        emitted come back with the same row_key); one that did fails, and the next run does that instead."""
        read_on = self.exports.make_again(feed_id, flight, gone, page)
        if read_on is not None:
            return read_on
        if page != first_page:
            raise TapBackstoryError(
                f"intent feed {feed_id}: export {flight['export_id']} and its saved search {flight['job_id']} are "
                f"gone ({gone}) after pages {first_page}..{page - 1} were read; the next run searches the window "
                f"{flight['window_start']}..today again"
            )
        feed = self.exports.listed_feed(feed_id)
        self.log.warning(
            "intent feed %s: export %s and its saved search %s are gone (%s); searching the window from %s again "
            "(its new export spends export quota like a first one; the quota guard applies)",
            feed_id,
            flight["export_id"],
            flight["job_id"],
            gone,
            flight["window_start"],
        )
        window_start = flight["window_start"]
        flight.clear()
        flight.update(self.search(feed, window_start))
        flight.update(self.export(feed, flight, resumed=False), next_page=1)
        return 1
