"""End-to-end assertions for scripts/e2e.sh: warehouse row counts against what the sandbox served.

usage: python scripts/e2e_check.py first|second|third --sandbox URL --start-date YYYY-MM-DD
       [--warehouses duckdb postgres jsonl]

After every run, every table in the given warehouses (default DuckDB and PostgreSQL) holds exactly the distinct
records the sandbox's data model says a full first run must extract (computed by the sandbox's own expectation
helpers, not hard-coded), and no primary key value twice. The later runs (same day, restarted sandbox) re-read
today: activity days and, under new export ids and row numbers, today's intent rows; upserts on the primary keys
must leave every count unchanged. They must also use the stored state: only `delta` activity windows are
requested.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import urllib.request
from dataclasses import fields

sys.path.insert(0, "scripts")
from row_counts import counts

from tap_backstory_sandbox import SandboxSettings
from tap_backstory_sandbox.data import (
    expected_activity_uids,
    expected_contact_emails,
    expected_intent_contact_ids,
    expected_intent_rows,
)


def sandbox_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_sandbox/stats") as response:
        return json.load(response)


def sandbox_settings(stats: dict) -> SandboxSettings:
    known = {f.name for f in fields(SandboxSettings)}
    values = {k: v for k, v in stats["settings"].items() if k in known}
    values["today"] = dt.date.fromisoformat(values["today"])
    return SandboxSettings(**values)


def feed_windows(settings: SandboxSettings, today: dt.date) -> dict[str, tuple[dt.date, dt.date]]:
    caps = {"feed_a": settings.feed_a_lookback_cap, "feed_b": settings.feed_b_lookback_cap}
    from tap_backstory_sandbox import FEED_A_ID, FEED_B_ID

    ids = {"feed_a": FEED_A_ID, "feed_b": FEED_B_ID}
    return {ids[f]: (today - dt.timedelta(days=cap - 1), today) for f, cap in caps.items()}


def check(label: str, actual: dict[str, int], expected: dict[str, int]) -> list[str]:
    problems = []
    for table, number in expected.items():
        status = "ok" if actual[table] == number else "MISMATCH"
        print(f"  {label:<9} {table:<26} expected {number:>7}  got {actual[table]:>7}  {status}")
        if actual[table] != number:
            problems.append(f"{label}.{table}: expected {number}, got {actual[table]}")
    return problems


PRIMARY_KEYS = {
    "activities": "uid",
    "enriched_contacts": "email",
    "intent_feed_exports": "row_key",
    "enriched_contact_records": "contact_id",
}


def duplicated_keys(warehouse: str) -> list[str]:
    """Tables where a primary key value occurs more than once (none, when upserts work)."""
    from row_counts import connect, schema

    problems = []
    with connect(warehouse) as con:
        for table, key in PRIMARY_KEYS.items():
            total, distinct = con.execute(
                f"select count(*), count(distinct ({key})) from {schema(warehouse)}.{table}"
            ).fetchone()
            print(f"  {warehouse:<9} {table:<26} rows {total:>7}  distinct keys {distinct:>7}")
            if total != distinct:
                problems.append(f"{warehouse}.{table}: {total - distinct} duplicated primary keys")
    return problems


def expected_counts(settings: SandboxSettings, start: dt.date, today: dt.date) -> dict[str, int]:
    """The distinct records of a full first run up to today; later runs on the same day add none."""
    windows = feed_windows(settings, today)
    ids: set[str] = set()
    for feed_id, (first, last) in windows.items():
        ids |= expected_intent_contact_ids(settings, feed_id, first, last)
    return {
        "activities": len(expected_activity_uids(settings, start, today, "snapshot")),
        "enriched_contacts": len(expected_contact_emails(settings, start, today)),
        "intent_feed_exports": sum(expected_intent_rows(settings, f, a, b) for f, (a, b) in windows.items()),
        "enriched_contact_records": len(ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", choices=["first", "second", "third"])
    parser.add_argument("--sandbox", required=True)
    parser.add_argument("--start-date", required=True)
    parser.add_argument("--warehouses", nargs="+", choices=["duckdb", "postgres", "jsonl"],
                        default=["duckdb", "postgres"], help="where the run loaded")
    args = parser.parse_args()

    stats = sandbox_stats(args.sandbox)
    settings = sandbox_settings(stats)
    expected = expected_counts(settings, dt.date.fromisoformat(args.start_date), settings.today)
    problems: list[str] = []
    if args.run != "first":
        activity_windows = [w for w in stats["job_windows"] if w["stream"] == "activities"]
        kinds = sorted({w["export_type"] for w in activity_windows})
        requested = [(w["start_date"], w["end_date"]) for w in activity_windows]
        print(f"  {args.run} run: activity windows requested {requested} of type {kinds}")
        if not activity_windows or kinds != ["delta"]:
            problems.append(f"{args.run} run should request only delta activity windows, got {kinds}")
    for warehouse in args.warehouses:
        problems += check(warehouse, counts(warehouse), expected)
        if warehouse != "jsonl":  # files: no primary key to upsert on
            problems += duplicated_keys(warehouse)
    if problems:
        print("END-TO-END CHECK FAILED:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print(f"end-to-end check ({args.run} run): ok")


if __name__ == "__main__":
    main()
