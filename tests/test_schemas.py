"""Static checks on the stream schemas in tap_backstory/schemas."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "tap_backstory" / "schemas"

PRIMARY_KEYS = {
    "activities": ["uid"],
    "enriched_contacts": ["email"],
    "intent_feed_exports": ["row_key"],
    "enriched_contact_records": ["contact_id"],
}


def _load(name: str) -> dict:
    return json.loads((SCHEMAS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def _walk(props: dict, path: str):
    """Yield (dotted path, property schema) for every property at every depth, array items included."""
    for key, prop in props.items():
        here = f"{path}.{key}" if path else key
        yield here, prop
        node = prop
        while True:
            if isinstance(node.get("properties"), dict):
                yield from _walk(node["properties"], here)
            if isinstance(node.get("items"), dict):
                here = f"{here}[]"
                node = node["items"]
                yield here, node
                continue
            break


@pytest.mark.parametrize("name", sorted(PRIMARY_KEYS))
def test_schema_is_valid_draft7(name: str) -> None:
    schema = _load(name)
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert "required" not in schema


@pytest.mark.parametrize("name", sorted(PRIMARY_KEYS))
def test_every_property_documented_and_nullable(name: str) -> None:
    schema = _load(name)
    problems = []
    for path, prop in _walk(schema["properties"], ""):
        if not str(prop.get("description", "")).strip():
            problems.append(f"{path}: no description")
        types = prop.get("type")
        if not (isinstance(types, list) and "null" in types and len(types) == 2):
            problems.append(f"{path}: type {types!r} is not [<type>, 'null']")
        if "required" in prop:
            problems.append(f"{path}: has 'required'")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(PRIMARY_KEYS))
def test_primary_keys_and_extra_exist(name: str) -> None:
    props = _load(name)["properties"]
    for key in PRIMARY_KEYS[name]:
        assert key in props, f"{name}: primary key {key} missing"
    extra = props.get("_extra")
    assert extra is not None, f"{name}: _extra missing"
    assert extra["type"] == ["object", "null"]
    assert extra.get("additionalProperties") is True


@pytest.mark.parametrize("name", sorted(PRIMARY_KEYS))
def test_sample_record_validates(name: str) -> None:
    """A record with every key null validates (the APIs omit or null empty keys)."""
    schema = _load(name)
    record = dict.fromkeys(schema["properties"])
    jsonschema.Draft7Validator(schema).validate(record)
