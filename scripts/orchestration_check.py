"""Assertions for scripts/e2e_orchestration.sh: every org's warehouse schema, job log and Meltano state ids.

usage: python scripts/orchestration_check.py --start-date YYYY-MM-DD --meltano-yml orchestration/meltano.yml
       --state-ids FILE --org NAME=SANDBOX_URL [--org ...]

Per org (its own sandbox, so its own Backstory limit): the schema tap_backstory_<org> holds exactly the distinct
records the sandbox's data model says a full first run extracts (the same helpers as scripts/e2e_check.py), no
primary key twice; replaying the sandbox's job log (`job_created` and `job_state` events), at most 2 export jobs
were queued or running at any moment, hence at most 2 Running, and the sandbox never had to refuse a job as one
too many; both Backstory streams made jobs. The Meltano state ids are exactly one per Dagster job (per
extractor `tap-backstory-<org>--<name>` of the orchestration project).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, "scripts")
from e2e_check import PRIMARY_KEYS, expected_counts, sandbox_settings, sandbox_stats
from row_counts import POSTGRES_DSN

ORG_LIMIT = 2  # Backstory: at most 2 running export jobs per organization


def job_log(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/_sandbox/events") as response:
        return [e for e in json.load(response)["events"] if e["kind"] in ("job_created", "job_state", "too_many_jobs")]


def most_at_once(events: list[dict]) -> tuple[int, int]:
    """(most jobs Queued or Running at once, most jobs Running at once), replaying the job log in order."""
    states: dict[str, str] = {}
    most_alive = most_running = 0
    for event in events:
        if event["kind"] == "job_created":
            states[str(event["job_id"])] = "Queued"
        elif event["kind"] == "job_state":
            states[str(event["job_id"])] = event["state"]
        alive = sum(1 for s in states.values() if s in ("Queued", "Running"))
        running = sum(1 for s in states.values() if s == "Running")
        most_alive, most_running = max(most_alive, alive), max(most_running, running)
    return most_alive, most_running


def check_org(org: str, url: str, start: dt.date) -> list[str]:
    import psycopg

    problems = []
    stats = sandbox_stats(url)
    settings = sandbox_settings(stats)
    expected = expected_counts(settings, start, settings.today)
    schema = f"tap_backstory_{org}"
    with psycopg.connect(POSTGRES_DSN) as con:
        for table, number in expected.items():
            total, distinct = con.execute(
                f"select count(*), count(distinct ({PRIMARY_KEYS[table]})) from {schema}.{table}").fetchone()
            status = "ok" if total == number == distinct else "MISMATCH"
            print(f"  {schema:<22} {table:<26} expected {number:>6}  got {total:>6}  distinct keys {distinct:>6}  "
                  f"{status}")
            if status != "ok":
                problems.append(f"{schema}.{table}: expected {number}, got {total} ({distinct} distinct keys)")
    events = job_log(url)
    alive, running = most_at_once(events)
    refused = sum(1 for e in events if e["kind"] == "too_many_jobs")
    created = stats["jobs_created"]
    print(f"  {org}: export jobs created {created}; at most {alive} queued or running and {running} Running at "
          f"once (job log); {refused} refused as too many")
    if alive > ORG_LIMIT or running > ORG_LIMIT or stats["max_jobs_alive"] > ORG_LIMIT:
        problems.append(f"{org}: {alive} export jobs alive, {running} Running at once (limit {ORG_LIMIT})")
    if refused:
        problems.append(f"{org}: the sandbox refused {refused} job creations as too many")
    if not (created["activities"] and created["contacts"]):
        problems.append(f"{org}: both Backstory streams should have made export jobs, got {created}")
    return problems


def expected_state_ids(meltano_yml: str) -> set[str]:
    with open(meltano_yml) as project:
        extractors = yaml.safe_load(project)["plugins"]["extractors"]
    return {f"prod:{p['name']}-to-target-postgres" for p in extractors if "--" in p["name"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start-date", required=True)
    parser.add_argument("--meltano-yml", required=True)
    parser.add_argument("--state-ids", required=True)
    parser.add_argument("--org", action="append", required=True, help="NAME=SANDBOX_URL")
    args = parser.parse_args()
    start = dt.date.fromisoformat(args.start_date)
    problems = []
    for item in args.org:
        org, url = item.split("=", 1)
        problems += check_org(org, url, start)
    found = {line.strip() for line in Path(args.state_ids).read_text().splitlines() if line.strip()}
    wanted = expected_state_ids(args.meltano_yml)
    print(f"  Meltano state ids: {len(found)} ({', '.join(sorted(found))})")
    if found != wanted:
        problems.append(f"state ids: missing {sorted(wanted - found)}, unexpected {sorted(found - wanted)}")
    if problems:
        print("ORCHESTRATION CHECK FAILED:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print("orchestration check: ok")


if __name__ == "__main__":
    main()
