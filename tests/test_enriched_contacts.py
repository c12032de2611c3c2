"""`enriched_contacts` end to end (JSON vs CSV, filters) and the parsers' handling of bad export files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tap_backstory.formats import DataError, RecordShaper, read_csv_records, read_json_records
from tap_backstory.schemas import __path__ as schema_dirs
from tap_backstory_sandbox.data import expected_contact_emails
from tests.backstory_support import D, run, sandbox, stream_state, tap_config, windows
from tests.conftest import TODAY

START = "2026-02-01"
DEFAULT_FILTERS = {"include_historical": True, "include_existing": True, "is_sourced_by_people_ai": False}


def contacts(result) -> list[dict]:
    return sorted(result.records("enriched_contacts"), key=lambda record: record["email"])


def test_json_lines_json_array_and_csv_exports_give_identical_records():
    with sandbox() as sb:
        config = tap_config(sb, "enriched_contacts", start_date=START, snapshot_window_days=15)
        as_json = contacts(run(sb, config))
        sb.configure(contacts_json_style="array")
        as_array = contacts(run(sb, config))
        as_csv_run = run(sb, {**config, "contacts_output_format": "CSV"})
        as_csv = contacts(as_csv_run)

        expected = expected_contact_emails(sb.settings, D(START), TODAY, **DEFAULT_FILTERS)
        emails = [record["email"] for record in as_json]
        assert len(emails) == len(set(emails)) and set(emails) == expected
        assert as_csv == as_json and as_array == as_json
        # CSV cells with commas, quotes and newlines survived, and cells are typed like JSON values.
        titles = {record.get("job_title") for record in as_csv}
        assert {"VP, Sales", "Head of Ops\nEMEA", 'Chief "Everything" Officer'} <= titles
        assert all(isinstance(record["total_inbound"], int) for record in as_csv)
        assert all(isinstance(record["from_cc"], bool) for record in as_csv)
        # Same windows as activities' snapshot: no export_type in the request, bookmark = last ended day.
        assert {w["export_type"] for w in windows(sb, "enriched_contacts")} == {None}
        assert stream_state(as_csv_run.final_state, "enriched_contacts")["bookmark"] == "2026-02-28"


@pytest.mark.parametrize(
    ("settings", "filters"),
    [
        (
            {"contacts_country": "United States", "contacts_state": "New York"},
            {"country": "United States", "state": "New York"},
        ),
        (
            {
                "contacts_include_historical": False,
                "contacts_include_existing": False,
                "contacts_is_sourced_by_people_ai": True,
            },
            {"include_historical": False, "include_existing": False, "is_sourced_by_people_ai": True},
        ),
    ],
    ids=["country-and-state", "historical-existing-sourced"],
)
def test_each_filter_reaches_the_request_and_filters(settings, filters):
    with sandbox() as sb:
        result = run(sb, tap_config(sb, "enriched_contacts", start_date=START, **settings))
        emails = [record["email"] for record in result.records("enriched_contacts")]
        expected = expected_contact_emails(sb.settings, D(START), TODAY, **{**DEFAULT_FILTERS, **filters})
        unfiltered = expected_contact_emails(sb.settings, D(START), TODAY, **DEFAULT_FILTERS)
        assert expected and len(expected) < len(unfiltered)  # the filter matters for this data
        assert len(emails) == len(set(emails)) and set(emails) == expected
        requests = [e["request"] for e in sb.events() if e["kind"] == "job_created"]
        assert requests and all(request.items() >= filters.items() for request in requests)


# --- bad export files: the sandbox cannot serve corrupt data, so the parsers are fed bytes directly -------


def shaper() -> RecordShaper:
    schema = json.loads(Path(schema_dirs[0], "enriched_contacts.json").read_text())
    return RecordShaper(schema, "enriched_contacts")


def csv_records(body: bytes) -> list[dict]:
    shape = shaper()
    return [
        shape.coerce(row, "job 7 fragment 0", line)
        for line, row in read_csv_records(io.BytesIO(body), "job 7 fragment 0")
    ]


def test_csv_with_embedded_commas_quotes_and_newlines_parses():
    body = b'email,job_title,total_inbound\r\na@x.example,"VP, ""Sales""\nEMEA",3\r\nb@x.example,,\r\n'
    # Every declared property is in every record (issue 21 §2), null unless the row has a value.
    nulls = dict.fromkeys(json.loads(Path(schema_dirs[0], "enriched_contacts.json").read_text())["properties"])
    assert csv_records(body) == [
        {**nulls, "email": "a@x.example", "job_title": 'VP, "Sales"\nEMEA', "total_inbound": 3},
        {**nulls, "email": "b@x.example"},
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"email,total_inbound\r\na@x.example,3\r\nb@x.example,3,extra\r\n", "line 3 has 3 fields"),
        (b'email,job_title\r\na@x.example,"unterminated\r\n', "is not valid CSV"),
        (b"email,total_inbound\r\na@x.example,3\r\nb@x.example,lots\r\n", "line 3: column 'total_inbound'"),
    ],
    ids=["field-count", "unterminated-quote", "bad-number"],
)
def test_malformed_csv_is_a_one_line_error_naming_the_line(body, message):
    with pytest.raises(DataError) as error:
        csv_records(body)
    assert message in str(error.value) and "job 7 fragment 0" in str(error.value)
    assert "\n" not in str(error.value)


def test_truncated_json_line_is_a_one_line_error_naming_the_line():
    body = b'{"email": "a@x.example"}\n{"email": "b@x.example"}\n{"email": "c@x.ex'
    records = read_json_records(io.BufferedReader(io.BytesIO(body)), "job 7 fragment 1")
    with pytest.raises(DataError) as error:
        list(records)
    assert "job 7 fragment 1: line 3 is not valid JSON" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [{"email": "a@x.example"}, {"email": "b@x.example"}]}',  # one line
        b'{"data": [{"email": "a@x.example"},\n {"email": "b@x.example"}]}\n',  # two lines
        b'[{"email": "a@x.example"}, {"email": "b@x.example"}]',
        b'{"email": "a@x.example"}\n{"email": "b@x.example"}\n',  # JSON Lines
    ],
)
def test_json_bodies_of_every_shape_give_the_same_records(body: bytes):
    records = list(read_json_records(io.BufferedReader(io.BytesIO(body)), "job 7"))
    assert records == [{"email": "a@x.example"}, {"email": "b@x.example"}]


def test_a_one_record_json_lines_body_is_that_record():
    body = b'{"email": "a@x.example", "data": [1, 2]}'
    assert list(read_json_records(io.BufferedReader(io.BytesIO(body)), "job 7")) == [
        {"email": "a@x.example", "data": [1, 2]}
    ]
