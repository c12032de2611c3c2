"""Large exports stream with flat memory; the CLI prints URLs and credentials and serves."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tracemalloc
from datetime import date
from pathlib import Path

import requests

from tap_backstory_sandbox import DEMO_CREDENTIALS, SandboxSettings
from tap_backstory_sandbox.data import iter_activity_keys, iter_activity_lines
from tests.conftest import TODAY


def test_million_activity_export_streams_with_flat_memory():
    """A 1,000,000-activity export: counted in full via the key stream, rendered lazily with flat memory.

    Rendering all 1M lines takes ~20 s on a slow CI core (and ~10x more under tracemalloc), so the rendered
    stream is measured over its first 6,000 lines and a 1M-deep fragment offset is addressed directly.
    """
    s = SandboxSettings(today=TODAY, activities_per_day=100_000)
    start, end = date(2026, 1, 1), date(2026, 1, 10)
    assert sum(1 for _ in iter_activity_keys(s, start, end, "snapshot")) == 1_000_000
    gen = iter_activity_lines(s, start, end, "snapshot")
    tracemalloc.start()
    try:
        for _ in range(1_000):
            next(gen)
        _, peak_early = tracemalloc.get_traced_memory()
        size = 0
        for _ in range(5_000):
            size += len(next(gen))
        _current, peak_late = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 5_000_000  # >5 MB went through the generator ...
    assert peak_late < peak_early + 64 * 1024 and peak_late < 1_000_000  # ... with no growth in memory
    tail = list(iter_activity_lines(s, start, end, "snapshot", skip=999_995))
    assert len(tail) == 5 and json.loads(tail[-1])["uid"] == "ACT-20260110-0099999"


def test_cli_prints_urls_and_credentials(tmp_path):
    cfg = tmp_path / "tap.json"
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"fail_jobs": 2, "page_size": 50}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tap_backstory_sandbox", "--port", "0", "--today", TODAY.isoformat(),
         "--activities-per-day", "5", "--faults", str(faults), "--config-out", str(cfg)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        while not lines or lines[-1] != "ready":
            line = proc.stdout.readline()
            assert line, "sandbox exited early"
            lines.append(line.strip())
        kv = dict(line.split("=", 1) for line in lines[:-1])
        # The tap's own setting names, so what it prints can be pasted as the tap's settings.
        assert list(kv) == ["api_url", "contactbased_api_url", *DEMO_CREDENTIALS, "start_date"]
        assert all(kv[k] == v for k, v in DEMO_CREDENTIALS.items())
        assert kv["api_url"].endswith("/backstory")
        assert kv["start_date"] == (TODAY - dt.timedelta(days=30)).isoformat()
        config = json.loads(cfg.read_text())
        assert config == kv
        # A complete config: the tap runs its connection test with it as is (on the sandbox's day).
        tap = subprocess.run(
            [str(Path(sys.executable).with_name("tap-backstory")), "--config", str(cfg), "--test"],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "TAP_BACKSTORY_TODAY": TODAY.isoformat()})
        assert tap.returncode == 0, tap.stderr[-2000:]
        assert tap.stdout.count('"type":"RECORD"') == 4
        base = kv["api_url"].rsplit("/", 1)[0]
        st = requests.get(base + "/_sandbox/stats", timeout=5).json()["settings"]
        assert st["today"] == TODAY.isoformat() and st["fail_jobs"] == 2 and st["page_size"] == 50
        assert st["activities_per_day"] == 5
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()


def test_cli_help_documents_flags():
    out = subprocess.run([sys.executable, "-m", "tap_backstory_sandbox", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for flag in ("--port", "--host", "--today", "--activities-per-day", "--faults", "--config-out", "--error-rate",
                 "--drop-fragment", "--burst-429", "--token-ttl-seconds", "--bandwidth-bytes-per-sec"):
        assert flag in out


def test_every_cli_help_text_is_whole_sentences_naming_its_default():
    from tap_backstory_sandbox.__main__ import _parser

    settings = {action.dest: action.help for action in _parser()._actions if action.dest not in ("help",)}
    assert len(settings) > 40  # one option per sandbox setting, and the CLI's own
    for name, text in settings.items():
        assert text[0].isupper() and text.endswith("."), f"--{name}: {text!r}"
    for field in dataclasses.fields(SandboxSettings):
        if field.name != "extra":
            assert " Default: " in settings[field.name], field.name
