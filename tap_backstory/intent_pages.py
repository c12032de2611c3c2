"""An intent export's pages, checked against what its summary promised: no Singer inside.

A server's `total_pages` is never trusted alone (issue 22: `total_pages: -3` once ended a run with exit 0 and no
rows; `total_pages: 1000000000` sent thousands of requests for empty pages). The layout of an export is taken
from `total_rows` and `page_size` when the summary has them, and each page is checked on arrival: more rows than
`page_size`, a short or empty page before the last, rows beyond `total_rows`, or a last page that ends before
`total_rows` are one-line data errors, never silence.
"""

from __future__ import annotations

import logging
import math
import typing as t

from tap_backstory.client import path_segment
from tap_backstory.formats import DataError


def _count(summary: dict, key: str, minimum: int, where: str) -> int | None:
    """A whole-number field of an ExportSummary (None when absent); anything else is a data error."""
    value = summary.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{where}: {key} {str(value)[:40]!r} is not a whole number of at least {minimum}")
    return value


def export_layout(feed_id: str, summary: dict, log: logging.Logger) -> dict:
    """The export id, page size, row total and page count a flight keeps: `total_pages` follows from
    `total_rows` and `page_size` when both are given (a disagreeing `total_pages` is named in a WARNING)."""
    if not isinstance(summary, dict):
        raise DataError(f"intent feed {feed_id}: an ExportSummary must be a JSON object, got {type(summary).__name__}")
    export_id = str(summary.get("export_id"))
    path_segment(export_id, f"intent feed {feed_id}: export id")  # refuses control characters and empty ids
    where = f"intent feed {feed_id}: export {export_id}"
    page_size = _count(summary, "page_size", 1, where)
    if page_size is None:
        raise DataError(f"{where}: the ExportSummary has no page_size")
    total_rows = _count(summary, "total_rows", 0, where)
    stated = summary.get("total_pages")
    if total_rows is None:
        total_pages = _count(summary, "total_pages", 0, where)
        if total_pages is None:
            raise DataError(f"{where}: the ExportSummary has neither total_rows nor total_pages")
    else:
        total_pages = math.ceil(total_rows / page_size)
        if stated != total_pages:
            log.warning(
                "%s: total_pages is %s, but its %d rows at %d a page make %d pages; reading %d pages, each checked",
                where,
                str(stated)[:40],
                total_rows,
                page_size,
                total_pages,
                total_pages,
            )
    return {"export_id": export_id, "total_pages": total_pages, "page_size": page_size, "total_rows": total_rows}


def check_page(feed_id: str, flight: t.Mapping[str, t.Any], page: int, rows: list) -> None:
    """Refuse a page that does not fit the export's layout (see the module docstring)."""
    size, total_pages, total_rows = flight["page_size"], flight["total_pages"], flight.get("total_rows")
    where = f"intent feed {feed_id}: export {flight['export_id']} page {page} of {total_pages}"
    ends_at = (page - 1) * size + len(rows)
    if len(rows) > size:
        raise DataError(f"{where} holds {len(rows)} rows, more than the export's page_size {size}")
    if total_rows is not None and ends_at > total_rows:
        raise DataError(f"{where} holds rows beyond the export's total_rows {total_rows} (it ends at row {ends_at})")
    if page < total_pages and len(rows) < size:
        raise DataError(
            f"{where} holds {len(rows)} rows before the last page; every page but the last holds page_size {size}"
        )
    if page == total_pages and total_rows is not None and ends_at < total_rows:
        raise DataError(f"{where} is the last page, but it ends at row {ends_at} of total_rows {total_rows}")
