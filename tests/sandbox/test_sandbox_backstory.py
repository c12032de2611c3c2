"""Backstory emulation: auth, typed tokens, validation, job lifecycle and limits, data and fragments."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from datetime import date

import pytest
import requests

from tap_backstory_sandbox import DEMO_CREDENTIALS, Sandbox
from tap_backstory_sandbox.data import CONTACT_FIELDS, expected_activity_uids, expected_contact_emails
from tests.conftest import TODAY

from .conftest import create_job, data_url, fast_sandbox, token, wait_job


# --- auth ------------------------------------------------------------------------------------------------
def test_token_ok_and_bad_credentials(sb):
    url = sb.backstory_url + "/auth/v1/tokens"
    r = requests.post(url, data={"grant_type": "client_credentials",
                                 "client_id": DEMO_CREDENTIALS["activity_client_id"],
                                 "client_secret": DEMO_CREDENTIALS["activity_client_secret"]})
    body = r.json()
    assert r.status_code == 200 and body["token_type"] == "bearer" and body["expires_in"] == 7200
    assert body["access_token"].count(".") == 2  # JWT-like
    r = requests.post(url, data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"})
    assert r.status_code == 401
    assert r.json() == {"error": "UnauthorizedException", "message": "Invalid client credentials"}
    # JSON instead of form-encoded -> 400
    r = requests.post(url, json={"client_id": DEMO_CREDENTIALS["activity_client_id"],
                                 "client_secret": DEMO_CREDENTIALS["activity_client_secret"]})
    assert r.status_code == 400 and r.json()["error"] == "BadRequestException"
    assert sb.stats()["token_requests"] == {"activity": 1, "invalid": 2}


def test_tokens_are_typed(sb):
    act, obj = token(sb, "activity"), token(sb, "object")
    assert create_job(sb, act).status_code == 200
    assert create_job(sb, obj, "contacts").status_code == 200
    r = create_job(sb, obj)  # Object token on the Activity API
    assert r.status_code == 401 and r.json()["error"] == "UnauthorizedException"
    assert create_job(sb, act, "contacts").status_code == 401
    assert requests.get(sb.backstory_url + "/pull/v1/export/activities/jobs").status_code == 401
    r = requests.get(sb.backstory_url + "/pull/v1/export/activities/jobs", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_token_expiry():
    with fast_sandbox(token_ttl_seconds=1) as sb:
        h = token(sb)
        assert requests.get(sb.backstory_url + "/pull/v1/export/activities/jobs", headers=h).status_code == 200
        time.sleep(1.1)
        r = requests.get(sb.backstory_url + "/pull/v1/export/activities/jobs", headers=h)
        assert r.status_code == 401
        assert r.json() == {"error": "UnauthorizedException", "message": "Token expired"}
        h2 = token(sb)  # a new token works again
        assert requests.get(sb.backstory_url + "/pull/v1/export/activities/jobs", headers=h2).status_code == 200


# --- validation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, fragment", [
    ({"export_type": "weekly"}, "exportType"),
    ({"start_date": "2026/02/01"}, "startDate"),
    ({"end_date": "2026-02-30"}, "endDate"),
    ({"activity_type": "sms"}, "activityType"),
    ({"output_format": "CSV"}, "outputFormat"),
    ({"start_date": "2026-02-10", "end_date": "2026-02-01"}, "before"),
    ({"export_type": "delta", "start_date": "2026-02-01", "end_date": "2026-02-16"}, "14 days"),
    ({"start_date": "2025-02-28", "end_date": "2026-03-01"}, "365 days"),
    ({"start_date": "2026-03-02", "end_date": "2026-03-02"}, "after today"),
])
def test_activity_job_validation(sb, body, fragment):
    r = create_job(sb, token(sb), **body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "BadRequestException" and fragment in r.json()["message"]


def test_range_limits_inclusive_edges(sb):
    h = token(sb)
    assert create_job(sb, h, export_type="delta", start_date="2026-02-01", end_date="2026-02-15").status_code == 200
    assert create_job(sb, h, start_date="2025-03-01", end_date="2026-03-01").status_code == 200  # 366 days
    # enum values are case-insensitive, output_format defaults to JSONLines
    r = create_job(sb, h, export_type="Delta", activity_type="All", output_format=None)
    assert r.status_code == 200 and r.json()["export_type"] == "delta" and r.json()["output_format"] == "JSONLines"


def test_unsupported_method_and_unknown_paths_are_404(sb):
    h = token(sb)
    for method, path in [("DELETE", "/pull/v1/export/activities/jobs"), ("PUT", "/pull/v1/export/activities/jobs"),
                         ("GET", "/auth/v1/tokens"), ("GET", "/pull/v1/export/insights/jobs")]:
        r = requests.request(method, sb.backstory_url + path, headers=h)
        assert r.status_code == 404
        assert r.json() == {"error": "NotFoundException", "message": "HTTP 404 Not Found"}
    r = requests.get(sb.backstory_url + "/pull/v1/export/activities/jobs/999999", headers=h)
    assert r.status_code == 404 and r.json()["error"] == "NotFoundException"


# --- lifecycle and limits ------------------------------------------------------------------------------
def test_job_object_and_lifecycle(sb):
    h = token(sb)
    job = create_job(sb, h).json()
    assert set(job) == {"job_id", "state", "export_type", "output_format", "activity_type", "start_date",
                        "end_date", "job_created_time", "job_start_time", "job_end_time", "results_size",
                        "fragments"}
    assert isinstance(job["job_id"], str) and job["state"] == "Queued"
    r = requests.get(data_url(sb, job["job_id"]), headers=h)
    assert r.status_code == 400 and "not completed" in r.json()["message"]
    done = wait_job(sb, h, job["job_id"])
    assert done["state"] == "Completed" and done["fragments"] == 4 and done["results_size"] > 0
    assert done["job_end_time"].endswith("Z")
    states = [e["state"] for e in sb.events() if e["kind"] == "job_state"]
    assert states == ["Running", "Completed"]
    listed = requests.get(sb.backstory_url + "/pull/v1/export/activities/jobs", headers=h).json()
    assert [j["job_id"] for j in listed["jobs"]] == [job["job_id"]]


def test_integer_job_ids_and_fragment_key():
    with fast_sandbox(integer_job_ids=True, fragment_count_key="fragment") as sb:
        h = token(sb)
        job = create_job(sb, h).json()
        assert isinstance(job["job_id"], int)
        done = wait_job(sb, h, job["job_id"])
        assert done["fragment"] == 4 and "fragments" not in done


def test_two_running_ten_alive_limits():
    with fast_sandbox(job_queue_seconds=0.05, job_run_seconds=0.6) as sb:
        h = token(sb)
        ids = [create_job(sb, h).json()["job_id"] for _ in range(10)]
        r = create_job(sb, h)
        assert r.status_code == 429
        assert r.json()["error"] == "TooManyRequestsException" and "Too many jobs" in r.json()["message"]
        time.sleep(0.3)
        states = [wait_job(sb, h, i, until=(), timeout=0)["state"] for i in ids]
        assert states.count("Running") == 2 and states.count("Queued") == 8
        wait_job(sb, h, ids[0])  # a completed job frees its slot
        assert create_job(sb, h).status_code == 200
        st = sb.stats()
        assert st["max_jobs_running"] == 2 and st["max_jobs_alive"] == 10
        assert st["jobs_created"] == {"activities": 11, "contacts": 0} and len(st["job_windows"]) == 11


def test_retention_ten_days(sb):
    h = token(sb)
    job_id = create_job(sb, h).json()["job_id"]
    wait_job(sb, h, job_id)
    sb.set_today(date(2026, 3, 10))
    assert requests.get(data_url(sb, job_id), headers=h).status_code == 200
    sb.set_today(date(2026, 3, 12))
    r = requests.get(data_url(sb, job_id), headers=h)
    assert r.status_code == 404 and r.json()["error"] == "NotFoundException"
    assert requests.get(sb.backstory_url + "/pull/v1/export/activities/jobs", headers=h).json() == {"jobs": []}


# --- data ----------------------------------------------------------------------------------------------
def test_fragments_stitch_and_match_expected(sb):
    h = token(sb)
    job = wait_job(sb, h, create_job(sb, h, start_date="2026-01-01", end_date="2026-02-28").json()["job_id"])
    full = requests.get(data_url(sb, job["job_id"]), headers=h)
    assert full.status_code == 200 and len(full.content) == job["results_size"]
    parts = [requests.get(data_url(sb, job["job_id"]), params={"fragment": k}, headers=h)
             for k in range(job["fragments"])]
    assert b"".join(p.content for p in parts) == full.content
    records = [json.loads(line) for line in full.text.splitlines()]
    uids = [r["uid"] for r in records]
    assert len(uids) == len(set(uids))
    assert set(uids) == expected_activity_uids(sb.settings, date(2026, 1, 1), date(2026, 2, 28), "snapshot")
    for k in (-1, 4, "x"):
        r = requests.get(data_url(sb, job["job_id"]), params={"fragment": k}, headers=h)
        assert r.status_code == 400 and r.json()["error"] == "BadRequestException"
    assert sb.stats()["fragment_requests"] == 4
    # the same request always yields the same bytes
    job2 = wait_job(sb, h, create_job(sb, h, start_date="2026-01-01", end_date="2026-02-28").json()["job_id"])
    assert requests.get(data_url(sb, job2["job_id"]), headers=h).content == full.content


def test_activity_record_shape(sb):
    h = token(sb)
    job = wait_job(sb, h, create_job(sb, h).json()["job_id"])
    records = [json.loads(x) for x in requests.get(data_url(sb, job["job_id"]), headers=h).text.splitlines()]
    by_type = {r["type"]: r for r in records}
    assert set(by_type) == {"email", "meeting", "call"}
    for r in records:
        assert 2 <= len(r["participants"]) <= 4 and r["participants"][0]["role"] == "originator"
        assert r["stats"]["total_participants"] == len(r["participants"])
        assert isinstance(r["campaigns"], list)
        assert r["crm_status"]["matched_to"] in ("none", "account", "opportunity", "lead")
        if r["crm_status"]["matched_to"] not in ("none", "account"):
            assert r["crm_status"]["matched_to"] in r["crm_status"]
        assert len(r["timestamp"]) == 19 and "Z" not in r["timestamp"]
        assert all(v is not None for v in r.values())  # empty keys are omitted
    assert "participants_on_to_line" in by_type["email"]["stats"]
    assert "accepted_participants" in by_type["meeting"]["stats"]
    assert "participants_on_to_line" not in by_type["call"]["stats"] and "subject" not in by_type["call"]
    assert "sentiment" not in by_type["email"]
    sb.configure(extra_activity_fields=True)
    job = wait_job(sb, h, create_job(sb, h).json()["job_id"])
    first = json.loads(requests.get(data_url(sb, job["job_id"]), headers=h).text.splitlines()[0])
    assert "sentiment" in first


def test_snapshot_vs_delta_selection(sb):
    h = token(sb)
    start, end = date(2026, 2, 10), date(2026, 2, 12)
    got = {}
    for export_type in ("snapshot", "delta"):
        job = wait_job(sb, h, create_job(sb, h, start_date=str(start), end_date=str(end),
                                         export_type=export_type).json()["job_id"])
        recs = [json.loads(x) for x in requests.get(data_url(sb, job["job_id"]), headers=h).text.splitlines()]
        got[export_type] = recs
        assert {r["uid"] for r in recs} == expected_activity_uids(sb.settings, start, end, export_type)
    assert all(str(start) <= r["timestamp"][:10] <= str(end) for r in got["snapshot"])
    assert all(str(start) <= r["ingest_timestamp"][:10] <= str(end) for r in got["delta"])
    assert any(r["timestamp"][:10] < str(start) for r in got["delta"])  # processed later than it happened
    # activities only exist once processed: a snapshot ending today misses the not-yet-ingested ones
    recent = expected_activity_uids(sb.settings, TODAY, TODAY, "snapshot")
    assert 0 < len(recent) < sb.settings.activities_per_day
    emails = expected_activity_uids(sb.settings, start, end, "snapshot", "email")
    assert emails and emails < {r["uid"] for r in got["snapshot"]}


def test_future_dated_meetings_are_in_a_snapshot_by_activity_day_and_in_a_delta_by_processing_day():
    with fast_sandbox(future_activity_days=10) as sb:
        h = token(sb)
        ahead = expected_activity_uids(sb.settings, date(2026, 3, 2), date(2026, 3, 20), "snapshot")
        assert ahead and all(uid.startswith("ACT-202603") for uid in ahead)  # dated after today, processed
        job = wait_job(sb, h, create_job(sb, h, start_date="2026-03-01", end_date="2026-03-20").json()["job_id"])
        recs = [json.loads(x) for x in requests.get(data_url(sb, job["job_id"]), headers=h).text.splitlines()]
        assert {r["uid"] for r in recs} == expected_activity_uids(sb.settings, TODAY, date(2026, 3, 20), "snapshot")
        future = [r for r in recs if r["timestamp"][:10] > str(TODAY)]
        assert {r["uid"] for r in future} == ahead
        assert all(r["type"] == "meeting" and r["ingest_timestamp"][:10] <= str(TODAY) for r in future)
        # The same meetings come in the delta of the days they were processed on.
        start = date(2026, 2, 20)
        job = wait_job(sb, h, create_job(sb, h, start_date=str(start), end_date=str(TODAY),
                                         export_type="delta").json()["job_id"])
        delta = {json.loads(x)["uid"] for x in requests.get(data_url(sb, job["job_id"]), headers=h).text.splitlines()}
        assert delta == expected_activity_uids(sb.settings, start, TODAY, "delta") and ahead < delta
    # Off (the default): the data is unchanged, nothing is dated after today.
    with fast_sandbox() as sb:
        assert not expected_activity_uids(sb.settings, date(2026, 3, 2), date(2026, 3, 20), "snapshot")


def test_an_end_date_after_today_is_taken_unless_refused():
    with fast_sandbox(refuse_future_end_date=True) as sb:
        h = token(sb)
        for stream in ("activities", "contacts"):
            r = create_job(sb, token(sb, "object") if stream == "contacts" else h, stream, end_date="2026-03-02")
            assert r.status_code == 400
            assert r.json() == {"error": "BadRequestException",
                                "message": "Invalid date range: dates must not be after today (2026-03-01)"}
        assert create_job(sb, h, end_date="2026-03-01").status_code == 200
    with fast_sandbox() as sb:
        assert create_job(sb, token(sb), end_date="2026-03-02").status_code == 200


def test_contacts_json_and_csv_same_data(sb):
    h = token(sb, "object")
    filters = {"include_historical": True, "include_existing": True, "is_sourced_by_people_ai": False}
    out = {}
    for fmt in ("JSON", "CSV", None):
        r = create_job(sb, h, "contacts", **filters, **({"output_format": fmt} if fmt else {}))
        assert r.status_code == 200, r.text
        job = r.json()
        assert set(job) == {"job_id", "state", "output_format", "job_created_time", "job_start_time",
                            "job_end_time", "results_size", "fragments"}
        job = wait_job(sb, h, job["job_id"], "contacts")
        body = requests.get(data_url(sb, job["job_id"], "contacts"), headers=h)
        assert len(body.content) == job["results_size"]
        out[fmt or "default"] = (job, body.text)
    assert out["default"][0]["output_format"] == "CSV"  # Object API default
    json_recs = [json.loads(x) for x in out["JSON"][1].splitlines()]
    csv_recs = list(csv.DictReader(io.StringIO(out["CSV"][1], newline="")))
    assert list(csv_recs[0]) == CONTACT_FIELDS
    emails = expected_contact_emails(sb.settings, date(2026, 2, 1), date(2026, 2, 7), **filters)
    assert {r["email"] for r in json_recs} == {r["email"] for r in csv_recs} == emails
    by_email = {r["email"]: r for r in csv_recs}
    for rec in json_recs:
        row = by_email[rec["email"]]
        for k in CONTACT_FIELDS:
            v = rec.get(k)
            expected = "" if v is None else ("true" if v is True else "false" if v is False else str(v))
            assert row[k] == expected, k
    raw = out["CSV"][1]
    assert '"VP, Sales"' in raw or '"Pied Piper, Inc."' in raw
    assert '""' in raw and any("\n" in r["job_title"] for r in csv_recs)
    # CSV fragments are standalone files with a header
    job = out["CSV"][0]
    frag = requests.get(data_url(sb, job["job_id"], "contacts"), params={"fragment": 1}, headers=h).text
    assert frag.startswith("first_name,last_name,email,")


def test_contacts_filters_and_array_style(sb):
    h = token(sb, "object")
    filters = {"country": "United States", "state": "New York", "include_existing": False,
               "is_sourced_by_people_ai": True, "output_format": "JSON"}
    job = wait_job(sb, h, create_job(sb, h, "contacts", start_date="2025-12-01", end_date="2026-02-28",
                                     **filters).json()["job_id"], "contacts")
    recs = [json.loads(x) for x in requests.get(data_url(sb, job["job_id"], "contacts"), headers=h).text.splitlines()]
    assert recs and all(r["state"] == "New York" and r["is_sourced_by_people_ai"] and "crm_id" not in r
                        for r in recs)
    expected = expected_contact_emails(sb.settings, date(2025, 12, 1), date(2026, 2, 28), country="United States",
                                       state="New York", include_existing=False, is_sourced_by_people_ai=True)
    assert {r["email"] for r in recs} == expected
    sb.configure(contacts_json_style="array")
    job = wait_job(sb, h, create_job(sb, h, "contacts", output_format="JSON").json()["job_id"], "contacts")
    arr = requests.get(data_url(sb, job["job_id"], "contacts"), headers=h).json()
    assert isinstance(arr, list) and len(arr) == 70
    frag = requests.get(data_url(sb, job["job_id"], "contacts"), params={"fragment": 0}, headers=h).json()
    assert isinstance(frag, list) and frag == arr[: len(frag)]
    r = create_job(sb, h, "contacts", start_date="2025-01-01", end_date="2026-02-01")
    assert r.status_code == 400
    r = create_job(sb, h, "contacts", output_format="XML")
    assert r.status_code == 400 and "outputFormat" in r.json()["message"]


def _bodies(sb: Sandbox, stream: str, **body) -> tuple[bytes, list[bytes]]:
    """The stitched file and the fragments of one new job."""
    h = token(sb, "activity" if stream == "activities" else "object")
    job = wait_job(sb, h, create_job(sb, h, stream, **body).json()["job_id"], stream)
    url = data_url(sb, job["job_id"], stream)
    parts = [requests.get(url, params={"fragment": k}, headers=h, timeout=10).content for k in range(job["fragments"])]
    return requests.get(url, headers=h, timeout=10).content, parts


@pytest.mark.parametrize("gzip_bodies", [False, True])
def test_byte_range_fragments_are_slices_of_one_file(gzip_bodies):
    with fast_sandbox(fragment_layout="byte_range", gzip_bodies=gzip_bodies) as sb:
        whole, parts = _bodies(sb, "contacts", output_format="CSV", start_date="2026-01-01")
        assert len(parts) == 4 and b"".join(parts) == whole
        sb.configure(fragment_layout="standalone", gzip_bodies=False)
        plain, standalone = _bodies(sb, "contacts", output_format="CSV", start_date="2026-01-01")
    text = gzip.decompress(whole) if gzip_bodies else whole
    assert text == plain and text.count(plain.split(b"\n")[0]) == 1  # one header
    if gzip_bodies:
        assert parts[0][:2] == b"\x1f\x8b" and all(part[:2] != b"\x1f\x8b" for part in parts[1:])
    else:  # slices cut inside rows: no slice after the first starts with the header or a whole row
        assert all(not part.startswith(plain.split(b"\n")[0]) for part in parts[1:])
        assert all(not parts[k - 1].endswith(b"\n") for k in range(1, 4))
    assert all(part.startswith(plain.split(b"\n")[0]) for part in standalone)


def test_gzip_standalone_fragments_are_each_a_gzip_file():
    with fast_sandbox(gzip_bodies=True) as sb:
        whole, parts = _bodies(sb, "activities")
        sb.configure(gzip_bodies=False)
        plain, plain_parts = _bodies(sb, "activities")
    assert [gzip.decompress(part) for part in parts] == plain_parts
    assert gzip.decompress(whole) == plain


def test_latin_1_bodies_are_not_utf_8():
    with fast_sandbox(body_encoding="latin-1") as sb:
        whole, _ = _bodies(sb, "contacts", output_format="JSON", start_date="2026-01-01")
    assert "Müller".encode("latin-1") in whole
    with pytest.raises(UnicodeDecodeError):
        whole.decode()
    assert json.loads(whole.decode("latin-1").splitlines()[0])["email"]
