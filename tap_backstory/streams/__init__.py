"""The four streams, which credentials enable each, and the order they sync in."""

from __future__ import annotations

import typing as t

from tap_backstory.streams.backstory import ActivitiesStream, EnrichedContactsStream
from tap_backstory.streams.contactbased import EnrichedContactRecordsStream, IntentFeedExportsStream

# The SDK would sync in name order; this order is explicit. `enriched_contact_records` is a child of
# `intent_feed_exports` (it enriches the ids that stream reads), so the SDK runs it inside its parent.
STREAM_ORDER = ("activities", "enriched_contacts", "intent_feed_exports", "enriched_contact_records")


def available_streams(config: t.Mapping[str, t.Any]) -> list[type]:
    """Stream classes whose credentials are configured."""
    streams: list[type] = []
    if config.get("activity_client_id") and config.get("activity_client_secret"):
        streams.append(ActivitiesStream)
    if config.get("object_client_id") and config.get("object_client_secret"):
        streams.append(EnrichedContactsStream)
    if config.get("contactbased_api_key"):
        streams += [IntentFeedExportsStream, EnrichedContactRecordsStream]
    return streams
