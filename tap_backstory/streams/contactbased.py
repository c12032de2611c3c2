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
import datetime as dt
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
        readers = self._readers(feed_id)
        flight, how = readers.flight_to_resume()
        resumed = flight is not None
        self._warn_uncovered(feed, readers.driver)
        if flight is None:
            after = readers.after()
            flight = {**self.intent.search(feed, after), AFTER: after, READ_FOR: readers.names}
            readers.driver["in_flight"] = flight
            self.checkpoint()  # the search's job_id: a resumed run exports it instead of searching again
        else:
            LOGGER.info("intent feed %s: %s window %s..%s", feed_id, how, flight["window_start"], flight["window_end"])
            if how != RESUMING:
                self.checkpoint()  # the flight as this run reads it (borrowed, or from page 1 again)
        if "export_id" not in flight:
            flight.update(self.intent.export(feed, flight, resumed=resumed), next_page=1)
            self.checkpoint()  # the export id: a resumed run reads the same export (no quota spent again)
        overlap = OverlapCount(flight.get(AFTER, readers.driver.get("last_window_end")))  # older flights lack AFTER
        for page, rows in self.intent.pages(feed_id, flight):
            for record in self._records(feed_id, flight, page, rows):
                overlap.add(record)
                yield record
            yield Progress(functools.partial(self._page_done, flight, page + 1))
        overlap.log(feed)

        def finish() -> None:
            readers.finish(flight, self._row_options())
            self.checkpoint()

        yield Progress(finish)

    def _readers(self, feed_id: str) -> FeedReaders:
        """The per-feed states of the streams this run reads the feed for: this stream's when it is selected,
        the enrichment child's when it is; the other's (unselected) state is only read, never changed."""
        own = self.bookmarks.setdefault("feeds", {}) if self.selected else self.bookmarks.get("feeds", {})
        selected: dict[str, dict] = {}
        unselected: dict[str, dict] = {}
        (selected if self.selected else unselected)[self.name] = (
            own.setdefault(feed_id, {}) if self.selected else own.get(feed_id, {})
        )
        child = self.enrichment
        if child is not None:
            selected[child.name] = child.feed_states(own).setdefault(feed_id, {})
        return FeedReaders(selected, unselected)

    # --- coverage: settings changed between runs (issue 23; docs/state.md) -----------------------------------
    def _row_options(self) -> dict:
        """The settings that decide which rows, and which of their fields, a window's export holds."""
        options = self.intent.options
        return {
            "intent_require_contact_id": options.require_contact_id,
            "intent_get_pii": options.get_pii,
            "intent_include_business_info": options.include_business_info,
        }

    def _warn_uncovered(self, feed: dict, feed_state: dict) -> None:
        """One WARNING per change that asks for rows (or fields) the windows already read did not hold.

        Not fetched: a search always ends today, so reading those days again means exporting every row since
        then once more (quota), and days past the feed's cap are out of reach anyway. The user decides."""
        covered, last_end = feed_state.get("coverage"), feed_state.get("last_window_end")
        if not covered or not last_end:
            return
        feed_id, since = feed["feed_id"], covered["start_date"]
        how = (
            f"to read them again (as far as the feed's lookback reaches, spending export quota), remove "
            f"bookmarks.intent_feed_exports.feeds.{feed_id} from the state"
        )
        added = {
            "intent_require_contact_id": "rows without a contact_id",
            "intent_get_pii": "the PII fields of the rows",
            "intent_include_business_info": "the business-info fields of the rows",
        }
        for setting, now in self._row_options().items():
            wider = not now if setting == "intent_require_contact_id" else now
            if covered.get(setting) is not None and covered[setting] != now and wider:
                LOGGER.warning(
                    "intent feed %s: %s is now %s: %s of %s..%s (read before) are not in any run; %s",
                    feed_id, setting, str(now).lower(), added[setting], since, last_end, how,
                )
        lookback = self.intent.options.lookback_days
        if lookback:
            reaches = self.tap.clock.today() - dt.timedelta(days=lookback - 1)
            if reaches.isoformat() < since:
                LOGGER.warning(
                    "intent feed %s: intent_lookback_days %d reaches back to %s, but it only sets a feed's first "
                    "window, which started %s: the days %s..%s are not read; %s",
                    feed_id, lookback, reaches, since, reaches, dt.date.fromisoformat(since) - dt.timedelta(days=1),
                    how,
                )

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


RESUMING = "resuming"
AFTER = "after_window_end"
"""In a flight: the `last_window_end` its window continues from (null: a first window)."""
READ_FOR = "read_for"
"""In a flight: the streams that got every row of its pages before `next_page`."""


class FeedReaders:
    """The streams one run reads a feed for, each with its own per-feed state (`feeds.<feed_id>` in its stream
    state): `intent_feed_exports` for the rows it emitted, `enriched_contact_records` for the contact ids it got.

    Only a selected stream's state moves (the SDK's rule): a child-only run reads the feed from the child's own
    bookmark and keeps its flight (search job_id, export id, next page) in the child's state, so the parent
    later reads its whole range, and a killed child-only run resumes its export without spending quota again.
    The window starts at the oldest bookmark of the selected streams; each selected stream the window covered
    then moves to its end. The first selected stream (the parent when selected) keeps the flight."""

    def __init__(self, selected: dict[str, dict], unselected: dict[str, dict]) -> None:
        self.selected = selected  # stream name -> its state of this feed, the flight's keeper first
        self.unselected = unselected  # read only: an export it made may be read again for free
        self.names = list(selected)
        self.driver = next(iter(selected.values()))

    def after(self) -> str | None:
        """The bookmark the next window continues from: the oldest of the selected streams' (None: first window)."""
        ends = [state.get("last_window_end") for state in self.selected.values()]
        return None if None in ends else min(ends)

    def flight_to_resume(self) -> tuple[dict | None, str]:
        """The keeper's flight; else an export another stream made for the same window (no quota: read from page
        1); else None (search anew). A flight not read so far for every selected stream is read from page 1."""
        flight = self.driver.get("in_flight")
        if flight is not None:
            missing = [name for name in self.names if name not in flight.get(READ_FOR, self.names)]
            flight[READ_FOR] = self.names
            if missing and flight.get("next_page", 1) > 1:
                flight["next_page"] = 1
                return flight, f"reading again from page 1, for {', '.join(missing)}, the export of"
            return flight, RESUMING
        after = self.after()
        for name, state in {**self.selected, **self.unselected}.items():
            other = state.get("in_flight")
            # A flight written before `after_window_end` existed continued from its window_start.
            if other and "export_id" in other and other.get(AFTER, other["window_start"]) == after:
                # Pages before its next_page went to every stream it was read for: those need not read them again.
                read_before = all(reader in other.get(READ_FOR, ()) for reader in self.names)
                next_page = other.get("next_page", 1) if read_before else 1
                flight = self.driver["in_flight"] = {**other, "next_page": next_page, READ_FOR: self.names}
                return flight, f"reading export {other['export_id']} (made for {name}, no quota spent) of"
        return None, ""

    def finish(self, flight: dict, row_options: dict) -> None:
        """The flight is read: every selected stream it covered (its bookmark at or after the flight's start
        point) moves to the flight's window, never back, and records the coverage it now stands for (the first
        day read since, and the settings that chose the rows: docs/state.md); the keeper drops the flight."""
        self.driver.pop("in_flight", None)
        after = flight.get(AFTER, flight["window_start"])
        for state in self.selected.values():
            end = state.get("last_window_end")
            if after is not None and (end is None or end < after):
                continue  # a gap before this flight: the next run reads again from this stream's bookmark
            if end is None or end <= flight["window_end"]:
                first = min(
                    state.get("coverage", {}).get("start_date") or flight["window_start"],
                    state.get("last_window_start") or flight["window_start"],
                    flight["window_start"],
                )
                state.update(
                    last_window_start=flight["window_start"],
                    last_window_end=flight["window_end"],
                    coverage={"start_date": first, **row_options},
                )
                own = state.get("in_flight")
                if own is not None and own["window_end"] <= flight["window_end"]:
                    state.pop("in_flight")


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

    def feed_states(self, parent_feeds: dict) -> dict:
        """This stream's own per-feed windows (`FeedReaders`). A state written before the child kept them
        (`pending_contact_ids` alone) starts from the parent's bookmarks: it was read with the parent."""
        state = self.bookmarks
        if "feeds" not in state and "pending_contact_ids" in state:
            state["feeds"] = {
                feed_id: {key: value for key, value in feed_state.items() if key != "in_flight"}
                for feed_id, feed_state in parent_feeds.items()
            }
        return state.setdefault("feeds", {})

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
