"""End to end: `intent_feed_exports` through the real executable against the in-process sandbox."""

from __future__ import annotations

import math
import re
import time
from datetime import timedelta

import pytest

from tap_backstory.intent import row_key
from tap_backstory_sandbox import FEED_A_ID, FEED_B_ID, data
from tests.contactbased_support import (
    ENRICHED,
    FEEDS,
    INTENT,
    duplicates,
    expected_contact_ids,
    expected_rows,
    feed_flight,
    row_keys,
    run_until_state,
    sandbox,
    tap_config,
    window,
)
from tests.tap_runner import run


def assert_complete_export(records: list[dict], total_rows: int, page_size: int) -> None:
    """One export, every row once, numbered 1..total_rows, pages consistent with row numbers."""
    assert len({record["export_id"] for record in records}) == 1
    assert sorted(record["row_number"] for record in records) == list(range(1, total_rows + 1))
    for record in records:
        assert record["page"] == (record["row_number"] - 1) // page_size + 1


def test_two_feeds_every_row_with_lineage():
    with sandbox() as sb:
        result = run(sb, tap_config(sb))
        assert result.returncode == 0, result.stderr[-2000:]
        records = result.records(INTENT)
        start, end = window(sb, 3)
        for feed_id in FEEDS:
            rows = [record for record in records if record["feed_id"] == feed_id]
            total = expected_rows(sb, feed_id, 3)
            assert len(rows) == total > sb.settings.page_size  # several pages
            assert_complete_export(rows, total, sb.settings.page_size)
            assert {(r["window_start"], r["window_end"]) for r in rows} == {(start.isoformat(), end.isoformat())}
            assert all(r["domain"] and r["signal_date"] for r in rows)
            feed_state = result.final_state["bookmarks"][INTENT]["feeds"][feed_id]
            assert feed_state == {
                "last_window_start": start.isoformat(),
                "last_window_end": end.isoformat(),
                "coverage": {
                    "start_date": start.isoformat(),
                    "intent_require_contact_id": False,
                    "intent_get_pii": False,
                    "intent_include_business_info": False,
                },
            }
        assert not duplicates(row_keys(records))
        assert f"intent feed {FEED_B_ID}: window" in result.stderr
        assert "export quota remaining: no cap" in result.stderr  # feed B is uncapped (listed as null)
        stats = sb.stats()
        assert (stats["searches_created"], stats["exports_created"]) == (2, 2)
        totals = [expected_rows(sb, feed, 3) for feed in FEEDS]
        assert stats["page_requests"] == sum(math.ceil(total / sb.settings.page_size) for total in totals)
        assert stats["quota_spent"] == dict(zip(FEEDS, totals, strict=True))


def test_first_run_lookback_defaults_to_and_is_capped_at_the_feed_cap():
    with sandbox(page_size=1000, feed_a_lookback_cap=4, feed_b_lookback_cap=6) as sb:
        result = run(sb, tap_config(sb, intent_lookback_days=None, intent_feed_ids=[FEED_B_ID]))
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(result.records(INTENT)) == expected_rows(sb, FEED_B_ID, 6)
        result = run(sb, tap_config(sb, intent_lookback_days=9, intent_feed_ids=[FEED_A_ID]))
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(result.records(INTENT)) == expected_rows(sb, FEED_A_ID, 4)
        assert f"intent feed {FEED_A_ID}: intent_lookback_days 9 exceeds the feed's cap; using 4 days" in result.stderr


def test_a_feed_cap_listed_under_another_key_is_read():
    with sandbox(page_size=1000, feed_a_lookback_cap=4, feed_cap_key="max_lookback_days") as sb:
        result = run(sb, tap_config(sb, intent_lookback_days=9, intent_feed_ids=[FEED_A_ID]))
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(result.records(INTENT)) == expected_rows(sb, FEED_A_ID, 4)
        assert f"intent feed {FEED_A_ID}: intent_lookback_days 9 exceeds the feed's cap; using 4 days" in result.stderr


@pytest.mark.parametrize("listing", [{"feed_cap_key": ""}, {"feed_cap_null": True}], ids=["missing", "null"])
def test_without_a_listed_cap_the_search_answers_the_window(listing):
    with sandbox(page_size=1000, feed_a_lookback_cap=20, **listing) as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID])
        first = run(sb, config)
        assert first.returncode == 0, first.stderr[-2000:]
        start, end = window(sb, 3)
        assert len(first.records(INTENT)) == expected_rows(sb, FEED_A_ID, 3)
        assert first.final_state["bookmarks"][INTENT]["feeds"][FEED_A_ID]["last_window_start"] == start.isoformat()
        assert f"intent feed {FEED_A_ID}: the feed lists no lookback cap" in first.stderr
        # A later run searches from the last end day; the server's answer names the window.
        sb.set_today(end + timedelta(days=5))
        later = run(sb, config, state=first.final_state)
        assert later.returncode == 0, later.stderr[-2000:]
        assert len(later.records(INTENT)) == expected_rows(sb, FEED_A_ID, 6)
        # No cap listed and no intent_lookback_days: a probe of PROBE_LOOKBACK_DAYS; its 403 states the real cap
        # of 20 days, which is then read whole, without a WARNING (nothing the feed allows is left out).
        fresh = run(sb, tap_config(sb, intent_feed_ids=[FEED_A_ID], intent_lookback_days=None))
        assert fresh.returncode == 0, fresh.stderr[-2000:]
        assert len(fresh.records(INTENT)) == expected_rows(sb, FEED_A_ID, 20)
        assert f"intent feed {FEED_A_ID}: the server refused 365 days and states a cap of 20 days" in fresh.stderr
        assert "left out" not in fresh.stderr and "can no longer be fetched" not in fresh.stderr


def test_later_runs_read_from_the_last_end_day_inclusive():
    with sandbox(page_size=1000, feed_a_lookback_cap=10) as sb:
        first = run(sb, tap_config(sb))
        assert first.returncode == 0, first.stderr[-2000:]
        today = sb.settings.current_day()

        def searches_after(run_state, new_today):
            sb.set_today(new_today)
            sb.reset_stats()
            result = run(sb, tap_config(sb), state=run_state)
            assert result.returncode == 0, result.stderr[-2000:]
            searches = [e for e in sb.events() if e["kind"] == "search_created"]
            return result, {e["feed_id"]: (e["start_date"], e["end_date"]) for e in searches}

        # Four days later: last end day (inclusive) through today.
        later = today + timedelta(days=4)
        second, windows = searches_after(first.final_state, later)
        assert windows == dict.fromkeys(FEEDS, (today.isoformat(), later.isoformat()))
        for feed_id in FEEDS:
            rows = [r for r in second.records(INTENT) if r["feed_id"] == feed_id]
            assert len(rows) == expected_rows(sb, feed_id, 5)
        # Same day again: today is re-read (one day).
        _, windows = searches_after(second.final_state, later)
        assert windows == dict.fromkeys(FEEDS, (later.isoformat(), later.isoformat()))
        # A gap beyond feed A's 10-day cap: warned about and capped; feed B (cap 90) covers the whole gap.
        much_later = later + timedelta(days=12)
        third, windows = searches_after(second.final_state, much_later)
        assert windows[FEED_A_ID] == ((much_later - timedelta(days=9)).isoformat(), much_later.isoformat())
        assert windows[FEED_B_ID] == (later.isoformat(), much_later.isoformat())
        assert f"intent feed {FEED_A_ID}: the last window ended {later.isoformat()}" in third.stderr
        assert "can no longer be fetched" in third.stderr


@pytest.mark.parametrize("kill_at", ["after_search", "mid_export"])
def test_killed_run_resumes_without_new_search_or_export(kill_at):
    """SIGKILL at a STATE; the rerun from that state completes the same export and spends no quota again."""
    with sandbox(page_size=10, slow_seconds=0.01) as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID], enrichment_batch_size=15)

        def reached(state: dict) -> bool:
            flight = feed_flight(state, FEED_A_ID)
            if kill_at == "after_search":
                return "job_id" in flight and "export_id" not in flight
            return flight.get("next_page", 0) >= 2

        killed_records, state = run_until_state(sb, config, reached)
        before = sb.stats()
        assert before["searches_created"] == 1
        resumed = run(sb, config, state=state)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        after = sb.stats()

        total = expected_rows(sb, FEED_A_ID, 3)
        assert after["searches_created"] == 1  # the saved search was reused
        assert after["quota_spent"] == {FEED_A_ID: total}  # spent once
        assert after["exports_created"] == 1
        records = [m["record"] for m in killed_records if m["stream"] == INTENT] + resumed.records(INTENT)
        assert not duplicates(row_keys(records))
        assert_complete_export(records, total, 10)
        if kill_at == "mid_export":
            next_page = feed_flight(state, FEED_A_ID)["next_page"]
            assert min(r["page"] for r in resumed.records(INTENT)) == next_page
            assert after["page_requests"] - before["page_requests"] == math.ceil(total / 10) - next_page + 1
        # Ids of rows emitted before the kill but not enriched yet were kept in state and enriched on resume.
        enriched = [m["record"] for m in killed_records if m["stream"] == ENRICHED] + resumed.records(ENRICHED)
        assert {r["contact_id"] for r in enriched} == expected_contact_ids(sb, (FEED_A_ID,), 3)


def test_killed_before_the_export_id_arrives_resumes_with_the_export_contactbased_made():
    """ContactBased makes the export (spending its quota) and answers 3 s later; the tap is killed in between, so
    the state names the search but no export. The resumed run finds that export in the search's export list and
    reads it: one export, quota spent once, every row once."""
    with sandbox(page_size=10, export_create_answer_seconds=3.0) as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID])

        def searched_and_exported(state: dict) -> bool:
            flight = feed_flight(state, FEED_A_ID)
            if "job_id" not in flight or "export_id" in flight:
                return False
            deadline = time.monotonic() + 2.5
            while sb.stats()["exports_created"] == 0 and time.monotonic() < deadline:  # the request got there
                time.sleep(0.02)
            return True

        killed_records, state = run_until_state(sb, config, searched_and_exported)
        assert sb.stats()["exports_created"] == 1 and "export_id" not in feed_flight(state, FEED_A_ID)
        sb.configure(export_create_answer_seconds=0)
        resumed = run(sb, config, state=state)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        after = sb.stats()
        total = expected_rows(sb, FEED_A_ID, 3)
        assert after["exports_created"] == 1
        assert after["quota_spent"] == {FEED_A_ID: total}
        assert re.search(r"reusing export \S+ of search \S+, made by the interrupted run", resumed.stderr)
        records = [m["record"] for m in killed_records if m["stream"] == INTENT] + resumed.records(INTENT)
        assert_complete_export(records, total, 10)


def test_export_over_quota_fails_clearly_and_spends_nothing():
    with sandbox(feed_a_row_limit=50) as sb:
        total = expected_rows(sb, FEED_A_ID, 3)
        result = run(sb, tap_config(sb, intent_feed_ids=[FEED_A_ID]))
        assert result.returncode == 1
        assert FEED_A_ID in result.error_line
        assert f"needs {total} rows of export quota but only 50 remain" in result.error_line
        assert "intent_max_rows" in result.error_line
        stats = sb.stats()
        assert stats["exports_created"] == 0 and stats["quota_spent"] == {}
        # The search is kept: a rerun with intent_max_rows exports it, capped under the remaining quota.
        assert feed_flight(result.final_state, FEED_A_ID)["job_id"]
        capped = run(sb, tap_config(sb, intent_feed_ids=[FEED_A_ID], intent_max_rows=50), state=result.final_state)
        assert capped.returncode == 0, capped.stderr[-2000:]
        assert_complete_export(capped.records(INTENT), 50, sb.settings.page_size)
        assert sb.stats()["searches_created"] == 1 and sb.stats()["quota_spent"] == {FEED_A_ID: 50}


def test_quota_spent_by_another_client_meanwhile_is_refused_by_the_server_with_the_numbers():
    # The tap's own check passes on the listed numbers; another client spends the quota before the export is
    # created, so the server's 403 is what stops it: one line, feed and numbers, nothing spent.
    with sandbox(feed_a_row_limit=1000, quota_spent_elsewhere=990) as sb:
        total = expected_rows(sb, FEED_A_ID, 3)
        assert 10 < total <= 1000  # fits the listed quota, not what is left after the other client
        result = run(sb, tap_config(sb, intent_feed_ids=[FEED_A_ID]))
        assert result.returncode == 1
        assert f"intent feed {FEED_A_ID}: the export of window" in result.error_line
        assert f"({total} rows found, 1000 rows of quota remaining) was refused" in result.error_line
        assert f"exceeds remaining quota 10 for feed {FEED_A_ID}" in result.error_line  # the server's reason
        stats = sb.stats()
        assert stats["faults_injected"] == {"quota_spent_elsewhere": 1}
        assert stats["exports_created"] == 0 and stats["quota_spent"] == {}
        assert feed_flight(result.final_state, FEED_A_ID)["job_id"]  # the search is kept for a rerun


def test_options_the_feed_does_not_allow_and_unknown_feeds_fail_before_any_search():
    with sandbox() as sb:
        result = run(sb, tap_config(sb, intent_feed_ids=[FEED_B_ID], intent_get_pii=True))
        assert result.returncode == 1
        assert "intent_get_pii" in result.error_line and FEED_B_ID in result.error_line
        result = run(sb, tap_config(sb, intent_feed_ids=["no-such-feed"]))
        assert result.returncode == 1
        assert "intent_feed_ids" in result.error_line and "no-such-feed" in result.error_line
        assert sb.stats()["searches_created"] == 0


def test_items_envelope_and_unknown_fields_kept_in_extra():
    with sandbox(page_envelope="items", extra_row_fields=True) as sb:
        result = run(sb, tap_config(sb))
        assert result.returncode == 0, result.stderr[-2000:]
        records = result.records(INTENT)
        assert len(records) == sum(expected_rows(sb, feed, 3) for feed in FEEDS)
        assert all(record["_extra"]["buying_stage"] for record in records)
        assert result.stderr.count("does not declare (buying_stage)") == 1


def test_an_export_that_builds_asynchronously_is_waited_for_before_its_pages():
    """The newer API variant: the summary says `building` and pages answer 409 until it is `ready`."""
    with sandbox(export_build_seconds=0.6) as sb:
        result = run(sb, tap_config(sb, intent_feed_ids=[FEED_A_ID], job_poll_interval_seconds=0.2))
        assert result.returncode == 0, result.stderr[-2000:]
        records = result.records(INTENT)
        assert_complete_export(records, expected_rows(sb, FEED_A_ID, 3), page_size=25)
        # The first wait is the configured interval: the schedule itself is tested in-process (test_engines.py).
        assert "is building; waiting 0.2s" in result.stderr
        assert sb.stats()["requests_by_status"].get("409", 0) == 0  # no page was asked for too early


def upsert(tables: dict[str, dict], result) -> None:
    """What a target upserting on each stream's announced primary key keeps of a run."""
    keys = {m["stream"]: m["key_properties"] for m in result.messages if m["type"] == "SCHEMA"}
    for message in result.messages:
        if message["type"] == "RECORD":
            record = message["record"]
            tables.setdefault(message["stream"], {})[tuple(record[k] for k in keys[message["stream"]])] = record


@pytest.mark.parametrize("runs", [2, 3])
def test_consecutive_runs_upserted_on_the_primary_key_hold_each_intent_row_once(runs):
    """Each run searches again from the last window's end day, so that day's rows come back under a new export
    and new row numbers: the primary key must not depend on that lineage."""
    with sandbox(page_size=1000) as sb:
        first_day = sb.settings.current_day() - timedelta(days=2)  # intent_lookback_days 3
        tables: dict[str, dict] = {}
        state = None
        for n in range(runs):
            if n:
                sb.set_today(sb.settings.current_day() + timedelta(days=n))  # 1 day, then 2 days later
            result = run(sb, tap_config(sb), state=state)
            assert result.returncode == 0, result.stderr[-2000:]
            upsert(tables, result)
            state = result.final_state
            if n:
                overlap_day = sb.settings.current_day() - timedelta(days=n)  # the last window's end day
                for feed_id in FEEDS:
                    overlap = data.expected_intent_rows(sb.settings, feed_id, overlap_day, overlap_day)
                    quota = f"{overlap} rows of export quota"
                    if feed_id == FEED_B_ID:
                        quota = "no quota: the feed is uncapped"
                    line = f"intent feed {feed_id}: {overlap} rows ({quota}) came from the re-read day {overlap_day}"
                    assert line in result.stderr
        last_day = sb.settings.current_day()
        distinct = sum(data.expected_intent_rows(sb.settings, feed, first_day, last_day) for feed in FEEDS)
        assert len(tables[INTENT]) == distinct
        assert sorted(r["signal_date"] for r in tables[INTENT].values()) == sorted(
            r["signal_date"] for feed in FEEDS for r in data.iter_intent_rows(sb.settings, feed, first_day, last_day)
        )
        assert len({r["export_id"] for r in tables[INTENT].values()}) == 2 * runs  # lineage kept as data


def test_row_key_ignores_lineage_and_the_optional_pii_and_business_fields():
    with sandbox(page_size=1000) as sb:
        plain = run(sb, tap_config(sb, intent_feed_ids=[FEED_A_ID], intent_lookback_days=1))
        rich = run(
            sb,
            tap_config(
                sb, intent_feed_ids=[FEED_A_ID], intent_lookback_days=1, intent_get_pii=True,
                intent_include_business_info=True,
            ),
        )
        assert plain.returncode == rich.returncode == 0, plain.stderr[-2000:] + rich.stderr[-2000:]
        plain_keys = [r["row_key"] for r in plain.records(INTENT)]
        rich_records = rich.records(INTENT)
        assert all(r["first_name"] and r["linkedin_url"] for r in rich_records)
        assert [r["row_key"] for r in rich_records] == plain_keys
        assert len(set(plain_keys)) == len(plain_keys) == expected_rows(sb, FEED_A_ID, 1)
        assert all(re.fullmatch(r"[0-9a-f]{64}", key) for key in plain_keys)
        row = plain.records(INTENT)[0]
        omitted = {k: v for k, v in row.items() if k != "industry"}
        assert row_key(FEED_A_ID, {**row, "industry": None}) == row_key(FEED_A_ID, omitted)  # null = omitted
        assert row_key(FEED_A_ID, row) != row_key(FEED_A_ID, omitted) != row_key(FEED_B_ID, omitted)
