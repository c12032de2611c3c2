"""Backstory downloads under readings of the vendor docs other than ours (issue 18): a server that ignores or
refuses `?fragment=N`, files in a declared charset, files that are gone, other record shapes, records without
their primary key. Under each, every stream emits exactly the records of the default reading.

Real sandbox, real `tap-backstory` executable, exact record sets from the sandbox's data model."""

from __future__ import annotations

import io

import pytest

from tap_backstory.tap import TapBackstory
from tap_backstory_sandbox.data import expected_contact_emails
from tests.backstory_support import D, expected_uids, run, sandbox, tap_config, windows
from tests.conftest import TODAY
from tests.tap_runner import run_until

START = "2026-02-01"
DEFAULT_FILTERS = {"include_historical": True, "include_existing": True, "is_sourced_by_people_ai": False}


def warnings(stderr: str, text: str) -> list[str]:
    return [line for line in stderr.splitlines() if "WARNING" in line and text in line]


def activities(sb, **config) -> tuple[list[dict], str]:
    result = run(sb, tap_config(sb, "activities", start_date=START, **config))
    records = result.records("activities")
    uids = [record["uid"] for record in records]
    assert len(uids) == len(set(uids)), "a record was emitted twice"
    assert set(uids) == expected_uids(sb, windows(sb))
    return records, result.stderr


def contacts(sb, output_format: str, **config) -> tuple[list[dict], str]:
    result = run(sb, tap_config(sb, "enriched_contacts", start_date=START, contacts_output_format=output_format,
                                **config))
    records = result.records("enriched_contacts")
    emails = [record["email"] for record in records]
    assert len(emails) == len(set(emails)), "a record was emitted twice"
    assert set(emails) == expected_contact_emails(sb.settings, D(START), TODAY, **DEFAULT_FILTERS)
    return records, result.stderr


def by_key(records: list[dict], key: str) -> dict:
    return {record[key]: record for record in records}


@pytest.fixture(scope="module")
def default_reading() -> dict:
    """The records of every stream under the default reading, to compare the others with."""
    with sandbox() as sb:
        out = {"activities": by_key(activities(sb)[0], "uid")}
        for output_format in ("JSON", "CSV"):
            out[output_format] = by_key(contacts(sb, output_format)[0], "email")
    return out


@pytest.mark.parametrize("fragment_param", ["ignore", "refuse"])
@pytest.mark.parametrize("layout", ["standalone", "byte_range"])
def test_a_server_that_ignores_or_refuses_fragments_gives_the_records_of_the_default_reading_once(
    default_reading, fragment_param, layout
):
    with sandbox(fragment_param=fragment_param, fragment_layout=layout) as sb:
        records, stderr = activities(sb)
        assert by_key(records, "uid") == default_reading["activities"]
        jobs = len(windows(sb))
        said = warnings(stderr, "ignores ?fragment=" if fragment_param == "ignore" else "fragment 0 was refused")
        assert len(said) == jobs, stderr[-3000:]  # one WARNING per job, saying why
        for output_format in ("JSON", "CSV"):
            records, stderr = contacts(sb, output_format)
            assert by_key(records, "email") == default_reading[output_format]


def test_fragment_mode_whole_makes_one_plain_download_per_job(default_reading):
    with sandbox() as sb:
        records, stderr = activities(sb, fragment_mode="whole")
        assert by_key(records, "uid") == default_reading["activities"]
        stats = sb.stats()
        assert stats["fragment_requests"] == 0 and stats["data_requests"] == len(windows(sb))
        assert not warnings(stderr, "?fragment=")


@pytest.mark.parametrize("fragment_param", ["ignore", "refuse"])
def test_fragment_mode_fragments_fails_in_one_line_naming_the_stream_rather_than_falling_back(fragment_param):
    with sandbox(fragment_param=fragment_param) as sb:
        failed = run(sb, tap_config(sb, "activities", start_date=START, fragment_mode="fragments"), check=False)
        assert failed.returncode == 1 and "Traceback" not in failed.stderr
        assert failed.error_line.startswith("tap-backstory: error: activities: "), failed.stderr[-2000:]
        assert not failed.records("activities") or fragment_param == "ignore"
        uids = [record["uid"] for record in failed.records("activities")]
        assert len(uids) == len(set(uids))  # never a record twice, even on the way to the error


def test_a_declared_charset_is_decoded(default_reading):
    with sandbox(body_encoding="latin-1", content_charset="ISO-8859-1") as sb:
        records, _ = activities(sb)
        assert by_key(records, "uid") == default_reading["activities"]
        assert any("Müller" in str(record) for record in records)
        for output_format in ("JSON", "CSV"):
            records, _ = contacts(sb, output_format)
            assert by_key(records, "email") == default_reading[output_format]


def test_undeclared_bytes_that_are_not_utf_8_stay_a_one_line_error_naming_the_stream():
    with sandbox(body_encoding="latin-1", content_charset="") as sb:
        failed = run(sb, tap_config(sb, "activities", start_date=START), check=False)
        assert failed.returncode == 1 and "Traceback" not in failed.stderr
        assert failed.error_line.startswith("tap-backstory: error: activities: export job ")
        assert "is not valid UTF-8" in failed.error_line


def test_a_job_whose_files_are_gone_is_made_again_once_and_nothing_is_lost(default_reading):
    with sandbox(gone_jobs=1) as sb:
        records, stderr = activities(sb)
        assert by_key(records, "uid") == default_reading["activities"]
        made = windows(sb)
        assert made[0]["start_date"] == made[1]["start_date"] and made[0]["end_date"] == made[1]["end_date"]
        assert len(warnings(stderr, "are gone")) == 1, stderr[-3000:]


def test_a_job_gone_again_after_it_was_made_again_fails_in_one_line_and_the_rerun_finishes():
    with sandbox(gone_jobs=2) as sb:
        config = tap_config(sb, "activities", start_date=START)
        failed = run(sb, config, check=False)
        assert failed.returncode == 1 and failed.error_line.startswith("tap-backstory: error: activities: ")
        assert "gone" in failed.error_line
        again = run(sb, config, state=failed.final_state, check=True)
        uids = [record["uid"] for record in failed.records("activities") + again.records("activities")]
        assert set(uids) == expected_uids(sb, windows(sb))  # every window, across the two runs


def test_campaigns_as_strings_and_one_attachment_as_a_string_come_out_in_the_schema_shape(default_reading):
    with sandbox(record_shapes="strings") as sb:
        records, _ = activities(sb)
    expected = default_reading["activities"]
    assert by_key(records, "uid").keys() == expected.keys()
    named = 0
    for record in records:
        want = dict(expected[record["uid"]])
        if want.get("campaigns"):  # the API sent only the names: that is all there is to keep
            want["campaigns"] = [{"name": campaign["name"]} for campaign in want["campaigns"]]
            named += 1
        assert record == want
    assert named


def test_attachment_file_names_as_one_string_is_a_one_name_array():
    """The sandbox's data always has two attachments, so this reading is checked on the stream's own parser."""
    tap = TapBackstory(
        config={"start_date": START, "api_url": "http://127.0.0.1:9", "activity_client_id": "i",
                "activity_client_secret": "s"},
        parse_env_config=False,
    )
    lines = (
        b'{"uid": "a", "attachment_file_names": "proposal.pdf", "campaigns": ["Spring", {"name": "ABM"}]}\n'
        b'{"uid": "b", "attachment_file_names": ["x.pdf", "y.pdf"], "campaigns": []}\n'
    )
    stream = tap.streams["activities"]
    for as_structs in (False, True):  # dicts for the SDK's loop; structs where only msgspec sees the records
        stream.records_are_encoded_directly = as_structs
        records = list(stream.parse(io.BufferedReader(io.BytesIO(lines)), "export job 1"))
        assert all((type(record) is not dict) == as_structs for record in records)
        assert records[0]["attachment_file_names"] == ["proposal.pdf"]
        assert records[0]["campaigns"] == [{"name": "Spring"}, {"name": "ABM"}]
        assert records[1]["attachment_file_names"] == ["x.pdf", "y.pdf"] and records[1]["campaigns"] == []


def test_records_without_their_primary_key_are_skipped_counted_and_logged(default_reading):
    with sandbox(keyless_every=5) as sb:
        records, stderr = activities(sb)
        assert by_key(records, "uid") == default_reading["activities"]
        assert warnings(stderr, "record(s) without `uid` skipped")
        for output_format in ("JSON", "CSV"):
            result = run(sb, tap_config(sb, "enriched_contacts", start_date=START,
                                        contacts_output_format=output_format), check=True)
            assert by_key(result.records("enriched_contacts"), "email") == default_reading[output_format]
            assert warnings(result.stderr, "record(s) without `email` skipped")


def test_a_job_adopted_from_state_whose_files_are_gone_is_made_again(default_reading):
    """The issue's case: a run stops after its job was created; Backstory drops the files before the rerun,
    which adopts the job from state (its status still says Completed) and must not fail on it every time."""
    with sandbox() as sb:
        config = tap_config(sb, "activities", start_date=START)
        stopped = run_until(sb, config, lambda message, _: message["type"] == "RECORD")
        pending = stopped.final_state["bookmarks"]["activities"]["pending_jobs"]
        assert pending and pending[0]["job_id"]
        for job in sb.backstory.jobs.values():  # the sandbox drops every file it holds (retention is its call)
            job.gone = True
        again = run(sb, config, state=stopped.final_state, check=True)
        assert len(warnings(again.stderr, "are gone")) == 1, again.stderr[-3000:]
        assert f"resuming export job {pending[0]['job_id']}" in again.stderr
        uids = [record["uid"] for record in again.records("activities")]
        assert len(uids) == len(set(uids)) and set(uids) == set(default_reading["activities"])
