"""ContactBased streams: intent feed exports and batched contact enrichment."""

from __future__ import annotations

from tap_backstory.streams.base import TapStream


class IntentFeedExportsStream(TapStream):
    """Rows of intent feed exports, with lineage (feed, export, page, row number, window)."""

    name = "intent_feed_exports"
    primary_keys = ("export_id", "row_number")

    def get_records(self, context):  # pragma: no cover - replaced by the export reader
        raise NotImplementedError("intent_feed_exports is not implemented yet")


class EnrichedContactRecordsStream(TapStream):
    """One enrichment envelope per distinct contact_id read by `intent_feed_exports`."""

    name = "enriched_contact_records"
    primary_keys = ("contact_id",)
    parent_stream_type = IntentFeedExportsStream
    state_partitioning_keys: list[str] = []

    def get_records(self, context):  # pragma: no cover - replaced by the enrichment batcher
        raise NotImplementedError("enriched_contact_records is not implemented yet")
