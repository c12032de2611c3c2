"""Sandbox settings: data volumes, API shape variants and injectable faults.

Every field has a default, so ``SandboxSettings()`` is a working sandbox. All fields can be changed at run
time through ``Sandbox.configure(**overrides)`` or ``POST /_sandbox/configure`` (JSON body), and loaded from
a JSON file with the CLI flag ``--faults FILE.json``.

Counter faults (``fail_jobs``, ``cancel_jobs``, ``drop_fragment``, ``burst_429``, ``page_errors``,
``enrich_errors``) count down: each affected request or job consumes one, so ``stats()["settings"]`` shows
what is left. Position faults (``corrupt_jsonl``, ``corrupt_csv``, ``unexpected_envelope``, ``export_gone``) hit the Nth
response of their kind counted from when they were set, then turn themselves off (back to 0).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timezone
from typing import Any

# Recognisable, distinct demo credentials. The sandbox accepts exactly these.
DEMO_CREDENTIALS: dict[str, str] = {
    "activity_client_id": "demo-activity-client-id-3c9e21",
    "activity_client_secret": "demo-activity-client-secret-7f3a9b1d4e",
    "object_client_id": "demo-object-client-id-8b1f05",
    "object_client_secret": "demo-object-client-secret-2d6c8e0a5f",
    "contactbased_api_key": "demo-contactbased-api-key-5e4d3c2b1a",
}

# Fixed feed ids (UUID strings, as the vendor's example `00000000-0000-4000-8000-000000000001`).
FEED_A_ID = "3b7e1c2a-5d4f-4a8e-9c61-0f2d8a7b4e01"
FEED_B_ID = "9c2f6e8d-1a3b-4c5d-8e7f-6a5b4c3d2e02"


@dataclass
class SandboxSettings:
    # --- data -------------------------------------------------------------------------------------------
    seed: int = 42
    """Seed of every generator: data is a pure function of (seed, day, index)."""
    today: date | None = None
    """The sandbox's 'today' (UTC), YYYY-MM-DD; None is the real UTC date. It drives date validation, retention
    and windows."""
    activities_per_day: int = 20
    """Activities generated per activity day (a mix of emails, meetings and calls)."""
    future_activity_days: int = 0
    """Meetings scheduled ahead: with N > 0, half of the meetings are processed 1..N days *before* their
    activity day (a meeting booked for next week), so some activities are dated after today. With 0, every
    activity is processed 0..3 days after it happened (the default data)."""
    contacts_per_day: int = 10
    """Enriched contacts generated per (last-engaged) day."""
    feed_a_rows_per_day: int = 40
    """Intent rows generated per day in feed A."""
    feed_b_rows_per_day: int = 25
    """Intent rows generated per day in feed B."""
    feed_a_row_limit: int | None = 100_000
    """Export quota of feed A, in rows (None: uncapped)."""
    feed_b_row_limit: int | None = None
    """Export quota of feed B, in rows (None: uncapped)."""
    feed_a_lookback_cap: int = 30
    """The most days a search of feed A may look back."""
    feed_b_lookback_cap: int = 90
    """The most days a search of feed B may look back."""
    contact_population: int = 1500
    """Distinct people behind intent rows: contact_ids repeat across rows, pages and feeds."""

    # --- API shape variants -----------------------------------------------------------------------------
    fragments: int = 4
    """Fragments per Backstory export (never more than the number of records, at least 1)."""
    integer_job_ids: bool = False
    """Serves Backstory job_id as an integer instead of a string."""
    fragment_count_key: str = "fragments"
    """Key of the fragment count in a job object: 'fragments' (contacts doc) or 'fragment' (activities doc)."""
    fragment_count_is_last_index: bool = False
    """Reads "Count of fragments ... (0-based)" the other way: reports the last fragment's number (count - 1)."""
    contacts_json_style: str = "lines"
    """Enriched contacts JSON output: 'lines' (JSON Lines) or 'array' (one JSON array per file)."""
    fragment_layout: str = "standalone"
    """How an export's fragments make up its file: 'standalone' (every fragment a complete file: the CSV
    header repeated, whole lines, a JSON array per fragment in array style) or 'byte_range' (consecutive byte
    slices of ONE file: the header only in the first, records and UTF-8 characters cut across boundaries)."""
    gzip_bodies: bool = False
    """Serve data bodies gzip-compressed with no Content-Encoding header: every standalone fragment its own
    gzip file, or with ``fragment_layout='byte_range'`` one gzip file cut into byte slices."""
    body_encoding: str = "utf-8"
    """Character encoding of data bodies: 'utf-8' or 'latin-1' (names such as 'Müller' are then not UTF-8)."""
    fragment_param: str = "honour"
    """How `GET .../data?fragment=N` is answered: 'honour' (that fragment), 'ignore' (the whole file for every
    fragment, as a server that never heard of the parameter would) or 'refuse' (400 to any `fragment`)."""
    content_charset: str = "utf-8"
    """The charset that data bodies' Content-Type declares ('' = none), whatever ``body_encoding`` really is
    (e.g. ``body_encoding='latin-1'`` with ``content_charset='ISO-8859-1'``)."""
    record_shapes: str = "objects"
    """Shapes of two activity fields: 'objects' = `campaigns` items are objects and `attachment_file_names` an
    array (the docs' reading); 'strings' = as one public client reads them: campaigns as their names (strings)
    and a single attachment as one string (several stay an array)."""
    keyless_every: int = 0
    """With N > 0, after every Nth record (by its place in the export) a copy without its primary key (`uid`,
    `email`) is served too (public code skips such lines)."""
    extra_activity_fields: bool = False
    """Adds an undeclared top-level key ('sentiment') to every activity."""
    extra_row_fields: bool = False
    """Adds an undeclared key ('buying_stage') to every intent export row."""
    extra_nested_fields: bool = False
    """Adds undeclared keys inside declared objects: 'street2' and 'county' in every enrichment `pii`, and
    'bounced_participants' in every activity's `stats`; activities without `experimental` send it as null."""
    page_size: int = 1000
    """ContactBased export page size (fixed per export at creation)."""
    page_envelope: str = "rows"
    """Key holding the rows of an export page: rows, items, data or results."""
    export_build_seconds: float = 0.0
    """Newer ContactBased variant: an export builds asynchronously; its summary says `status: "building"`
    for this many seconds (then `"ready"`) and its pages are refused with 409 until then. With 0, exports are
    the documented synchronous ones (no `status` key)."""
    feed_cap_key: str = "lookback_days"
    """Key of the lookback cap in `GET /organization/feeds` entries (the docs name no key: e.g.
    `max_lookback_days`); '' = not listed. The server enforces the caps all the same."""
    feed_cap_null: bool = False
    """List every feed's lookback cap as null (enforced all the same)."""
    search_refusal_states_cap: bool = True
    """A search (or preview) beyond a feed's cap is answered 403 naming the allowed range `1..cap`; False: the
    403 says only that the lookback is too long (the tap then bisects the cap with previews)."""
    search_clamps_lookback: bool = False
    """A search beyond a feed's cap is not refused: it is answered for the cap's window (its `lookback_days`,
    `start_date` say so), a reading in which a client that does not look at the answer loses the days before."""
    export_total_pages: int | None = None
    """Hostile/broken `total_pages` in every ExportSummary (e.g. -3 or 1000000000); the pages and `total_rows`
    stay the real ones, and a page past the real end is answered as an empty page."""
    export_total_rows: int | None = None
    """Broken `total_rows` in every ExportSummary (the pages stay the real ones; a page past the real end is
    answered as an empty page): more rows promised than served, or fewer."""
    enrich_batch_limit: int = 1000
    """The most contact_ids a POST /enrich/contacts/batch takes (more are answered 413)."""
    enrich_batch_rejects: str = ""
    """The batch body is a guess (`include` is documented only on the single GET): 'include' = the batch
    endpoint answers 422 to a body with `include`; 'body' = it wants its ids under `ids` and answers 400 to any
    other key (so to `contact_ids`); '' = it takes `{"contact_ids", "include"?}`."""
    enrich_canonical_ids: bool = False
    """Enrichment answers a legacy `cb_` id with the person's canonical `id_` id (batch and single GET)."""
    cache_exports_dir: str | None = None
    """Folder caching rendered export bodies: each body is rendered once, then served from its file."""

    # --- Backstory lifecycle and limits -----------------------------------------------------------------
    token_ttl_seconds: int = 7200
    """Lifetime of a Backstory access token; an expired one is answered 401."""
    job_queue_seconds: float = 0.2
    """How long a new Backstory export job stays Queued before it may run."""
    job_run_seconds: float = 0.3
    """How long a Backstory export job stays Running before it ends."""
    max_running_jobs: int = 2
    """The most Backstory export jobs Running at once; the others wait Queued."""
    max_alive_jobs: int = 10
    """The most Backstory export jobs Queued or Running at once; a job created beyond it is answered 429."""
    retention_days: int = 10
    """Days Backstory keeps a job and its files."""
    refuse_future_end_date: bool = False
    """Answers a job whose end_date is after today with 400 ``BadRequestException`` (the docs do not say
    whether Backstory takes a date range reaching into the future; by default the sandbox takes it)."""

    # --- faults -----------------------------------------------------------------------------------------
    error_rate: float = 0.0
    """Fraction of non-auth, non-admin requests answered 502 or 503 (a seeded, deterministic choice)."""
    fail_jobs: int = 0
    """The next N created jobs end Failed."""
    cancel_jobs: int = 0
    """The next N created jobs end Canceled."""
    drop_fragment: int = 0
    """The next N Backstory data responses are cut off after about half of the body."""
    burst_429: int = 0
    """The next N job-creation requests get 429 although slots are free."""
    slow_seconds: float = 0.0
    """Delay before answering every non-admin request."""
    job_create_answer_seconds: float = 0.0
    """Delays the answer to a job creation after the job exists: a client that dies meanwhile leaves a job
    it never learned the id of."""
    export_create_answer_seconds: float = 0.0
    """Delay the answer to a ContactBased export creation after the export exists (and its quota is spent): a
    client that dies meanwhile leaves an export it never learned the id of."""
    bandwidth_bytes_per_sec: int = 0
    """Per-connection cap on Backstory data downloads, in bytes a second (0: unlimited)."""
    quota_spent_elsewhere: int = 0
    """Rows of every capped feed's export quota that another client spends right after the next
    ``GET /organization/feeds`` answer: the listed numbers are stale by the time the export is created."""
    page_errors: int = 0
    """The next N export page requests get 502."""
    enrich_errors: int = 0
    """The next N enrichment batch requests get 502."""
    gone_jobs: int = 0
    """The next N created jobs lose their files: their status says Completed, their data answers 410 (retention
    over, as Backstory may decide before the tap's own 10-day clock)."""
    hostile_data: str = ""
    """Activities data bodies replaced by hostile content: 'gzip_bomb' (gzip by magic bytes, expanding ~1000x
    into one endless line), 'gzip_bomb_encoded' (the same sent with Content-Encoding: gzip), 'endless_line'
    (``hostile_bytes`` bytes with no newline), 'deep_nesting' (100k nested arrays), 'huge_int' (a 5000-digit
    integer), 'huge_exponent' (``1e999999``); '' = off."""
    hostile_bytes: int = 500_000_000
    """Size of the 'endless_line' body (and the decoded size of the gzip bombs)."""
    hostile_fragments: int = 0
    """With N > 0, Completed jobs announce N fragments whatever they hold (e.g. 1000000000)."""
    hostile_job_id: str = ""
    """With a value, every new job gets this id (e.g. '../../auth/v1/tokens?job=1'); requests naming it are
    answered 404, and every request outside the API's paths is recorded as an ``unrouted`` event."""
    corrupt_jsonl: int = 0
    """Position fault: the Nth activities data response from now (1-based, 0 is off) has its second JSON line
    cut in half, as a truncated export would."""
    corrupt_csv: int = 0
    """Position fault: the Nth CSV contacts data response from now has ``total_inbound`` = ``12x`` (not a
    number) in its second data row."""
    unexpected_envelope: int = 0
    """Position fault: the Nth export page response from now holds its rows under ``records``, a key the
    docs do not name."""
    export_gone: int = 0
    """Position fault: the Nth export page request from now finds its export gone for good (deleted, 410 Gone),
    as retention or a server-side clean-up would leave it; later requests for it get 404."""
    search_gone_with_export: bool = False
    """With ``export_gone``: the export's saved search is deleted with it (exporting its job_id answers 404)."""
    hostile_error_text: bool = False
    """Every error body (both APIs) echoes the request's credentials (API key, bearer token, client secret:
    raw, URL-encoded and form-encoded) and carries ESC/BEL control bytes, as a compromised or careless server
    might."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def current_day(self) -> date:
        return self.today or datetime.now(timezone.utc).date()

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["today"] = self.current_day().isoformat()
        return out

    def apply(self, overrides: dict[str, Any]) -> None:
        """Apply overrides with type coercion; unknown names raise ValueError (never silently ignored)."""
        names = {f.name: f for f in fields(self) if f.name != "extra"}
        coerced = {}
        for key, value in overrides.items():
            if key not in names:
                raise ValueError(f"Unknown sandbox setting: {key}")
            coerced[key] = _coerce(key, names[key].type, value)
        for key, value in coerced.items():
            setattr(self, key, value)

    def copy(self) -> SandboxSettings:
        return dataclasses.replace(self)


def _coerce(name: str, type_name: Any, value: Any) -> Any:
    t = str(type_name)
    try:
        if name == "today":
            if value is None or isinstance(value, date):
                return value
            return date.fromisoformat(str(value))
        if value is None and "None" in t:
            return None
        if t.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if t.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if t.startswith("float"):
            return float(value)
        if t.startswith("str"):
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid value for sandbox setting {name}: {value!r}") from exc
    return value
