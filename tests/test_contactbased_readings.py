"""`intent_feed_exports` under readings of the ContactBased docs the default sandbox does not serve (issue 18) and
under broken or hostile answers (issue 22): the same rows as the default reading, or one error line naming the
stream and the feed, a non-zero exit, and a rerun that finishes without loss."""

from __future__ import annotations

import math
from collections import Counter
from datetime import timedelta
from urllib.parse import quote, quote_plus

import pytest

from tap_backstory_sandbox import FEED_A_ID, FEED_B_ID
from tests import tap_runner
from tests.conftest import TODAY
from tests.contactbased_support import INTENT, expected_rows, sandbox, tap_config, window
from tests.tap_runner import TapRun, run

CONTROL_BYTES = [chr(code) for code in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F)]


def keys(result: TapRun) -> list[str]:
    return [record["row_key"] for record in result.records(INTENT)]


def assert_once_each(result: TapRun) -> set[str]:
    """Exit 0, every row once: the row_keys of the run."""
    assert result.returncode == 0, result.stderr[-3000:]
    counted = Counter(keys(result))
    assert not [key for key, count in counted.items() if count > 1]
    return set(counted)


def assert_failed_naming_stream_and_feed(result: TapRun, feed_id: str, *needles: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("tap-backstory: error:")]
    assert len(error_lines) == 1, result.stderr[-3000:]
    assert error_lines[0].startswith(f"tap-backstory: error: {INTENT}: intent feed {feed_id}: "), error_lines[0]
    assert "unexpected" not in error_lines[0]
    for needle in needles:
        assert needle in error_lines[0], error_lines[0]


# --- feed caps: learned, never guessed (issue 18 §2) --------------------------------------------------------
UNLISTED = {
    "key missing": {"feed_cap_key": ""},
    "null": {"feed_cap_null": True},
    "403 states no number": {"feed_cap_key": "", "search_refusal_states_cap": False},
    "search clamps the window": {"feed_cap_key": "", "search_clamps_lookback": True},
}


@pytest.mark.parametrize("reading", list(UNLISTED.values()), ids=list(UNLISTED))
def test_a_feed_listed_without_a_cap_is_read_over_its_whole_real_cap(reading):
    """Feed B allows 90 days; the tap once searched 30 and lost the rest with exit 0."""
    with sandbox(page_size=1000) as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_B_ID], intent_lookback_days=None)
        default = assert_once_each(run(sb, config))
        assert len(default) == expected_rows(sb, FEED_B_ID, 90)
        sb.configure(**reading)
        sb.reset_stats()
        result = run(sb, config)
        assert assert_once_each(result) == default
        assert "left out" not in result.stderr  # nothing the feed allows was left out
        start, end = window(sb, 90)
        feed_state = result.final_state["bookmarks"][INTENT]["feeds"][FEED_B_ID]
        assert (feed_state["last_window_start"], feed_state["last_window_end"]) == (start.isoformat(), end.isoformat())
        assert sb.stats()["searches_created"] == 1  # refused searches save nothing
        assert sb.stats()["previews"] <= 12


@pytest.mark.parametrize("clamps", [False, True], ids=["403", "clamped window"])
def test_a_configured_lookback_beyond_an_unlisted_cap_warns_naming_the_days_left_out(clamps):
    with sandbox(page_size=1000, feed_cap_key="", search_clamps_lookback=clamps) as sb:
        result = run(sb, tap_config(sb, intent_feed_ids=[FEED_B_ID], intent_lookback_days=120))
        assert len(assert_once_each(result)) == expected_rows(sb, FEED_B_ID, 90)
        asked_start, _ = window(sb, 120)
        got_start, _ = window(sb, 90)
        last_left_out = got_start - timedelta(days=1)
        warning = f"days {asked_start.isoformat()}..{last_left_out.isoformat()} (30 days) are left out"
        assert warning in result.stderr
        assert f"intent feed {FEED_B_ID}:" in next(line for line in result.stderr.splitlines() if warning in line)


def test_a_later_run_beyond_an_unlisted_cap_warns_and_reads_what_is_left():
    with sandbox(page_size=1000, feed_cap_key="", feed_a_lookback_cap=10) as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID])
        first = run(sb, config)
        assert_once_each(first)
        later = sb.settings.current_day() + timedelta(days=15)
        sb.set_today(later)
        second = run(sb, config, state=first.final_state)
        assert len(assert_once_each(second)) == expected_rows(sb, FEED_A_ID, 10)
        assert "can no longer be fetched" in second.stderr and f"intent feed {FEED_A_ID}: the last window" in (
            second.stderr
        )


# --- total_pages and total_rows checked (issue 22) -----------------------------------------------------------
@pytest.mark.parametrize("total_pages", [-3, 0, 1_000_000_000])
def test_a_wrong_total_pages_is_corrected_from_total_rows_and_every_row_is_read(total_pages):
    with sandbox() as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID])
        default = assert_once_each(run(sb, config))
        sb.configure(export_total_pages=total_pages)
        sb.reset_stats()
        result = run(sb, config)
        assert assert_once_each(result) == default
        assert sb.stats()["page_requests"] == math.ceil(len(default) / sb.settings.page_size)
        assert f"total_pages is {total_pages}, but its {len(default)} rows" in result.stderr


@pytest.mark.parametrize(
    ("total_rows", "needle"),
    [
        (1_000_000, "rows before the last page; every page but the last holds page_size"),
        (10, "holds rows beyond the export's total_rows 10"),
    ],
    ids=["more rows promised than served", "fewer rows promised than served"],
)
def test_rows_that_do_not_fit_total_rows_fail_and_a_rerun_finishes_without_loss(total_rows, needle):
    with sandbox() as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID])
        default = assert_once_each(run(sb, config))
        sb.configure(export_total_rows=total_rows)
        sb.reset_stats()
        broken = run(sb, config, timeout=60)
        assert_failed_naming_stream_and_feed(broken, FEED_A_ID, needle)
        assert sb.stats()["page_requests"] <= math.ceil(len(default) / sb.settings.page_size) + 1
        assert not Counter(keys(broken)) - Counter(default)  # nothing but default rows, ...
        assert len(set(keys(broken))) == len(keys(broken))  # ... each once
        sb.configure(export_total_rows=None)  # the server is fixed
        rerun = run(sb, config, state=broken.final_state)
        assert set(keys(broken)) | assert_once_each(rerun) == default


# --- exports that are gone (issue 18 §4) ---------------------------------------------------------------------
def test_an_export_gone_mid_read_is_made_again_from_its_saved_search():
    with sandbox() as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID])
        default = assert_once_each(run(sb, config))
        spent = sb.stats()["quota_spent"][FEED_A_ID]
        sb.configure(export_gone=3)
        sb.reset_stats()
        result = run(sb, config)
        assert assert_once_each(result) == default
        gone = [e for e in sb.events() if e["kind"] == "export_gone"]
        assert len(gone) == 1 and gone[0]["page"] == 3
        assert f"export {gone[0]['export_id']} is gone" in result.stderr
        assert "no export quota charged" in result.stderr
        assert sb.stats()["quota_spent"][FEED_A_ID] == spent  # a second export of a search costs nothing
        assert sb.stats()["searches_created"] == 1


def test_an_export_gone_with_its_search_fails_naming_the_feed_and_the_rerun_searches_again():
    with sandbox(search_gone_with_export=True) as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID])
        default = assert_once_each(run(sb, config))
        sb.configure(export_gone=3)
        broken = run(sb, config)
        assert_failed_naming_stream_and_feed(broken, FEED_A_ID, "are gone", "the next run searches the window")
        assert broken.final_state["bookmarks"][INTENT]["feeds"][FEED_A_ID]["in_flight"]["next_page"] <= 3
        rerun = run(sb, config, state=broken.final_state)
        assert set(keys(broken)) | assert_once_each(rerun) == default
        assert "searching the window from" in rerun.stderr


def test_an_export_gone_with_its_search_before_any_row_is_read_is_searched_again_in_the_same_run():
    with sandbox(search_gone_with_export=True) as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID])
        default = assert_once_each(run(sb, config))
        sb.configure(export_gone=1)
        sb.reset_stats()
        result = run(sb, config)
        assert assert_once_each(result) == default
        assert "searching the window from" in result.stderr
        assert sb.stats()["searches_created"] == 2 and sb.stats()["exports_created"] == 2


# --- hostile server text: no secret, no control byte on any output (issue 22) --------------------------------
def assert_clean(result: TapRun, *secrets: str) -> None:
    everything = result.stdout + result.stderr
    assert not [secret for secret in secrets if secret in everything], "a secret or token reached the output"
    assert not [hex(ord(char)) for char in CONTROL_BYTES if char in everything]


def test_contactbased_text_echoing_the_api_key_with_control_bytes_is_redacted_and_escaped():
    with sandbox(hostile_error_text=True, page_errors=2) as sb:
        key = sb.tap_config()["contactbased_api_key"]
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID])
        retried = run(sb, config)  # two 502s, logged as WARNINGs with their (echoing) text, then every row
        assert_once_each(retried)
        assert retried.stderr.count("retrying") >= 2 and "[redacted]" in retried.stderr
        assert_clean(retried, key)
        sb.configure(quota_spent_elsewhere=99_990)  # the server refuses the next export, in echoing text
        refused = run(sb, config)
        assert_failed_naming_stream_and_feed(refused, FEED_A_ID, "[redacted]", r"\x1b[2J", r"\x07")
        assert_clean(refused, key)
        assert sb.stats()["faults_injected"]["hostile_error_text"] >= 3


def test_backstory_text_echoing_the_client_secret_or_the_bearer_token_is_redacted():
    odd_secret = "wrong secret/+=%?&#-0f9e8d7c"  # every URL-encoded form differs from the raw one
    start = TODAY - timedelta(days=3)
    with sandbox(hostile_error_text=True, burst_429=2, job_queue_seconds=0.1, job_run_seconds=0.1) as sb:
        config = tap_runner.tap_config(sb, "activities", start_date=start.isoformat(), job_poll_interval_seconds=0.1)
        throttled = run(sb, config)  # two 429s on job creation echo the bearer token, then the run succeeds
        assert throttled.returncode == 0, throttled.stderr[-3000:]
        tokens = sb.stats()["issued_tokens"]
        assert tokens and "[redacted]" in throttled.stderr
        assert_clean(throttled, *tokens, *(token.rsplit(".", 1)[-1] for token in tokens))
        refused = run(sb, {**config, "activity_client_secret": odd_secret})
        assert refused.returncode == 1 and "[redacted]" in refused.error_line, refused.stderr[-3000:]
        assert_clean(refused, odd_secret, quote(odd_secret, safe=""), quote_plus(odd_secret))
