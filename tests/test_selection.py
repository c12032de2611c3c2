"""Partial selections as `meltano select` makes them (catalog `selected` flags), end to end against the sandbox:
what each reads, spends and bookmarks (README "Stream selection"), deselected properties and stream maps."""

from __future__ import annotations

from datetime import timedelta

from tap_backstory_sandbox import FEED_A_ID
from tests import backstory_support
from tests.contactbased_support import (
    ENRICHED,
    FEEDS,
    INTENT,
    duplicates,
    expected_contact_ids,
    expected_rows,
    sandbox,
    tap_config,
    window,
)
from tests.tap_runner import discover, run, run_until
from tests.test_enrichment import assert_enriched_exactly


def select(catalog: dict, *streams: str, deselect: dict[str, list[tuple[str, ...]]] | None = None) -> dict:
    """The discovered catalog with only `streams` selected (and `deselect`'s property paths deselected)."""
    for entry in catalog["streams"]:
        name = entry["tap_stream_id"]
        paths = {tuple(p for part in path for p in ("properties", part)) for path in (deselect or {}).get(name, [])}
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = name in streams
            elif tuple(metadata["breadcrumb"]) in paths:
                metadata["metadata"]["selected"] = False
                paths.discard(tuple(metadata["breadcrumb"]))
        for path in paths:  # nested properties have no metadata entry of their own: add one
            entry["metadata"].append({"breadcrumb": list(path), "metadata": {"selected": False}})
    return catalog


def row_count(sb, lookback: int) -> int:
    return sum(expected_rows(sb, feed, lookback) for feed in FEEDS)


def intent_state(state: dict) -> dict:
    return state.get("bookmarks", {}).get(INTENT, {})


def test_child_only_then_both_emits_every_intent_row_once_and_enriches_in_both_runs():
    with sandbox() as sb:
        config = tap_config(sb, enrichment_batch_size=50)
        ids = expected_contact_ids(sb, FEEDS, 3)

        child_only = run(sb, config, catalog=select(discover(config), ENRICHED), check=True)
        assert child_only.records(INTENT) == []
        assert_enriched_exactly(sb, child_only.records(ENRICHED), ids)
        assert intent_state(child_only.final_state).get("feeds", {}) == {}  # the parent's bookmark did not move
        child_windows = child_only.final_state["bookmarks"][ENRICHED]["feeds"]
        start, end = window(sb, 3)
        one_window = {
            "last_window_start": start.isoformat(),
            "last_window_end": end.isoformat(),
            "coverage": {"start_date": start.isoformat(), "intent_require_contact_id": False,
                         "intent_get_pii": False, "intent_include_business_info": False},
        }
        assert child_windows == {feed_id: one_window for feed_id in FEEDS}
        spent_by_child = sb.stats()["quota_spent"]
        assert sum(spent_by_child.values()) == row_count(sb, 3)

        both = run(sb, config, state=child_only.final_state, catalog=select(discover(config), INTENT, ENRICHED),
                   check=True)
        rows = both.records(INTENT)
        assert len(rows) == row_count(sb, 3)  # the parent's whole first window: nothing lost to the child's run
        assert not duplicates(row["row_key"] for row in rows)
        assert_enriched_exactly(sb, both.records(ENRICHED), ids)
        for stream in (INTENT, ENRICHED):
            assert both.final_state["bookmarks"][stream]["feeds"] == child_windows


def test_a_child_only_run_spends_the_quota_of_the_days_since_its_own_last_window():
    with sandbox() as sb:
        config = tap_config(sb, enrichment_batch_size=50)
        catalog = select(discover(config), ENRICHED)
        first = run(sb, config, catalog=catalog, check=True)
        sb.set_today(sb.settings.current_day() + timedelta(days=2))
        sb.reset_stats()
        later = run(sb, config, state=first.final_state, catalog=catalog, check=True)
        # Window: the last window's end day (inclusive) through today, as for the parent.
        assert sum(sb.stats()["quota_spent"].values()) == row_count(sb, 3)
        assert_enriched_exactly(sb, later.records(ENRICHED), expected_contact_ids(sb, FEEDS, 3))
        assert intent_state(later.final_state).get("feeds", {}) == {}


def test_child_only_killed_mid_export_resumes_it_and_a_later_parent_reads_the_same_export_from_page_one():
    """Kill/resume in child-only mode spends the export's quota once; then selecting the parent too reads that
    export (free) from page 1: every row once, no new export."""
    with sandbox() as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID], enrichment_batch_size=10)
        child_catalog = select(discover(config), ENRICHED)
        both_catalog = select(discover(config), INTENT, ENRICHED)

        def mid_export(message, _):
            if message["type"] != "STATE":
                return False
            feed = message["value"]["bookmarks"].get(ENRICHED, {}).get("feeds", {}).get(FEED_A_ID, {})
            return feed.get("in_flight", {}).get("next_page", 1) >= 3

        killed = run_until(sb, config, mid_export, catalog=child_catalog)
        assert intent_state(killed.final_state).get("feeds", {}) == {}
        resumed = run(sb, config, state=killed.final_state, catalog=child_catalog, check=True)
        stats = sb.stats()
        assert stats["searches_created"] == 1 and stats["exports_created"] == 1
        total = expected_rows(sb, FEED_A_ID, 3)
        assert stats["quota_spent"] == {FEED_A_ID: total}  # spent once
        enriched = killed.records(ENRICHED) + resumed.records(ENRICHED)
        assert {record["contact_id"] for record in enriched} == expected_contact_ids(sb, (FEED_A_ID,), 3)
        assert intent_state(resumed.final_state).get("feeds", {}) == {}

    with sandbox() as sb:  # killed in child-only mode, then both selected: the parent borrows the export
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID], enrichment_batch_size=10)
        killed = run_until(sb, config, mid_export, catalog=child_catalog)
        both = run(sb, config, state=killed.final_state, catalog=both_catalog, check=True)
        stats = sb.stats()
        assert stats["searches_created"] == 1 and stats["exports_created"] == 1
        assert stats["quota_spent"] == {FEED_A_ID: expected_rows(sb, FEED_A_ID, 3)}
        rows = both.records(INTENT)
        assert len(rows) == expected_rows(sb, FEED_A_ID, 3) and not duplicates(row["row_key"] for row in rows)
        assert "made for enriched_contact_records, no quota spent" in both.stderr
        state = both.final_state["bookmarks"]
        assert state[INTENT]["feeds"][FEED_A_ID] == state[ENRICHED]["feeds"][FEED_A_ID]
        assert "in_flight" not in state[ENRICHED]["feeds"][FEED_A_ID]


def test_parent_only_enriches_nothing_and_a_later_child_gets_its_first_window():
    with sandbox() as sb:
        config = tap_config(sb, enrichment_batch_size=50)
        parent_only = run(sb, config, catalog=select(discover(config), INTENT), check=True)
        assert len(parent_only.records(INTENT)) == row_count(sb, 3)
        assert parent_only.records(ENRICHED) == []
        assert sb.stats()["enrich_batches"] == [] and sb.stats()["enrich_single_requests"] == 0
        assert ENRICHED not in parent_only.final_state.get("bookmarks", {})

        sb.set_today(sb.settings.current_day() + timedelta(days=1))
        both = run(sb, config, state=parent_only.final_state, catalog=select(discover(config), INTENT, ENRICHED),
                   check=True)
        # The child never read a window: its first one (3 days) is read, the parent's rows of it again (same keys).
        assert_enriched_exactly(sb, both.records(ENRICHED), expected_contact_ids(sb, FEEDS, 3))
        assert len(both.records(INTENT)) == row_count(sb, 3)
        bookmarks = both.final_state["bookmarks"]
        first_start = parent_only.final_state["bookmarks"][INTENT]["feeds"]
        for feed_id, child in bookmarks[ENRICHED]["feeds"].items():
            parent = bookmarks[INTENT]["feeds"][feed_id]
            window = ("last_window_start", "last_window_end")
            assert [child[key] for key in window] == [parent[key] for key in window]
            # Each covers from its own first window: the child from this run's, the parent from the first run's.
            assert child["coverage"]["start_date"] == child["last_window_start"]
            assert parent["coverage"]["start_date"] == first_start[feed_id]["last_window_start"]


def test_backstory_selections_touch_only_their_own_jobs_and_keep_other_bookmarks():
    with backstory_support.sandbox() as sb:
        config = backstory_support.tap_config(sb, end_date="2026-01-05")
        catalog = discover(config)
        other = {"feeds": {FEED_A_ID: {"last_window_start": "2026-01-01", "last_window_end": "2026-01-03"}}}
        state = {"bookmarks": {INTENT: other, "enriched_contacts": {"bookmark": "2026-01-02"}}}

        activities = run(sb, config, state=state, catalog=select(catalog, "activities"))
        stats = sb.stats()
        assert activities.records("activities")
        assert stats["jobs_created"] == {"activities": 1, "contacts": 0}
        assert stats["requests_by_api"].get("contactbased", 0) == 0  # no ContactBased request, no quota
        assert activities.final_state["bookmarks"][INTENT] == other
        assert activities.final_state["bookmarks"]["enriched_contacts"] == {"bookmark": "2026-01-02"}

        sb.reset_stats()
        contacts = run(sb, config, catalog=select(catalog, "enriched_contacts"))
        assert contacts.records("enriched_contacts") and not contacts.records("activities")
        assert sb.stats()["jobs_created"] == {"activities": 0, "contacts": 1}
        assert sb.stats()["requests_by_api"].get("contactbased", 0) == 0

        sb.reset_stats()
        nothing = run(sb, config, state=state, catalog=select(catalog))
        assert [m for m in nothing.messages if m["type"] in ("RECORD", "SCHEMA")] == []
        assert sb.stats()["requests_total"] == 0
        assert nothing.final_state in ({}, state)  # nothing moved


def test_deselected_properties_disappear_from_schema_and_records_and_the_key_stays():
    with sandbox() as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID], intent_lookback_days=1)
        catalog = select(discover(config), INTENT, ENRICHED,
                         deselect={ENRICHED: [("emails",), ("pii", "first_name")], INTENT: [("signal_date",)]})
        result = run(sb, config, catalog=catalog, check=True)
    schemas = {m["stream"]: m for m in result.messages if m["type"] == "SCHEMA"}
    enriched = schemas[ENRICHED]["schema"]["properties"]
    assert "emails" not in enriched and "first_name" not in enriched["pii"]["properties"]
    assert "contact_id" in enriched and schemas[ENRICHED]["key_properties"] == ["contact_id"]
    assert "signal_date" not in schemas[INTENT]["schema"]["properties"]
    records = result.records(ENRICHED)
    assert records and all("emails" not in r and r["contact_id"] for r in records)
    assert any(r["pii"] for r in records) and all("first_name" not in (r["pii"] or {}) for r in records)
    rows = result.records(INTENT)
    assert rows and all("signal_date" not in row and row["row_key"] for row in rows)


def test_stream_maps_filter_alias_computed_property_and_else_null():
    with sandbox() as sb:
        maps = {
            INTENT: {
                "__filter__": "contact_id is not None",
                "row_key": "row_key",
                "feed": "feed_id",
                "row_number_doubled": "row_number * 2",
                "__else__": None,
            },
            "intent_rows_copy": {"__source__": INTENT},
        }
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID], intent_lookback_days=1, stream_maps=maps)
        plain = run(sb, tap_config(sb, intent_feed_ids=[FEED_A_ID], intent_lookback_days=1), check=True)
        mapped = run(sb, config, check=True)
    source = plain.records(INTENT)
    with_id = [row for row in source if row["contact_id"] is not None]
    assert 0 < len(with_id) < len(source)  # the filter has something to drop
    expected = [{"row_key": r["row_key"], "feed": r["feed_id"], "row_number_doubled": r["row_number"] * 2}
                for r in with_id]
    assert mapped.records(INTENT) == expected
    schemas = {m["stream"]: m for m in mapped.messages if m["type"] == "SCHEMA"}
    assert set(schemas[INTENT]["schema"]["properties"]) == {"row_key", "feed", "row_number_doubled"}
    assert schemas[INTENT]["key_properties"] == ["row_key"]
    def without_export_id(rows):  # each run makes its own export: the one field that differs
        return [{key: value for key, value in row.items() if key != "export_id"} for row in rows]

    assert without_export_id(mapped.records("intent_rows_copy")) == without_export_id(source)  # every row, unmapped
    assert len(mapped.records(ENRICHED)) == len(plain.records(ENRICHED))


def test_both_killed_mid_export_then_child_only_reads_the_rest_of_that_export_and_the_parent_keeps_its_flight():
    with sandbox() as sb:
        config = tap_config(sb, intent_feed_ids=[FEED_A_ID], enrichment_batch_size=10)
        both_catalog = select(discover(config), INTENT, ENRICHED)

        def parent_mid_export(message, _):
            if message["type"] != "STATE":
                return False
            feed = message["value"]["bookmarks"].get(INTENT, {}).get("feeds", {}).get(FEED_A_ID, {})
            return feed.get("in_flight", {}).get("next_page", 1) >= 3

        killed = run_until(sb, config, parent_mid_export, catalog=both_catalog)
        parent_flight = killed.final_state["bookmarks"][INTENT]["feeds"][FEED_A_ID]["in_flight"]
        assert sb.stats()["exports_created"] == 1
        sb.reset_stats()
        child_only = run(sb, config, state=killed.final_state, catalog=select(discover(config), ENRICHED),
                         check=True)
        stats = sb.stats()
        assert stats["searches_created"] == 0 and stats["exports_created"] == 0 and stats["quota_spent"] == {}
        # The child got the ids of the pages before next_page in the killed run: it reads only the rest.
        pages = [e["page"] for e in sb.events() if e["kind"] == "page_served"]
        assert pages == list(range(parent_flight["next_page"], parent_flight["total_pages"] + 1))
        assert "made for intent_feed_exports, no quota spent" in child_only.stderr
        enriched = killed.records(ENRICHED) + child_only.records(ENRICHED)
        assert {r["contact_id"] for r in enriched} == expected_contact_ids(sb, (FEED_A_ID,), 3)
        # The parent's state is as the killed run left it: its flight resumes where its rows stopped.
        assert child_only.final_state["bookmarks"][INTENT] == killed.final_state["bookmarks"][INTENT]

        both = run(sb, config, state=child_only.final_state, catalog=both_catalog, check=True)
        rows = killed.records(INTENT) + both.records(INTENT)
        assert len(rows) == expected_rows(sb, FEED_A_ID, 3) and not duplicates(row["row_key"] for row in rows)
        assert sb.stats()["exports_created"] == 0  # the parent resumed its own flight
