"""Intent exports: creation (within the quota guard), adoption of an export an interrupted run made, waiting
while one builds, and making a gone export again from its saved search. No Singer inside."""

from __future__ import annotations

import logging
import typing as t

from tap_backstory.client import ApiClient, ApiError, TapBackstoryError, one_line, read_json
from tap_backstory.formats import unwrap_list
from tap_backstory.intent_caps import quota_remaining
from tap_backstory.intent_pages import export_layout
from tap_backstory.polling import PollSchedule
from tap_backstory.windows import Clock

if t.TYPE_CHECKING:
    from tap_backstory.intent import ContactBasedOptions

BUILDING_STATUSES = frozenset({"building", "pending", "queued", "processing", "running", "in_progress"})
"""ExportSummary `status` values of an export that is not readable yet (a newer API variant builds exports
asynchronously; the documented one has no `status` and is readable at once)."""
EXPORT_LIST_KEYS = ("exports", "items", "data", "results")
"""Where `POST /intent/feeds/exports/list` may put its ExportSummaries (the docs do not show the envelope)."""


class FeedExports:
    """The export of each flight's saved search (a *flight*: see `intent.IntentFeeds`)."""

    def __init__(self, api: ApiClient, options: ContactBasedOptions, clock: Clock, log: logging.Logger) -> None:
        self.api = api
        self.options = options
        self.clock = clock
        self.log = log

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

    def export(self, feed: dict, flight: dict, *, resumed: bool) -> dict:
        """Export the flight's search and wait until it is readable: its id, pages and page size.

        A resumed flight may already have its export: the run before was killed after asking for it and before
        its id reached state. That export is reused (found in the search's export list) rather than a second one
        made: free either way by the docs, but one export per search is what the state promises."""
        body = self._export_body(flight)
        summary = self._export_made_before(feed, flight, body) if resumed else None
        if summary is None:
            self.check_quota(feed, flight)
            summary = self._create_export(feed, flight, body)
        summary = self._wait_until_built(feed["feed_id"], summary)
        export = export_layout(feed["feed_id"], summary, self.log)
        self.log.info(
            "intent feed %s: export %s holds %s rows in %d pages",
            feed["feed_id"],
            export["export_id"],
            summary.get("total_rows"),
            export["total_pages"],
        )
        return export

    def _export_body(self, flight: dict) -> dict:
        body: dict[str, t.Any] = {
            "job_id": flight["job_id"],
            "get_pii": self.options.get_pii,
            "include_business_info": self.options.include_business_info,
            "require_contact_id": self.options.require_contact_id,
        }
        if self.options.max_rows:
            body["max_rows"] = self.options.max_rows
        return body

    def _create_export(self, feed: dict, flight: dict, body: dict) -> dict:
        """POST the export (spends quota); a 403 becomes one line with the window and the numbers."""
        try:
            return self.api.request_json("POST", "/intent/feeds/exports", json=body)
        except ApiError as exc:
            if exc.status != 403:
                raise
            raise TapBackstoryError(
                f"intent feed {feed['feed_id']}: the export of window {flight['window_start']}..{flight['window_end']} "
                f"({flight['total_records']} rows found, {quota_remaining(feed)} rows of quota remaining) "
                f"was refused: {exc}"
            ) from None

    def _export_made_before(self, feed: dict, flight: dict, body: dict) -> dict | None:
        """An export of this search with these options, listed by `POST /intent/feeds/exports/list`, or None."""
        try:
            listed = self.api.request("POST", "/intent/feeds/exports/list", json={"job_id": flight["job_id"]})
            where = "ContactBased POST /intent/feeds/exports/list"
            exports = unwrap_list(read_json(listed, where), where, EXPORT_LIST_KEYS)
        except (TapBackstoryError, ValueError) as exc:  # not listable: make the export, as on a first run
            self.log.warning(
                "intent feed %s: could not list the exports of search %s (%s)",
                feed["feed_id"],
                flight["job_id"],
                one_line(exc),
            )
            return None
        max_rows = body.get("max_rows")
        for summary in exports:
            if (
                isinstance(summary, dict)
                and str(summary.get("job_id")) == str(flight["job_id"])
                and summary.get("export_id") is not None
                # Options are compared where the summary echoes them; a row cap, by the rows it holds.
                and all(summary.get(key, value) == value for key, value in body.items() if key != "max_rows")
                and (max_rows is None or int(summary.get("total_rows") or 0) <= max_rows)
            ):
                self.log.info(
                    "intent feed %s: reusing export %s of search %s, made by the interrupted run (no quota spent)",
                    feed["feed_id"],
                    summary["export_id"],
                    flight["job_id"],
                )
                return summary
        return None

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
            summary = self.api.request_json("POST", "/intent/feeds/exports/get", json=body)
        if str(summary.get("status") or "").lower() == "failed":
            raise TapBackstoryError(f"intent feed {feed_id}: export {summary['export_id']} failed on the server side")
        return summary

    def make_again(self, feed_id: str, flight: dict, gone: ApiError, page: int) -> int | None:
        """Make a gone export again from the flight's saved search (the flight is updated in place): the page to
        read on from, or None when the search is gone too. The docs say a second export of a search costs no
        quota: the quota guard runs all the same, and what the feed's quota says before and after is logged."""
        self.log.warning(
            "intent feed %s: export %s is gone (%s); making it again from its saved search %s",
            feed_id,
            flight["export_id"],
            gone,
            flight["job_id"],
        )
        feed = self.listed_feed(feed_id)
        self.check_quota(feed, flight)
        try:
            summary = self._create_export(feed, flight, self._export_body(flight))
        except ApiError as exc:
            if exc.status in (404, 410):
                return None
            raise
        layout = export_layout(feed_id, self._wait_until_built(feed_id, summary), self.log)
        before, after = feed.get("export_rows_remaining"), self.listed_feed(feed_id).get("export_rows_remaining")
        if before is not None and after is not None and after < before:
            self.log.warning(
                "intent feed %s: making export %s again charged %d rows of export quota (%d remain)",
                feed_id, layout["export_id"], before - after, after,
            )  # fmt: skip
        else:
            self.log.info("intent feed %s: export %s made again; no export quota charged", feed_id, layout["export_id"])
        return self.adopt_layout(feed_id, flight, layout, page)

    def refresh(self, feed_id: str, flight: dict, page: int) -> int:
        """A resumed flight's export as the server describes it now (`/exports/get`): a layout stored by an
        earlier run is not trusted over it. The page to read on from."""
        summary = self.api.request_json("POST", "/intent/feeds/exports/get", json={"export_id": flight["export_id"]})
        return self.adopt_layout(feed_id, flight, export_layout(feed_id, summary, self.log), page)

    def adopt_layout(self, feed_id: str, flight: dict, layout: dict, page: int) -> int:
        """Take `layout` into the flight; read on from `page` when its rows sit where the old layout put them,
        else from page 1 (rows already read come again, with the same row_key)."""
        old_rows, old_size = flight.get("total_rows"), flight["page_size"]
        rows_differ = None not in (old_rows, layout["total_rows"]) and old_rows != layout["total_rows"]
        flight.update(layout)
        if layout["page_size"] == old_size and not rows_differ:
            return page
        self.log.warning(
            "intent feed %s: export %s is laid out unlike before (%s rows, %d a page; was %s, %d): reading it "
            "from page 1 (rows already read come again with the same row_key)",
            feed_id, layout["export_id"], layout["total_rows"], layout["page_size"], old_rows, old_size,
        )  # fmt: skip
        return 1

    def listed_feed(self, feed_id: str) -> dict:
        """The feed as `GET /organization/feeds` lists it now (fresh quota numbers)."""
        body = self.api.request_json("GET", "/organization/feeds")
        listed = unwrap_list(body, "ContactBased GET /organization/feeds")
        for feed in listed:
            if isinstance(feed, dict) and str(feed.get("feed_id") or feed.get("id")) == feed_id:
                return {**feed, "feed_id": feed_id}
        raise TapBackstoryError(f"intent feed {feed_id}: GET /organization/feeds no longer lists it")
