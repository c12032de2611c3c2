"""The four streams, which credentials enable each (`names.STREAM_CREDENTIALS`), and the order they sync in."""

from __future__ import annotations

import typing as t

from tap_backstory.names import STREAM_CREDENTIALS, STREAM_ORDER
from tap_backstory.streams.backstory import ActivitiesStream, EnrichedContactsStream
from tap_backstory.streams.contactbased import EnrichedContactRecordsStream, IntentFeedExportsStream

__all__ = ["STREAM_ORDER", "available_streams"]
STREAM_CLASSES = (ActivitiesStream, EnrichedContactsStream, IntentFeedExportsStream, EnrichedContactRecordsStream)


def available_streams(config: t.Mapping[str, t.Any]) -> list[type]:
    """Stream classes whose credentials are configured."""
    return [cls for cls in STREAM_CLASSES if all(config.get(setting) for setting in STREAM_CREDENTIALS[cls.name])]
