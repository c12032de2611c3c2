"""Issue 21 §2: every record carries every top-level property its SCHEMA declares (null where the API sent
nothing), so a classic target that takes its columns from a stream's first record loses no column; every
record still validates against the SCHEMA message the tap sent for it (Draft 4 and Draft 7)."""

from __future__ import annotations

import jsonschema
import pytest

from tests import contactbased_support as cb
from tests.backstory_support import run, sandbox, tap_config


def assert_every_property_in_every_record(result, stream: str) -> None:
    schemas = [m["schema"] for m in result.messages if m["type"] == "SCHEMA" and m["stream"] == stream]
    records = result.records(stream)
    assert schemas and records
    declared = set(schemas[-1]["properties"])
    validators = [jsonschema.Draft4Validator(schemas[-1]), jsonschema.Draft7Validator(schemas[-1])]
    for record in records:
        assert set(record) == declared  # `_extra` is declared too: no key beyond the schema either
        for validator in validators:
            validator.validate(record)
    # The point of the change: the data leaves some properties out, and they now come as null.
    assert any(value is None for record in records for value in record.values())


@pytest.mark.parametrize(
    ("stream", "settings"),
    [("activities", {}), ("enriched_contacts", {}), ("enriched_contacts", {"contacts_output_format": "CSV"})],
    ids=["activities", "enriched-contacts-json", "enriched-contacts-csv"],
)
def test_backstory_records_carry_every_declared_property(stream, settings):
    with sandbox() as sb:
        result = run(sb, tap_config(sb, stream, start_date="2026-02-20", **settings))
    assert result.returncode == 0, result.error_line
    assert_every_property_in_every_record(result, stream)


def test_contactbased_records_carry_every_declared_property():
    with cb.sandbox() as sb:
        result = run(sb, cb.tap_config(sb, enrichment_batch_size=40))
    assert result.returncode == 0, result.stderr[-2000:]
    assert_every_property_in_every_record(result, cb.INTENT)
    assert_every_property_in_every_record(result, cb.ENRICHED)
