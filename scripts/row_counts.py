"""Print the row count of every tap-backstory table in the DuckDB or PostgreSQL warehouse (or target-jsonl's files).

usage: python scripts/row_counts.py duckdb|postgres|jsonl [--json FILE] [--since FILE]

`--json FILE` saves the counts; `--since FILE` (counts saved before a run) adds what the run added per table.

The locations are the loaders' own settings, so a run and its check cannot look at different places:
TARGET_DUCKDB_FILEPATH (default: the demo's output/warehouse.duckdb), TARGET_JSONL_DESTINATION_PATH, and the
schema TARGET_DUCKDB_DEFAULT_TARGET_SCHEMA / TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA (default: meltano.yml's).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

TABLES = ("activities", "enriched_contacts", "intent_feed_exports", "enriched_contact_records")
SCHEMA = "tap_backstory"  # meltano.yml's default_target_schema of both loaders
DUCKDB_FILE = os.environ.get("TARGET_DUCKDB_FILEPATH", "output/warehouse.duckdb")
# The test server of scripts/pg.sh; scripts/e2e_workflow.sh runs its own on another port (TARGET_POSTGRES_PORT).
POSTGRES_DSN = f"host=127.0.0.1 port={os.environ.get('TARGET_POSTGRES_PORT', '5433')} user=tap password=tap dbname=tap"


def jsonl_lines(folder: Path, table: str) -> int:
    """Records target-jsonl wrote for a stream (one `<stream>*.jsonl` file per run), read line by line."""
    total = 0
    for path in folder.glob(f"{table}*.jsonl"):
        with path.open("rb") as lines:
            total += sum(1 for line in lines if line.strip())
    return total


def schema(warehouse: str) -> str:
    """The schema the loader of `warehouse` writes to: its DEFAULT_TARGET_SCHEMA setting, else meltano.yml's."""
    return os.environ.get(f"TARGET_{warehouse.upper()}_DEFAULT_TARGET_SCHEMA", SCHEMA)


def connect(warehouse: str):
    """A connection (a context manager with `execute`) to the DuckDB file, read-only, or to PostgreSQL."""
    if warehouse == "duckdb":
        import duckdb

        return duckdb.connect(DUCKDB_FILE, read_only=True)
    import psycopg

    return psycopg.connect(POSTGRES_DSN)


def counts(warehouse: str) -> dict[str, int]:
    if warehouse == "jsonl":
        folder = Path(os.environ["TARGET_JSONL_DESTINATION_PATH"])
        return {t: jsonl_lines(folder, t) for t in TABLES}
    with connect(warehouse) as con:
        return {t: con.execute(f"select count(*) from {schema(warehouse)}.{t}").fetchone()[0] for t in TABLES}


def where(warehouse: str) -> str:
    if warehouse == "duckdb":
        return f"DuckDB file {Path(DUCKDB_FILE).resolve()}"
    if warehouse == "postgres":
        return f"PostgreSQL {POSTGRES_DSN.split(' password=')[0]}"
    return f"target-jsonl files in {os.environ['TARGET_JSONL_DESTINATION_PATH']}"


def option(name: str) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


def main() -> None:
    warehouse = sys.argv[1]
    result = counts(warehouse) if warehouse != "duckdb" or Path(DUCKDB_FILE).exists() else dict.fromkeys(TABLES, 0)
    since = option("--since")
    before = json.loads(Path(since).read_text()) if since and Path(since).exists() else None
    print(f"rows per table in the {where(warehouse)}, schema {schema(warehouse)}:")
    print(f"  {'table':<26} {'rows':>8}" + ("  added by this run" if before is not None else ""))
    for table, number in result.items():
        added = f"  {number - before.get(table, 0):+8d}" if before is not None else ""
        print(f"  {table:<26} {number:>8}{added}")
    if before is not None and result == before:
        print("  (no new rows: this run re-read only what the stored state left to read, and the target upserted it)")
    if option("--json"):
        Path(option("--json")).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
