"""End to end: `intent_feed_exports` through the real executable against the in-process sandbox."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from tap_backstory_sandbox import FEED_A_ID, FEED_B_ID
from tests.contactbased_support import (
    ENRICHED,
    FEEDS,
    INTENT,
    duplicates,
    expected_contact_ids,
    expected_rows,
    feed_flight,
    row_keys,
    run,
    run_until_state,
    sandbox,
    tap_config,
    window,
)


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
            assert feed_state == {"last_window_start": start.isoformat(), "last_window_end": end.isoformat()}
        assert not duplicates(row_keys(records))
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
