"""Operations: connection tests that cost nothing, fail-fast transport errors, progress logs (issue 13, 4/7/8)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tap_backstory.names import STREAM_ORDER
from tap_backstory_sandbox import FEED_B_ID
from tests import backstory_support as backstory
from tests import contactbased_support as contactbased
from tests.conftest import TODAY
from tests.tap_runner import TAP_EXE, run, run_tap, tap_config

TODAY_ENV = {"TAP_BACKSTORY_TODAY": TODAY.isoformat()}  # for the runs without a sandbox


def assert_nothing_spent(sb) -> None:
    stats = sb.stats()
    assert stats["jobs_created"] == {"activities": 0, "contacts": 0}
    assert stats["searches_created"] == stats["exports_created"] == stats["previews"] == 0
    assert stats["quota_spent"] == {}


def test_connection_test_proves_every_key_and_creates_no_job_and_spends_no_quota():
    with backstory.sandbox() as sb:
        result = run(sb, backstory.tap_config(sb), "--test", timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        assert_nothing_spent(sb)
        assert sb.stats()["token_requests"] == {"activity": 1, "object": 1}
    checked = {record["stream"]: record["checked"] for record in result.records("connection_test")}
    assert set(checked) == set(STREAM_ORDER)
    assert "GET /pull/v1/export/activities/jobs" in checked["activities"]
    assert "GET /pull/v1/export/contacts/jobs" in checked["enriched_contacts"]
    assert "GET /organization/feeds" in checked["intent_feed_exports"]
    assert not any(result.records(stream) for stream in STREAM_ORDER)  # no data was read
    assert " ERROR " not in result.stderr and "Traceback" not in result.stderr


def meltano_config_test(config: dict) -> tuple[int, list[str]]:
    """What `meltano config test` does (Meltano 4.4.1 `ExtractorTestService`): run the tap as for a sync, with
    `--config` and `--catalog`, stdout and stderr on one pipe, and terminate it at its first RECORD."""
    with tempfile.TemporaryDirectory() as tmp:
        config_path, catalog_path = Path(tmp, "config.json"), Path(tmp, "catalog.json")
        config_path.write_text(json.dumps(config))
        discovered = subprocess.run([TAP_EXE, "--config", str(config_path), "--discover"], capture_output=True,
                                    text=True, check=True)
        catalog_path.write_text(discovered.stdout)
        proc = subprocess.Popen([TAP_EXE, "--config", str(config_path), "--catalog", str(catalog_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **TODAY_ENV})
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("{") and json.loads(line)["type"] in {"RECORD", "BATCH"}:
                proc.terminate()
                break
        returncode = proc.wait(timeout=60)
        proc.stdout.close()
    return returncode, lines


def test_meltano_config_test_gets_its_record_from_the_connection_test_and_spends_nothing():
    with backstory.sandbox() as sb:
        returncode, lines = meltano_config_test(backstory.tap_config(sb))
        time.sleep(0.5)  # a sync would have gone on until terminated: let it show in the stats
        assert_nothing_spent(sb)
    # Done (0); stopped by the SIGTERM while running (143, tests/test_stopping.py); or the SIGTERM came while
    # Python was already shutting down, after all output, when the default action applies (-15).
    assert returncode in (0, 143, -15), lines[-5:]
    assert json.loads(lines[-1])["stream"] == "connection_test"
    assert any("as under `meltano config test`: running the connection test" in line for line in lines)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"activity_client_secret": "wrong-secret"}, "Activity key pair"),
        ({"object_client_secret": "wrong-secret"}, "Object key pair"),
        ({"contactbased_api_key": "wrong-key"}, "contactbased_api_key"),
    ],
)
def test_connection_test_fails_with_bad_credentials_naming_the_key(change, named):
    with backstory.sandbox() as sb:
        config = backstory.tap_config(sb, **change)
        result = run(sb, config, "--test", timeout=60)
        meltano_returncode, meltano_lines = meltano_config_test(config)
        assert_nothing_spent(sb)
    assert result.returncode == 1
    assert named in result.error_line, result.stderr[-2000:]
    assert "wrong-" not in result.stderr
    # Meltano shows the last line the tap wrote when it exits non-zero.
    assert meltano_returncode == 1 and named in meltano_lines[-1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("setting", ["api_url", "contactbased_api_url"])
def test_an_unreachable_api_fails_within_40s_naming_the_url_setting(setting):
    port = closed_port()
    if setting == "api_url":
        config = {"api_url": f"http://127.0.0.1:{port}", "activity_client_id": "id",
                  "activity_client_secret": "s3cret-value", "start_date": "2026-02-20"}
    else:
        config = {"contactbased_api_url": f"http://127.0.0.1:{port}", "contactbased_api_key": "s3cret-value"}
    started = time.monotonic()
    result = run_tap(config, env=TODAY_ENV, timeout=120)
    elapsed = time.monotonic() - started
    print(f"{setting}: failed after {elapsed:.1f}s")
    assert result.returncode == 1
    assert elapsed < 40
    line = result.error_line
    assert f"check {setting}" in line and f"127.0.0.1:{port}" in line and "Connection refused" in line, line
    assert "too many jobs" not in result.stderr and "s3cret-value" not in result.stderr


def test_a_waiting_job_logs_a_heartbeat_and_each_window_says_k_of_n():
    with backstory.sandbox(job_queue_seconds=0.1, job_run_seconds=1.5) as sb:
        config = backstory.tap_config(sb, "activities", start_date="2026-02-10", snapshot_window_days=10)
        result = run(sb, config, env={"TAP_BACKSTORY_HEARTBEAT_SECONDS": "0.3"})
        assert result.returncode == 0, result.stderr[-2000:]
        jobs = backstory.windows(sb)
        total_requests = sb.stats()["requests_total"]
    assert len(jobs) == 2
    first = jobs[0]
    window = f"{first['start_date']}..{first['end_date']} (snapshot)"
    assert f"Window 1 of 2: {window}: created export job {first['job_id']}" in result.stderr
    assert re.search(rf"Window 1 of 2: {re.escape(window)}: export job {first['job_id']} is still Running, \d+s",
                     result.stderr), result.stderr[-3000:]
    assert f"Window 2 of 2: {jobs[1]['start_date']}..{jobs[1]['end_date']} (snapshot): reading export job" in (
        result.stderr)
    # The SDK's "in full_table mode" is replaced by what the run does.
    assert "full_table" not in result.stderr
    assert "Beginning sync of 'activities': incremental: date windows after the tap's own bookmark" in result.stderr
    # One line per API with its request count, token requests included: together all the sandbox saw.
    counts = re.search(r"HTTP requests to Backstory \(Activity key\): (\d+) \(and (\d+) token requests?\)",
                       result.stderr)
    assert counts is not None, result.stderr[-2000:]
    assert int(counts[1]) + int(counts[2]) == total_requests


def test_intent_logs_say_no_cap_and_one_day():
    with contactbased.sandbox() as sb:
        config = contactbased.tap_config(sb, intent_feed_ids=[FEED_B_ID], intent_lookback_days=1)
        result = run(sb, config)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"\(1 day\): \d+ rows found, \d+ with a contact_id; export quota remaining: no cap",
                     result.stderr), result.stderr[-2000:]
    assert "None" not in result.stderr and "1 days" not in result.stderr
    assert re.search(r"HTTP requests to ContactBased: \d+", result.stderr)


def test_unknown_settings_get_one_warning_each_and_known_ones_none():
    config = {"contactbased_api_key": "key", "start_dat": "2026-01-01", "flattening_enabled": True,
              "_meltano_extra": "x"}
    proc = subprocess.run([TAP_EXE, "--config", "/dev/stdin", "--discover"], input=json.dumps(config),
                          capture_output=True, text=True, check=True)
    warnings = [line for line in proc.stderr.splitlines() if "Unknown setting" in line]
    assert len(warnings) == 1 and "'start_dat'" in warnings[0] and "WARNING" in warnings[0]


@pytest.mark.slow
def test_real_meltano_config_test_passes_and_fails_without_spending_anything(tmp_path):
    """`meltano config test tap-backstory` with Meltano 4.4.1 itself, in a copy of the project's meltano.yml."""
    root = Path(__file__).resolve().parent.parent
    project = (root / "meltano.yml").read_text().replace("pip_url: -e .", f"pip_url: -e {root}")
    (tmp_path / "meltano.yml").write_text(project)
    meltano = ["uv", "tool", "run", "--from", "meltano==4.4.1", "meltano", "--environment", "sandbox"]
    env = {**os.environ, **TODAY_ENV, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false"}
    subprocess.run([*meltano, "install", "--plugin-type", "extractor", "tap-backstory"], cwd=tmp_path, env=env,
                   capture_output=True, check=True, timeout=600)
    with backstory.sandbox() as sb:
        env.update(TAP_BACKSTORY_API_URL=sb.backstory_url, TAP_BACKSTORY_CONTACTBASED_API_URL=sb.contactbased_url,
                   TAP_BACKSTORY_START_DATE="2026-02-20")
        good = subprocess.run([*meltano, "config", "test", "tap-backstory"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        bad = subprocess.run([*meltano, "config", "test", "tap-backstory"], cwd=tmp_path,
                             env={**env, "TAP_BACKSTORY_ACTIVITY_CLIENT_SECRET": "wrong-secret"},
                             capture_output=True, text=True, timeout=300)
        assert_nothing_spent(sb)
    assert good.returncode == 0 and "Plugin configuration is valid" in good.stdout, good.stderr[-2000:]
    assert bad.returncode == 1 and "Backstory refused the Activity key pair" in bad.stderr, bad.stderr[-2000:]


def test_help_describes_test_as_the_free_connection_test():
    out = subprocess.run([TAP_EXE, "--help"], capture_output=True, text=True, check=True).stdout
    flat = " ".join(out.split())
    assert "Use --test for a free connection test" in flat and "no quota spent" in flat
    assert "sync a single record" not in flat


def test_an_unknown_tap_backstory_variable_gets_one_warning_naming_the_nearest_setting():
    env = {
        **os.environ,
        **TODAY_ENV,
        "TAP_BACKSTORY_CONTACTBASED_API_KEY": "key",
        "TAP_BACKSTORY_START_DTE": "2026-01-01",  # the typo
        "TAP_BACKSTORY_LOGLEVEL": "INFO",  # not settings, but the tap's and the SDK's own: no warning
        "TAP_BACKSTORY_HEARTBEAT_SECONDS": "5",
        "TAP_BACKSTORY__SELECT": '["activities.*"]',  # Meltano's extras (double underscore): no warning
    }
    proc = subprocess.run([TAP_EXE, "--config", "ENV", "--discover"], capture_output=True, text=True, env=env,
                          check=True)
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, proc.stderr[-2000:]
    assert warnings[0].endswith(
        "Environment variable TAP_BACKSTORY_START_DTE is not a tap-backstory setting and is ignored "
        "(did you mean TAP_BACKSTORY_START_DATE?)"
    )


MELTANO_LOG_CONFIG = {  # what Meltano 4.4.1 hands every SDK tap in SINGER_SDK_LOG_CONFIG (a root handler only)
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"singer_formatter": {"format": "%(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "singer_formatter",
                             "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}


def test_run_logs_say_each_thing_once_and_agree_with_each_other(tmp_path):
    """The window summary names the range the windows really cover (the backfill's last one is stretched past
    today), a child stream says it begins once (not once per enrichment batch), METRIC lines only at DEBUG."""
    with backstory.sandbox() as sb:
        config = tap_config(
            sb, start_date="2026-02-10", job_poll_interval_seconds=0.1, enrichment_batch_size=20, intent_lookback_days=2
        )
        result = run(sb, config)
        assert result.returncode == 0, result.stderr[-2000:]
        [window] = backstory.windows(sb)
        debug = run(sb, config, env={"TAP_BACKSTORY_LOGLEVEL": "DEBUG"})
        (tmp_path / "logging.json").write_text(json.dumps(MELTANO_LOG_CONFIG))
        under_meltano = run(sb, config, env={"SINGER_SDK_LOG_CONFIG": str(tmp_path / "logging.json")})
    span = f"{window['start_date']}..{window['end_date']}"
    assert window["end_date"] > TODAY.isoformat()  # stretched: the case where the two lines used to disagree
    assert f"activities: 1 snapshot window from {window['start_date']} to {window['end_date']}\n" in result.stderr
    assert f"Window 1 of 1: {span} (snapshot): created export job" in result.stderr
    assert result.stderr.count("Beginning sync of 'enriched_contact_records'") == 1
    assert len(result.records("enriched_contact_records")) > 20  # several batches, so several child syncs
    assert "METRIC" not in result.stderr
    assert debug.returncode == 0 and '"metric":"record_count"' in debug.stderr
    assert under_meltano.returncode == 0 and "Window 1 of 1" in under_meltano.stderr
    assert "METRIC" not in under_meltano.stderr
