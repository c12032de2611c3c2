"""ContactBased intent feeds and contact enrichment, with no Singer inside.

`IntentFeeds` does, per feed: listing and validation of the configured feeds, the lookback of the next window
(dates in `windows.py`), search, quota guard, export creation (waiting while it builds, on the one
`polling.PollSchedule`) and its pages; `row_key`, the rows' primary key. `ContactEnricher` sends batches of
contact_ids for enrichment (one id at a time if the batch endpoint refuses the body). The
streams (`streams/contactbased.py`) keep the Singer side: state, checkpoints, lineage fields and shaping.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
import typing as t
import urllib.parse

from tap_backstory.client import ApiClient, ApiError, TapBackstoryError, one_line
from tap_backstory.formats import DataError, unwrap_list
from tap_backstory.names import ENRICHMENT_SECTIONS
from tap_backstory.polling import PollSchedule
from tap_backstory.windows import Clock, lookback_since, lookback_window, out_of_reach, plural

BUILDING_STATUSES = frozenset({"building", "pending", "queued", "processing", "running", "in_progress"})
"""ExportSummary `status` values of an export that is not readable yet (a newer API variant builds exports
asynchronously; the documented one has no `status` and is readable at once)."""
EXPORT_LIST_KEYS = ("exports", "items", "data", "results")
"""Where `POST /intent/feeds/exports/list` may put its ExportSummaries (the docs do not show the envelope)."""

LOOKBACK_CAP_KEYS = ("lookback_days", "max_lookback_days", "lookback_days_cap", "lookback_cap")
"""Where a listed feed may hold its lookback cap (the docs name the cap, not its key); the first non-null wins."""

DEFAULT_LOOKBACK_DAYS = 30
"""First window of a feed listed without a cap when `intent_lookback_days` is not set (the docs' example window)."""

LINEAGE_FIELDS = frozenset({"feed_id", "export_id", "page", "row_number", "window_start", "window_end"})
"""Where a row was read from: a new export of the same day gives the same row new values, so they are data, not key."""

OPTIONAL_ROW_FIELDS = frozenset({
    "first_name", "last_name", "address", "city", "state", "zip", "gender", "age_range", "income_range", "net_worth",
    "linkedin_url", "job_title", "department", "company_size", "company_revenue",
})  # fmt: skip
"""Row fields sent only with `get_pii` / `include_business_info`: settings must not change a row's key."""


def row_key(feed_id: str, record: dict) -> str:
    """The primary key of an intent row: sha256 of the canonical JSON of its feed and its identifying content
    (every non-null field but the lineage, the optional PII/business fields and `_extra`), the same in every
    export that re-reads the row's day (docs/decisions.md). Null and omitted are one: the APIs omit empty keys."""
    content = {
        name: value
        for name, value in record.items()
        if value is not None
        and name not in LINEAGE_FIELDS
        and name not in OPTIONAL_ROW_FIELDS
        and name not in ("_extra", "row_key")
    }
    canonical = json.dumps([feed_id, content], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class ContactBasedOptions:
    """The settings of the ContactBased streams, read once (the SDK hands config numbers over as Decimal)."""

    feed_ids: tuple[str, ...]  # empty: every feed of the organization
    lookback_days: int | None  # first run; None: the feed's cap
    get_pii: bool
    include_business_info: bool
    require_contact_id: bool
    max_rows: int | None
    poll_interval: float
    job_timeout: float
    enrichment_sections: tuple[str, ...]
    enrichment_batch_size: int

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> ContactBasedOptions:
        return cls(
            feed_ids=tuple(config.get("intent_feed_ids") or ()),
            lookback_days=int(config["intent_lookback_days"]) if config.get("intent_lookback_days") else None,
            get_pii=bool(config.get("intent_get_pii")),
            include_business_info=bool(config.get("intent_include_business_info")),
            require_contact_id=bool(config.get("intent_require_contact_id")),
            max_rows=int(config["intent_max_rows"]) if config.get("intent_max_rows") else None,
            poll_interval=float(config["job_poll_interval_seconds"]),
            job_timeout=float(config["job_timeout_seconds"]),
            enrichment_sections=tuple(config.get("enrichment_sections") or ENRICHMENT_SECTIONS),
            enrichment_batch_size=int(config["enrichment_batch_size"]),
        )


def lookback_cap(feed: dict) -> int | None:
    """The feed's lookback cap, under whichever key it is listed; None when none is listed (or it is null)."""
    for key in LOOKBACK_CAP_KEYS:
        if feed.get(key) is not None:
            return int(feed[key])
    return None


def quota_remaining(feed: dict) -> t.Any:
    """`export_rows_remaining` for a log line; an uncapped feed lists it as null."""
    remaining = feed.get("export_rows_remaining")
    return "no cap" if remaining is None else remaining


class IntentFeeds:
    """Search → export → pages of the configured intent feeds.

    A *flight* is the dict of one window in progress (search job_id, window, counts; then export id, pages),
    kept by the stream in state (docs/state.md) so an interrupted run resumes without spending quota again."""

    def __init__(self, api: ApiClient, options: ContactBasedOptions, clock: Clock, log: logging.Logger) -> None:
        self.api = api
        self.options = options
        self.clock = clock
        self.log = log

    def feeds(self) -> list[dict]:
        """The configured feeds (default: all), with their options, cap and quota; checked before any search."""
        body = self.api.request("GET", "/organization/feeds").json()
        listed = unwrap_list(body, "ContactBased GET /organization/feeds")
        by_id = {str(feed.get("feed_id") or feed.get("id")): feed for feed in listed}
        wanted = list(self.options.feed_ids) or list(by_id)
        unknown = [feed_id for feed_id in wanted if feed_id not in by_id]
        if unknown:
            raise TapBackstoryError(
                f"intent_feed_ids: {', '.join(unknown)} is not a feed of this organization "
                f"(GET /organization/feeds lists {', '.join(by_id) or 'none'})"
            )
        for feed_id in wanted:
            for setting, asked, option in (
                ("intent_get_pii", self.options.get_pii, "allow_pii"),
                ("intent_include_business_info", self.options.include_business_info, "allow_business_info"),
            ):
                if asked and not by_id[feed_id].get(option, True):
                    raise TapBackstoryError(
                        f"{setting} is set, but intent feed {feed_id} does not allow it ({option} is false)"
                    )
        return [{**by_id[feed_id], "feed_id": feed_id} for feed_id in wanted]

    def lookback_days(self, feed: dict, last_window_end: str | None) -> int:
        """First run: `intent_lookback_days` (default the cap); later runs: last window's end day (inclusive,
        it was only partly over when read) through today. Never more than the feed's cap, when one is listed
        (without one, the server's answer names the window, or its 403 says the lookback is too long)."""
        feed_id, cap = feed["feed_id"], lookback_cap(feed)
        today = self.clock.today()
        if last_window_end is None:
            wanted = self.options.lookback_days or cap or DEFAULT_LOOKBACK_DAYS
            if cap is not None and wanted > cap:
                self.log.warning(
                    "intent feed %s: intent_lookback_days %d exceeds the feed's cap; using %d days",
                    feed_id,
                    wanted,
                    cap,
                )
                return cap
            return wanted
        last_end = dt.date.fromisoformat(last_window_end)
        since = lookback_since(last_end, today)
        if cap is None:
            return since
        lost = out_of_reach(last_end, today, cap)
        if lost is not None:
            self.log.warning(
                "intent feed %s: the last window ended %s, %d days ago, but the feed looks back at most %d days: "
                "days %s..%s can no longer be fetched",
                feed_id,
                last_window_end,
                (today - last_end).days,
                cap,
                lost.start.isoformat(),
                lost.end.isoformat(),
            )
        return min(since, cap)

    def search(self, feed: dict, last_window_end: str | None) -> dict:
        """Search the next window: the new flight."""
        feed_id = feed["feed_id"]
        lookback = self.lookback_days(feed, last_window_end)
        cap = lookback_cap(feed)
        if cap is None:
            self.log.info(
                "intent feed %s: the feed lists no lookback cap (none of %s); searching %d days and taking the "
                "window from the search's answer",
                feed_id,
                ", ".join(LOOKBACK_CAP_KEYS),
                lookback,
            )
        try:
            search = self.api.request(
                "POST", "/intent/feeds/search", json={"feed_id": feed_id, "lookback_days": lookback}
            ).json()
        except ApiError as exc:
            if exc.status != 403 or cap is not None:
                raise
            remedy = (
                "set intent_lookback_days to at most the feed's cap"
                if last_window_end is None
                else f"the last window ended {last_window_end}, longer ago than the feed looks back; reset this "
                "feed's state (intent_lookback_days then sets the new first window)"
            )
            raise TapBackstoryError(
                f"intent feed {feed_id}: the search of the last {lookback} days was refused ({exc}); "
                f"GET /organization/feeds lists no lookback cap for this feed, so the tap could not keep within it: "
                f"{remedy}"
            ) from None
        lookback = int(search.get("lookback_days") or lookback)
        window = lookback_window(self.clock.today(), lookback)  # if the answer does not name its dates
        total = int(search.get("total_records") or 0)
        with_id = search.get("records_with_contact_id", search.get("records_with_cb_id"))
        flight = {
            "job_id": search["job_id"],
            "window_start": search.get("start_date") or window.start.isoformat(),
            "window_end": search.get("end_date") or window.end.isoformat(),
            "total_records": total,
            "records_with_contact_id": total if with_id is None else int(with_id),
        }
        self.log.info(
            "intent feed %s: window %s..%s (%s): %d rows found, %d with a contact_id; export quota remaining: %s",
            feed_id,
            flight["window_start"],
            flight["window_end"],
            plural(lookback, "day"),
            total,
            flight["records_with_contact_id"],
            quota_remaining(feed),
        )
        return flight

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
        export = {
            "export_id": str(summary["export_id"]),
            "total_pages": int(summary.get("total_pages") or 0),
            "page_size": int(summary["page_size"]),
        }
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
            return self.api.request("POST", "/intent/feeds/exports", json=body).json()
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
            exports = unwrap_list(listed.json(), "ContactBased POST /intent/feeds/exports/list", EXPORT_LIST_KEYS)
        except (TapBackstoryError, ValueError) as exc:  # not listable: make the export, as on a first run
            self.log.warning("intent feed %s: could not list the exports of search %s (%s)", feed["feed_id"],
                             flight["job_id"], one_line(exc))
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
            summary = self.api.request("POST", "/intent/feeds/exports/get", json=body).json()
        if str(summary.get("status") or "").lower() == "failed":
            raise TapBackstoryError(f"intent feed {feed_id}: export {summary['export_id']} failed on the server side")
        return summary

    def pages(self, feed_id: str, flight: dict) -> t.Iterator[tuple[int, list[dict]]]:
        """(page number, rows) of the flight's export, from its `next_page` on."""
        export_id, total_pages = flight["export_id"], flight["total_pages"]
        for page in range(flight["next_page"], total_pages + 1):
            where = f"POST /intent/feeds/exports/page (export {export_id}, page {page})"
            body = self.api.request("POST", "/intent/feeds/exports/page", json={"export_id": export_id, "page": page})
            rows = unwrap_list(body.json(), f"ContactBased {where}")
            yield page, rows
            self.log.info(
                "intent feed %s: export %s page %d of %d read (%d rows)",
                feed_id,
                export_id,
                page,
                total_pages,
                len(rows),
            )


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
            results = unwrap_list(response.json(), "ContactBased POST /enrich/contacts/batch", ("results",))
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
        path = f"/enrich/contacts/{urllib.parse.quote(contact_id, safe='')}"
        try:
            return self.api.request("GET", path, params={"include": ",".join(self.sections)}).json()
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
