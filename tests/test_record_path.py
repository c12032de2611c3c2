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
