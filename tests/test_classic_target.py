"""Record mode into a classic (non-SDK) Singer target: every row and every non-null value arrives (issue 21 §3).

pipelinewise-target-postgres 2.1.2 (pipelinewise-singer-python, psycopg2) is a target written by others that
knows nothing of the SDK or BATCH. It runs in its own virtual environment, on a Python its pinned psycopg2-binary
has wheels for (3.10 or 3.11), and loads into a private PostgreSQL cluster (scripts/pg.sh, on a free port). The
real tap runs against the sandbox with all four streams; its stdout is piped into the target unchanged.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests import tap_runner
from tests.backstory_support import sandbox
from tests.test_batch import TREE, TREE_SANDBOX, tree_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TARGET = "pipelinewise-target-postgres==2.1.2"
TARGET_PYTHON = ">=3.10,<3.12"  # psycopg2-binary 2.9.5 (pinned by the target) has wheels up to CPython 3.11
PRIMARY_KEYS = {
    "activities": "uid",
    "enriched_contacts": "email",
    "intent_feed_exports": "row_key",
    "enriched_contact_records": "contact_id",
}
SCHEMA = "classic"


def uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv is needed to build the classic target's own environment"
    return found


@pytest.fixture(scope="module")
def classic_target(tmp_path_factory) -> Path:
    """The target's executable, in a virtual environment of its own."""
    venv = tmp_path_factory.mktemp("classic-target") / "venv"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "VIRTUAL_ENV": str(venv)}
    env.pop("UV_PROJECT_ENVIRONMENT", None)
    subprocess.run([uv(), "venv", "--quiet", "--python", TARGET_PYTHON, str(venv)], env=env, check=True, timeout=120)
    subprocess.run([uv(), "pip", "install", "--quiet", TARGET], env=env, check=True, timeout=300)
    return venv / "bin" / "target-postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> dict:
    """A private PostgreSQL cluster (database and role `tap`), stopped and removed afterwards. Its folder is under
    /tmp/tap-pg.* as in scripts/e2e.sh: the `postgres` user must reach it, and CI checks none is left behind."""
    root = tempfile.mkdtemp(prefix="tap-pg.", dir="/tmp")
    env = {**os.environ, "PGROOT": root, "PGPORT": str(free_port())}
    try:
        subprocess.run([str(REPO / "scripts/pg.sh"), "start"], env=env, check=True, timeout=300, capture_output=True)
        yield {"host": "127.0.0.1", "port": int(env["PGPORT"]), "user": "tap", "password": "tap", "dbname": "tap"}
    finally:
        subprocess.run([str(REPO / "scripts/pg.sh"), "stop"], env=env, check=False, timeout=120, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def as_pipelinewise_text(text: str) -> str:
    """A string as pipelinewise-target-postgres 2.1.2 stores it: it writes each value with `json.dumps` into a CSV
    that `COPY ... (FORMAT CSV, ESCAPE '\\')` reads, which undoes only the `\\"` and `\\\\` escapes; so a newline
    arrives as the two characters `\\n` (the target's own quirk, whatever the tap sends)."""
    return re.sub(r'\\([\\"])', r"\1", json.dumps(text, ensure_ascii=False)[1:-1])


def same_value(sent, loaded) -> bool:
    """Whether a value the tap sent is the one the target stored, across PostgreSQL's types: timestamps (the tap
    sends UTC with `Z`; the target stores `timestamp without time zone`), numeric, jsonb for objects and arrays,
    and text as the target writes it (`as_pipelinewise_text`)."""
    if isinstance(sent, str) and isinstance(loaded, str):
        return as_pipelinewise_text(sent) == loaded
    if isinstance(loaded, dt.datetime):
        instant = dt.datetime.fromisoformat(sent.replace("Z", "+00:00"))
        if loaded.tzinfo is None:
            instant = instant.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return instant == loaded
    if isinstance(loaded, dt.date):
        return dt.date.fromisoformat(sent) == loaded
    if isinstance(loaded, decimal.Decimal):
        return decimal.Decimal(str(sent)) == loaded
    return sent == loaded


def test_a_classic_target_loads_every_row_and_every_non_null_value(classic_target, postgres, tmp_path):
    with sandbox(**TREE_SANDBOX) as sb:
        tap = tap_runner.run(sb, tree_config(sb), check=True)
    config = tmp_path / "target.json"
    config.write_text(json.dumps({**postgres, "default_target_schema": SCHEMA}))
    loaded = subprocess.run(
        [str(classic_target), "--config", str(config)],
        input=tap.stdout, capture_output=True, text=True, timeout=300, check=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]

    dsn = " ".join(f"{key}={value}" for key, value in postgres.items())
    with psycopg.connect(dsn, row_factory=dict_row) as con:
        for stream in TREE:
            records = tap.records(stream)
            key = PRIMARY_KEYS[stream]
            rows = {row[key]: row for row in con.execute(f"select * from {SCHEMA}.{stream}")}
            assert len(records) > 50, stream
            assert len({r[key] for r in records}) == len(records), f"{stream}: the tap sent a key twice"
            assert len(rows) == len(records), f"{stream}: {len(records)} records sent, {len(rows)} rows loaded"
            values = 0
            for record in records:
                row = rows[record[key]]
                for name, value in record.items():
                    if value is None:
                        continue
                    assert name in row, f"{stream}: no column {name}"
                    assert same_value(value, row[name]), f"{stream} {record[key]} {name}: {value!r} -> {row[name]!r}"
                    values += 1
            print(f"{stream}: {len(rows)} rows, {values} non-null values, all loaded")
