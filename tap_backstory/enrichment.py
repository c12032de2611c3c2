"""ContactBased contact enrichment, with no Singer inside: `ContactEnricher` sends batches of contact_ids
(one id at a time if the batch endpoint refuses the body); `envelope_record` turns one result into a record."""

from __future__ import annotations

import logging
import re
import typing as t

from tap_backstory.client import ApiClient, ApiError, path_segment, read_json
from tap_backstory.formats import DataError, unwrap_list
from tap_backstory.names import ENRICHMENT_SECTIONS
from tap_backstory.windows import Clock

if t.TYPE_CHECKING:
    from tap_backstory.intent import ContactBasedOptions

SINGLE_ENRICH_REQUESTS_PER_SECOND = 10
"""Pace of `GET /enrich/contacts/{id}` when the batch endpoint refuses our body (no published rate limit)."""

CANONICAL_CONTACT_ID = re.compile(r"^id_[0-9a-f]{16}$")
LEGACY_CONTACT_ID = re.compile(r"^cb_[0-9A-Za-z]+$")  # "still accepted on input"


def is_contact_id(value: t.Any) -> bool:
    """A contact_id worth enriching: the documented form, or a legacy `cb_` token."""
    return isinstance(value, str) and bool(CANONICAL_CONTACT_ID.match(value) or LEGACY_CONTACT_ID.match(value))


class ContactEnricher:
    """`POST /enrich/contacts/batch`: one envelope per contact_id, aligned by index with the ids sent.

    The batch body is a guess (`include` is documented only on the single GET): `include` is sent only for a
    subset of the sections, and when the endpoint refuses the body (a 4xx other than 401/413/429) the rest of
    the run uses the documented `GET /enrich/contacts/{id}?include=...`, one id at a time, paced."""

    def __init__(self, api: ApiClient, options: ContactBasedOptions, clock: Clock, log: logging.Logger) -> None:
        self.api = api
        self.clock = clock
        self.sections = list(options.enrichment_sections)
        self.ids_per_request = options.enrichment_batch_size  # lowered for the rest of the run by each 413
        self.one_by_one = False  # set for the rest of the run when the batch endpoint refuses our body
        self.next_single_at = 0.0
        self.log = log

    def enrich(self, ids: list[str]) -> t.Iterator[tuple[str, dict]]:
        """(id, envelope) pairs; a 413 halves the request size and retries, down to one id."""
        rest = ids
        while rest:
            if self.one_by_one:
                for contact_id in rest:
                    yield contact_id, self._enrich_one(contact_id)
                return
            chunk = rest[: self.ids_per_request]
            body: dict[str, t.Any] = {"contact_ids": chunk}
            if set(self.sections) != set(ENRICHMENT_SECTIONS):
                body["include"] = self.sections
            try:
                response = self.api.request("POST", "/enrich/contacts/batch", json=body)
            except ApiError as exc:
                if exc.status == 413 and len(chunk) > 1:
                    self.ids_per_request = len(chunk) // 2
                    self.log.warning(
                        "enriched_contact_records: a batch of %d ids was too large (413); sending %d ids per request",
                        len(chunk),
                        self.ids_per_request,
                    )
                elif exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 413, 429):
                    self.one_by_one = True
                    self.log.warning(
                        "enriched_contact_records: the batch endpoint refused the request body (%s); enriching one "
                        "id at a time with GET /enrich/contacts/{id}?include=%s for the rest of the run, at most %d "
                        "requests/s",
                        exc,
                        ",".join(self.sections),
                        SINGLE_ENRICH_REQUESTS_PER_SECOND,
                    )
                else:
                    raise
                continue
            where = "ContactBased POST /enrich/contacts/batch"
            results = unwrap_list(read_json(response, where), where, ("results",))
            if len(results) != len(chunk):
                raise DataError(
                    f"ContactBased POST /enrich/contacts/batch: {len(results)} results for {len(chunk)} contact_ids "
                    "(results must align by index)"
                )
            yield from zip(chunk, results, strict=True)
            rest = rest[len(chunk) :]

    def _enrich_one(self, contact_id: str) -> dict:
        """The documented single GET; 404 (no data for any requested section) is the empty envelope."""
        wait = self.next_single_at - self.clock.monotonic()
        if wait > 0:
            self.clock.sleep(wait)
        self.next_single_at = self.clock.monotonic() + 1 / SINGLE_ENRICH_REQUESTS_PER_SECOND
        path = f"/enrich/contacts/{path_segment(contact_id, 'contact_id')}"
        try:
            return self.api.request_json("GET", path, params={"include": ",".join(self.sections)})
        except ApiError as exc:
            if exc.status != 404:
                raise
            return {"contact_id": contact_id, "found_sections": 0, **dict.fromkeys(ENRICHMENT_SECTIONS)}


def envelope_record(contact_id: str, envelope: dict | None) -> dict:
    """The record of one result, aligned by index with the requested id; empty envelopes count 0 sections.

    A legacy `cb_` id may be answered in its canonical `id_` form: matched, kept as `canonical_contact_id`,
    while `contact_id` stays the id sent (the one the intent rows carry)."""
    record = dict(envelope or {})
    answered = record.get("contact_id") or contact_id
    if answered != contact_id and not (LEGACY_CONTACT_ID.match(contact_id) and CANONICAL_CONTACT_ID.match(answered)):
        raise DataError(
            f"ContactBased enrichment: result for {contact_id} carries contact_id {answered} "
            "(results must align by index)"
        )
    record.update(contact_id=contact_id, canonical_contact_id=answered)
    if record.get("found_sections") is None:
        record["found_sections"] = sum(record.get(section) is not None for section in ENRICHMENT_SECTIONS)
    return record
