"""JSON Lines read in blocks (`formats.read_json_blocks`, the struct path of the direct writer and lean BATCH) give
exactly what the line-by-line reading gives: the same records, the same JSON bytes, the same errors on the same
line numbers, whatever the block size and whatever msgspec's lenient `decode_lines` would have accepted."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest

from tap_backstory import formats
from tap_backstory.formats import DataError, RecordShaper, read_json_blocks, read_json_records
from tap_backstory.streams.backstory import normalize_activity_shapes
from tap_backstory.writer import ENCODER
from tap_backstory_sandbox.data import iter_activity_lines
from tap_backstory_sandbox.settings import SandboxSettings

SCHEMA = json.loads((Path(formats.__file__).parent / "schemas" / "activities.json").read_text())
DAY = dt.date(2026, 11, 2)
BLOCK_BYTES = formats.BLOCK_BYTES


def shaper() -> RecordShaper:
    return RecordShaper(SCHEMA, "activities", primary_key="uid", normalize=normalize_activity_shapes)


def activity_lines(count: int, **settings: object) -> list[bytes]:
    sandbox = SandboxSettings(activities_per_day=count, **settings)  # type: ignore[arg-type]
    return [line.encode() for line in iter_activity_lines(sandbox, DAY, DAY, "snapshot")]


def by_lines(body: bytes) -> bytes:
    """The line-by-line reading (dicts, `RecordShaper.shape`), as JSON Lines."""
    shape = shaper().shape
    records = [shape(record) for record in read_json_records(io.BufferedReader(io.BytesIO(body)), "export job 1")]
    return b"".join(ENCODER.encode(record) + b"\n" for record in records if record is not None)


def by_blocks(body: bytes) -> tuple[bytes, list[int]]:
    """The block reading, as JSON Lines; and the size of each block."""
    stream = io.BufferedReader(io.BytesIO(body), formats.STITCH_CHUNK)  # as `read_export` hands it over
    blocks = list(read_json_blocks(stream, "export job 1", shaper()))
    return b"".join(ENCODER.encode_lines(block) for block in blocks), [len(block) for block in blocks]


def an_error(read: object, body: bytes) -> str:
    with pytest.raises(DataError) as raised:
        read(body)  # type: ignore[operator]
    return str(raised.value)


@pytest.mark.parametrize("block_bytes", [1, 700, 5000, BLOCK_BYTES])
def test_blocks_give_the_bytes_of_the_line_by_line_reading(monkeypatch, block_bytes):
    lines = activity_lines(60)
    plain = json.loads(lines[0])
    plain["created"] = "2026-11-02T08:00:00"  # no offset: gets a Z either way
    plain["attachment_file_names"] = "one.pdf"  # normalised either way
    odd = [
        json.dumps(plain).encode() + b"\n",
        json.dumps({**plain, "uid": "new-field", "brand_new": 1}).encode() + b"\n",  # undeclared: into `_extra`
        json.dumps({**plain, "uid": None}).encode() + b"\n",  # no primary key: left out
        b"\n",  # blank
        b'{"uid": "nan", "duration": NaN}\n',  # msgspec refuses, `json` reads
        b'{"uid": "crlf"}\r\n',
        b'   {"uid": "indented"}\n',
    ]
    body = b"".join(lines[:20] + odd + lines[20:] + [b'{"uid": "last, no line break"}'])
    monkeypatch.setattr(formats, "BLOCK_BYTES", block_bytes)

    blocks, sizes = by_blocks(body)

    assert blocks == by_lines(body)
    assert sum(sizes) == len(lines) + len(odd) + 1 - 2  # the blank line and the keyless record left out
    if block_bytes == BLOCK_BYTES:
        assert max(sizes) > 10  # whole runs of lines go in one call


@pytest.mark.parametrize(
    "lines",
    [
        [b'{"uid": "a"} {"uid": "b"}\n'],  # two values on one line: decode_lines would take both
        [b'{"uid":\n', b'"a"}\n'],  # one value across two lines
        [b'{"uid": "a"}{"uid": "b"}\n', b"\n", b'{"uid": "c"}\n'],  # two on a line, made up for by a blank line
        [b'{"uid": "a"}\n', b"[1]\n"],
        [b'{"uid": "a"}\n', b'{"uid": "\xff"}\n'],  # not UTF-8
        [b'{"uid": "a"}\n', b'{"uid": "b", "duration": 1e999}\n'],
    ],
)
def test_what_one_object_a_line_refuses_blocks_refuse_with_the_same_error(monkeypatch, lines):
    body = b"".join(activity_lines(30) + lines + activity_lines(3))
    for block_bytes in (BLOCK_BYTES, 50):
        monkeypatch.setattr(formats, "BLOCK_BYTES", block_bytes)
        expected = an_error(by_lines, body)
        assert an_error(by_blocks, body) == expected
        assert "line 31" in expected or "line 32" in expected  # numbered over the whole body


def test_blocks_are_read_as_the_bytes_arrive_not_as_whole_blocks():
    """A block is what has arrived (`read1`), completed to the end of its line: the first records are handed on
    before the rest of a slow body exists."""
    lines = activity_lines(5)

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.pieces = [lines[0] + lines[1][:40], lines[1][40:], *lines[2:]]
            self.asked = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:
            self.asked += 1
            if not self.pieces:
                return 0
            piece = self.pieces.pop(0)
            buffer[: len(piece)] = piece
            return len(piece)

    raw = Trickle()
    blocks = read_json_blocks(io.BufferedReader(raw), "export job 1", shaper())
    first = next(blocks)
    assert [record.uid for record in first] == [json.loads(line)["uid"] for line in lines[:2]]
    assert raw.pieces  # the rest had not been read yet
    assert sum(map(len, blocks)) == 3
