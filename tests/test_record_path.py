"""The tap's RECORD path (`TapStream._generate_record_messages`, which skips the SDK's per-record property
walk when nothing is deselected) still honours a catalog that deselects top-level and nested properties."""

from __future__ import annotations

import json
from pathlib import Path

from tests.backstory_support import run, sandbox, tap_config

SCHEMA = json.loads((Path(__file__).parents[1] / "tap_backstory/schemas/activities.json").read_text())


def catalog(*deselected: tuple[str, ...]) -> dict:
    metadata = [{"breadcrumb": [], "metadata": {"selected": True}}]
    for path in deselected:
        breadcrumb = [part for name in path for part in ("properties", name)]
        metadata.append({"breadcrumb": breadcrumb, "metadata": {"selected": False}})
    entry = {"tap_stream_id": "activities", "stream": "activities", "schema": SCHEMA, "key_properties": ["uid"],
             "metadata": metadata}
    return {"streams": [entry]}


def test_deselected_properties_are_dropped_and_the_rest_is_unchanged():
    with sandbox(extra_activity_fields=True) as sb:
        config = tap_config(sb, "activities", start_date="2026-02-20")
        full = run(sb, config, catalog=catalog(), timeout=60, check=False)
        part = run(sb, config, catalog=catalog(("summary",), ("stats", "total_participants")), timeout=60, check=False)
    assert full.returncode == 0 and part.returncode == 0, full.error_line + part.error_line
    full_records, part_records = full.records("activities"), part.records("activities")
    assert full_records and len(full_records) == len(part_records)
    assert any(r["summary"] is not None for r in full_records)
    assert any("total_participants" in (r.get("stats") or {}) for r in full_records)
    for whole, cut in zip(full_records, part_records, strict=True):
        expected = {k: v for k, v in whole.items() if k != "summary"}
        if isinstance(expected.get("stats"), dict):
            expected["stats"] = {k: v for k, v in expected["stats"].items() if k != "total_participants"}
        assert cut == expected
        assert "sentiment" in cut["_extra"]


def metric_record_count(stderr: str, stream: str) -> int:
    counters = [json.loads(line.split("METRIC: ", 1)[1]) for line in stderr.splitlines() if "METRIC: " in line]
    return sum(c["value"] for c in counters if c["metric"] == "record_count" and c["tags"]["stream"] == stream)


def test_direct_record_path_writes_what_the_sdk_path_writes():
    """With nothing for the SDK's per-record steps to do, the tap writes RECORD messages itself
    (`DirectRecordWriter`); a stream map that changes nothing sends the same records through the SDK's path.
    Same messages in the same order (but `time_extracted`), same record_count metric, same final state."""
    identity_map = {"stream_maps": {"activities": {"__alias__": "activities"}}}
    with sandbox(extra_activity_fields=True) as sb:
        config = tap_config(sb, "activities", start_date="2026-02-20")
        metrics = {"TAP_BACKSTORY_LOGLEVEL": "DEBUG"}  # METRIC lines show at DEBUG only
        direct = run(sb, config, timeout=60, env=metrics)
        through_sdk = run(sb, {**config, **identity_map}, timeout=60, env=metrics)

    def comparable(messages: list[dict]) -> list[dict]:
        return [{k: v for k, v in m.items() if k != "time_extracted"} for m in messages if m["type"] == "RECORD"]

    records = comparable(direct.messages)
    assert len(records) > 100 and records == comparable(through_sdk.messages)
    assert all("time_extracted" in m for m in direct.messages if m["type"] == "RECORD")
    assert metric_record_count(direct.stderr, "activities") == len(records)
    assert metric_record_count(through_sdk.stderr, "activities") == len(records)
    assert direct.final_state == through_sdk.final_state
    # No RECORD after the last STATE: the final STATE covers every record.
    types = [m["type"] for m in direct.messages]
    assert types[-1] == "STATE" and "RECORD" in types


def test_the_allocator_tuning_applies_on_glibc_and_yields_to_the_users_own(monkeypatch):
    from tap_backstory import malloc

    assert malloc.tune() is True  # this machine's C library is glibc (the CI image's too)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert malloc.tune() is False
