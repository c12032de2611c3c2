"""An export's fragment files read as ONE file (`formats.read_export`), on in-memory bytes.

The docs only say fragments "are stitched together to form a single file": each may be a complete file or a byte
slice of the one file, compressed or not. Every cut position is tried, so boundaries fall inside records, inside
the CSV header and inside multi-byte UTF-8 characters."""

from __future__ import annotations

import csv
import gzip
import io
import json
import threading
import time

import pytest

from tap_backstory.formats import DataError, read_csv_records, read_export, read_json_records

LINES = [{"uid": "a1", "name": "Jonas Müller", "n": 1}, {"uid": "a2", "name": "Chloé", "n": 2}, {"uid": "a3", "n": 3}]
JSON_LINES = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in LINES).encode()
ROWS = [{"email": "a@x.example", "title": "VP, Sales"}, {"email": "b@x.example", "title": "Head of Ops\nEMEA"},
        {"email": "c@x.example", "title": "Müller"}]


def csv_file(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["email", "title"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def json_array(records: list[dict]) -> bytes:
    return ("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n").encode()


def csv_rows(stream, source):
    return (row for _, row in read_csv_records(stream, source))


def read(fragments: list[bytes], parse=read_json_records) -> list[dict]:
    files = [(io.BytesIO(body), f"export job 7 fragment {k}") for k, body in enumerate(fragments)]
    return list(read_export(files, parse, "export job 7"))


def cuts(body: bytes) -> list[list[bytes]]:
    """The body as 2 slices cut at every position, and as 3 slices at a few."""
    two = [[body[:i], body[i:]] for i in range(1, len(body))]
    three = [[body[:i], body[i : i + 7], body[i + 7 :]] for i in range(1, len(body) - 8, 5)]
    return two + three


def test_json_lines_cut_anywhere_even_inside_a_character_read_as_one_file():
    assert "ü".encode() in JSON_LINES
    for fragments in cuts(JSON_LINES):
        assert read(fragments) == LINES, fragments


def test_standalone_json_lines_files_lacking_their_final_newline():
    files = [json.dumps(record, ensure_ascii=False).encode() for record in LINES]
    assert read(files) == LINES
    assert read([files[0] + b"\n", files[1], b"", files[2] + b"\n"]) == LINES


def test_csv_with_the_header_only_in_the_first_slice_cut_anywhere():
    body = csv_file(ROWS)
    for fragments in cuts(body):
        assert read(fragments, csv_rows) == ROWS, fragments


@pytest.mark.parametrize("final_newline", [True, False])
def test_standalone_csv_files_each_with_the_header(final_newline):
    files = [csv_file([row]) for row in ROWS]
    if not final_newline:
        files = [body.rstrip(b"\r\n") for body in files]
    files[1] = b"\xef\xbb\xbf" + files[1]  # a byte order mark on a later file too
    assert read(files, csv_rows) == ROWS


def test_json_arrays_one_per_file_or_one_cut_anywhere():
    assert read([json_array([record]) for record in LINES]) == LINES
    assert read([json_array(LINES[:2]), json_array([]), json_array(LINES[2:]).rstrip()]) == LINES
    for fragments in cuts(json_array(LINES)):
        assert read(fragments) == LINES, fragments


def test_gzip_bodies_per_fragment_or_one_gzip_file_cut_into_slices():
    assert read([gzip.compress(JSON_LINES[:40]), gzip.compress(JSON_LINES[40:])]) == LINES
    assert read([gzip.compress(csv_file([row])) for row in ROWS], csv_rows) == ROWS
    packed = gzip.compress(csv_file(ROWS))
    for fragments in cuts(packed)[::3]:
        assert read(fragments, csv_rows) == ROWS


@pytest.mark.parametrize(
    ("fragments", "parse", "phrases"),
    [
        # JSON Lines: msgspec refuses the bad line; the error names its line and fragment.
        (
            [JSON_LINES, '{"name": "Müller"}\n'.encode("latin-1")],
            read_json_records,
            ["export job 7: line 4 is not valid UTF-8", "(line 1 of export job 7 fragment 1)"],
        ),
        ([gzip.compress(JSON_LINES)[:-9]], read_json_records, ["export job 7 fragment 0: its gzip file ends before"]),
        ([b"\x1f\x8b" + b"not gzip at all"], read_json_records, ["export job 7 fragment 0: not a readable gzip file"]),
        (
            [JSON_LINES, b"\xc3"],
            read_json_records,
            ["export job 7: line 4 is not valid UTF-8", "(line 1 of export job 7 fragment 1)"],
        ),
        # Other bodies: the byte layer checks them, and names the byte.
        (
            [csv_file(ROWS[:1]), csv_file(ROWS[1:]).replace(b"title", "Müller".encode("latin-1"))],
            csv_rows,
            ["export job 7 fragment 1: byte 7 is not valid UTF-8"],
        ),
        ([csv_file(ROWS), b"\xc3"], csv_rows, ["export job 7 fragment 1: byte 0 is not valid UTF-8"]),
    ],
    ids=["latin-1", "truncated-gzip", "not-gzip", "cut-character-at-the-end", "csv-latin-1", "csv-cut-character"],
)
def test_an_undecodable_file_is_a_data_error_naming_the_fragment(fragments, parse, phrases):
    with pytest.raises(DataError) as error:
        read(fragments, parse)
    assert all(phrase in str(error.value) for phrase in phrases), str(error.value)


def test_a_pretty_printed_document_cut_anywhere_even_inside_a_number():
    records = [*LINES, {"uid": "a4", "scores": [12, 345]}]
    body = json.dumps({"data": records}, indent=2, ensure_ascii=False).encode()
    for fragments in cuts(body):
        assert read(fragments) == records, fragments


def test_downloads_start_in_order_one_at_a_time_and_widen_up_to_the_concurrency():
    from tap_backstory.fragments import _Gate

    gate, started = _Gate(2), []

    def download(ticket: int, cancelled: bool = False) -> threading.Thread:
        def run() -> None:
            if gate.enter(ticket, lambda: cancelled):
                started.append(ticket)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    tickets = [gate.ticket() for _ in range(4)]
    threads = [download(tickets[3]), download(tickets[2], cancelled=True), download(tickets[1]), download(tickets[0])]
    time.sleep(0.2)
    assert started == [0]  # one at a time, the first asked for first
    gate.widen()
    time.sleep(0.2)
    assert started == [0, 1]  # one more: the next in order (ticket 2, no longer wanted, passes its turn later)
    gate.widen()  # at most 2: no change
    time.sleep(0.2)
    assert started == [0, 1]
    gate.leave()
    threads[2].join(1)
    threads[0].join(1)
    assert started == [0, 1, 3] and gate.running == 2  # ticket 2 passed its turn without running
    gate.close()
