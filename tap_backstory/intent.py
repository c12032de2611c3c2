"""ContactBased intent feeds and contact enrichment, with no Singer inside.

`IntentFeeds` does, per feed: listing and validation of the configured feeds, the lookback of the next window
(dates in `windows.py`), search, quota guard, export creation (waiting while it builds, on the one
`polling.PollSchedule`) and its pages. `ContactEnricher` sends batches of contact_ids for enrichment. The
streams (`streams/contactbased.py`) keep the Singer side: state, checkpoints, lineage fields and shaping.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import typing as t

from tap_backstory.client import ApiClient, ApiError, TapBackstoryError
from tap_backstory.formats import DataError, unwrap_list
from tap_backstory.names import ENRICHMENT_SECTIONS
from tap_backstory.polling import PollSchedule
from tap_backstory.windows import Clock, lookback_since, lookback_window, out_of_reach

BUILDING_STATUSES = frozenset({"building", "pending", "queued", "processing", "running", "in_progress"})
"""ExportSummary `status` values of an export that is not readable yet (a newer API variant builds exports
asynchronously; the documented one has no `status` and is readable at once)."""


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

    def feeds(self) -> list[dict]:
        """The configured feeds (default: all), with their options, cap and quota; checked before any search."""
        body = self.api.request("GET", "/organization/feeds").json()
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
        """First run: `intent_lookback_days` (default the cap); later runs: last window's end day (inclusive,
        it was only partly over when read) through today. Never more than the feed's cap."""
        feed_id, cap = feed["feed_id"], int(feed["lookback_days"])
        today = self.clock.today()
        if last_window_end is None:
            wanted = self.options.lookback_days or cap
            if wanted > cap:
                self.log.warning(
                    "intent feed %s: intent_lookback_days %d exceeds the feed's cap; using %d days",
                    feed_id,
                    wanted,
                    cap,
                )
            return min(wanted, cap)
        last_end = dt.date.fromisoformat(last_window_end)
        lost = out_of_reach(last_end, today, cap)
        if lost is not None:
            self.log.warning(
                "intent feed %s: the last window ended %s, %d days ago, but the feed looks back at most %d days: "
                "days %s..%s can no longer be fetched",
                feed_id,
                last_window_end,
                (today - last_end).days,
                cap,
                lost.start.isoformat(),
                lost.end.isoformat(),
            )
        return min(lookback_since(last_end, today), cap)

    def preview(self, feed: dict, last_window_end: str | None) -> dict:
        """The next window's row counts, spending no quota (a connection test makes no search and no export)."""
        body = {"feed_id": feed["feed_id"], "lookback_days": self.lookback_days(feed, last_window_end)}
        return self.api.request("POST", "/intent/feeds/preview", json=body).json()

    def search(self, feed: dict, last_window_end: str | None) -> dict:
        """Search the next window: the new flight."""
        feed_id = feed["feed_id"]
        lookback = self.lookback_days(feed, last_window_end)
        search = self.api.request("POST", "/intent/feeds/search", json={"feed_id": feed_id, "lookback_days": lookback})
        search = search.json()
        window = lookback_window(self.clock.today(), lookback)  # if the answer does not name its dates
        total = int(search.get("total_records") or 0)
        with_id = search.get("records_with_contact_id", search.get("records_with_cb_id"))
        flight = {
            "job_id": search["job_id"],
            "window_start": search.get("start_date") or window.start.isoformat(),
            "window_end": search.get("end_date") or window.end.isoformat(),
            "total_records": total,
            "records_with_contact_id": total if with_id is None else int(with_id),
        }
        self.log.info(
            "intent feed %s: window %s..%s (%d days): %d rows found, %d with a contact_id; export quota remaining: %s",
            feed_id,
            flight["window_start"],
            flight["window_end"],
            lookback,
            total,
            flight["records_with_contact_id"],
            feed.get("export_rows_remaining", "unlimited"),
        )
        return flight

    def check_quota(self, feed: dict, flight: dict) -> None:
        """Never spend quota silently: refuse an export larger than what remains, unless intent_max_rows caps it."""
        remaining = feed.get("export_rows_remaining")
        if remaining is None:  # uncapped feed
            return
        rows = flight["records_with_contact_id" if self.options.require_contact_id else "total_records"]
        if self.options.max_rows:
            rows = min(rows, self.options.max_rows)
        if rows > remaining:
            raise TapBackstoryError(
                f"intent feed {feed['feed_id']}: the export of window {flight['window_start']}..{flight['window_end']} "
                f"needs {rows} rows of export quota but only {remaining} remain (limit {feed.get('export_row_limit')}, "
                f"used {feed.get('export_rows_used')}); set intent_max_rows to at most {remaining} to cap it"
            )

    def create_export(self, feed: dict, flight: dict) -> dict:
        """Export the flight's search (spends quota) and wait until it is readable: its id, pages and page size."""
        body: dict[str, t.Any] = {
            "job_id": flight["job_id"],
            "get_pii": self.options.get_pii,
            "include_business_info": self.options.include_business_info,
            "require_contact_id": self.options.require_contact_id,
        }
        if self.options.max_rows:
            body["max_rows"] = self.options.max_rows
        try:
            summary = self.api.request("POST", "/intent/feeds/exports", json=body).json()
        except ApiError as exc:
            if exc.status != 403:
                raise
            raise TapBackstoryError(
                f"intent feed {feed['feed_id']}: the export of window {flight['window_start']}..{flight['window_end']} "
                f"({flight['total_records']} rows found, {feed.get('export_rows_remaining')} rows of quota remaining) "
                f"was refused: {exc}"
            ) from None
        summary = self._wait_until_built(feed["feed_id"], summary)
        export = {
            "export_id": str(summary["export_id"]),
            "total_pages": int(summary.get("total_pages") or 0),
            "page_size": int(summary["page_size"]),
        }
        self.log.info(
            "intent feed %s: export %s holds %s rows in %d pages",
            feed["feed_id"],
            export["export_id"],
            summary.get("total_rows"),
            export["total_pages"],
        )
        return export

    def _wait_until_built(self, feed_id: str, summary: dict) -> dict:
        """Poll `/exports/get` while the export says it is still building, on the job poll schedule."""
        poll = PollSchedule(self.options.poll_interval, self.options.job_timeout, self.clock)
        while str(summary.get("status") or "").lower() in BUILDING_STATUSES:
            if poll.timed_out:
                raise TapBackstoryError(
                    f"intent feed {feed_id}: export {summary['export_id']} was still {summary['status']} after "
                    f"job_timeout_seconds={self.options.job_timeout:g}"
                )
            self.log.info(
                "intent feed %s: export %s is %s; waiting %.1fs",
                feed_id,
                summary["export_id"],
                summary["status"],
                poll.interval,
            )
            poll.wait()
            body = {"export_id": summary["export_id"]}
            summary = self.api.request("POST", "/intent/feeds/exports/get", json=body).json()
        if str(summary.get("status") or "").lower() == "failed":
            raise TapBackstoryError(f"intent feed {feed_id}: export {summary['export_id']} failed on the server side")
        return summary

    def pages(self, feed_id: str, flight: dict) -> t.Iterator[tuple[int, list[dict]]]:
        """(page number, rows) of the flight's export, from its `next_page` on."""
        export_id, total_pages = flight["export_id"], flight["total_pages"]
        for page in range(flight["next_page"], total_pages + 1):
            where = f"POST /intent/feeds/exports/page (export {export_id}, page {page})"
            body = self.api.request("POST", "/intent/feeds/exports/page", json={"export_id": export_id, "page": page})
            rows = unwrap_list(body.json(), f"ContactBased {where}")
            yield page, rows
            self.log.info(
                "intent feed %s: export %s page %d of %d read (%d rows)",
                feed_id,
                export_id,
                page,
                total_pages,
                len(rows),
            )


class ContactEnricher:
    """`POST /enrich/contacts/batch`: one envelope per contact_id, aligned by index with the ids sent."""

    def __init__(self, api: ApiClient, options: ContactBasedOptions, log: logging.Logger) -> None:
        self.api = api
        self.sections = list(options.enrichment_sections)
        self.ids_per_request = options.enrichment_batch_size  # lowered for the rest of the run by each 413
        self.log = log

    def enrich(self, ids: list[str]) -> t.Iterator[tuple[str, dict]]:
        """(id, envelope) pairs; a 413 halves the request size and retries, down to one id."""
        rest = ids
        while rest:
            chunk = rest[: self.ids_per_request]
            body = {"contact_ids": chunk, "include": self.sections}
            try:
                response = self.api.request("POST", "/enrich/contacts/batch", json=body)
            except ApiError as exc:
                if exc.status != 413 or len(chunk) == 1:
                    raise
                self.ids_per_request = len(chunk) // 2
                self.log.warning(
                    "enriched_contact_records: a batch of %d ids was too large (413); sending %d ids per request",
                    len(chunk),
                    self.ids_per_request,
                )
                continue
            results = unwrap_list(response.json(), "ContactBased POST /enrich/contacts/batch", ("results",))
            if len(results) != len(chunk):
                raise DataError(
                    f"ContactBased POST /enrich/contacts/batch: {len(results)} results for {len(chunk)} contact_ids "
                    "(results must align by index)"
                )
            yield from zip(chunk, results, strict=True)
            rest = rest[len(chunk) :]


def envelope_record(contact_id: str, envelope: dict | None) -> dict:
    """The record of one result, aligned by index with the requested id; empty envelopes count 0 sections."""
    record = dict(envelope or {})
    sent_id = record.setdefault("contact_id", contact_id)
    if sent_id != contact_id:
        raise DataError(
            f"ContactBased POST /enrich/contacts/batch: result for {contact_id} carries contact_id {sent_id} "
            "(results must align by index)"
        )
    if record.get("found_sections") is None:
        record["found_sections"] = sum(record.get(section) is not None for section in ENRICHMENT_SECTIONS)
    return record
