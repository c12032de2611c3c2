"""BATCH mode: with `batch_config` the tap writes gzip JSON Lines files and BATCH messages instead of RECORDs.

Each case runs the real executable twice against identical sandboxes (the data is a pure function of the
settings): once in RECORD mode, once with `batch_config`; the batch files must hold the very same records.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.backstory_support import run, sandbox, stream_state, tap_config

pytestmark = pytest.mark.slow


def batch_config(root: Path, **encoding) -> dict:
    return {
        "encoding": {"format": "jsonl", "compression": "gzip", **encoding},
        "storage": {"root": root.as_uri(), "prefix": "bs-"},
        "batch_size": 250,
    }


def read_batches(messages: list[dict], stream: str) -> tuple[list[dict], list[str]]:
    records, files = [], []
    for message in messages:
        if message["type"] != "BATCH" or message["stream"] != stream:
            continue
        assert message["encoding"] == {"format": "jsonl", "compression": "gzip"}
        for url in message["manifest"]:
            path = Path(urlparse(url).path)
            files.append(path.name)
            with gzip.open(path, "rt", encoding="utf-8") as body:  # a gzip file: gzip.open reads it whole
                records.extend(json.loads(line) for line in body)
    return records, files


@pytest.mark.parametrize(
    ("stream", "settings", "overrides"),
    [
        ("activities", {"extra_activity_fields": True}, {"snapshot_window_days": 20}),
        ("enriched_contacts", {}, {"contacts_output_format": "CSV", "snapshot_window_days": 30}),
    ],
)
def test_batch_files_hold_the_record_mode_records_and_the_state_the_bookmark(tmp_path, stream, settings, overrides):
    with sandbox(**settings) as sb:
        plain = run(sb, tap_config(sb, stream, **overrides))
    expected = plain.records(stream)
    assert len(expected) > 250  # several batch files

    root = tmp_path / "batches"
    with sandbox(**settings) as sb:
        batched = run(sb, tap_config(sb, stream, batch_config=batch_config(root), **overrides))

    types = [m["type"] for m in batched.messages]
    assert "RECORD" not in types
    assert types.count("BATCH") >= 2
    records, files = read_batches(batched.messages, stream)
    assert all(name.startswith("bs-") and name.endswith(".json.gz") for name in files)
    assert sorted(p.name for p in root.iterdir()) == sorted(files)
    assert records == expected  # same records, same order: `_extra`, `Z` date-times, CSV typing included

    # The bookmark reaches the target with (after) the last BATCH, never before it.
    assert stream_state(batched.final_state, stream) == stream_state(plain.final_state, stream)
    last_batch = max(i for i, m in enumerate(batched.messages) if m["type"] == "BATCH")
    states_before = [m["value"] for m in batched.messages[:last_batch] if m["type"] == "STATE"]
    assert all(stream_state(s, stream).get("bookmark") != stream_state(plain.final_state, stream)["bookmark"]
               for s in states_before)
    if stream == "activities":
        assert all("sentiment" in r["_extra"] for r in records)
        assert all(r["timestamp"].endswith("Z") and r["ingest_timestamp"].endswith("Z") for r in records)
