"""Flattening (`flattening_enabled`, `flattening_max_depth`) end to end, every stream: each record carries exactly
the flattened SCHEMA's columns, and every non-null value of the unflattened record arrives, including undeclared
keys inside declared objects (kept in `_extra`) and null nested objects (issue 24)."""

from __future__ import annotations

import json

import pytest

from tap_backstory.formats import EXTRA_KEY, RecordShaper
from tests import backstory_support
from tests.tap_runner import run, tap_config

KEYS = {"activities": "uid", "enriched_contacts": "email", "intent_feed_exports": "row_key",
        "enriched_contact_records": "contact_id"}
PER_RUN = {"export_id"}  # intent rows: each run makes its own export


def sandbox():
    return backstory_support.sandbox(page_size=25, extra_nested_fields=True, extra_activity_fields=True,
                                     extra_row_fields=True)


def config(sb, **settings) -> dict:
    return tap_config(sb, start_date="2026-02-26", job_poll_interval_seconds=0.1, intent_lookback_days=1,
                      **settings)


def expected_columns(record: dict, columns: dict, max_depth: int) -> dict:
    """What the flattened record must hold, from the unflattened one: nested objects split into `a__b` columns
    while the SCHEMA has such columns (up to max_depth), everything else under its own column; keys inside a
    split object that the SCHEMA has no column for go to `_extra` under their path."""
    moved: dict = {}

    def split(node: dict, prefix: str, level: int, moved_here: dict) -> dict:
        out = {}
        for key, value in node.items():
            column = f"{prefix}{key}"
            if isinstance(value, dict) and level < max_depth and column not in columns and any(
                name.startswith(column + "__") for name in columns
            ):
                inner_moved: dict = {}
                out.update(split(value, column + "__", level + 1, inner_moved))
                if inner_moved:
                    moved_here[key] = inner_moved
            elif level > 0 and column not in columns:
                moved_here[key] = value
            else:
                out[column] = value
        return out

    out = split(record, "", 0, moved)
    if moved:
        out[EXTRA_KEY] = {**(record.get(EXTRA_KEY) or {}), **moved}
    return out


@pytest.fixture(scope="module")
def unflattened():
    with sandbox() as sb:
        result = run(sb, config(sb), check=True)
    records = {stream: {r[key]: r for r in result.records(stream)} for stream, key in KEYS.items()}
    assert all(records.values()), {stream: len(rows) for stream, rows in records.items()}
    return records


@pytest.mark.parametrize("depth", [1, 3])
def test_every_record_carries_the_flattened_schema_columns_and_every_value(unflattened, depth):
    with sandbox() as sb:
        result = run(sb, config(sb, flattening_enabled=True, flattening_max_depth=depth), check=True)
    schemas = {m["stream"]: m["schema"]["properties"] for m in result.messages if m["type"] == "SCHEMA"}
    assert set(schemas) == set(KEYS)
    for stream, key in KEYS.items():
        columns = schemas[stream]
        records = result.records(stream)
        assert {r[key] for r in records} == set(unflattened[stream])
        for record in records:
            assert record.keys() == columns.keys(), (stream, record.keys() ^ columns.keys())
            source = expected_columns(unflattened[stream][record[key]], columns, depth)
            for column, value in source.items():
                if value is None or column in PER_RUN:
                    continue
                assert column in columns, (stream, column)
                arrived = record[column]
                if isinstance(value, dict | list):
                    arrived = json.loads(arrived)
                assert arrived == value, (stream, column)
    # The cases of issue 24 did occur: a null `pii`, unknown keys inside `pii` (kept in `_extra` under
    # flattening), a null `experimental` on activities (an object of objects: flattened at depth 3).
    envelopes = unflattened["enriched_contact_records"].values()
    assert any(r["pii"] is None for r in envelopes)
    assert any("street2" in (r["pii"] or {}) for r in envelopes)  # unflattened: the object keeps its keys
    flattened = result.records("enriched_contact_records")
    assert any(r[EXTRA_KEY] and "street2" in json.loads(r[EXTRA_KEY])["pii"] for r in flattened)
    assert any(r.get("experimental") is None for r in unflattened["activities"].values())
    assert "pii__first_name" in schemas["enriched_contact_records"] and "pii" not in schemas["enriched_contact_records"]
    assert result.stderr.count("inside objects this schema does not declare") == 2  # activities' stats, pii


def test_undeclared_nested_keys_move_to_extra_under_their_path_and_declared_ones_stay():
    schema = {"properties": {
        "id": {"type": "string"},
        "pii": {"type": ["object", "null"], "properties": {
            "city": {"type": ["string", "null"]},
            "geo": {"type": ["object", "null"], "properties": {"lat": {"type": ["number", "null"]}}},
        }},
        "tags": {"type": ["array", "null"], "items": {"type": "object", "properties": {"a": {"type": "string"}}}},
        EXTRA_KEY: {"type": ["object", "null"]},
    }}
    def raw() -> dict:
        return {"id": "1", "new": 1, "pii": {"city": "Paris", "street2": "B", "geo": {"lat": 1.5, "alt": 30}},
                "tags": [{"a": "x", "b": "y"}]}

    # Without flattening, objects keep every key; at depth 1, `geo` is one JSON column: only `pii` is walked.
    unflattened = raw()
    unflattened[EXTRA_KEY] = {"new": unflattened.pop("new")}
    assert RecordShaper(schema, "s").shape(raw()) == unflattened
    assert RecordShaper(schema, "s", flattening_depth=1).shape(raw()) == {
        "id": "1",
        "pii": {"city": "Paris", "geo": {"lat": 1.5, "alt": 30}},
        "tags": [{"a": "x", "b": "y"}],
        EXTRA_KEY: {"new": 1, "pii": {"street2": "B"}},
    }
    shaper = RecordShaper(schema, "s", flattening_depth=3)
    record = shaper.shape(raw())
    assert record == {
        "id": "1",
        "pii": {"city": "Paris", "geo": {"lat": 1.5}},
        "tags": [{"a": "x", "b": "y"}],  # arrays are one JSON column under flattening: left whole
        EXTRA_KEY: {"new": 1, "pii": {"street2": "B", "geo": {"alt": 30}}},
    }
    # Every declared top-level property is in every record (null where absent); nested objects stay as sent.
    assert shaper.shape({"id": "2", "pii": None}) == {"id": "2", "pii": None, "tags": None, EXTRA_KEY: None}
    assert shaper.shape({"id": "3", "pii": {"city": None}}) == {
        "id": "3", "pii": {"city": None}, "tags": None, EXTRA_KEY: None
    }
