"""The bad-data position faults (`corrupt_jsonl`, `corrupt_csv`, `unexpected_envelope`) and issued tokens."""

from __future__ import annotations

import csv
import io
import json

import requests

from tap_backstory_sandbox import FEED_A_ID

from .conftest import cb, create_job, data_url, token, wait_job


def _completed_job(sb, h, stream="activities", **body) -> dict:
    return wait_job(sb, h, create_job(sb, h, stream, **body).json()["job_id"], stream)


def test_corrupt_jsonl_cuts_the_second_line_of_the_nth_data_response_only(sb):
    h = token(sb)
    job = _completed_job(sb, h)
    clean = requests.get(data_url(sb, job["job_id"]), params={"fragment": 0}, headers=h).content
    sb.configure(corrupt_jsonl=2)
    first = requests.get(data_url(sb, job["job_id"]), params={"fragment": 0}, headers=h)
    second = requests.get(data_url(sb, job["job_id"]), params={"fragment": 0}, headers=h)
    third = requests.get(data_url(sb, job["job_id"]), params={"fragment": 0}, headers=h)
    assert first.content == clean and third.content == clean  # only the 2nd response from now
    assert second.status_code == 200 and int(second.headers["Content-Length"]) == len(second.content)
    lines = second.content.split(b"\n")
    json.loads(lines[0])
    assert lines[1] and lines[1] in clean and lines[1] + b"\n" not in clean
    try:
        json.loads(lines[1])
        raise AssertionError("line 2 should not parse")
    except ValueError:
        pass
    assert sb.settings.corrupt_jsonl == 0 and sb.stats()["faults_injected"] == {"corrupt_jsonl": 1}
    assert [e["line"] for e in sb.events() if e["kind"] == "data_corrupted"] == [2]


def test_corrupt_csv_puts_a_non_number_in_an_integer_column(sb):
    h = token(sb, "object")
    job = _completed_job(sb, h, "contacts", output_format="CSV")
    sb.configure(corrupt_csv=1)
    r = requests.get(data_url(sb, job["job_id"], "contacts"), params={"fragment": 0}, headers=h)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(r.content)
    reader = csv.DictReader(io.StringIO(r.content.decode(), newline=""))
    rows = list(reader)
    assert rows[1]["total_inbound"] == "12x" and all(row["total_inbound"] != "12x" for row in rows[2:])
    event = next(e for e in sb.events() if e["kind"] == "data_corrupted")
    assert event["fault"] == "corrupt_csv" and event["line"] >= 3
    # JSON contacts responses are not counted by the CSV fault.
    sb.configure(corrupt_csv=1)
    job = _completed_job(sb, h, "contacts", output_format="JSON")
    r = requests.get(data_url(sb, job["job_id"], "contacts"), params={"fragment": 0}, headers=h)
    assert all(json.loads(line) for line in r.content.splitlines())
    assert sb.settings.corrupt_csv == 1


def test_unexpected_envelope_moves_the_rows_under_an_unknown_key(sb):
    search = cb(sb, "POST", "/intent/feeds/search", json={"feed_id": FEED_A_ID, "lookback_days": 1}).json()
    export = cb(sb, "POST", "/intent/feeds/exports", json={"job_id": search["job_id"]}).json()
    sb.configure(unexpected_envelope=1)
    page = cb(sb, "POST", "/intent/feeds/exports/page", json={"export_id": export["export_id"], "page": 1}).json()
    assert "rows" not in page and page["records"] and page["page"] == 1
    again = cb(sb, "POST", "/intent/feeds/exports/page", json={"export_id": export["export_id"], "page": 1}).json()
    assert again["rows"] == page["records"]
    assert sb.stats()["faults_injected"] == {"unexpected_envelope": 1}


def test_stats_list_the_issued_tokens(sb):
    h = token(sb)
    assert h["Authorization"][len("Bearer "):] in sb.stats()["issued_tokens"]
