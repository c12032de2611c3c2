"""Each injectable fault, plus the admin endpoints."""

from __future__ import annotations

import http.client
import json
import time

import pytest
import requests

from tap_backstory_sandbox import FEED_A_ID

from .conftest import cb, create_job, data_url, fast_sandbox, token, wait_job


def test_error_rate_is_deterministic_and_never_500():
    codes = []
    for _ in range(2):
        with fast_sandbox(error_rate=0.5) as sb:
            h = token(sb)  # auth is exempt
            run = [requests.get(sb.backstory_url + "/pull/v1/export/activities/jobs", headers=h).status_code
                   for _ in range(30)]
            bad = cb(sb, "POST", "/intent/feeds/search", data=b"{")  # client mistake: 422 or injected 5xx
            assert bad.status_code in (422, 502, 503)
            codes.append(run)
    assert codes[0] == codes[1] and {502, 503} <= set(codes[0]) and 200 in codes[0]
    assert 500 not in codes[0]


def test_error_body_shapes():
    with fast_sandbox(error_rate=1.0) as sb:
        h = token(sb)
        r = requests.get(sb.backstory_url + "/pull/v1/export/activities/jobs", headers=h)
        assert r.status_code in (502, 503) and set(r.json()) == {"error", "message"}
        r = cb(sb, "GET", "/organization/feeds")
        assert r.status_code in (502, 503) and set(r.json()) == {"detail"}
        assert requests.get(sb.base_url + "/_sandbox/stats").status_code == 200  # admin is exempt


@pytest.mark.parametrize("fault, state", [("fail_jobs", "Failed"), ("cancel_jobs", "Canceled")])
def test_failed_and_canceled_jobs(sb, fault, state):
    sb.configure(**{fault: 1})
    h = token(sb)
    job = wait_job(sb, h, create_job(sb, h).json()["job_id"])
    assert job["state"] == state and job["job_end_time"] and job["results_size"] is None
    r = requests.get(data_url(sb, job["job_id"]), headers=h)
    assert r.status_code == 400 and state in r.json()["message"]
    assert wait_job(sb, h, create_job(sb, h).json()["job_id"])["state"] == "Completed"  # only the next N


def test_burst_429(sb):
    sb.configure(burst_429=2)
    h = token(sb)
    assert [create_job(sb, h).status_code for _ in range(3)] == [429, 429, 200]
    assert any(e["kind"] == "too_many_jobs" and e.get("injected") for e in sb.events())


def test_drop_fragment_cuts_the_body(sb):
    h = token(sb)
    job = wait_job(sb, h, create_job(sb, h).json()["job_id"])
    sb.configure(drop_fragment=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(data_url(sb, job["job_id"]), params={"fragment": 0}, headers=h).content  # noqa: B018
    # at the socket level: full Content-Length announced, about half of it sent
    sb.configure(drop_fragment=1)
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
    conn.request("GET", f"/backstory/pull/v1/export/activities/jobs/{job['job_id']}/data?fragment=1", headers=h)
    resp = conn.getresponse()
    announced = int(resp.getheader("Content-Length"))
    with pytest.raises(http.client.IncompleteRead) as exc:
        resp.read()
    assert 0 < len(exc.value.partial) < announced
    conn.close()
    # the retry succeeds
    ok = requests.get(data_url(sb, job["job_id"]), params={"fragment": 0}, headers=h)
    assert ok.status_code == 200 and ok.text.endswith("\n")
    assert [e["kind"] for e in sb.events()].count("fragment_dropped") == 2


def test_slow_and_bandwidth(sb):
    h = token(sb)
    job = wait_job(sb, h, create_job(sb, h, start_date="2026-02-01", end_date="2026-02-01").json()["job_id"])
    size = job["results_size"]
    sb.configure(bandwidth_bytes_per_sec=size * 4)  # about 0.25 s
    t = time.monotonic()
    assert len(requests.get(data_url(sb, job["job_id"]), headers=h).content) == size
    assert time.monotonic() - t >= 0.2
    sb.configure(bandwidth_bytes_per_sec=0, slow_seconds=0.3)
    t = time.monotonic()
    requests.get(sb.backstory_url + "/pull/v1/export/activities/jobs", headers=h)
    assert time.monotonic() - t >= 0.3


def test_page_and_enrich_errors(sb):
    exp = cb(sb, "POST", "/intent/feeds/exports", json={"feed_id": FEED_A_ID, "lookback_days": 1}).json()
    sb.configure(page_errors=1, enrich_errors=1)
    body = {"export_id": exp["export_id"], "page": 1}
    assert cb(sb, "POST", "/intent/feeds/exports/page", json=body).status_code == 502
    assert cb(sb, "POST", "/intent/feeds/exports/page", json=body).status_code == 200
    ids = {"contact_ids": ["id_0000000000000000"]}
    assert cb(sb, "POST", "/enrich/contacts/batch", json=ids).status_code == 502
    assert cb(sb, "POST", "/enrich/contacts/batch", json=ids).status_code == 200
    st = sb.stats()
    assert st["faults_injected"] == {"page_errors": 1, "enrich_errors": 1}
    assert st["requests_by_status"]["502"] == 2


def test_admin_endpoints(sb):
    base = sb.base_url + "/_sandbox"
    r = requests.post(base + "/configure", json={"today": "2026-02-20", "fail_jobs": 1})
    assert r.status_code == 200 and r.json()["settings"]["today"] == "2026-02-20"
    assert sb.settings.fail_jobs == 1
    assert requests.post(base + "/configure", json={"no_such_setting": 1}).status_code == 400
    assert requests.post(base + "/configure", json={"fragments": "many"}).status_code == 400
    h = token(sb)
    assert create_job(sb, h, start_date="2026-02-21", end_date="2026-02-21").status_code == 400  # starts after today
    stats = requests.get(base + "/stats").json()
    assert stats["token_requests"] == {"activity": 1} and stats["requests_by_status"]["400"] == 1
    events = requests.get(base + "/events").json()["events"]
    assert events and all({"t", "kind"} <= set(e) for e in events)
    assert requests.post(base + "/reset-stats").status_code == 200
    assert requests.get(base + "/stats").json()["token_requests"] == {}
    json.dumps(sb.stats())  # JSON-serialisable
