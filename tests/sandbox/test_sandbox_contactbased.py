"""ContactBased emulation: feeds, preview/search, exports, pages, quota, enrichment."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import requests

from tap_backstory_sandbox import FEED_A_ID, FEED_B_ID
from tap_backstory_sandbox.data import (
    canonical_contact_id,
    expected_intent_contact_ids,
    expected_intent_rows,
    is_valid_contact_id,
    people_with_enrichment,
)
from tests.conftest import TODAY

from .conftest import cb, fast_sandbox

ROW_KEYS = {"contact_id", "domain", "company_name", "company_description", "industry", "title", "topics",
            "num_topics", "similarity", "signal_date"}
PII_KEYS = {"first_name", "last_name", "address", "city", "state", "zip", "gender", "age_range", "income_range",
            "net_worth"}
BIZ_KEYS = {"linkedin_url", "job_title", "department", "company_size", "company_revenue"}


def test_auth_and_errors(sb):
    for key in ("", "wrong"):
        r = cb(sb, "GET", "/organization/feeds", key=key)
        assert r.status_code == 401 and r.json() == {"detail": "Invalid or inactive API key"}
    assert cb(sb, "POST", "/intent/feeds/search", data=b"not json").status_code == 422
    assert cb(sb, "POST", "/intent/feeds/search", json=[1]).status_code == 422
    assert cb(sb, "POST", "/intent/feeds/search", json={"feed_id": FEED_A_ID, "lookback_days": "7"}).status_code == 422
    assert cb(sb, "GET", "/intent/feeds/search").status_code == 405
    assert cb(sb, "GET", "/nope").status_code == 404


def test_feeds(sb):
    feeds = cb(sb, "GET", "/organization/feeds").json()["feeds"]
    a, b = feeds
    assert a["feed_id"] == FEED_A_ID and a["allow_pii"] and a["allow_business_info"] and a["lookback_days"] == 30
    assert a["export_row_limit"] == 100000 and a["export_rows_remaining"] == 100000 and a["export_rows_used"] == 0
    assert b["feed_id"] == FEED_B_ID and not b["allow_pii"] and b["lookback_days"] == 90
    assert b["export_row_limit"] is None and b["export_rows_remaining"] is None



def test_feed_cap_listed_under_another_key_or_null_is_enforced_all_the_same(sb):
    sb.configure(feed_cap_key="max_lookback_days")
    a, _ = cb(sb, "GET", "/organization/feeds").json()["feeds"]
    assert "lookback_days" not in a and a["max_lookback_days"] == 30
    sb.configure(feed_cap_null=True)
    a, _ = cb(sb, "GET", "/organization/feeds").json()["feeds"]
    assert a["max_lookback_days"] is None
    sb.configure(feed_cap_key="")
    a, _ = cb(sb, "GET", "/organization/feeds").json()["feeds"]
    assert "max_lookback_days" not in a and "lookback_days" not in a
    assert cb(sb, "POST", "/intent/feeds/search", json={"feed_id": FEED_A_ID, "lookback_days": 31}).status_code == 403

def test_preview_search_and_jobs(sb):
    body = {"feed_id": FEED_A_ID, "lookback_days": 7, "include_daily_counts": True}
    prev = cb(sb, "POST", "/intent/feeds/preview", json=body).json()
    start = TODAY - timedelta(days=6)
    assert prev["start_date"] == str(start) and prev["end_date"] == str(TODAY)
    assert prev["total_records"] == 7 * 40 == sum(d["count"] for d in prev["daily_counts"])
    assert prev["records_with_contact_id"] == expected_intent_rows(sb.settings, FEED_A_ID, start, TODAY, True)
    assert cb(sb, "GET", "/intent/feeds/jobs", params={"feed_id": FEED_A_ID}).json() == {"jobs": []}
    s = cb(sb, "POST", "/intent/feeds/search", json={"feed_id": FEED_A_ID, "lookback_days": 7}).json()
    assert set(s) == {"job_id", "feed_id", "lookback_days", "start_date", "end_date", "total_records",
                      "records_with_contact_id", "records_without_contact_id"}
    assert s["records_with_contact_id"] + s["records_without_contact_id"] == s["total_records"] == 280
    jobs = cb(sb, "GET", "/intent/feeds/jobs", params={"feed_id": FEED_A_ID}).json()["jobs"]
    assert [j["job_id"] for j in jobs] == [s["job_id"]]
    for lookback in (0, 31):
        r = cb(sb, "POST", "/intent/feeds/search", json={"feed_id": FEED_A_ID, "lookback_days": lookback})
        assert r.status_code == 403 and "detail" in r.json()
    assert cb(sb, "POST", "/intent/feeds/search", json={"feed_id": "nope", "lookback_days": 1}).status_code == 404
    assert sb.stats()["searches_created"] == 1


def _read_all(sb, summary):
    rows = []
    for page in range(1, summary["total_pages"] + 1):
        r = cb(sb, "POST", "/intent/feeds/exports/page", json={"export_id": summary["export_id"], "page": page})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["page"] == page and body["total_pages"] == summary["total_pages"]
        rows.extend(body[sb.settings.page_envelope])
    return rows


def test_export_pages_options_and_free_reexport():
    with fast_sandbox(page_size=100) as sb:
        s = cb(sb, "POST", "/intent/feeds/search", json={"feed_id": FEED_A_ID, "lookback_days": 10}).json()
        exp = cb(sb, "POST", "/intent/feeds/exports", json={"job_id": s["job_id"], "get_pii": True,
                                                             "include_business_info": True}).json()
        assert exp["total_rows"] == 400 and exp["total_pages"] == 4 and exp["page_size"] == 100
        rows = _read_all(sb, exp)
        assert len(rows) == 400 and set(rows[0]) == ROW_KEYS | PII_KEYS | BIZ_KEYS
        assert rows[0]["num_topics"] == len(rows[0]["topics"])
        # pages are stable
        again = cb(sb, "POST", "/intent/feeds/exports/page", json={"export_id": exp["export_id"], "page": 2}).json()
        assert again["rows"] == rows[100:200]
        for page in (0, 5):
            r = cb(sb, "POST", "/intent/feeds/exports/page", json={"export_id": exp["export_id"], "page": page})
            assert r.status_code == 422 and "total_pages" in r.json()["detail"]
        assert cb(sb, "POST", "/intent/feeds/exports/page", json={"export_id": "x", "page": 1}).status_code == 404
        feed = cb(sb, "GET", "/organization/feeds").json()["feeds"][0]
        assert feed["export_rows_used"] == 400 and feed["export_rows_remaining"] == 99600
        # a second export of the same search costs nothing; require_contact_id filters
        exp2 = cb(sb, "POST", "/intent/feeds/exports", json={"job_id": s["job_id"], "require_contact_id": True}).json()
        assert exp2["total_rows"] == s["records_with_contact_id"]
        rows2 = _read_all(sb, exp2)
        assert set(rows2[0]) == ROW_KEYS and all(is_valid_contact_id(r["contact_id"]) for r in rows2)
        assert cb(sb, "GET", "/organization/feeds").json()["feeds"][0]["export_rows_used"] == 400
        assert sb.stats()["quota_spent"] == {FEED_A_ID: 400}
        # contact ids: mostly id_, some legacy cb_, some malformed, some missing, and repeated
        ids = [r["contact_id"] for r in rows]
        assert None in ids and any(i and i.startswith("cb_") for i in ids)
        assert any(i and not is_valid_contact_id(i) for i in ids)
        valid = [i for i in ids if is_valid_contact_id(i)]
        assert len(set(valid)) < len(valid)
        start = TODAY - timedelta(days=9)
        assert set(valid) == expected_intent_contact_ids(sb.settings, FEED_A_ID, start, TODAY)
        # get / list
        got = cb(sb, "POST", "/intent/feeds/exports/get", json={"export_id": exp["export_id"]}).json()
        assert got == exp
        listed = cb(sb, "POST", "/intent/feeds/exports/list", json={"job_id": s["job_id"]}).json()["exports"]
        assert [e["export_id"] for e in listed] == [exp["export_id"], exp2["export_id"]]
        assert len(cb(sb, "POST", "/intent/feeds/exports/list").json()["exports"]) == 2


def test_export_option_refusals_quota_and_max_rows():
    with fast_sandbox(feed_a_row_limit=500, page_envelope="items", extra_row_fields=True) as sb:
        for opt in ("get_pii", "include_business_info"):
            r = cb(sb, "POST", "/intent/feeds/exports", json={"feed_id": FEED_B_ID, "lookback_days": 5, opt: True})
            assert r.status_code == 403 and "not configured" in r.json()["detail"]
        r = cb(sb, "POST", "/intent/feeds/exports", json={"feed_id": FEED_A_ID, "lookback_days": 30})
        assert r.status_code == 403
        assert r.json()["detail"] == f"Export of 1200 rows exceeds remaining quota 500 for feed {FEED_A_ID}"
        exp = cb(sb, "POST", "/intent/feeds/exports",
                 json={"feed_id": FEED_A_ID, "lookback_days": 30, "max_rows": 450}).json()
        assert exp["total_rows"] == 450 and exp["job_id"]
        page = cb(sb, "POST", "/intent/feeds/exports/page", json={"export_id": exp["export_id"], "page": 1}).json()
        assert len(page["items"]) == 450 and "buying_stage" in page["items"][0]
        feed = cb(sb, "GET", "/organization/feeds").json()["feeds"][0]
        assert feed["export_rows_remaining"] == 50
        r = cb(sb, "POST", "/intent/feeds/exports", json={"feed_id": FEED_A_ID, "lookback_days": 2})
        assert r.status_code == 403  # 80 > 50
        # re-export of the exported search is free even over quota
        r = cb(sb, "POST", "/intent/feeds/exports", json={"job_id": exp["job_id"]})
        assert r.status_code == 200 and r.json()["total_rows"] == 1200
        # uncapped feed B
        r = cb(sb, "POST", "/intent/feeds/exports", json={"feed_id": FEED_B_ID, "lookback_days": 90})
        assert r.status_code == 200 and r.json()["total_rows"] == 90 * 25


def test_enrichment_batch_alignment_and_errors():
    with fast_sandbox(enrich_batch_limit=5) as sb:
        known = people_with_enrichment(sb.settings)[:3]
        ids = [known[0], "id_0000000000000000", known[1], known[2], known[0]]
        r = cb(sb, "POST", "/enrich/contacts/batch", json={"contact_ids": ids, "include": ["pii", "emails", "phones"]})
        assert r.status_code == 200
        results = r.json()["results"]
        assert [x["contact_id"] for x in results] == ids
        assert results[1] == {"contact_id": ids[1], "found_sections": 0, "pii": None, "emails": None,
                              "phones": None}
        assert results[0]["found_sections"] >= 1 and results[0] == results[4]
        r = cb(sb, "POST", "/enrich/contacts/batch", json={"contact_ids": [*ids, known[0]]})
        assert r.status_code == 413 and "detail" in r.json()
        r = cb(sb, "POST", "/enrich/contacts/batch", json={"contact_ids": [known[0], "id_XYZ"]})
        assert r.status_code == 400 and "index 1" in r.json()["detail"]
        r = cb(sb, "POST", "/enrich/contacts/batch", json={"contact_ids": [known[0]], "include": ["ssn"]})
        assert r.status_code == 400
        assert cb(sb, "POST", "/enrich/contacts/batch", json={"contact_ids": "id_1"}).status_code == 422
        only_pii = cb(sb, "POST", "/enrich/contacts/batch", json={"contact_ids": known, "include": ["pii"]}).json()
        assert all(x["emails"] is None and x["phones"] is None for x in only_pii["results"])
        st = sb.stats()
        assert st["enrich_batches"] == [5, 6, 2, 3] and st["enrich_ids_sent"] == 8



def test_enrichment_batch_body_readings_and_canonical_ids(sb):
    known = people_with_enrichment(sb.settings)[:2]
    sb.configure(enrich_batch_rejects="include")
    assert cb(sb, "POST", "/enrich/contacts/batch", json={"contact_ids": known, "include": ["pii"]}).status_code == 422
    assert cb(sb, "POST", "/enrich/contacts/batch", json={"contact_ids": known}).status_code == 200
    sb.configure(enrich_batch_rejects="body")
    r = cb(sb, "POST", "/enrich/contacts/batch", json={"contact_ids": known})
    assert r.status_code == 400 and "contact_ids" in r.json()["detail"]
    r = cb(sb, "POST", "/enrich/contacts/batch", json={"ids": known})
    assert r.status_code == 200 and [x["contact_id"] for x in r.json()["results"]] == known
    assert [e["status"] for e in sb.events() if e["kind"] == "enrich_refused"] == [422, 400]
    # Legacy ids answered in their canonical form: the batch and the single GET, data unchanged.
    legacy = next(c for c in known + people_with_enrichment(sb.settings) if c.startswith("cb_"))
    canonical = canonical_contact_id(sb.settings, legacy)
    assert re.fullmatch(r"id_[0-9a-f]{16}", canonical) and canonical_contact_id(sb.settings, known[0]) == known[0]
    plain = cb(sb, "GET", f"/enrich/contacts/{legacy}").json()
    sb.configure(enrich_batch_rejects="", enrich_canonical_ids=True)
    answered = cb(sb, "POST", "/enrich/contacts/batch", json={"contact_ids": [known[0], legacy]}).json()["results"]
    assert [x["contact_id"] for x in answered] == [known[0], canonical]
    assert answered[1] == {**plain, "contact_id": canonical}
    assert cb(sb, "GET", f"/enrich/contacts/{legacy}").json() == {**plain, "contact_id": canonical}

def test_enrichment_single_endpoints(sb):
    s = sb.settings
    people = people_with_enrichment(s)
    from tap_backstory_sandbox.data import enrichment

    no_pii = next(c for c in people if enrichment(s, c)["pii"] is None)
    empty_emails = next(c for c in people if enrichment(s, c)["emails"] == [])
    no_phone = next(c for c in people if enrichment(s, c)["phones"] is None)
    full = next(c for c in people if all(enrichment(s, c)[k] for k in ("pii", "emails", "phones")))
    env = cb(s and sb, "GET", f"/enrich/contacts/{full}").json()
    assert env["found_sections"] == 3 and set(env["pii"]) == {"first_name", "last_name", "address", "city",
                                                                 "state", "zip", "gender", "age_range"}
    assert set(env["emails"][0]) == {"email", "md5", "sha256", "type", "first_seen", "last_seen"}
    assert set(env["phones"][0]) == {"phone", "type", "first_seen", "last_seen"}
    assert cb(sb, "GET", f"/enrich/contacts/{no_pii}/pii").status_code == 404
    r = cb(sb, "GET", f"/enrich/contacts/{empty_emails}/emails")
    assert r.status_code == 200 and r.json() == []
    assert cb(sb, "GET", f"/enrich/contacts/{no_phone}/phones").status_code == 404
    r = cb(sb, "GET", f"/enrich/contacts/{no_pii}", params={"include": "pii"})
    assert r.status_code == 404
    r = cb(sb, "GET", f"/enrich/contacts/{full}", params={"include": "pii,phones"})
    assert r.status_code == 200 and r.json()["emails"] is None and r.json()["found_sections"] == 2
    assert cb(sb, "GET", "/enrich/contacts/id_0000000000000000").status_code == 404
    assert cb(sb, "GET", "/enrich/contacts/id_XYZ").status_code == 400
    assert cb(sb, "GET", f"/enrich/contacts/{full}", params={"include": "bogus"}).status_code == 400
    # about 20% of people have no data at all
    valid = [c for c in people_with_enrichment.__globals__["_people_index"](s.seed, s.contact_population)
             if is_valid_contact_id(c)]
    share = 1 - len(people) / len(valid)
    assert 0.12 < share < 0.28


@pytest.mark.parametrize("envelope", ["rows", "data", "results"])
def test_page_envelope_setting(envelope):
    with fast_sandbox(page_envelope=envelope) as sb:
        exp = cb(sb, "POST", "/intent/feeds/exports", json={"feed_id": FEED_B_ID, "lookback_days": 1}).json()
        page = cb(sb, "POST", "/intent/feeds/exports/page", json={"export_id": exp["export_id"], "page": 1}).json()
        assert len(page[envelope]) == 25


def test_an_export_building_asynchronously_refuses_pages_until_ready():

    with fast_sandbox(export_build_seconds=0.3) as sb:
        headers = {"X-API-Key": sb.tap_config()["contactbased_api_key"]}
        url = sb.contactbased_url
        summary = requests.post(f"{url}/intent/feeds/exports", json={"feed_id": FEED_A_ID, "lookback_days": 2},
                                headers=headers, timeout=10).json()
        assert summary["status"] == "building"
        page = {"export_id": summary["export_id"], "page": 1}
        early = requests.post(f"{url}/intent/feeds/exports/page", json=page, headers=headers, timeout=10)
        assert early.status_code == 409 and "building" in early.json()["detail"]
        time.sleep(0.35)
        got = requests.post(f"{url}/intent/feeds/exports/get", json={"export_id": summary["export_id"]},
                            headers=headers, timeout=10).json()
        assert got["status"] == "ready"
        ready = requests.post(f"{url}/intent/feeds/exports/page", json=page, headers=headers, timeout=10)
        assert ready.status_code == 200 and ready.json()["rows"]
