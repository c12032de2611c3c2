"""ContactBased Data API emulation, mounted under ``/contactbased`` (doc: the vendor's "ContactBased Data APIs",
kept outside this repository).

* Auth: ``X-API-Key`` header on every endpoint; wrong or missing → 401 ``{"detail": "Invalid or inactive API key"}``.
  All errors are ``{"detail": "..."}`` (FastAPI style); malformed bodies → 422, never 500.
* ``GET /organization/feeds``: two feeds (A: PII + business info, lookback cap 30, quota 100000;
  B: neither option, cap 90, uncapped ``export_row_limit: null``). The cap is listed under ``feed_cap_key``
  (default ``lookback_days``; '' = not listed), null with ``feed_cap_null``; it is enforced either way.
* ``POST /intent/feeds/preview`` (totals, optional ``daily_counts``; saves nothing), ``POST /intent/feeds/search``
  (saves a search, returns its ``job_id``), ``GET /intent/feeds/jobs?feed_id=``. The window ends today and is
  inclusive: ``[today - lookback_days + 1, today]``; ``lookback_days`` outside 1..cap → 403.
* ``POST /intent/feeds/exports`` (``feed_id`` + ``lookback_days``, or ``job_id``; options ``get_pii``,
  ``include_business_info``, ``require_contact_id``, ``max_rows``). Options the feed does not allow → 403.
  Creating reserves quota equal to ``total_rows`` (403 when it exceeds ``export_rows_remaining``); a second
  export of an already exported search costs nothing. ``/exports/page`` (1-indexed, stable forever),
  ``/exports/get``, ``/exports/list``.
* Enrichment: ``GET /enrich/contacts/{id}`` (404 when no requested section has data), ``/pii`` (404 if none),
  ``/emails`` and ``/phones`` (404 when no record, 200 ``[]`` when a record has no entries);
  ``POST /enrich/contacts/batch`` (results aligned by index, unknown ids → empty envelope with
  ``found_sections: 0``, more than ``enrich_batch_limit`` ids → 413, a malformed id → 400). Other readings of
  the docs: ``enrich_batch_rejects`` (the body shape refused: 422 to ``include``, or 400 unless the ids are
  under ``ids``) and ``enrich_canonical_ids`` (legacy ``cb_`` ids answered in their ``id_`` form).
* Caps and broken answers: ``search_refusal_states_cap`` (False: the 403 names no range),
  ``search_clamps_lookback`` (a search beyond the cap is cut to it, not refused), ``export_total_pages`` /
  ``export_total_rows`` (wrong numbers in every ExportSummary; pages past the real end answered empty),
  ``export_gone`` / ``search_gone_with_export`` (an export, and its search, deleted mid-read: 410 then 404).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from . import data, faults
from .settings import DEMO_CREDENTIALS, FEED_A_ID, FEED_B_ID, SandboxSettings
from .state import ApiError, Request, Response, SandboxState

SECTIONS = ("pii", "emails", "phones")


def error(status: int, detail: str) -> Response:
    return Response.json(status, {"detail": detail})


@dataclass
class Search:
    summary: dict[str, Any]
    day_totals: list[tuple[int, int]]  # (all rows, rows with a valid contact_id) per day of the window
    exported: bool = False


@dataclass
class Export:
    summary: dict[str, Any]
    settings: SandboxSettings  # frozen copy: pages stay stable whatever is configured later
    day_counts: list[int]  # matching rows per window day (skips whole days when paging)
    ready_at: float = 0.0  # monotonic time the export finishes building (export_build_seconds)

    def view(self, live: SandboxSettings) -> dict[str, Any]:
        """The ExportSummary as the API shows it now (with `status` when exports build asynchronously, and the
        broken `total_pages`/`total_rows` of the live settings: a fixed server describes its exports right)."""
        shown = dict(self.summary)
        if live.export_total_pages is not None:
            shown["total_pages"] = live.export_total_pages
        if live.export_total_rows is not None:
            shown["total_rows"] = live.export_total_rows
        if self.settings.export_build_seconds:
            shown["status"] = "ready" if time.monotonic() >= self.ready_at else "building"
        return shown


class ContactBased:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.used: dict[str, int] = {FEED_A_ID: 0, FEED_B_ID: 0}
        self.searches: dict[str, Search] = {}
        self.exports: dict[str, Export] = {}
        self._n = 0
        self._instance = uuid.uuid4().hex  # ids unique across sandbox restarts; the data stays deterministic

    # ------------------------------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        try:
            return self._route(req)
        except ApiError as e:
            return error(e.status, e.message)

    def _route(self, req: Request) -> Response:
        if req.headers.get("X-API-Key") != DEMO_CREDENTIALS["contactbased_api_key"]:
            self.state.event("auth_failed", api="contactbased")
            raise ApiError(401, "Invalid or inactive API key")
        path = req.path.rstrip("/")
        routes = {
            "/organization/feeds": ("GET", self.list_feeds),
            "/intent/feeds/preview": ("POST", self.preview),
            "/intent/feeds/search": ("POST", self.search),
            "/intent/feeds/jobs": ("GET", self.list_searches),
            "/intent/feeds/exports": ("POST", self.create_export),
            "/intent/feeds/exports/page": ("POST", self.page),
            "/intent/feeds/exports/get": ("POST", self.get_export),
            "/intent/feeds/exports/list": ("POST", self.list_exports),
            "/enrich/contacts/batch": ("POST", self.enrich_batch),
        }
        if path in routes:
            method, fn = routes[path]
            if req.method != method:
                raise ApiError(405, "Method Not Allowed")
            return fn(req)
        m = re.fullmatch(r"/enrich/contacts/([^/]+)(?:/(pii|emails|phones))?", path)
        if m:
            if req.method != "GET":
                raise ApiError(405, "Method Not Allowed")
            return self.enrich_one(req, m.group(1), m.group(2))
        raise ApiError(404, "Not Found")

    # ------------------------------------------------------------------------------------------------------
    # feeds
    # ------------------------------------------------------------------------------------------------------
    def feed_config(self, feed_id: str) -> dict[str, Any]:
        s = self.state.settings
        if feed_id == FEED_A_ID:
            limit, cap, pii, biz, desc = (s.feed_a_row_limit, s.feed_a_lookback_cap, True, True,
                                          "Data & analytics buyers (PII and business info enabled)")
        elif feed_id == FEED_B_ID:
            limit, cap, pii, biz, desc = (s.feed_b_row_limit, s.feed_b_lookback_cap, False, False,
                                          "Cloud security researchers (company level only)")
        else:
            raise ApiError(404, f"Feed {feed_id} not found")
        used = self.used[feed_id]
        return {"feed_id": feed_id, "description": desc, "allow_pii": pii, "allow_business_info": biz,
                "lookback_days": cap, "export_row_limit": limit, "export_rows_used": used,
                "export_rows_remaining": None if limit is None else max(0, limit - used)}

    def list_feeds(self, req: Request) -> Response:
        st = self.state
        with st.lock:
            feeds = [self.feed_config(FEED_A_ID), self.feed_config(FEED_B_ID)]
            elsewhere = st.settings.quota_spent_elsewhere
            if elsewhere > 0:  # another client of the org, right after this answer: the numbers go stale
                st.settings.quota_spent_elsewhere = 0
                st.stats.faults_injected["quota_spent_elsewhere"] += 1
                for feed in feeds:
                    if feed["export_row_limit"] is not None:
                        self.used[feed["feed_id"]] += elsewhere
        return Response.json(200, {"feeds": [self._listed(feed) for feed in feeds]})

    def _listed(self, feed: dict[str, Any]) -> dict[str, Any]:
        """A feed as listed: the cap under `feed_cap_key` (absent when ''), null with `feed_cap_null`."""
        s = self.state.settings
        listed = {k: v for k, v in feed.items() if k != "lookback_days"}
        if s.feed_cap_key:
            listed[s.feed_cap_key] = None if s.feed_cap_null else feed["lookback_days"]
        return listed

    def _window(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, date, date]:
        feed_id = _field(body, "feed_id", str)
        lookback = _field(body, "lookback_days", int)
        feed = self.feed_config(feed_id)
        if lookback > feed["lookback_days"] >= 1 and self.state.settings.search_clamps_lookback:
            lookback = feed["lookback_days"]  # the other reading: the window is cut to the cap, not refused
        if not 1 <= lookback <= feed["lookback_days"]:
            if not self.state.settings.search_refusal_states_cap:
                raise ApiError(403, f"lookback_days {lookback} exceeds what this feed allows")
            raise ApiError(403, f"lookback_days {lookback} is outside the feed's allowed range "
                                f"1..{feed['lookback_days']}")
        today = self.state.today()
        return feed, lookback, today - timedelta(days=lookback - 1), today

    def _day_totals(self, feed_id: str, start: date, end: date) -> list[tuple[int, int]]:
        out = []
        for day in data.daterange(start, end):
            rows = [data.intent_row(self.state.settings, feed_id, day, j)
                    for j in range(data.feed_rows_per_day(self.state.settings, feed_id))]
            out.append((len(rows), sum(data.is_valid_contact_id(r["contact_id"]) for r in rows)))
        return out

    def _totals(self, feed_id: str, lookback: int, start: date, end: date, day_totals: list[tuple[int, int]]
                ) -> dict[str, Any]:
        total = sum(t for t, _ in day_totals)
        with_id = sum(w for _, w in day_totals)
        return {"feed_id": feed_id, "lookback_days": lookback, "start_date": start.isoformat(),
                "end_date": end.isoformat(), "total_records": total, "records_with_contact_id": with_id,
                "records_without_contact_id": total - with_id}

    def preview(self, req: Request) -> Response:
        body = _body(req)
        feed, lookback, start, end = self._window(body)
        daily = _field(body, "include_daily_counts", bool, False)
        day_totals = self._day_totals(feed["feed_id"], start, end)
        out = self._totals(feed["feed_id"], lookback, start, end, day_totals)
        if daily:
            out["daily_counts"] = [{"date": (start + timedelta(days=i)).isoformat(), "count": t}
                                   for i, (t, _) in enumerate(day_totals)]
        self.state.stats.previews += 1
        return Response.json(200, out)

    def _new_search(self, feed_id: str, lookback: int, start: date, end: date) -> Search:
        day_totals = self._day_totals(feed_id, start, end)
        with self.state.lock:
            summary = {"job_id": self._uuid("search"), **self._totals(feed_id, lookback, start, end, day_totals),
                       "created_at": self.state.iso_now()}
            search = Search(summary, day_totals)
            self.searches[summary["job_id"]] = search
        return search

    def search(self, req: Request) -> Response:
        feed, lookback, start, end = self._window(_body(req))
        search = self._new_search(feed["feed_id"], lookback, start, end)
        self.state.stats.searches_created += 1
        self.state.event("search_created", feed_id=feed["feed_id"], job_id=search.summary["job_id"],
                         start_date=search.summary["start_date"], end_date=search.summary["end_date"])
        return Response.json(200, {k: v for k, v in search.summary.items() if k != "created_at"})

    def list_searches(self, req: Request) -> Response:
        feed_id = req.query.get("feed_id")
        if feed_id:
            self.feed_config(feed_id)  # 404 for an unknown feed
        jobs = [s.summary for s in self.searches.values() if not feed_id or s.summary["feed_id"] == feed_id]
        return Response.json(200, {"jobs": jobs})

    # ------------------------------------------------------------------------------------------------------
    # exports
    # ------------------------------------------------------------------------------------------------------
    def create_export(self, req: Request) -> Response:
        body = _body(req)
        get_pii = _field(body, "get_pii", bool, False)
        business = _field(body, "include_business_info", bool, False)
        require_id = _field(body, "require_contact_id", bool, False)
        max_rows = _field(body, "max_rows", int, None)
        if max_rows is not None and max_rows < 1:
            raise ApiError(422, "max_rows must be >= 1")
        job_id = _field(body, "job_id", str, None)
        if job_id is not None:
            search = self.searches.get(job_id)
            if search is None:
                raise ApiError(404, f"Search job {job_id} not found")
            if body.get("feed_id") not in (None, search.summary["feed_id"]):
                raise ApiError(422, "feed_id does not match the feed of job_id")
            feed = self.feed_config(search.summary["feed_id"])
        elif "feed_id" in body or "lookback_days" in body:
            feed, lookback, start, end = self._window(body)
            search = None
        else:
            raise ApiError(422, "Provide job_id, or feed_id and lookback_days")
        if get_pii and not feed["allow_pii"]:
            raise ApiError(403, f"Feed {feed['feed_id']} is not configured for PII export (get_pii)")
        if business and not feed["allow_business_info"]:
            raise ApiError(403, f"Feed {feed['feed_id']} is not configured for business-info export "
                                "(include_business_info)")
        if search is None:
            search = self._new_search(feed["feed_id"], lookback, start, end)
        st = self.state
        with st.lock:
            feed = self.feed_config(feed["feed_id"])  # fresh quota numbers
            s = search.summary
            matched = s["records_with_contact_id"] if require_id else s["total_records"]
            total_rows = min(matched, max_rows) if max_rows is not None else matched
            cost = 0 if search.exported else total_rows
            remaining = feed["export_rows_remaining"]
            if remaining is not None and cost > remaining:
                st.event("quota_refused", feed_id=feed["feed_id"], rows=total_rows, remaining=remaining)
                raise ApiError(403, f"Export of {total_rows} rows exceeds remaining quota {remaining} for feed "
                                    f"{feed['feed_id']}")
            search.exported = True
            self.used[feed["feed_id"]] += cost
            st.stats.quota_spent[feed["feed_id"]] += cost
            st.stats.exports_created += 1
            page_size = max(1, int(st.settings.page_size))
            summary = {"export_id": self._uuid("export"), "feed_id": s["feed_id"], "job_id": s["job_id"],
                       "lookback_days": s["lookback_days"], "start_date": s["start_date"],
                       "end_date": s["end_date"], "total_rows": total_rows,
                       "total_pages": math.ceil(total_rows / page_size), "page_size": page_size,
                       "get_pii": get_pii, "include_business_info": business, "require_contact_id": require_id,
                       "created_at": st.iso_now()}
            counts = [w if require_id else t for t, w in search.day_totals]
            exp = Export(summary, st.settings.copy(), counts, time.monotonic() + st.settings.export_build_seconds)
            self.exports[summary["export_id"]] = exp
        st.event("export_created", export_id=summary["export_id"], feed_id=s["feed_id"], job_id=s["job_id"],
                 total_rows=total_rows, quota_cost=cost)
        if st.settings.export_create_answer_seconds > 0:
            time.sleep(st.settings.export_create_answer_seconds)
        return Response.json(200, exp.view(self.state.settings))

    def _export(self, body: dict[str, Any]) -> Export:
        export_id = _field(body, "export_id", str)
        exp = self.exports.get(export_id)
        if exp is None:
            raise ApiError(404, f"Export {export_id} not found")
        return exp

    def page(self, req: Request) -> Response:
        body = _body(req)
        exp = self._export(body)
        page = _field(body, "page", int)
        s = exp.summary
        if faults.position_hit(self.state, "export_gone"):
            return self._make_gone(exp, page)
        live = self.state.settings
        broken = live.export_total_pages is not None or live.export_total_rows is not None
        beyond = broken and page > s["total_pages"]  # answered as an empty page
        if not 1 <= page <= s["total_pages"] and not beyond:
            raise ApiError(422, f"page must satisfy 1 <= page <= total_pages ({s['total_pages']}); got {page}")
        self.state.stats.page_requests += 1
        if beyond:
            return Response.json(200, {"export_id": s["export_id"], "page": page,
                                       "total_pages": exp.view(live)["total_pages"], live.page_envelope: []})
        if exp.view(self.state.settings).get("status") == "building":
            raise ApiError(409, f"Export {s['export_id']} is still building; poll /intent/feeds/exports/get")
        if self.state.take("page_errors"):
            self.state.event("injected_error", status=502, what="page", export_id=s["export_id"], page=page)
            raise ApiError(502, "Bad gateway: upstream export store unavailable (injected fault)")
        rows = self._page_rows(exp, page)
        self.state.event("page_served", export_id=s["export_id"], page=page, rows=len(rows))
        return Response.json(200, {"export_id": s["export_id"], "page": page, "total_pages": s["total_pages"],
                                   self.state.settings.page_envelope: rows})

    def _make_gone(self, exp: Export, page: int) -> Response:
        """``export_gone``: the export (and with ``search_gone_with_export`` its search) is deleted for good."""
        s = exp.summary
        with self.state.lock:
            self.exports.pop(s["export_id"], None)
            if self.state.settings.search_gone_with_export:
                self.searches.pop(s["job_id"], None)
        self.state.event("export_gone", export_id=s["export_id"], job_id=s["job_id"], page=page,
                         search_gone=self.state.settings.search_gone_with_export)
        return error(410, f"Export {s['export_id']} has expired and is gone")

    def _page_rows(self, exp: Export, page: int) -> list[dict[str, Any]]:
        s, cfg = exp.summary, exp.settings
        skip = (page - 1) * s["page_size"]
        want = min(s["page_size"], s["total_rows"] - skip)
        start = date.fromisoformat(s["start_date"])
        day_index = 0
        while day_index < len(exp.day_counts) and skip >= exp.day_counts[day_index]:
            skip -= exp.day_counts[day_index]
            day_index += 1
        rows: list[dict[str, Any]] = []
        day_start = start + timedelta(days=day_index)
        for row in data.iter_intent_rows(cfg, s["feed_id"], day_start, date.fromisoformat(s["end_date"]),
                                         require_contact_id=s["require_contact_id"], get_pii=s["get_pii"],
                                         include_business_info=s["include_business_info"]):
            if skip:
                skip -= 1
                continue
            rows.append(row)
            if len(rows) >= want:
                break
        return rows

    def get_export(self, req: Request) -> Response:
        return Response.json(200, self._export(_body(req)).view(self.state.settings))

    def list_exports(self, req: Request) -> Response:
        body = _body(req, allow_empty=True)
        feed_id = _field(body, "feed_id", str, None)
        job_id = _field(body, "job_id", str, None)
        out = [e.view(self.state.settings) for e in self.exports.values()
               if (feed_id is None or e.summary["feed_id"] == feed_id)
               and (job_id is None or e.summary["job_id"] == job_id)]
        return Response.json(200, {"exports": out})

    # ------------------------------------------------------------------------------------------------------
    # enrichment
    # ------------------------------------------------------------------------------------------------------
    def _envelope(self, cid: str, include: list[str]) -> dict[str, Any]:
        sections = data.enrichment(self.state.settings, cid)
        answered = data.canonical_contact_id(self.state.settings, cid) if self.state.settings.enrich_canonical_ids \
            else cid
        env: dict[str, Any] = {"contact_id": answered, "found_sections": 0, "pii": None, "emails": None,
                               "phones": None}
        for name in include:
            env[name] = sections[name]
            env["found_sections"] += sections[name] is not None
        return env

    def enrich_one(self, req: Request, cid: str, section: str | None) -> Response:
        self.state.stats.enrich_single_requests += 1
        if not data.is_valid_contact_id(cid):
            raise ApiError(400, f"Invalid contact_id: {cid!r} (expected id_ followed by 16 lowercase hex)")
        if section:
            value = data.enrichment(self.state.settings, cid)[section]
            if value is None:
                raise ApiError(404, f"No {section} record for contact_id {cid}")
            return Response.json(200, value)
        include = list(SECTIONS)
        if "include" in req.query:
            include = [p.strip() for p in req.query["include"].split(",") if p.strip()]
            bad = [p for p in include if p not in SECTIONS]
            if bad or not include:
                raise ApiError(400, f"Invalid include: {req.query['include']!r} (allowed: pii, emails, phones)")
        env = self._envelope(cid, include)
        self.state.event("enrich_single", contact_id=cid, include=include, found=env["found_sections"])
        if env["found_sections"] == 0:
            raise ApiError(404, f"No enrichment data for contact_id {cid}")
        return Response.json(200, env)

    def enrich_batch(self, req: Request) -> Response:
        body = _body(req)
        ids_key = self._batch_ids_key(body)
        ids = body.get(ids_key)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(422, f"{ids_key} must be a list of strings")
        include = body.get("include", list(SECTIONS))
        if include is None:
            include = list(SECTIONS)
        if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
            raise ApiError(422, "include must be a list of strings")
        if any(i not in SECTIONS for i in include):
            raise ApiError(400, f"Invalid include: {include!r} (allowed: pii, emails, phones)")
        st = self.state
        with st.lock:
            st.stats.enrich_batches.append(len(ids))
        limit = st.settings.enrich_batch_limit
        if len(ids) > limit:
            st.event("enrich_refused", status=413, size=len(ids), limit=limit)
            raise ApiError(413, f"Payload too large: {len(ids)} contact_ids, at most {limit} per request")
        for n, cid in enumerate(ids):
            if not data.is_valid_contact_id(cid):
                raise ApiError(400, f"Invalid contact_id at index {n}: {cid!r}")
        if st.take("enrich_errors"):
            st.event("injected_error", status=502, what="enrich_batch", size=len(ids))
            raise ApiError(502, "Bad gateway: enrichment backend unavailable (injected fault)")
        results = [self._envelope(cid, include) for cid in ids]
        with st.lock:
            st.stats.enrich_ids_sent += len(ids)
        st.event("enrich_batch", size=len(ids), found=sum(1 for r in results if r["found_sections"]),
                 keys=sorted(body))
        return Response.json(200, {"results": results})

    def _batch_ids_key(self, body: dict[str, Any]) -> str:
        """Where the batch body holds its ids; refuses the shapes `enrich_batch_rejects` says it does not take."""
        rejects = self.state.settings.enrich_batch_rejects
        if rejects == "include" and "include" in body:
            self.state.event("enrich_refused", status=422, keys=sorted(body))
            raise ApiError(422, "include: extra inputs are not permitted")
        if rejects == "body":
            unknown = sorted(set(body) - {"ids", "include"})
            if unknown:
                self.state.event("enrich_refused", status=400, keys=sorted(body))
                raise ApiError(400, f"Unknown body field(s) {unknown}; expected ids")
            return "ids"
        return "contact_ids"

    # ------------------------------------------------------------------------------------------------------
    def _uuid(self, kind: str) -> str:
        with self.state.lock:
            self._n += 1
            digest = hashlib.md5(f"{self._instance}:{kind}:{self._n}".encode()).digest()
        return str(uuid.UUID(bytes=digest, version=4))


def _body(req: Request, allow_empty: bool = False) -> dict[str, Any]:
    if allow_empty and not req.body.strip():
        return {}
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "Request body must be valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "Request body must be a JSON object")
    return body


_MISSING = object()


def _field(body: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """Typed body field: missing and required, or of the wrong type → 422 (pydantic-style validation)."""
    value = body.get(name)
    if value is None:
        if default is _MISSING:
            raise ApiError(422, f"Field required: {name}")
        return default
    if (kind is int and (isinstance(value, bool) or not isinstance(value, int))) or not isinstance(value, kind):
        raise ApiError(422, f"Field {name} must be of type {kind.__name__}")
    return value
