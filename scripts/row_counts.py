"""Print the row count of every tap-backstory table in the DuckDB or PostgreSQL warehouse (or target-jsonl's files).

usage: python scripts/row_counts.py duckdb|postgres|jsonl [--json FILE]

The locations are the loaders' own settings, so a run and its check cannot look at different places:
TARGET_DUCKDB_FILEPATH (default: the demo's output/warehouse.duckdb), TARGET_JSONL_DESTINATION_PATH.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

TABLES = ("activities", "enriched_contacts", "intent_feed_exports", "enriched_contact_records")
SCHEMA = "tap_backstory"
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
        return {t: con.execute(f"select count(*) from {SCHEMA}.{t}").fetchone()[0] for t in TABLES}


def main() -> None:
    warehouse = sys.argv[1]
    result = counts(warehouse)
    print(f"rows per table in {warehouse} (schema {SCHEMA}):")
    for table, number in result.items():
        print(f"  {table:<26} {number:>8}")
    if "--json" in sys.argv:
        with open(sys.argv[sys.argv.index("--json") + 1], "w") as out:
            json.dump(result, out)


if __name__ == "__main__":
    main()
