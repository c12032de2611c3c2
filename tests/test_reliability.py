"""Reliability matrix: faults survived, bad input refused, secrets never shown (docs/reliability.md).

Every test runs the real `tap-backstory` executable over HTTP against a fresh in-process sandbox with all four
streams configured. Expectations come from the sandbox's data model (`tap_backstory_sandbox.data`) and from a
clean run. Every stdout, stderr and state seen here is collected, and the last test scans all of it for the
client secrets, the API key and every token the sandboxes issued.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import tempfile
import time
import typing as t
from collections import Counter

import pytest

from tap_backstory_sandbox import DEMO_CREDENTIALS, FEED_A_ID, FEED_B_ID, Sandbox
from tap_backstory_sandbox import data as sandbox_data
from tests import conftest, tap_runner
from tests.conftest import TODAY
from tests.tap_runner import TAP_EXE, TapRun

START = dt.date(2026, 2, 1)
END = dt.date(2026, 2, 28)  # before today: a resumed run has no "today" window to re-read (see docs/state.md)
LOOKBACK = 2
STREAMS = ("activities", "enriched_contacts", "intent_feed_exports", "enriched_contact_records")
SECRET_KEYS = ("activity_client_secret", "object_client_secret", "contactbased_api_key")
WRONG_SECRET = "wrong-secret-value-0f9e8d7c6b"
SANDBOX = {
    "activities_per_day": 10,
    "contacts_per_day": 5,
    "fragments": 3,
    "job_queue_seconds": 0.1,
    "job_run_seconds": 0.2,
    "page_size": 25,
}

# --- what the secrets scan reads: every output and state of this module, and every issued token ----------
SEEN_TEXT: list[str] = []
ISSUED_TOKENS: set[str] = set()


def collect_issued_tokens(sb: Sandbox) -> None:
    ISSUED_TOKENS.update(sb.stats()["issued_tokens"])


def sandbox(**overrides: t.Any) -> t.ContextManager[Sandbox]:
    return conftest.sandbox(on_close=collect_issued_tokens, **{**SANDBOX, **overrides})


def tap_config(sb: Sandbox, **overrides: t.Any) -> dict:
    """All four streams: both Backstory key pairs and the ContactBased key."""
    return tap_runner.tap_config(
        sb,
        **{
            "start_date": START.isoformat(),
            "end_date": END.isoformat(),
            "snapshot_window_days": 10,
            "job_poll_interval_seconds": 0.1,
            "intent_lookback_days": LOOKBACK,
            "enrichment_batch_size": 40,
            **overrides,
        },
    )


def run(
    sb: Sandbox, config: dict, *, state: dict | None = None, catalog: dict | None = None, env: dict | None = None
) -> TapRun:
    result = tap_runner.run(sb, config, state=state, catalog=catalog, env=env, timeout=180)
    SEEN_TEXT.extend([result.stdout, result.stderr, json.dumps(state)])
    return result


def run_until(
    sb: Sandbox,
    config: dict,
    stop: t.Callable[[dict, list[dict]], bool],
    *,
    state: dict | None = None,
    env: dict | None = None,
) -> tuple[list[dict], dict]:
    """Start the tap and SIGKILL it once `stop(message, messages so far)` holds.

    Returns every message read before the kill and the last STATE among them (what a target committed)."""
    killed = tap_runner.run_until(sb, config, stop, state=state, env=env)
    SEEN_TEXT.extend([killed.stdout, killed.stderr])
    assert killed.states, "no STATE before the kill"
    return killed.messages, killed.final_state


# --- record sets ----------------------------------------------------------------------------------------------
def primary_key(stream: str, record: dict) -> t.Any:
    if stream == "activities":
        return record["uid"]
    if stream == "enriched_contacts":
        return record["email"]
    if stream == "intent_feed_exports":
        return (record["feed_id"], record["row_number"])  # export ids differ between runs
    return record["contact_id"]


def comparable(stream: str, record: dict) -> dict:
    """The record minus what legitimately differs between two correct runs (the export's id, its paging)."""
    if stream == "intent_feed_exports":
        return {k: v for k, v in record.items() if k not in ("export_id", "page")}
    return record


def records_of(messages: t.Iterable[dict], stream: str) -> list[dict]:
    return [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == stream]


def keyed(records: list[dict], stream: str) -> dict:
    """Records by primary key; fails on any duplicate (also by the intent stream's real key)."""
    keys = [primary_key(stream, r) for r in records]
    assert not [k for k, n in Counter(keys).items() if n > 1], f"{stream}: duplicated records"
    if stream == "intent_feed_exports":
        real = Counter((r["export_id"], r["row_number"]) for r in records)
        assert not [k for k, n in real.items() if n > 1], f"{stream}: duplicated (export_id, row_number)"
    return {k: comparable(stream, r) for k, r in zip(keys, records, strict=True)}


def expected_keys(sb: Sandbox) -> dict[str, set]:
    """The clean record set by primary key, from the sandbox's data model."""
    s, start = sb.settings, TODAY - dt.timedelta(days=LOOKBACK - 1)
    rows = {
        (feed, n + 1): row
        for feed in (FEED_A_ID, FEED_B_ID)
        for n, row in enumerate(sandbox_data.iter_intent_rows(s, feed, start, TODAY))
    }
    return {
        "activities": sandbox_data.expected_activity_uids(s, START, END, "snapshot", today=TODAY),
        "enriched_contacts": sandbox_data.expected_contact_emails(
            s, START, END, today=TODAY, include_historical=True, include_existing=True, is_sourced_by_people_ai=False
        ),
        "intent_feed_exports": set(rows),
        "enriched_contact_records": set().union(
            *(sandbox_data.expected_intent_contact_ids(s, feed, start, TODAY) for feed in (FEED_A_ID, FEED_B_ID))
        ),
        "_rows": rows,  # type: ignore[dict-item]
    }


@pytest.fixture(scope="module")
def clean() -> dict[str, dict]:
    """A clean run: its record set must be exactly the data model's; faulty runs must reproduce it."""
    with sandbox() as sb:
        result = run(sb, tap_config(sb))
        assert result.returncode == 0, result.stderr[-3000:]
        expected = expected_keys(sb)
        out = {stream: keyed(result.records(stream), stream) for stream in STREAMS}
        for stream in STREAMS:
            assert set(out[stream]) == expected[stream], stream
        for key, row in expected["_rows"].items():  # each row is the model's row at that position
            got = out["intent_feed_exports"][key]
            assert (got["contact_id"], got["signal_date"], got["domain"]) == (
                row["contact_id"],
                row["signal_date"],
                row["domain"],
            )
        assert all(out[stream] for stream in STREAMS)
        return out


def assert_same_as_clean(records: dict[str, list[dict]], clean: dict[str, dict]) -> None:
    for stream in STREAMS:
        got = keyed(records[stream], stream)
        assert set(got) == set(clean[stream]), f"{stream}: missing {len(set(clean[stream]) - set(got))}"
        assert got == clean[stream], f"{stream}: a record differs from the clean run's"


# --- 1. faults: each run must give exactly the clean record set -----------------------------------------------
FAULTS = {
    # The error draws are seeded: with seed 42, requests 7, 51, 63, 64, ... fail. One window per Backstory
    # stream (~15 requests, sent first) and small pages and batches (~40 ContactBased requests after them) put
    # request 7 on Backstory and request 51 on ContactBased, however many polls a job takes.
    "error_rate_5pct": (
        {"error_rate": 0.05, "page_size": 5},
        {"snapshot_window_days": 30, "enrichment_batch_size": 10},
        {},
    ),
    "failed_jobs": ({"fail_jobs": 2}, {}, {}),
    "canceled_jobs": ({"cancel_jobs": 2}, {}, {}),
    "dropped_fragments": ({"drop_fragment": 3}, {}, {}),
    # `max_alive_jobs: 1` plays another process holding the org's job slots: real "too many jobs" 429s.
    "429_bursts_and_too_many_jobs": ({"burst_429": 4, "max_alive_jobs": 1}, {}, {}),
    # Every answer waits 0.3 s against a 0.5 s read time-out; one window per Backstory stream keeps it short.
    "slow_answers_near_read_timeout": (
        {"slow_seconds": 0.3},
        {"snapshot_window_days": 30},
        {"TAP_BACKSTORY_READ_TIMEOUT_SECONDS": "0.5"},
    ),
    # 2-second tokens; six windows of >= 0.7 s jobs, two at a time, keep each Backstory stream busy > 2 s.
    "token_expiry_2s": ({"token_ttl_seconds": 2, "job_run_seconds": 0.7}, {"snapshot_window_days": 5}, {}),
    "contactbased_502s_paging_and_enrichment": ({"page_errors": 2, "enrich_errors": 2}, {}, {}),
}


@pytest.mark.parametrize("scenario", list(FAULTS))
def test_fault_scenario_gives_exactly_the_clean_record_set(scenario, clean):
    faults, config, env = FAULTS[scenario]
    with sandbox(**faults) as sb:
        result = run(sb, tap_config(sb, **config), env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert_same_as_clean({stream: result.records(stream) for stream in STREAMS}, clean)
        stats = sb.stats()
        injected = stats["faults_injected"]
        final = result.final_state["bookmarks"]
        assert final["activities"]["bookmark"] == final["enriched_contacts"]["bookmark"] == "2026-02-28"
        assert all("in_flight" not in feed for feed in final["intent_feed_exports"]["feeds"].values())
        # Each fault really happened.
        if scenario == "error_rate_5pct":
            hits = [e["api"] for e in sb.events() if e["kind"] == "injected_error"]
            assert injected["error_rate"] == len(hits) >= 2 and set(hits) == {"backstory", "contactbased"}
        elif scenario in ("failed_jobs", "canceled_jobs"):
            key = "fail_jobs" if scenario == "failed_jobs" else "cancel_jobs"
            assert injected[key] == 2
            assert f"ended {'Failed' if key == 'fail_jobs' else 'Canceled'}" in result.stderr
            assert sum(stats["jobs_created"].values()) == 6 + 2  # one new job per failed one
        elif scenario == "dropped_fragments":
            assert injected["drop_fragment"] == 3
            assert result.stderr.count("fetching it again from the start") == 3
        elif scenario == "429_bursts_and_too_many_jobs":
            assert injected["burst_429"] == 4
            too_many = [e for e in sb.events() if e["kind"] == "too_many_jobs" and not e.get("injected")]
            assert too_many  # the org's limit refused a job: waited out
            assert stats["max_jobs_alive"] == 1 and sum(stats["jobs_created"].values()) == 6
        elif scenario == "slow_answers_near_read_timeout":
            assert stats["requests_total"] >= 20
        elif scenario == "token_expiry_2s":
            assert stats["token_requests"]["activity"] >= 2 and stats["token_requests"]["object"] >= 2
        else:
            assert injected == {"page_errors": 2, "enrich_errors": 2}
            assert result.stderr.count("answered 502") == 4


# --- 2. crash and resume: SIGKILL, then a run from the last STATE ---------------------------------------------
def job_windows(sb: Sandbox) -> list[tuple[str, str, str]]:
    return [(w["stream"], w["start_date"], w["end_date"]) for w in sb.stats()["job_windows"]]


def assert_one_job_per_window(sb: Sandbox) -> None:
    windows = job_windows(sb)
    assert len(windows) == len(set(windows)) == 6  # no window got a second job


def pending_activity_jobs(message: dict) -> list[dict]:
    """`pending_jobs` of `activities` in a STATE message (empty for any other message)."""
    value = message.get("value", {}) if message["type"] == "STATE" else {}
    return value.get("bookmarks", {}).get("activities", {}).get("pending_jobs", [])


def assert_resumed_exactly(before: list[dict], resumed: TapRun, clean: dict[str, dict]) -> None:
    """Committed records (before the last STATE of the killed run) plus the resumed run = the clean set;
    nothing committed comes again, and the resumed run has no duplicates."""
    last_state = max(i for i, m in enumerate(before) if m["type"] == "STATE")
    committed = before[:last_state]
    for stream in STREAMS:
        old = keyed(records_of(committed, stream), stream)
        new = keyed(resumed.records(stream), stream)
        if stream != "enriched_contact_records":  # an id read again by a later run is enriched again
            assert not set(old) & set(new), f"{stream}: committed records read again"
        assert {**old, **new} == clean[stream], stream


def test_killed_while_jobs_are_queued_resumes_with_those_jobs(clean):
    # Jobs stay Queued 1 s and Running 5 s, so the saved jobs are surely unfinished when the tap is killed.
    # The tap creates the first two windows' jobs at once (max_concurrent_jobs=2) and the third only when the
    # first completes, so killing once both ids are in state leaves no job the state does not know of.
    with sandbox(job_queue_seconds=1.0, job_run_seconds=5.0) as sb:
        config = tap_config(sb, max_concurrent_jobs=2)

        def jobs_saved(message: dict, _: list[dict]) -> bool:
            return sum(entry["job_id"] is not None for entry in pending_activity_jobs(message)) == 2

        before, state = run_until(sb, config, jobs_saved)
        saved = state["bookmarks"]["activities"]["pending_jobs"]
        assert all(sb.backstory.jobs[job["job_id"]].state in ("Queued", "Running") for job in saved)
        assert not records_of(before, "activities")
        sb.configure(job_queue_seconds=0.1, job_run_seconds=0.2)
        resumed = run(sb, config, state=state)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        for job in saved:
            assert f"resuming export job {job['job_id']}" in resumed.stderr
        assert_one_job_per_window(sb)
        assert_resumed_exactly(before, resumed, clean)


def test_killed_before_the_job_id_arrives_resumes_with_the_job_backstory_made(clean):
    # Backstory makes the job at once but answers 3 s later: the tap is killed in between, so the job exists
    # and no state names it. The state says a job was being requested; the resumed run finds it in the list.
    with sandbox(job_create_answer_seconds=3.0) as sb:
        config = tap_config(sb)

        def requested_and_made(message: dict, _: list[dict]) -> bool:
            if not any(entry["job_id"] is None for entry in pending_activity_jobs(message)):
                return False
            deadline = time.monotonic() + 2.5
            while not sb.backstory.jobs and time.monotonic() < deadline:  # the request reached Backstory
                time.sleep(0.02)
            return True

        before, state = run_until(sb, config, requested_and_made)
        [entry] = state["bookmarks"]["activities"]["pending_jobs"]
        [orphan] = job_windows(sb)  # made by Backstory, unknown to the state
        assert entry["job_id"] is None and (entry["window_start"], entry["window_end"]) == orphan[1:]
        orphan_id = next(iter(sb.backstory.jobs.values())).job_id
        sb.configure(job_create_answer_seconds=0)
        resumed = run(sb, config, state=state)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"adopting export job {orphan_id}" in resumed.stderr
        assert_one_job_per_window(sb)
        assert_resumed_exactly(before, resumed, clean)


def test_killed_mid_download_resumes_with_the_same_job_and_no_loss(clean):
    # 40 kB/s per connection, one fragment at a time: the first window's 3 fragments take seconds.
    with sandbox(bandwidth_bytes_per_sec=40_000) as sb:
        config = tap_config(sb, fragment_concurrency=1)

        def first_record(message: dict, _: list[dict]) -> bool:
            return message["type"] == "RECORD" and message["stream"] == "activities"

        with tempfile.TemporaryDirectory() as tmp:
            before, state = run_until(sb, config, first_record, env={"TMPDIR": tmp})
            assert not os.listdir(tmp)  # the fragment files die with the process: nothing left on disk
        pending = state["bookmarks"]["activities"]["pending_jobs"]
        assert "bookmark" not in state["bookmarks"]["activities"] and pending
        window_1 = sandbox_data.expected_activity_uids(
            sb.settings, START, START + dt.timedelta(days=9), "snapshot", today=TODAY
        )
        assert 0 < len(records_of(before, "activities")) < len(window_1)  # killed inside window 1
        data_before = sb.stats()["data_requests"]
        sb.configure(bandwidth_bytes_per_sec=0)
        resumed = run(sb, config, state=state)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert_one_job_per_window(sb)  # the job of window 1 was reused
        assert f"resuming export job {pending[0]['job_id']}" in resumed.stderr
        assert sb.stats()["data_requests"] > data_before  # its data fetched again, from the start
        uncommitted = {r["uid"] for r in records_of(before, "activities")}
        assert uncommitted <= {r["uid"] for r in resumed.records("activities")}  # sent again: at least once
        assert_resumed_exactly(before, resumed, clean)


def test_killed_mid_export_paging_resumes_the_same_export_and_search(clean):
    with sandbox(page_size=10) as sb:
        config = tap_config(sb)

        def paging(message: dict, _: list[dict]) -> bool:
            if message["type"] != "STATE":
                return False
            feeds = message["value"]["bookmarks"].get("intent_feed_exports", {}).get("feeds", {})
            return feeds.get(FEED_A_ID, {}).get("in_flight", {}).get("next_page", 0) >= 3

        before, state = run_until(sb, config, paging)
        flight = state["bookmarks"]["intent_feed_exports"]["feeds"][FEED_A_ID]["in_flight"]
        stats = sb.stats()
        assert (stats["searches_created"], stats["exports_created"]) == (1, 1)
        jobs_before, pages_before = sum(stats["jobs_created"].values()), stats["page_requests"]
        resumed = run(sb, config, state=state)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        after = sb.stats()
        assert sum(after["jobs_created"].values()) == jobs_before == 6  # Backstory streams: nothing left to do
        assert (after["searches_created"], after["exports_created"]) == (2, 2)  # only feed B's, once
        rows_a = [r for r in resumed.records("intent_feed_exports") if r["feed_id"] == FEED_A_ID]
        assert {r["export_id"] for r in rows_a} == {flight["export_id"]}
        assert min(r["page"] for r in rows_a) == flight["next_page"]
        assert after["quota_spent"][FEED_A_ID] == len(clean_rows(clean, FEED_A_ID))  # spent once
        assert after["page_requests"] - pages_before == sum(
            -(-len(clean_rows(clean, feed)) // 10) for feed in (FEED_A_ID, FEED_B_ID)
        ) - (flight["next_page"] - 1)
        assert_resumed_exactly(before, resumed, clean)


def clean_rows(clean: dict[str, dict], feed_id: str) -> list:
    return [key for key in clean["intent_feed_exports"] if key[0] == feed_id]


# --- 3. bad input: one line naming the problem, exit 1, no traceback, no secret --------------------------------
def assert_one_line_failure(result: TapRun, *needles: str) -> None:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("tap-backstory: error:")]
    assert len(error_lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in error_lines[0], error_lines[0]


@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ("activity_client_secret", ("Activity key pair", "activity_client_secret", "401")),
        ("object_client_secret", ("Object key pair", "object_client_secret", "401")),
        ("contactbased_api_key", ("ContactBased GET /organization/feeds answered 401", "contactbased_api_key")),
    ],
)
def test_a_wrong_secret_fails_naming_the_key(setting, needles):
    with sandbox() as sb:
        config = tap_config(sb, **{setting: WRONG_SECRET}, start_date="2026-02-25")
        if setting == "object_client_secret":  # reach the second stream: the first one is fine
            config["snapshot_window_days"] = 30
        result = run(sb, config)
        assert_one_line_failure(result, *needles)
        assert WRONG_SECRET not in result.stdout + result.stderr


def test_a_stream_selected_without_its_secret_fails_before_any_request():
    with sandbox() as sb:
        config = tap_config(sb)
        discovered = subprocess.run(
            [TAP_EXE, "--config", "/dev/stdin", "--discover"],
            input=json.dumps(config),
            capture_output=True,
            text=True,
            check=True,
        )
        catalog = json.loads(discovered.stdout)
        without_object_secret = {k: v for k, v in config.items() if not k.startswith("object_client")}
        result = run(sb, without_object_secret, catalog=catalog)
        assert_one_line_failure(result, "enriched_contacts", "object_client_id/object_client_secret")
        assert sb.stats()["requests_total"] == 0


GOOD_EXPORT_STATE = {"bookmark": "2026-02-10", "snapshot_done": False, "pending_jobs": []}
BAD_STATES = {
    "another_taps_bookmarks": ({"bookmarks": {"orders": {"replication_key_value": "2024-01-01"}}}, "orders"),
    "another_taps_currently_syncing": (
        {"currently_syncing": "users", "bookmarks": {"users": {"updated_at": "2024-01-01"}}},
        "users",
    ),
    "meltano_state_get_output": ({"singer_state": {"bookmarks": {}}}, "singer_state"),
    "replication_key_in_our_stream": (
        {"bookmarks": {"activities": {"replication_key": "updated_at", "replication_key_value": "2024-01-01"}}},
        "bookmarks.activities has replication_key",
    ),
    "bookmark_yesterday": (
        {"bookmarks": {"activities": {**GOOD_EXPORT_STATE, "bookmark": "yesterday"}}},
        "bookmarks.activities.bookmark must be a date in YYYY-MM-DD format, got 'yesterday'",
    ),
    "pending_job_without_timestamp": (
        {
            "bookmarks": {
                "enriched_contacts": {
                    "pending_jobs": [
                        {
                            "window_start": "2026-02-01",
                            "window_end": "2026-02-10",
                            "export_type": "snapshot",
                            "job_id": "100001",
                            "created_at": "2026-02-01",
                        }
                    ]
                }
            }
        },
        "bookmarks.enriched_contacts.pending_jobs[0].created_at",
    ),
    "requested_job_without_its_time": (
        {
            "bookmarks": {
                "activities": {
                    "pending_jobs": [
                        {
                            "window_start": "2026-02-01",
                            "window_end": "2026-02-10",
                            "export_type": "snapshot",
                            "job_id": None,
                            "created_at": "2026-02-01T08:00:00Z",
                        }
                    ]
                }
            }
        },
        "bookmarks.activities.pending_jobs[0].requested_at must be a UTC timestamp",
    ),
    "next_page_zero": (
        {
            "bookmarks": {
                "intent_feed_exports": {
                    "feeds": {
                        FEED_A_ID: {
                            "in_flight": {
                                "job_id": "j",
                                "window_start": "2026-02-28",
                                "window_end": "2026-03-01",
                                "export_id": "e",
                                "total_pages": 4,
                                "page_size": 25,
                                "next_page": 0,
                            }
                        }
                    }
                }
            }
        },
        "in_flight.next_page must be an integer >= 1",
    ),
    "pending_ids_not_strings": (
        {"bookmarks": {"enriched_contact_records": {"pending_contact_ids": [1, 2]}}},
        "pending_contact_ids",
    ),
    "state_is_a_list": ([], "must be a JSON object"),
}


@pytest.mark.parametrize("case", list(BAD_STATES))
def test_a_state_file_this_tap_did_not_write_fails_before_any_request(case):
    state, needle = BAD_STATES[case]
    with sandbox() as sb:
        result = run(sb, tap_config(sb), state=state)  # type: ignore[arg-type]
        assert_one_line_failure(result, "the state file (--state)", needle)
        assert sb.stats()["requests_total"] == 0
        assert result.stdout == ""


def test_the_state_check_knows_every_stream_of_the_tap():
    from tap_backstory.state_check import STREAMS as CHECKED
    from tap_backstory.streams import STREAM_ORDER

    assert CHECKED == STREAM_ORDER == STREAMS


def test_a_malformed_state_json_fails_in_one_line(tmp_path):
    with sandbox() as sb:
        config, state = tmp_path / "config.json", tmp_path / "state.json"
        config.write_text(json.dumps(tap_config(sb)))
        state.write_text('{"bookmarks": {"activities": ')
        proc = subprocess.run(
            [TAP_EXE, "--config", str(config), "--state", str(state)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **tap_runner.today_env(sb)},
        )
        SEEN_TEXT.extend([proc.stdout, proc.stderr])
        assert_one_line_failure(TapRun(proc.returncode, proc.stdout, proc.stderr), "JSON input file")
        assert sb.stats()["requests_total"] == 0


def test_a_truncated_json_line_stops_the_window_and_keeps_the_last_good_bookmark():
    # Window 1 has 3 fragments: the 4th activities data response is window 2's first. The line number counts
    # in the job's fragments read as one file.
    with sandbox(corrupt_jsonl=4) as sb:
        result = run(sb, tap_config(sb))
        job_2 = sb.stats()["job_windows"][1]
        assert (job_2["start_date"], job_2["end_date"]) == ("2026-02-11", "2026-02-20")
        assert_one_line_failure(result)
        assert re.search(
            rf"export job {job_2['job_id']}: line \d+ is not valid JSON \(.*\); the export is truncated",
            result.error_line,
        ), result.error_line
        bookmarks = [s["bookmarks"]["activities"].get("bookmark") for s in result.states]
        assert bookmarks[-1] == "2026-02-10" and "2026-02-20" not in bookmarks  # window 1's, never window 2's

        # The corrupt file's job is not reused: the next run asks for a new export of window 2 and completes.
        again = run(sb, tap_config(sb), state=result.final_state)
        assert again.returncode == 0, again.stderr[-2000:]
        later = sb.stats()["job_windows"]
        retried = [w for w in later if w["stream"] == "activities" and w["start_date"] == "2026-02-11"]
        assert len(retried) == 2 and retried[-1]["job_id"] != job_2["job_id"]
        # Records of the broken window that went out before the bad line come again (at least once; the
        # target upserts on `uid`); nothing is missing and the second run has no duplicate of its own.
        resumed = [r["uid"] for r in again.records("activities")]
        assert len(resumed) == len(set(resumed))
        expected = sandbox_data.expected_activity_uids(sb.settings, START, END, "snapshot", today=TODAY)
        assert {r["uid"] for r in result.records("activities")} | set(resumed) == expected


def test_a_csv_row_with_a_bad_number_stops_the_window_and_keeps_the_last_good_bookmark():
    with sandbox(corrupt_csv=4) as sb:
        result = run(sb, tap_config(sb, contacts_output_format="CSV"))
        job_2 = [w for w in sb.stats()["job_windows"] if w["stream"] == "contacts"][1]
        assert any(e["kind"] == "data_corrupted" for e in sb.events())
        assert_one_line_failure(result, f"export job {job_2['job_id']}: line ")
        # The line counts in the job's fragments read as one file (the sandbox's counts in one fragment).
        bad_cell = r": line \d+: column 'total_inbound' has '12x', which is not a valid integer$"
        assert re.search(bad_cell, result.error_line), result.error_line
        final = result.final_state["bookmarks"]
        assert final["activities"]["bookmark"] == "2026-02-28"  # the earlier stream's state is kept
        assert final["enriched_contacts"]["bookmark"] == "2026-02-10"
        # The job whose file was corrupt is not kept: the next run asks for a new export of that window.
        assert job_2["job_id"] not in {p["job_id"] for p in final["enriched_contacts"]["pending_jobs"]}


def test_an_unexpected_page_envelope_stops_the_export_and_keeps_its_last_good_page():
    with sandbox(unexpected_envelope=2) as sb:
        result = run(sb, tap_config(sb, intent_feed_ids=[FEED_A_ID]))
        export_id = next(e["export_id"] for e in sb.events() if e["kind"] == "data_corrupted")
        assert_one_line_failure(
            result,
            f"ContactBased POST /intent/feeds/exports/page (export {export_id}, page 2): expected a list",
        )
        flight = result.final_state["bookmarks"]["intent_feed_exports"]["feeds"][FEED_A_ID]["in_flight"]
        assert flight["export_id"] == export_id and flight["next_page"] <= 2
        emitted = {r["row_number"] for r in result.records("intent_feed_exports")}
        assert set(range(1, (flight["next_page"] - 1) * 25 + 1)) <= emitted  # the state claims only sent rows
        assert not any(r["page"] >= 2 for r in result.records("intent_feed_exports"))


# --- 4. secrets: nothing above, nor a DEBUG run, shows a secret or a token -------------------------------------
def test_zz_no_secret_or_token_in_any_output_or_state(clean):
    """Runs last: scans everything this module saw, plus a DEBUG-level run with expiring tokens."""
    with sandbox(token_ttl_seconds=2, job_run_seconds=0.7) as sb:
        result = run(sb, tap_config(sb, snapshot_window_days=5), env={"TAP_BACKSTORY_LOGLEVEL": "DEBUG"})
        assert result.returncode == 0, result.stderr[-3000:]
        assert "urllib3.connectionpool" in result.stderr  # HTTP debug logging was on ...
        assert '"GET /backstory/pull/v1/export/activities/jobs/' in result.stderr  # ... and shows paths
        assert "created export job" in result.stderr  # job ids are logged
        assert sb.stats()["token_requests"]["activity"] >= 2 and len(sb.stats()["issued_tokens"]) >= 4
    secrets = [DEMO_CREDENTIALS[key] for key in SECRET_KEYS] + [WRONG_SECRET]
    tokens = sorted(ISSUED_TOKENS)
    signatures = [token.rsplit(".", 1)[-1] for token in tokens]
    text = "\n".join(SEEN_TEXT)
    leaks = [s for s in secrets if s in text] + [s for s in tokens + signatures if s in text]
    assert not leaks, f"{len(leaks)} secret(s) or token(s) found in the tap's output or state"
    for marker in ("Authorization", "Bearer ", "X-API-Key", "client_secret="):
        assert marker not in text, marker
