"""Constants shared by the tap and its streams: the four stream names, the order they sync in, the settings
that enable each, and the enrichment sections.

The stream table is read by discovery (`streams.available_streams`), the catalog check (`tap.py`) and the state check
(`state_check.py`). It imports nothing of the tap, so any module can use it.
"""

STREAM_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "activities": ("activity_client_id", "activity_client_secret"),
    "enriched_contacts": ("object_client_id", "object_client_secret"),
    "intent_feed_exports": ("contactbased_api_key",),
    "enriched_contact_records": ("contactbased_api_key",),
}
"""A stream is discovered only when every one of its settings is set."""

STREAM_ORDER = tuple(STREAM_CREDENTIALS)
"""The SDK would sync in name order; this order is explicit. `enriched_contact_records` is a child of
`intent_feed_exports` (it enriches the ids that stream reads), so the SDK runs it inside its parent."""

ENRICHMENT_SECTIONS = ("pii", "emails", "phones")
"""What `POST /enrich/contacts/batch` can include: the `enrichment_sections` setting's choices and default."""
