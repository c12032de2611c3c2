"""BATCH mode: with `batch_config` the tap writes JSON Lines or parquet files (gzip or not) and BATCH messages
instead of RECORDs; every message names a complete file that exists, whatever the stream tree (issue 21).

Each case runs the real executable twice against identical sandboxes (the data is a pure function of the
settings): once in RECORD mode, once with `batch_config`; the batch files must hold the very same records.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tap_backstory.batch_files import publish, write_parquet
from tap_backstory.sdk import StorageTarget
from tests import tap_runner
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
    ("stream", "settings", "overrides", "workers"),
    [
        # JSON Lines read by two worker processes (tap_backstory/line_workers.py), and in the tap's own process.
        ("activities", {"extra_activity_fields": True}, {"snapshot_window_days": 20}, "2"),
        ("activities", {"record_shapes": "strings", "keyless_every": 50}, {"snapshot_window_days": 20}, "2"),
        ("activities", {"extra_activity_fields": True}, {"snapshot_window_days": 20}, "0"),
        ("enriched_contacts", {}, {"contacts_output_format": "JSON", "snapshot_window_days": 30}, "2"),
        ("enriched_contacts", {}, {"contacts_output_format": "CSV", "snapshot_window_days": 30}, "2"),
    ],
)
def test_batch_files_hold_the_record_mode_records_and_the_state_the_bookmark(
    tmp_path, stream, settings, overrides, workers
):
    with sandbox(**settings) as sb:
        plain = run(sb, tap_config(sb, stream, **overrides))
    expected = plain.records(stream)
    assert len(expected) > 250  # several batch files

    root = tmp_path / "batches"
    with sandbox(**settings) as sb:
        batched = run(sb, tap_config(sb, stream, batch_config=batch_config(root), **overrides),
                      env={"TAP_BACKSTORY_BATCH_WORKERS": workers})

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
    # Workers read JSON Lines, not CSV.
    read_by_workers = workers == "2" and overrides.get("contacts_output_format") != "CSV"
    assert (f"{stream}: JSON Lines read by 2 worker processes" in batched.stderr) == read_by_workers
    if settings.get("extra_activity_fields"):
        assert all("sentiment" in r["_extra"] for r in records)
    if settings.get("keyless_every"):  # skipped and counted, as in RECORD mode
        assert "record(s) without `uid` skipped" in batched.stderr
        assert "record(s) without `uid` skipped" in plain.stderr
    if stream == "activities":
        assert all(r["timestamp"].endswith("Z") and r["ingest_timestamp"].endswith("Z") for r in records)


# Every stream at once, parent and child: `enriched_contact_records` is synced in the middle of reading
# `intent_feed_exports` (one child sync per 50 new contact ids), so the child writes and announces its files
# while the parent's file is being written. Small files (40 records), so every stream has several.
TREE = ("activities", "enriched_contacts", "intent_feed_exports", "enriched_contact_records")
TREE_SANDBOX = {
    "page_size": 25,
    "activities_per_day": 20,
    "contacts_per_day": 10,
    "fragments": 4,
    "job_queue_seconds": 0.1,
    "job_run_seconds": 0.2,
}


def tree_config(sb, **overrides) -> dict:
    return tap_runner.tap_config(
        sb,
        start_date="2026-02-20",
        job_poll_interval_seconds=0.1,
        intent_lookback_days=3,
        enrichment_batch_size=50,
        **overrides,
    )


def same_export_ids(records: list[dict]) -> list[dict]:
    """Records with each `export_id` replaced by its rank of first appearance: the sandbox gives every export a
    new id on each start, so two runs read the same rows under different ids."""
    ranks: dict[str, str] = {}
    return [
        {**r, "export_id": ranks.setdefault(r["export_id"], f"export-{len(ranks)}")} if "export_id" in r else r
        for r in records
    ]


def without_nulls(value):
    """A value with its null-valued keys left out, at every depth. Parquet cannot tell an absent key from a null
    one: a column (or a struct field) exists for every row of the file, so a key one record lacks reads back as
    null. Every non-null value must still arrive unchanged."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def read_file(path: Path, encoding: dict) -> list[dict]:
    if encoding["format"] == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    opener = gzip.open if encoding["compression"] == "gzip" else open
    with opener(path, "rt", encoding="utf-8") as body:
        return [json.loads(line) for line in body]


@pytest.fixture(scope="module")
def record_mode_tree() -> dict[str, list[dict]]:
    with sandbox(**TREE_SANDBOX) as sb:
        plain = tap_runner.run(sb, tree_config(sb), check=True)
    return {stream: same_export_ids(plain.records(stream)) for stream in TREE}


@pytest.mark.parametrize(
    "encoding",
    [
        {"format": "jsonl", "compression": "gzip"},
        {"format": "jsonl", "compression": "none"},
        {"format": "parquet", "compression": "gzip"},
        {"format": "parquet", "compression": "none"},
    ],
    ids=lambda e: f"{e['format']}-{e['compression']}",
)
def test_every_batch_message_names_a_complete_file_with_the_record_mode_records(
    tmp_path, record_mode_tree, encoding
):
    root = tmp_path / "batches"
    config = {"encoding": encoding, "storage": {"root": root.as_uri()}, "batch_size": 40}
    with sandbox(**TREE_SANDBOX) as sb:
        batched = tap_runner.run(sb, tree_config(sb, batch_config=config), check=True)
    assert not [m for m in batched.messages if m["type"] == "RECORD"]
    batches = [m for m in batched.messages if m["type"] == "BATCH"]

    # The case that lost the parent's files: the child announced files while the parent was still writing.
    order = [m["stream"] for m in batches]
    assert order.index("enriched_contact_records") < len(order) - 1 - order[::-1].index("intent_feed_exports")

    named: list[Path] = []
    for stream in TREE:
        records = []
        messages = [m for m in batches if m["stream"] == stream]
        assert len(messages) >= 2, stream  # several files per stream
        for message in messages:
            assert message["encoding"] == encoding
            for url in message["manifest"]:
                path = Path(urlparse(url).path)
                assert path.is_file(), f"{stream}: the BATCH message names {path.name}, which does not exist"
                named.append(path)
                records += read_file(path, encoding)
        expected = record_mode_tree[stream]
        assert len(records) == len(expected), stream
        if encoding["format"] == "parquet":
            assert [without_nulls(r) for r in same_export_ids(records)] == [without_nulls(r) for r in expected]
        else:
            assert same_export_ids(records) == expected, stream  # the very same records, in the same order
    # Nothing else in the storage folder: no partial file left behind, no file no message names.
    assert sorted(p for p in root.rglob("*") if p.is_file()) == sorted(named)


@pytest.mark.parametrize("scheme", ["file", "local"], ids=["local-folder-rename", "other-storage-copy"])
def test_a_file_stays_whole_while_other_files_come_and_go_in_the_same_storage(tmp_path, scheme):
    """`publish` on its own, in-process: a child stream's files (written by `publish`, or by the SDK's
    `StorageTarget.open`, whose fsspec transaction is the one that replaced the parent's) open and close while the
    parent's file is being written. `local://` is fsspec's local filesystem under another name: storage that is not
    a `file://` folder, so the finished file is copied through `StorageTarget.open`."""
    folder = tmp_path / "batches"
    storage = StorageTarget(root=f"{scheme}://{folder}")
    with publish(storage, "parent.json") as parent:
        parent.write(b"first half\n")
        with publish(storage, "child.json") as child:
            child.write(b"child\n")
        with storage.open("sdk-child.json", "wb") as sdk_child:
            sdk_child.write(b"sdk child\n")
        assert not (folder / "parent.json").exists()  # never visible before it is complete
        parent.write(b"second half\n")
    assert (folder / "parent.json").read_bytes() == b"first half\nsecond half\n"
    assert (folder / "child.json").read_bytes() == b"child\n"
    assert (folder / "sdk-child.json").read_bytes() == b"sdk child\n"
    assert sorted(p.name for p in folder.iterdir()) == ["child.json", "parent.json", "sdk-child.json"]

    # A file whose writing fails never appears, and leaves no partial file behind.
    with pytest.raises(RuntimeError), publish(storage, "failed.json") as failed:
        failed.write(b"half")
        raise RuntimeError("the stream failed")
    assert sorted(p.name for p in folder.iterdir()) == ["child.json", "parent.json", "sdk-child.json"]


def test_parquet_without_pyarrow_is_a_config_error_before_any_request(tmp_path):
    """pyarrow is an optional extra: a tap installed without it refuses parquet up front, in one line."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['pyarrow'] = None  # as if not installed\n")
    config = {
        "contactbased_api_url": "http://127.0.0.1:9/contactbased",  # never contacted
        "contactbased_api_key": "key",
        "batch_config": {"encoding": {"format": "parquet"}, "storage": {"root": (tmp_path / "b").as_uri()}},
    }
    result = tap_runner.run_tap(config, env={"PYTHONPATH": str(hide)}, timeout=60)
    assert result.returncode == 1
    assert result.error_line == (
        "tap-backstory: error: batch_config.encoding.format parquet needs pyarrow: "
        "install tap-backstory[parquet] (or pyarrow) with the tap"
    ), result.stderr
    assert result.stdout == ""


def test_parquet_keeps_every_key_of_every_record_and_stores_an_empty_object_as_null(tmp_path):
    """Columns from every record, not the first one's (the SDK's batcher lost `b` and `nested.y` here); parquet
    has no object type without fields, so an object that is empty in every record arrives as null."""
    import pyarrow.parquet as pq

    records = [
        {"a": 1, "nested": {"x": "1"}, "empty": {}, "list": [{}]},
        {"a": 2, "b": "only here", "nested": {"y": 2.5}, "empty": None, "list": []},
    ]
    path = tmp_path / "f.parquet"
    with path.open("wb") as out:
        write_parquet(records, out, compression="gzip")
    assert pq.read_table(path).to_pylist() == [
        {"a": 1, "nested": {"x": "1", "y": None}, "empty": None, "list": [None], "b": None},
        {"a": 2, "nested": {"x": None, "y": 2.5}, "empty": None, "list": [], "b": "only here"},
    ]
