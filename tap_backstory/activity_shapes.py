"""Activity fields the API sends in more than one shape, brought to the schema's.

A module of its own, light to import: BATCH line workers (`tap_backstory.line_workers`) load it by name.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from tap_backstory.formats import RecordStruct


def normalize_activity_shapes(record: dict | RecordStruct) -> None:
    """`attachment_file_names` sent as one string becomes a one-item array; `campaigns` items sent as strings
    (a public client's reading) become `{"name": ...}` objects (docs/decisions.md, "Activity field shapes")."""
    if type(record) is dict:
        names, campaigns = record.get("attachment_file_names"), record.get("campaigns")
    else:  # a struct (`RecordShaper.fast_line`): its fields by attribute, without a Python call each
        names, campaigns = record.attachment_file_names, record.campaigns  # type: ignore[union-attr]
    if type(names) is str:
        record["attachment_file_names"] = [names]
    if campaigns and type(campaigns) is list and str in map(type, campaigns):  # no Python frame per item
        record["campaigns"] = [{"name": item} if type(item) is str else item for item in campaigns]
