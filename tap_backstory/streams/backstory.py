"""Backstory bulk export streams (built on the job engine in `tap_backstory.jobs`)."""

from __future__ import annotations

from tap_backstory.streams.base import TapStream


class ActivitiesStream(TapStream):
    """Raw activity data (emails, meetings, calls): `POST /pull/v1/export/activities/jobs`."""

    name = "activities"
    primary_keys = ("uid",)

    def get_records(self, context):  # pragma: no cover - replaced by the job engine
        raise NotImplementedError("activities export is not implemented yet")


class EnrichedContactsStream(TapStream):
    """Enriched contacts: `POST /pull/v1/export/contacts/jobs`, JSON or CSV."""

    name = "enriched_contacts"
    primary_keys = ("email",)

    def get_records(self, context):  # pragma: no cover - replaced by the job engine
        raise NotImplementedError("enriched_contacts export is not implemented yet")
