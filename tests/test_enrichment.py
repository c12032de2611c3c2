"""End to end: `enriched_contact_records`, the batched child of `intent_feed_exports`."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from tap_backstory.formats import DataError
from tap_backstory.intent import envelope_record
from tap_backstory_sandbox import FEED_A_ID, FEED_B_ID, data
from tap_backstory_sandbox.contactbased import SECTIONS
from tests.contactbased_support import (
    ENRICHED,
    FEEDS,
    INTENT,
    duplicates,
    expected_contact_ids,
    expected_rows,
    malformed_contact_ids,
    row_keys,
    sandbox,
    tap_config,
)
from tests.tap_runner import discover, run


def assert_enriched_exactly(sb, records: list[dict], expected_ids: set[str], wanted=SECTIONS) -> None:
    """One record per expected id, each the sandbox's envelope for it (empty ones with found_sections 0), the
    sections not `wanted` null; `canonical_contact_id` is the id the API answered with."""
    assert not duplicates(record["contact_id"] for record in records)
    assert {record["contact_id"] for record in records} == expected_ids
    answers_canonical = sb.settings.enrich_canonical_ids
    for record in records:
        sections = data.enrichment(sb.settings, record["contact_id"])
        sections = {name: value if name in wanted else None for name, value in sections.items()}
        assert {name: record[name] for name in sections} == sections
        assert record["found_sections"] == sum(value is not None for value in sections.values())
        canonical = data.canonical_contact_id(sb.settings, record["contact_id"])
        assert record["canonical_contact_id"] == (canonical if answers_canonical else record["contact_id"])


def test_distinct_valid_ids_enriched_once_in_full_batches():
    with sandbox() as sb:
        result = run(sb, tap_config(sb, enrichment_batch_size=40))
        assert result.returncode == 0, result.stderr[-2000:]
        expected = expected_contact_ids(sb, FEEDS, 3)
        rows_with_id = [r for r in result.records(INTENT) if r["contact_id"]]
        assert len(rows_with_id) > len(expected)  # ids repeat across pages and feeds
        records = result.records(ENRICHED)
        assert_enriched_exactly(sb, records, expected)
        assert any(record["found_sections"] == 0 for record in records)  # empty envelopes are emitted

        stats = sb.stats()
        assert len(stats["enrich_batches"]) == math.ceil(len(expected) / 40)
        assert stats["enrich_batches"][:-1] == [40] * (len(stats["enrich_batches"]) - 1)
        assert stats["enrich_ids_sent"] == len(expected)

        # Malformed ids were never sent (the sandbox answers 400 to one) and are reported once.
        malformed = malformed_contact_ids(sb, FEEDS, 3)
        assert malformed
        assert result.stderr.count("malformed contact_id") == 1
        assert f"skipped {len(malformed)} distinct malformed contact_id values" in result.stderr
        # The child keeps its own windows (the ones it got ids from): here, with both selected, the parent's.
        bookmarks = result.final_state["bookmarks"]
        windows = {
            feed_id: {key: feed[key] for key in ("last_window_start", "last_window_end", "coverage")}
            for feed_id, feed in bookmarks[INTENT]["feeds"].items()
        }
        assert set(windows) == set(FEEDS)
        assert bookmarks[ENRICHED] == {"pending_contact_ids": [], "feeds": windows}


def test_enrichment_runs_while_the_export_is_read():
    """A full batch is enriched as soon as it fills, before the export's last page is read."""
    with sandbox() as sb:
        result = run(sb, tap_config(sb, intent_feed_ids=[FEED_A_ID], enrichment_batch_size=10))
        assert result.returncode == 0, result.stderr[-2000:]
        kinds = [event["kind"] for event in sb.events() if event["kind"] in ("page_served", "enrich_batch")]
        assert kinds.index("enrich_batch") < len(kinds) - 1 - kinds[::-1].index("page_served")
        assert_enriched_exactly(sb, result.records(ENRICHED), expected_contact_ids(sb, (FEED_A_ID,), 3))


def test_413_halves_the_batch_and_every_id_is_still_enriched_once():
    with sandbox(enrich_batch_limit=7) as sb:
        result = run(sb, tap_config(sb, enrichment_batch_size=30))
        assert result.returncode == 0, result.stderr[-2000:]
        expected = expected_contact_ids(sb, FEEDS, 3)
        assert_enriched_exactly(sb, result.records(ENRICHED), expected)
        batches = sb.stats()["enrich_batches"]
        assert batches[:3] == [30, 15, 7]  # refused, refused, accepted: later requests stay at 7
        assert max(batches[3:]) == 7
        assert sb.stats()["enrich_ids_sent"] == len(expected)


def test_502s_while_paging_and_enriching_are_retried_with_the_exact_record_set():
    with sandbox(page_errors=2, enrich_errors=2) as sb:
        result = run(sb, tap_config(sb, enrichment_batch_size=50))
        assert result.returncode == 0, result.stderr[-2000:]
        records = result.records(INTENT)
        assert len(records) == sum(expected_rows(sb, feed, 3) for feed in FEEDS)
        assert not duplicates(row_keys(records))
        assert_enriched_exactly(sb, result.records(ENRICHED), expected_contact_ids(sb, FEEDS, 3))
        assert sb.stats()["faults_injected"]  # the faults did fire
        assert result.stderr.count("answered 502") == 4


def test_enrichment_alone_selected_still_reads_the_exports():
    with sandbox() as sb:
        config = tap_config(sb, enrichment_batch_size=100)
        catalog = discover(config)
        for entry in catalog["streams"]:
            for metadata in entry["metadata"]:
                if metadata["breadcrumb"] == []:
                    metadata["metadata"]["selected"] = entry["tap_stream_id"] == ENRICHED
        result = run(sb, config, catalog=catalog)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.records(INTENT) == []
        assert_enriched_exactly(sb, result.records(ENRICHED), expected_contact_ids(sb, FEEDS, 3))


def test_all_sections_are_asked_for_without_include_and_a_subset_with_it():
    """`include` is documented only on the single GET: the batch body carries it only when it must."""
    with sandbox() as sb:
        result = run(sb, tap_config(sb, intent_feed_ids=[FEED_B_ID], intent_lookback_days=1))
        assert result.returncode == 0, result.stderr[-2000:]
        assert {tuple(e["keys"]) for e in sb.events() if e["kind"] == "enrich_batch"} == {("contact_ids",)}
        sb.reset_stats()
        subset = tap_config(sb, intent_feed_ids=[FEED_B_ID], intent_lookback_days=1, enrichment_sections=["pii"])
        result = run(sb, subset)
        assert result.returncode == 0, result.stderr[-2000:]
        assert {tuple(e["keys"]) for e in sb.events() if e["kind"] == "enrich_batch"} == {("contact_ids", "include")}
        expected = expected_contact_ids(sb, (FEED_B_ID,), 1)
        assert_enriched_exactly(sb, result.records(ENRICHED), expected, wanted=("pii",))


@pytest.mark.parametrize(
    ("rejects", "sections", "canonical"),
    [("include", ["pii", "emails"], False), ("body", list(SECTIONS), True)],
    ids=["422-to-include", "400-to-the-body"],
)
def test_a_batch_body_the_endpoint_refuses_falls_back_to_single_gets_at_a_bounded_rate(rejects, sections, canonical):
    with sandbox(enrich_batch_rejects=rejects, enrich_canonical_ids=canonical) as sb:
        config = tap_config(
            sb, intent_feed_ids=[FEED_B_ID], intent_lookback_days=1, enrichment_sections=sections,
            enrichment_batch_size=5,
        )
        result = run(sb, config)
        assert result.returncode == 0, result.stderr[-2000:]
        expected = expected_contact_ids(sb, (FEED_B_ID,), 1)
        assert_enriched_exactly(sb, result.records(ENRICHED), expected, wanted=sections)
        assert any(record["found_sections"] == 0 for record in result.records(ENRICHED))  # 404 → empty envelope
        refused = [e for e in sb.events() if e["kind"] == "enrich_refused"]
        assert len(refused) == 1  # one batch tried; the rest of the run went one id at a time
        singles = [e for e in sb.events() if e["kind"] == "enrich_single"]
        assert sorted(e["contact_id"] for e in singles) == sorted(expected)
        assert {tuple(e["include"]) for e in singles} == {tuple(sections)}
        assert sb.stats()["enrich_single_requests"] == len(expected)
        times = [dt.datetime.fromisoformat(e["t"]) for e in singles]
        assert (times[-1] - times[0]).total_seconds() >= (len(times) - 1) / 10 - 0.05  # at most 10 requests/s
        assert result.stderr.count("one id at a time") == 1
        assert f"answered {refused[0]['status']}" in result.stderr


def test_legacy_ids_answered_in_canonical_form_are_matched():
    with sandbox(enrich_canonical_ids=True) as sb:
        result = run(sb, tap_config(sb, enrichment_batch_size=100))
        assert result.returncode == 0, result.stderr[-2000:]
        expected = expected_contact_ids(sb, FEEDS, 3)
        records = result.records(ENRICHED)
        assert_enriched_exactly(sb, records, expected)
        legacy = [r for r in records if r["contact_id"].startswith("cb_")]
        assert legacy and all(r["canonical_contact_id"].startswith("id_") for r in legacy)


def test_a_result_for_another_id_is_still_fatal():
    assert envelope_record("cb_1a2b3c", {"contact_id": "id_0123456789abcdef"})["contact_id"] == "cb_1a2b3c"
    for sent, answered in (("id_0123456789abcdef", "id_fedcba9876543210"), ("cb_1a2b3c", "cb_4d5e6f")):
        with pytest.raises(DataError, match="results must align by index"):
            envelope_record(sent, {"contact_id": answered})
