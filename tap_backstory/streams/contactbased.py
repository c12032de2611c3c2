"""ContactBased streams: intent feed exports and batched contact enrichment.

`intent_feed_exports` runs, per feed, search → export → pages 1..total_pages, keeping the search's job_id,
the export id and the next page in state (docs/state.md) so an interrupted run resumes the same export
without spending quota again.

`enriched_contact_records` is its child stream: the parent collects distinct valid contact_ids into a
queue and hands the child one context per full batch (plus the final partial batch at the last record of
the run), so enrichment runs while the export is read and never depends on the SDK's stream order.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import time
import typing as t

from tap_backstory.client import ApiError, TapBackstoryError
from tap_backstory.formats import DataError, unwrap_list
from tap_backstory.streams.base import TapStream
from tap_backstory.tap import ENRICHMENT_SECTIONS
from tap_backstory.windows import plural

if t.TYPE_CHECKING:
    from tap_backstory.client import ApiClient

LOGGER = logging.getLogger("tap-backstory")

BUILDING_STATUSES = frozenset({"building", "pending", "queued", "processing", "running", "in_progress"})
"""ExportSummary `status` values of an export that is not readable yet (a newer API variant builds exports
asynchronously; the documented one has no `status` and is readable at once)."""
CONTACT_ID = re.compile(r"^id_[0-9a-f]{16}$|^cb_[0-9A-Za-z]+$")  # documented form, legacy `cb_` accepted


class Progress(t.NamedTuple):
    """A state change that claims records as done; applied only once those records have been emitted."""

    apply: t.Callable[[], None]


class IntentFeedExportsStream(TapStream):
    """Rows of intent feed exports, with lineage (feed, export, page, row number, window)."""

    name = "intent_feed_exports"
    sync_description = "incremental: each feed's window after its bookmark (docs/state.md)"
    primary_keys = ("export_id", "row_number")

    @property
    def api(self) -> ApiClient:
        return self.tap.contactbased_api

    # --- records, with one record of look-ahead ---------------------------------------------------------
    def get_records(self, context: dict | None) -> t.Iterator[dict]:
        """Rows of every feed. One record is held back so the last record of the run is known: it flushes
        the final partial enrichment batch (`generate_child_contexts`). Progress (next page, finished
        window) is applied only after the held record went out, so no STATE ever claims an unsent row.
        Reservations (a search's job_id, an export's id) are checkpointed at once: they claim no row, and
        losing them would make a resumed run search or export again."""
        self._last_record: dict | None = None
        held: dict | None = None
        deferred: list[Progress] = []
        for item in self._rows_and_progress():
            if isinstance(item, Progress):
                if held is None:
                    item.apply()
                else:
                    deferred.append(item)
                continue
            if held is not None:
                yield held
                self._apply(deferred)
            held = item
        if held is not None:
            self._last_record = held
            yield held
        self._apply(deferred)
        if self.enrichment is not None:
            self.enrichment.queue.warn_malformed()

    @staticmethod
    def _apply(deferred: list[Progress]) -> None:
        for progress in deferred:
            progress.apply()
        deferred.clear()

    def _rows_and_progress(self) -> t.Iterator[dict | Progress]:
        if self.tap.connection_test:  # `--test`, `meltano config tap-backstory test`
            self._preview_feeds()
            return
        for feed in self._feeds():
            yield from self._feed_rows(feed)

    def _preview_feeds(self) -> None:
        """A connection test checks the key, the feeds and their options, and previews each window; it makes
        no search and no export, because an export spends quota and a test run keeps no state to reuse it."""
        for feed in self._feeds():
            feed_state = self.bookmarks.get("feeds", {}).get(feed["feed_id"], {})
            body = {"feed_id": feed["feed_id"], "lookback_days": self._lookback_days(feed, feed_state)}
            preview = self.api.request("POST", "/intent/feeds/preview", json=body).json()
            LOGGER.info(
                "intent feed %s: connection test: %s rows in the window %s..%s; no export made (it would spend quota)",
                feed["feed_id"],
                preview.get("total_records"),
                preview.get("start_date"),
                preview.get("end_date"),
            )

    # --- feeds, windows, quota --------------------------------------------------------------------------
    def _feeds(self) -> list[dict]:
        """The configured feeds (default: all), with their options, cap and quota; checked before any search."""
        body = self.api.request("GET", "/organization/feeds").json()
        listed = unwrap_list(body, "ContactBased GET /organization/feeds")
        by_id = {str(feed.get("feed_id") or feed.get("id")): feed for feed in listed}
        wanted = self.config.get("intent_feed_ids") or list(by_id)
        unknown = [feed_id for feed_id in wanted if feed_id not in by_id]
        if unknown:
            raise TapBackstoryError(
                f"intent_feed_ids: {', '.join(unknown)} is not a feed of this organization "
                f"(GET /organization/feeds lists {', '.join(by_id) or 'none'})"
            )
        for feed_id in wanted:
            for setting, option in (
                ("intent_get_pii", "allow_pii"),
                ("intent_include_business_info", "allow_business_info"),
            ):
                if self.config.get(setting) and not by_id[feed_id].get(option, True):
                    raise TapBackstoryError(
                        f"{setting} is set, but intent feed {feed_id} does not allow it ({option} is false)"
                    )
        return [{**by_id[feed_id], "feed_id": feed_id} for feed_id in wanted]

    def _lookback_days(self, feed: dict, feed_state: dict) -> int:
        """First run: `intent_lookback_days` (default the cap); later runs: last window's end day (inclusive,
        it was only partly over when read) through today. Never more than the feed's cap."""
        feed_id, cap = feed["feed_id"], int(feed["lookback_days"])
        today = self.tap.clock.today()
        last_end = feed_state.get("last_window_end")
        if last_end is None:
            wanted = self.config.get("intent_lookback_days") or cap
            if wanted > cap:
                LOGGER.warning(
                    "intent feed %s: intent_lookback_days %d exceeds the feed's cap; using %d days",
                    feed_id,
                    wanted,
                    cap,
                )
        else:
            wanted = max(1, (today - dt.date.fromisoformat(last_end)).days + 1)
            if wanted > cap:
                lost_until = today - dt.timedelta(days=cap)
                LOGGER.warning(
                    "intent feed %s: the last window ended %s, %d days ago, but the feed looks back at most %d days: "
                    "days %s..%s can no longer be fetched",
                    feed_id,
                    last_end,
                    wanted - 1,
                    cap,
                    last_end,
                    lost_until.isoformat(),
                )
        return min(wanted, cap)

    def _check_quota(self, feed: dict, flight: dict) -> None:
        """Never spend quota silently: refuse an export larger than what remains, unless intent_max_rows caps it."""
        remaining = feed.get("export_rows_remaining")
        if remaining is None:  # uncapped feed
            return
        key = "records_with_contact_id" if self.config.get("intent_require_contact_id") else "total_records"
        rows = flight[key]
        if self.config.get("intent_max_rows"):
            rows = min(rows, self.config["intent_max_rows"])
        if rows > remaining:
            raise TapBackstoryError(
                f"intent feed {feed['feed_id']}: the export of window {flight['window_start']}..{flight['window_end']} "
                f"needs {rows} rows of export quota but only {remaining} remain (limit {feed.get('export_row_limit')}, "
                f"used {feed.get('export_rows_used')}); set intent_max_rows to at most {remaining} to cap it"
            )

    # --- one feed: search, export, pages ------------------------------------------------------------------
    def _feed_rows(self, feed: dict) -> t.Iterator[dict | Progress]:
        feed_id = feed["feed_id"]
        feed_state = self.bookmarks.setdefault("feeds", {}).setdefault(feed_id, {})
        flight = feed_state.get("in_flight")
        if flight is None:
            flight = feed_state["in_flight"] = self._search(feed, feed_state)
            self.checkpoint()  # the search's job_id: a resumed run exports it instead of searching again
        else:
            LOGGER.info("intent feed %s: resuming window %s..%s", feed_id, flight["window_start"], flight["window_end"])
        if "export_id" not in flight:
            self._check_quota(feed, flight)
            flight.update(self._create_export(feed, flight), next_page=1)
            self.checkpoint()  # the export id: a resumed run reads the same export (no quota spent again)
        yield from self._pages(feed_id, flight)

        def finish() -> None:
            feed_state.pop("in_flight")
            feed_state.update(last_window_start=flight["window_start"], last_window_end=flight["window_end"])
            self.checkpoint()

        yield Progress(finish)

    def _search(self, feed: dict, feed_state: dict) -> dict:
        feed_id = feed["feed_id"]
        lookback = self._lookback_days(feed, feed_state)
        body = {"feed_id": feed_id, "lookback_days": lookback}
        search = self.api.request("POST", "/intent/feeds/search", json=body).json()
        today = self.tap.clock.today()
        total = int(search.get("total_records") or 0)
        with_id = search.get("records_with_contact_id", search.get("records_with_cb_id"))
        flight = {
            "job_id": search["job_id"],
            "window_start": search.get("start_date") or (today - dt.timedelta(days=lookback - 1)).isoformat(),
            "window_end": search.get("end_date") or today.isoformat(),
            "total_records": total,
            "records_with_contact_id": total if with_id is None else int(with_id),
        }
        LOGGER.info(
            "intent feed %s: window %s..%s (%s): %d rows found, %d with a contact_id; export quota remaining: %s",
            feed_id,
            flight["window_start"],
            flight["window_end"],
            plural(lookback, "day"),
            total,
            flight["records_with_contact_id"],
            "no cap" if feed.get("export_rows_remaining") is None else feed["export_rows_remaining"],
        )
        return flight

    def _create_export(self, feed: dict, flight: dict) -> dict:
        body = {
            "job_id": flight["job_id"],
            "get_pii": bool(self.config.get("intent_get_pii")),
            "include_business_info": bool(self.config.get("intent_include_business_info")),
            "require_contact_id": bool(self.config.get("intent_require_contact_id")),
        }
        if self.config.get("intent_max_rows"):
            body["max_rows"] = self.config["intent_max_rows"]
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
        LOGGER.info(
            "intent feed %s: export %s holds %s rows in %d pages",
            feed["feed_id"],
            export["export_id"],
            summary.get("total_rows"),
            export["total_pages"],
        )
        return export

    def _wait_until_built(self, feed_id: str, summary: dict) -> dict:
        """Poll `/exports/get` while the export says it is still building (interval and time-out: the
        job_poll_interval_seconds and job_timeout_seconds settings)."""
        interval = float(self.config["job_poll_interval_seconds"])
        deadline = time.monotonic() + float(self.config["job_timeout_seconds"])
        while str(summary.get("status") or "").lower() in BUILDING_STATUSES:
            if time.monotonic() > deadline:
                raise TapBackstoryError(
                    f"intent feed {feed_id}: export {summary['export_id']} was still {summary['status']} after "
                    f"job_timeout_seconds={self.config['job_timeout_seconds']}"
                )
            LOGGER.info("intent feed %s: export %s is %s; waiting %.1fs", feed_id, summary["export_id"],
                        summary["status"], interval)
            time.sleep(interval)
            interval = min(interval * 1.5, 60.0)
            body = {"export_id": summary["export_id"]}
            summary = self.api.request("POST", "/intent/feeds/exports/get", json=body).json()
        if str(summary.get("status") or "").lower() == "failed":
            raise TapBackstoryError(f"intent feed {feed_id}: export {summary['export_id']} failed on the server side")
        return summary

    def _pages(self, feed_id: str, flight: dict) -> t.Iterator[dict | Progress]:
        export_id, total_pages, page_size = flight["export_id"], flight["total_pages"], flight["page_size"]
        for page in range(flight["next_page"], total_pages + 1):
            where = f"POST /intent/feeds/exports/page (export {export_id}, page {page})"
            body = self.api.request("POST", "/intent/feeds/exports/page", json={"export_id": export_id, "page": page})
            rows = unwrap_list(body.json(), f"ContactBased {where}")
            for index, row in enumerate(rows):
                record = self.shaper.shape(row)
                record.update(
                    feed_id=feed_id,
                    export_id=export_id,
                    page=page,
                    row_number=(page - 1) * page_size + index + 1,
                    window_start=flight["window_start"],
                    window_end=flight["window_end"],
                )
                yield record
            LOGGER.info(
                "intent feed %s: export %s page %d of %d read (%d rows)",
                feed_id,
                export_id,
                page,
                total_pages,
                len(rows),
            )
            yield Progress(functools.partial(self._page_done, flight, page + 1))

    def _page_done(self, flight: dict, next_page: int) -> None:
        flight["next_page"] = next_page
        self.checkpoint()

    # --- enrichment hand-off ------------------------------------------------------------------------------
    @property
    def enrichment(self) -> EnrichedContactRecordsStream | None:
        """The enrichment child, when it (or a descendant) is selected."""
        for child in self.child_streams:
            if isinstance(child, EnrichedContactRecordsStream) and (child.selected or child.has_selected_descendents):
                return child
        return None

    def generate_child_contexts(self, record: dict, context: dict | None) -> t.Iterable[dict]:
        """One child context per full batch of new contact_ids, and the rest at the run's last record.

        The context only numbers the batch; the child takes the ids from its queue when it runs."""
        if self.enrichment is None:
            return
        queue = self.enrichment.queue
        queue.add(record.get("contact_id"))
        for _ in range(queue.batches_ready(final=record is self._last_record)):
            yield {"enrichment_batch": queue.next_batch_number()}


class ContactIdQueue:
    """Distinct valid contact_ids waiting for enrichment.

    `pending` is a list inside the child's state: ids of rows already emitted but not enriched yet survive an
    interrupted run. `seen` deduplicates across pages and feeds within a run."""

    def __init__(self, pending: list[str], batch_size: int) -> None:
        self.pending = pending
        self.batch_size = batch_size
        self.seen = set(pending)
        self.batches = 0
        self.malformed: set[str] = set()

    def add(self, contact_id: t.Any) -> None:
        if contact_id is None or contact_id in self.seen:
            return
        if not isinstance(contact_id, str) or not CONTACT_ID.match(contact_id):
            self.malformed.add(repr(contact_id))
            return
        self.seen.add(contact_id)
        self.pending.append(contact_id)

    def batches_ready(self, *, final: bool) -> int:
        full, rest = divmod(len(self.pending), self.batch_size)
        return full + (1 if final and rest else 0)

    def next_batch_number(self) -> int:
        self.batches += 1
        return self.batches

    def warn_malformed(self) -> None:
        if self.malformed:
            LOGGER.warning(
                "enriched_contact_records: skipped %d distinct malformed contact_id values (e.g. %s); they were "
                "not sent for enrichment",
                len(self.malformed),
                min(self.malformed),
            )
            self.malformed.clear()


class EnrichedContactRecordsStream(TapStream):
    """One enrichment envelope per distinct contact_id read by `intent_feed_exports`."""

    name = "enriched_contact_records"
    sync_description = "the contact ids read by intent_feed_exports, each enriched once"
    primary_keys = ("contact_id",)
    parent_stream_type = IntentFeedExportsStream
    state_partitioning_keys: list[str] = []  # one bookmark, not one per batch context

    @property
    def api(self) -> ApiClient:
        return self.tap.contactbased_api

    @functools.cached_property
    def queue(self) -> ContactIdQueue:
        return ContactIdQueue(
            self.bookmarks.setdefault("pending_contact_ids", []), self.config["enrichment_batch_size"]
        )

    @functools.cached_property
    def sections(self) -> list[str]:
        return list(self.config.get("enrichment_sections") or ENRICHMENT_SECTIONS)

    @functools.cached_property
    def ids_per_request(self) -> int:
        """The batch size, lowered for the rest of the run by each 413 (assigned in `_enrich`)."""
        return self.config["enrichment_batch_size"]

    def get_records(self, context: dict | None) -> t.Iterator[dict]:
        batch = self.queue.pending[: self.queue.batch_size]
        for contact_id, envelope in self._enrich(batch):
            yield self.shaper.shape(envelope_record(contact_id, envelope))
        # Only now, with every envelope of the batch emitted, do the ids leave the state's pending list.
        del self.queue.pending[: len(batch)]

    def _enrich(self, ids: list[str]) -> t.Iterator[tuple[str, dict]]:
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
                LOGGER.warning(
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
