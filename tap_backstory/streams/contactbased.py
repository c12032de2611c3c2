"""ContactBased streams: intent feed exports and batched contact enrichment, on the engine in `tap_backstory.intent`.

`intent_feed_exports` runs, per feed, search → export → pages 1..total_pages (`IntentFeeds`), keeping the
search's job_id, the export id and the next page in state (docs/state.md) so an interrupted run resumes the
same export without spending quota again. Here: that state, checkpoints, and the lineage of each row.

`enriched_contact_records` is its child stream: the parent collects distinct valid contact_ids into a
queue and hands the child one context per full batch (plus the final partial batch at the last record of
the run), so enrichment runs while the export is read and never depends on the SDK's stream order.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import typing as t

from tap_backstory.client import TapBackstoryError
from tap_backstory.intent import (
    ContactBasedOptions,
    ContactEnricher,
    IntentFeeds,
    envelope_record,
    is_contact_id,
    row_key,
)
from tap_backstory.streams.base import TapStream

LOGGER = logging.getLogger("tap-backstory")


@contextlib.contextmanager
def named_errors(stream: str, where: str = "") -> t.Iterator[None]:
    """Every error line names the stream, and for an intent feed the feed: `<stream>: intent feed <id>: ...`
    (the engine's own messages often name the feed already; it is not named twice)."""
    try:
        yield
    except TapBackstoryError as exc:
        message = str(exc)
        if where and not message.startswith(where):
            message = f"{where}: {message}"
        if not message.startswith(f"{stream}:"):
            message = f"{stream}: {message}"
        exc.args = (message,)
        raise


class Progress(t.NamedTuple):
    """A state change that claims records as done; applied only once those records have been emitted."""

    apply: t.Callable[[], None]


class IntentFeedExportsStream(TapStream):
    """Rows of intent feed exports, with lineage (feed, export, page, row number, window), keyed by content."""

    name = "intent_feed_exports"
    sync_description = "incremental: each feed's window after its bookmark (docs/state.md)"
    primary_keys = ("row_key",)  # not (export_id, row_number): the re-read day comes back in a new export

    @functools.cached_property
    def intent(self) -> IntentFeeds:
        return IntentFeeds(
            self.tap.contactbased_api, ContactBasedOptions.from_config(self.config), self.tap.clock, LOGGER
        )

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
        with named_errors(self.name):
            feeds = self.intent.feeds()
        for feed in feeds:
            with named_errors(self.name, f"intent feed {feed['feed_id']}"):
                yield from self._feed_rows(feed)

    # --- one feed: search, export, pages (state kept after each step) -----------------------------------
    def _feed_rows(self, feed: dict) -> t.Iterator[dict | Progress]:
        feed_id = feed["feed_id"]
        feed_state = self.bookmarks.setdefault("feeds", {}).setdefault(feed_id, {})
        flight = feed_state.get("in_flight")
        resumed = flight is not None
        if flight is None:
            flight = feed_state["in_flight"] = self.intent.search(feed, feed_state.get("last_window_end"))
            self.checkpoint()  # the search's job_id: a resumed run exports it instead of searching again
        else:
            LOGGER.info("intent feed %s: resuming window %s..%s", feed_id, flight["window_start"], flight["window_end"])
        if "export_id" not in flight:
            flight.update(self.intent.export(feed, flight, resumed=resumed), next_page=1)
            self.checkpoint()  # the export id: a resumed run reads the same export (no quota spent again)
        overlap = OverlapCount(feed_state.get("last_window_end"))
        for page, rows in self.intent.pages(feed_id, flight):
            for record in self._records(feed_id, flight, page, rows):
                overlap.add(record)
                yield record
            yield Progress(functools.partial(self._page_done, flight, page + 1))
        overlap.log(feed)

        def finish() -> None:
            feed_state.pop("in_flight")
            feed_state.update(last_window_start=flight["window_start"], last_window_end=flight["window_end"])
            self.checkpoint()

        yield Progress(finish)

    def _records(self, feed_id: str, flight: dict, page: int, rows: list[dict]) -> t.Iterator[dict]:
        """A page's rows, shaped, with their lineage: row_number counts from 1 across the whole export."""
        first_row_number = (page - 1) * flight["page_size"] + 1
        for index, row in enumerate(rows):
            record = self.shaper.shape(row)
            record.update(
                row_key=row_key(feed_id, record),
                feed_id=feed_id,
                export_id=flight["export_id"],
                page=page,
                row_number=first_row_number + index,
                window_start=flight["window_start"],
                window_end=flight["window_end"],
            )
            yield record

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


class OverlapCount:
    """Rows of the day a later run reads again (the last window's end day): their cost, for the log."""

    def __init__(self, overlap_day: str | None) -> None:
        self.overlap_day = overlap_day  # None: first window, nothing re-read
        self.rows = 0
        self.undated = 0

    def add(self, record: dict) -> None:
        if self.overlap_day is None:
            return
        signal_date = record.get("signal_date")
        if signal_date is None:
            self.undated += 1
        elif signal_date == self.overlap_day:
            self.rows += 1

    def log(self, feed: dict) -> None:
        if self.overlap_day is None:
            return
        feed_id = feed["feed_id"]
        quota = (
            "no quota: the feed is uncapped"
            if feed.get("export_row_limit") is None and feed.get("export_rows_remaining") is None
            else f"{self.rows} rows of export quota"
        )
        LOGGER.info(
            "intent feed %s: %d rows (%s) came from the re-read day %s, already read by the last run; "
            "their row_key keeps them once in the target",
            feed_id,
            self.rows,
            quota,
            self.overlap_day,
        )
        if self.undated:
            LOGGER.info(
                "intent feed %s: %d rows carry no signal_date, so whether they came from the re-read day %s "
                "is unknown",
                feed_id,
                self.undated,
                self.overlap_day,
            )


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
        if not is_contact_id(contact_id):
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

    @functools.cached_property
    def enricher(self) -> ContactEnricher:
        """One for the run: a 413 lowers its request size for every later batch."""
        options = ContactBasedOptions.from_config(self.config)
        return ContactEnricher(self.tap.contactbased_api, options, self.tap.clock, LOGGER)

    @functools.cached_property
    def queue(self) -> ContactIdQueue:
        return ContactIdQueue(
            self.bookmarks.setdefault("pending_contact_ids", []), self.config["enrichment_batch_size"]
        )

    def get_records(self, context: dict | None) -> t.Iterator[dict]:
        batch = self.queue.pending[: self.queue.batch_size]
        with named_errors(self.name):
            for contact_id, envelope in self.enricher.enrich(batch):
                yield self.shaper.shape(envelope_record(contact_id, envelope))
        # Only now, with every envelope of the batch emitted, do the ids leave the state's pending list.
        del self.queue.pending[: len(batch)]
