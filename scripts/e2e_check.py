"""End-to-end assertions for scripts/e2e.sh: warehouse row counts against what the sandbox served.

usage: python scripts/e2e_check.py first|second --sandbox URL --start-date YYYY-MM-DD --before FILE.json
       [--warehouses duckdb postgres jsonl]

`first`: every table in the given warehouses (default DuckDB and PostgreSQL) holds exactly the records the
sandbox's data model says a full first run must extract (computed by the sandbox's own expectation helpers, not
hard-coded).
`second`: the second run used the stored state — only `delta` activity windows were requested, the Backstory
tables and the enrichment table did not grow (re-read days are upserted on their primary keys), and the
intent table grew by exactly the rows of the new one-day exports.
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
    "intent_feed_exports": "export_id, row_number",
    "enriched_contact_records": "contact_id",
}


def duplicated_keys() -> list[str]:
    """Tables of PostgreSQL where a primary key value occurs more than once (none, when upserts work)."""
    import psycopg
    from row_counts import POSTGRES_DSN, SCHEMA

    problems = []
    with psycopg.connect(POSTGRES_DSN) as con:
        for table, key in PRIMARY_KEYS.items():
            total, distinct = con.execute(
                f"select count(*), count(distinct ({key})) from {SCHEMA}.{table}"
            ).fetchone()
            print(f"  postgres  {table:<26} rows {total:>7}  distinct keys {distinct:>7}")
            if total != distinct:
                problems.append(f"postgres.{table}: {total - distinct} duplicated primary keys")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", choices=["first", "second"])
    parser.add_argument("--sandbox", required=True)
    parser.add_argument("--start-date", required=True)
    parser.add_argument("--before", required=True, help="JSON file of the counts after the first run")
    parser.add_argument("--warehouses", nargs="+", choices=["duckdb", "postgres", "jsonl"],
                        default=["duckdb", "postgres"], help="where the first run loaded (second: postgres)")
    args = parser.parse_args()

    stats = sandbox_stats(args.sandbox)
    settings = sandbox_settings(stats)
    today = settings.today
    start = dt.date.fromisoformat(args.start_date)
    windows = feed_windows(settings, today)
    problems: list[str] = []

    if args.run == "first":
        ids: set[str] = set()
        for feed_id, (first, last) in windows.items():
            ids |= expected_intent_contact_ids(settings, feed_id, first, last)
        expected = {
            "activities": len(expected_activity_uids(settings, start, today, "snapshot")),
            "enriched_contacts": len(expected_contact_emails(settings, start, today)),
            "intent_feed_exports": sum(expected_intent_rows(settings, f, a, b) for f, (a, b) in windows.items()),
            "enriched_contact_records": len(ids),
        }
        for warehouse in args.warehouses:
            found = counts(warehouse)
            problems += check(warehouse, found, expected)
        if "postgres" in args.warehouses:
            with open(args.before, "w") as out:
                json.dump(counts("postgres"), out)
    else:
        with open(args.before) as saved:
            before = json.load(saved)
        activity_windows = [w for w in stats["job_windows"] if w["stream"] == "activities"]
        kinds = sorted({w["export_type"] for w in activity_windows})
        print(f"  second run: activity windows requested {[(w['start_date'], w['end_date']) for w in activity_windows]}"
              f" of type {kinds}")
        if not activity_windows or kinds != ["delta"]:
            problems.append(f"second run should request only delta activity windows, got {kinds}")
        new_intent_rows = sum(expected_intent_rows(settings, f, today, today) for f in windows)
        expected = {**before, "intent_feed_exports": before["intent_feed_exports"] + new_intent_rows}
        problems += check("postgres", counts("postgres"), expected)
    if args.run == "second" or "postgres" in args.warehouses:
        problems += duplicated_keys()
    if problems:
        print("END-TO-END CHECK FAILED:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print(f"end-to-end check ({args.run} run): ok")


if __name__ == "__main__":
    main()
