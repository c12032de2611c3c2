"""Settings, discovery and config errors, checked through the real executable (no request is needed)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.tap_runner import TAP_EXE, discover, run_tap

CONTRACT_SETTINGS = {
    "api_url", "activity_client_id", "activity_client_secret", "object_client_id", "object_client_secret",
    "start_date", "end_date", "activity_type", "snapshot_window_days", "delta_window_days",
    "contacts_output_format", "contacts_include_historical", "contacts_include_existing",
    "contacts_is_sourced_by_people_ai", "contacts_country", "contacts_state", "max_concurrent_jobs",
    "fragment_concurrency", "job_poll_interval_seconds", "job_timeout_seconds", "contactbased_api_url",
    "contactbased_api_key", "intent_feed_ids", "intent_lookback_days", "intent_get_pii",
    "intent_include_business_info", "intent_require_contact_id", "intent_max_rows", "enrichment_sections",
    "enrichment_batch_size", "stream_maps", "flattening_enabled", "batch_config",
}
SECRETS = {"activity_client_secret": "s3cret-activity-value", "object_client_secret": "s3cret-object-value",
           "contactbased_api_key": "s3cret-contactbased-key"}
# Loopback URLs on a port nothing listens on: a config error must come before any request.
GOOD = {
    "api_url": "http://127.0.0.1:9", "contactbased_api_url": "http://127.0.0.1:9",
    "activity_client_id": "activity-id", "activity_client_secret": SECRETS["activity_client_secret"],
    "object_client_id": "object-id", "object_client_secret": SECRETS["object_client_secret"],
    "contactbased_api_key": SECRETS["contactbased_api_key"], "start_date": "2026-01-01",
}


def about() -> dict:
    out = subprocess.run([TAP_EXE, "--about", "--format", "json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_about_lists_every_contract_setting_and_capability():
    info = about()
    assert set(info["settings"]["properties"]) >= CONTRACT_SETTINGS
    assert {"catalog", "discover", "state", "about", "stream-maps", "schema-flattening", "batch"} <= set(
        info["capabilities"]
    )
    props = info["settings"]["properties"]
    for secret in SECRETS:
        assert props[secret].get("secret") is True, secret
    assert all(props[name].get("description") for name in CONTRACT_SETTINGS - {"stream_maps"})
    assert props["max_concurrent_jobs"]["maximum"] == 2
    assert props["enrichment_batch_size"]["maximum"] == 1000


def discovered(config: dict) -> dict:
    return {s["tap_stream_id"]: s for s in discover(config)["streams"]}


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        ((), {"activities", "enriched_contacts", "intent_feed_exports", "enriched_contact_records"}),
        (("object_client_id", "object_client_secret", "contactbased_api_key"), {"activities"}),
        (("activity_client_id", "activity_client_secret", "contactbased_api_key"), {"enriched_contacts"}),
        (("activity_client_id", "activity_client_secret", "object_client_id", "object_client_secret",
          "start_date"), {"intent_feed_exports", "enriched_contact_records"}),
    ],
)
def test_streams_are_discovered_only_with_their_credentials(drop, expected):
    config = {k: v for k, v in GOOD.items() if k not in drop}
    streams = discovered(config)
    assert set(streams) == expected
    keys = {"activities": ["uid"], "enriched_contacts": ["email"], "intent_feed_exports": ["row_key"],
            "enriched_contact_records": ["contact_id"]}
    for name, stream in streams.items():
        assert stream["key_properties"] == keys[name]
        assert "_extra" in stream["schema"]["properties"]


BAD_CONFIGS = [
    ({"start_date": "2026/01/01"}, "start_date"),
    ({"start_date": "2026-02-30"}, "start_date"),
    ({"end_date": "2025-12-01"}, "end_date"),
    ({"end_date": "2999-01-01"}, "end_date"),
    ({"snapshot_window_days": 366}, "snapshot_window_days"),
    ({"delta_window_days": 15}, "delta_window_days"),
    ({"delta_window_days": 0}, "delta_window_days"),
    ({"max_concurrent_jobs": 3}, "max_concurrent_jobs"),
    ({"fragment_concurrency": 0}, "fragment_concurrency"),
    ({"activity_type": "sms"}, "activity_type"),
    ({"contacts_output_format": "XML"}, "contacts_output_format"),
    ({"api_url": "http://api.people.ai"}, "api_url"),
    ({"contactbased_api_url": "ftp://example.com"}, "contactbased_api_url"),
    ({"enrichment_batch_size": 1001}, "enrichment_batch_size"),
    ({"enrichment_sections": ["pii", "addresses"]}, "enrichment_sections"),
    ({"activity_client_secret": None}, "activity_client_secret"),
    ({"activity_client_secret": 12345}, "activity_client_secret"),
    ({"object_client_id": ""}, "object_client_id"),
    ({"start_date": None}, "start_date"),
    ({"intent_feed_ids": "not-a-list"}, "intent_feed_ids"),
]


@pytest.mark.parametrize(("change", "setting"), BAD_CONFIGS, ids=[s for _, s in BAD_CONFIGS])
def test_bad_config_fails_with_one_line_naming_the_setting(change, setting):
    config = {**GOOD, **change}
    config = {k: v for k, v in config.items() if v is not None}
    run = run_tap(config, timeout=60)
    assert run.returncode == 1
    assert setting in run.error_line, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""  # nothing was extracted or requested
    for secret in SECRETS.values():
        assert secret not in run.stderr


def test_no_credentials_at_all_is_refused():
    run = run_tap({"start_date": "2026-01-01"}, timeout=60)
    assert run.returncode == 1
    assert "no stream is configured" in run.error_line


def test_malformed_config_json_is_one_line(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"activity_client_id": "x",')
    proc = subprocess.run([TAP_EXE, "--config", str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("tap-backstory: error: a JSON input file")
    assert "Traceback" not in proc.stderr
