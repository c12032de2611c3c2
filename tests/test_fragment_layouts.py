"""The tap under every reading the docs allow of an export's fragments (issue 14, items 2 and 3): standalone
files or byte slices of one file, gzip bodies with no Content-Encoding, and a body that is not UTF-8.

Real sandbox, real `tap-backstory` executable, exact record sets from the sandbox's data model."""

from __future__ import annotations

import pytest

from tap_backstory_sandbox.data import expected_contact_emails
from tests.backstory_support import D, expected_uids, run, sandbox, stream_state, tap_config, windows
from tests.conftest import TODAY

START = "2026-02-01"
DEFAULT_FILTERS = {"include_historical": True, "include_existing": True, "is_sourced_by_people_ai": False}


@pytest.mark.parametrize("gzip_bodies", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("layout", ["standalone", "byte_range"])
def test_activities_json_lines_whatever_the_fragment_layout(layout, gzip_bodies):
    with sandbox(fragment_layout=layout, gzip_bodies=gzip_bodies) as sb:
        result = run(sb, tap_config(sb, "activities", start_date=START))
        uids = [record["uid"] for record in result.records("activities")]
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, windows(sb))
        assert any("Müller" in str(record) for record in result.records("activities"))  # multi-byte text came through


@pytest.mark.parametrize(
    ("output_format", "json_style", "gzip_bodies"),
    [("JSON", "lines", False), ("JSON", "array", False), ("CSV", "lines", False), ("CSV", "lines", True)],
    ids=["json-lines", "json-array", "csv", "csv-gzip"],
)
@pytest.mark.parametrize("layout", ["standalone", "byte_range"])
def test_enriched_contacts_whatever_the_fragment_layout(layout, output_format, json_style, gzip_bodies):
    with sandbox(fragment_layout=layout, contacts_json_style=json_style, gzip_bodies=gzip_bodies) as sb:
        config = tap_config(sb, "enriched_contacts", start_date=START, contacts_output_format=output_format)
        records = run(sb, config).records("enriched_contacts")
        emails = [record["email"] for record in records]
        expected = expected_contact_emails(sb.settings, D(START), TODAY, **DEFAULT_FILTERS)
        assert len(emails) == len(set(emails)) and set(emails) == expected
        assert all(isinstance(record["total_inbound"], int) and record["_extra"] is None for record in records)


def test_a_latin_1_body_fails_in_one_line_drops_its_job_and_the_next_run_makes_a_new_one():
    with sandbox(body_encoding="latin-1") as sb:
        config = tap_config(sb, "activities", start_date=START)
        failed = run(sb, config, check=False)
        bad_job = windows(sb)[0]["job_id"]
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
        errors = [line for line in failed.stderr.splitlines() if line.startswith("tap-backstory: error:")]
        assert len(errors) == 1 and f"export job {bad_job} fragment " in errors[0], failed.stderr[-2000:]
        assert "is not valid UTF-8" in errors[0]
        pending = stream_state(failed.final_state, "activities").get("pending_jobs", [])
        assert str(bad_job) not in [job.get("job_id") for job in pending]

        sb.configure(body_encoding="utf-8")
        again = run(sb, config, state=failed.final_state)
        first_window = [w for w in windows(sb) if w["start_date"] == START]
        assert len(first_window) == 2 and first_window[-1]["job_id"] != bad_job
        uids = [record["uid"] for record in again.records("activities")]
        assert len(uids) == len(set(uids)) and set(uids) == expected_uids(sb, windows(sb)[1:])
