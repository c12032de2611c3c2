"""Streaming parsers (JSON Lines, JSON array, CSV) and schema-driven record shaping.

Everything reads from a binary file object line by line, so memory stays flat whatever the export size.
Bad data raises `DataError` with the source and line number: loading wrong values silently is worse than
stopping the window (its bookmark is then not advanced).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import logging
import re
import typing as t
import zlib

import msgspec

from tap_backstory.client import TapBackstoryError

LOGGER = logging.getLogger("tap-backstory")
EXTRA_KEY = "_extra"
_LINE_DECODER = msgspec.json.Decoder()
"""JSON Lines are decoded with msgspec (about 2x `json.loads` on activity lines; same dicts, ints, floats)."""
_RECORD_DECODER = msgspec.json.Decoder(dict)
"""The same, refusing anything but a JSON object (so the line loop checks no type)."""


class DataError(TapBackstoryError):
    """The server sent data the tap cannot read correctly."""


LIST_KEYS = ("rows", "items", "data", "results", "feeds")


def unwrap_list(body: t.Any, where: str, keys: t.Sequence[str] = LIST_KEYS) -> list:
    """A list the API sent bare or wrapped under one of the usual plural keys."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in keys:
            if isinstance(body.get(key), list):
                return body[key]
    raise DataError(f"{where}: expected a list (or an object with one of {list(keys)})")


def read_json_records(stream: t.BinaryIO, source: str) -> t.Iterator[dict]:
    """Records of a JSON Lines body, or of a body holding one JSON array (or an object wrapping one)."""
    first = _peek_first_byte(stream)
    if first == b"":
        return
    if first in (b"[", b"{") and _looks_like_single_document(stream, first):
        yield from _read_json_document(stream, source)
        return
    decode = _RECORD_DECODER.decode
    for number, line in enumerate(stream, start=1):
        try:
            record = decode(line)  # a JSON object, or DecodeError: no type check left for the usual line
        except msgspec.DecodeError:
            record = _read_odd_line(line, number, source)
            if record is None:
                continue
        yield record


def _read_odd_line(line: bytes, number: int, source: str) -> dict | None:
    """A line msgspec refused: a blank line (None), what `json` reads and msgspec does not (NaN, 1e400), a line
    that is not an object, or bad data."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise DataError(
            f"{source}: line {number} is not valid JSON ({exc.msg}); the export is truncated or corrupt"
        ) from None
    if not isinstance(record, dict):
        raise DataError(f"{source}: line {number} is not a JSON object")
    return record


def _peek_first_byte(stream: t.BinaryIO) -> bytes:
    peek = getattr(stream, "peek", None)
    data = peek(64) if peek else b""
    stripped = data.lstrip()
    return stripped[:1]


_WRAPPED_ARRAY = re.compile(rb'\s*\{\s*"(?:data|items|results|records|rows|activities|contacts)"\s*:\s*\[')
"""An object whose first key holds the records (`{"data": [...]}`), whatever its line breaks; no activity
or contact record starts with such a key."""


def _looks_like_single_document(stream: t.BinaryIO, first: bytes) -> bool:
    """JSON Lines also starts with `{`; a single document is `[`, an object wrapping the records, or an
    object spanning several lines."""
    if first == b"[":
        return True
    head = stream.peek(65536)  # type: ignore[attr-defined]
    if _WRAPPED_ARRAY.match(head):
        return True
    line_end = head.find(b"\n")
    if line_end == -1:
        return False  # one line: a one-record JSON Lines file reads the same either way
    try:
        json.loads(head[:line_end])
    except ValueError:
        return True  # the first line is not a whole object: a pretty-printed document
    return False


def _read_json_document(stream: t.BinaryIO, source: str) -> t.Iterator[dict]:
    """Stream the objects of a top-level JSON array (or of the first array inside a wrapping object)."""
    decoder = json.JSONDecoder()
    text = io.TextIOWrapper(stream, encoding="utf-8")
    buffer = ""
    position = 0
    in_array = False
    eof = False

    def fill() -> bool:
        nonlocal buffer, position, eof
        chunk = text.read(1 << 20)
        if not chunk:
            eof = True
            return False
        buffer = buffer[position:] + chunk
        position = 0
        return True

    fill()
    while True:
        while position < len(buffer) and buffer[position] in " \t\r\n,":
            position += 1
        if position >= len(buffer):
            if eof or not fill():
                break
            continue
        char = buffer[position]
        if not in_array:
            found = buffer.find("[", position)
            if found == -1:
                if not fill():
                    raise DataError(f"{source}: no JSON array of records found")
                continue
            position, in_array = found + 1, True
            continue
        if char == "]":
            return
        try:
            record, end = decoder.raw_decode(buffer, position)
        except ValueError:
            if fill():
                continue
            raise DataError(f"{source}: JSON array is truncated or corrupt near byte {position}") from None
        position = end
        if not isinstance(record, dict):
            raise DataError(f"{source}: array item is not a JSON object")
        yield record
    if in_array:
        raise DataError(f"{source}: JSON array is not closed; the export is truncated")


def read_csv_records(stream: t.BinaryIO, source: str) -> t.Iterator[tuple[int, dict]]:
    """(line number, raw row) pairs of a CSV body with a header row; quoted newlines are kept."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{source}: line {reader.line_num} has {len(row)} fields, the header has {len(header)}")
            yield reader.line_num, dict(zip(header, row, strict=True))
    except csv.Error as exc:
        raise DataError(f"{source}: line {reader.line_num} is not valid CSV ({exc})") from None


class RecordShaper:
    """Makes a raw API record match its stream schema.

    - Every top-level property the schema declares is in every record, null where the API sent nothing
      (classic targets take their columns from a stream's first record); nested objects stay as sent.
    - Top-level keys the schema does not declare move into `_extra` (logged once per stream), so new API
      fields are never dropped silently.
    - Date-time strings without an offset (Backstory sends `2022-07-11T00:00:00`, in UTC) get a `Z`.
    - `coerce()` types the all-string cells of a CSV row by the schema: integers, numbers, booleans,
      date-times, and empty cells as null.
    """

    def __init__(self, schema: dict, stream_name: str) -> None:
        self.stream_name = stream_name
        self.properties: dict = schema.get("properties", {})
        self.declared = frozenset(self.properties)
        self.template = dict.fromkeys(self.properties)
        """Every declared property, null, in schema order: a record is merged into it in one C-level pass."""
        self.datetime_fields = tuple(
            name for name, spec in self.properties.items() if spec.get("format") == "date-time"
        )
        self._warned_extra = False
        self._converters = {name: _converter_for(spec) for name, spec in self.properties.items()}

    def shape(self, record: dict) -> dict:
        """A new dict: the declared properties (schema order, null when absent), then `_extra` if needed."""
        shaped = {**self.template, **record}
        if len(shaped) != len(self.template):  # only an undeclared key makes it longer
            self._move_extra(shaped)
        for name in self.datetime_fields:
            value = shaped[name]
            if isinstance(value, str) and len(value) == 19 and value[10] == "T":
                shaped[name] = value + "Z"
        return shaped

    def _move_extra(self, record: dict) -> None:
        undeclared = record.keys() - self.declared
        if undeclared:
            extra = record.get(EXTRA_KEY) if isinstance(record.get(EXTRA_KEY), dict) else {}
            for key in undeclared:
                extra[key] = record.pop(key)
            record[EXTRA_KEY] = extra
            if not self._warned_extra:
                self._warned_extra = True
                LOGGER.warning(
                    "%s: the API sent fields this schema does not declare (%s); they are kept in `_extra`",
                    self.stream_name,
                    ", ".join(sorted(undeclared)),
                )

    def coerce(self, row: dict, source: str, line: int) -> dict:
        record = {}
        for key, value in row.items():
            convert = self._converters.get(key)
            if value == "":
                record[key] = None
            elif convert is None:
                record[key] = value
            else:
                try:
                    record[key] = convert(value)
                except ValueError:
                    raise DataError(
                        f"{source}: line {line}: column {key!r} has {value!r}, which is not "
                        f"a valid {_type_name(self.properties[key])}"
                    ) from None
        return self.shape(record)


def _type_name(spec: dict) -> str:
    types = [name for name in _types(spec) if name != "null"]
    return spec.get("format") or (types[0] if types else "value")


def _types(spec: dict) -> list[str]:
    declared = spec.get("type", [])
    return [declared] if isinstance(declared, str) else list(declared)


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "t", "1", "yes"):
        return True
    if lowered in ("false", "f", "0", "no"):
        return False
    raise ValueError(value)


def _parse_int(value: str) -> int:
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def _parse_datetime(value: str) -> str:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_date(value: str) -> str:
    return dt.date.fromisoformat(value).isoformat()


def _converter_for(spec: dict) -> t.Callable[[str], t.Any] | None:
    types = _types(spec)
    if "integer" in types:
        return _parse_int
    if "number" in types:
        return float
    if "boolean" in types:
        return _parse_bool
    if spec.get("format") == "date-time":
        return _parse_datetime
    if spec.get("format") == "date":
        return _parse_date
    if "array" in types or "object" in types:
        return json.loads
    return None


# --- one export = the ordered fragment files read as ONE logical file ----------------------------------------
# The docs say fragments "are stitched together to form a single file" and no more: each fragment may be a
# complete file (CSV header repeated, whole lines, a JSON array each) or a byte slice of the one file (header
# only in the first, a record or even a UTF-8 character cut across the boundary). `read_export` accepts both,
# per boundary, from the data itself; see docs/decisions.md.

STITCH_CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
HEAD_LIMIT = 1 << 20
"""Bytes peeked at the start of a fragment to find its first line (a CSV header, a JSON line)."""
ARRAY_TAIL = 64
"""Bytes held back at the end of a JSON-array fragment: its closing `]` is dropped if another array follows."""


def read_export(
    files: t.Iterable[tuple[t.BinaryIO, str]],
    parse: t.Callable[[t.BinaryIO, str], t.Iterator[dict]],
    source: str,
) -> t.Iterator[dict]:
    """Records of one export's fragment files (`(file, label)` in fragment order; each is closed once read).

    The files are chained into one binary stream handed to `parse` once: gzip bodies (by magic bytes) are
    decompressed, whether each fragment is a gzip file or one gzip file was cut into slices; text must be UTF-8;
    and each boundary is normalised (see `_Stitcher`). Memory holds a chunk and a line, never a whole file."""
    stitcher = _Stitcher(_decoded(files))
    stream = io.BufferedReader(_ChunkReader(stitcher.chunks()), STITCH_CHUNK)
    yield from parse(stream, source)


def _decoded(files: t.Iterable[tuple[t.BinaryIO, str]]) -> t.Iterator[tuple[bool, bytes]]:
    """(starts a new file, bytes) of the files as text: gzip members decompressed, UTF-8 checked.

    A gzip member may run on into the next fragments (one gzip file cut into slices): only a member's end
    starts a new file there. Anything undecodable raises `DataError` naming the fragment."""
    utf8 = codecs.getincrementaldecoder("utf-8")()
    member = None  # the gzip member being decompressed
    label, offset = "the export", 0  # offset: in the text of the current fragment, for messages
    for body, label in files:
        with body:
            body.seek(0)
            offset = 0
            chunk = body.read(STITCH_CHUNK)
            is_gzip = member is not None or _starts_gzip(chunk)  # continues a member or starts one
            new_file = member is None
            while chunk:
                if not is_gzip:
                    text, chunk = chunk, b""
                else:
                    if member is None:
                        if not _starts_gzip(chunk):
                            raise DataError(f"{label}: data after the end of its gzip file; the file is corrupt")
                        member, new_file = zlib.decompressobj(wbits=31), True
                    try:
                        text = member.decompress(chunk, STITCH_CHUNK)  # bounded, even for a gzip bomb
                    except zlib.error as exc:
                        raise DataError(f"{label}: not a readable gzip file ({exc})") from None
                    chunk = member.unconsumed_tail or member.unused_data
                    if member.eof:
                        member = None
                _check_utf8(utf8, text, label, offset)
                offset += len(text)
                yield new_file, text
                new_file = False
                if not chunk:
                    chunk = body.read(STITCH_CHUNK)
    if member is not None:
        raise DataError(f"{label}: its gzip file ends before the gzip end marker; the export is truncated")
    _check_utf8(utf8, b"", label, offset, final=True)


def _starts_gzip(chunk: bytes) -> bool:
    return bool(chunk) and GZIP_MAGIC.startswith(chunk[:2])  # a one-byte slice may hold half the magic


def _check_utf8(decoder: codecs.IncrementalDecoder, text: bytes, label: str, offset: int, final: bool = False) -> None:
    pending = len(decoder.getstate()[0])
    try:
        decoder.decode(text, final)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{label}: byte {offset - pending + exc.start} is not valid UTF-8 ({exc.reason}); "
            "the tap reads UTF-8 text only"
        ) from None


class _Stitcher:
    """Joins consecutive files into one, deciding at each boundary how they fit together:

    - CSV (the first file does not start with `{` or `[`): a later file starting with the first file's header
      line is standalone, so that line is dropped; otherwise it continues the previous file's bytes.
    - JSON Lines: a file ending without a newline ends with either a record cut in two (its last line is not
      a JSON object: the next file's first bytes complete it) or a whole record lacking its final newline (one
      is inserted).
    - JSON array: a file ending in `]` followed by one starting with `[` continues the array (`] [` → `,`).
    """

    def __init__(self, parts: t.Iterator[tuple[bool, bytes]]) -> None:
        self.parts = parts
        self.kind: str | None = None  # "csv" | "lines" | "array", from the first bytes
        self.header = b""  # CSV: the first file's first line, without BOM and line end
        self.tail = b""  # the end of the previous file, held back until the next file shows how they join

    def chunks(self) -> t.Iterator[bytes]:
        head: bytearray | None = None  # the start of a new file, gathered up to its first newline
        for new_file, data in self.parts:
            if new_file:
                if head is not None:  # the previous file ended within its head
                    yield from self._begin(bytes(head))
                head = bytearray()
            if head is None:
                yield from self._hold_back(data)
                continue
            head += data
            if b"\n" in head or len(head) >= HEAD_LIMIT:
                yield from self._begin(bytes(head))
                head = None
        if head is not None:
            yield from self._begin(bytes(head))
        if self.tail:
            yield self.tail

    def _hold_back(self, data: bytes) -> t.Iterator[bytes]:
        data = self.tail + data if self.tail else data
        # JSON array: the last bytes, for a closing `]`; else the last line, whole or not (whether it ends in a
        # newline decides the boundary).
        cut = max(0, len(data) - ARRAY_TAIL) if self.kind == "array" else data.rfind(b"\n") + 1
        self.tail = data[cut:]
        if cut:
            yield data[:cut]

    def _begin(self, head: bytes) -> t.Iterator[bytes]:
        """The bytes joining the previous file (its held-back tail) to a new file starting with `head`."""
        if not head:
            return
        if self.kind is None:
            self.kind = _kind(head)
            if self.kind == "csv":
                self.header = _first_line(head)
            yield from self._hold_back(head)
            return
        tail, self.tail = self.tail, b""
        if self.kind == "csv":
            if _first_line(head) == self.header:  # a standalone file: its header is the first file's
                head = head[head.find(b"\n") + 1 :] if b"\n" in head else b""
                yield from self._hold_back(tail + b"\n" + head if tail else head)  # tail: a last row, no newline
                return
        elif self.kind == "lines" and tail and _is_json_object(tail):
            tail += b"\n"  # a whole record lacking its final newline, not one cut in two
        elif self.kind == "array":
            before, after = tail.rstrip(), head.lstrip()
            if before.endswith(b"]") and after.startswith(b"["):
                tail, head = before[:-1] + b",", after[1:]  # the parser skips stray commas
        yield from self._hold_back(tail + head)


def _kind(head: bytes) -> str:
    first = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    return "array" if first == b"[" else "lines" if first == b"{" else "csv"


def _first_line(head: bytes) -> bytes:
    return head.removeprefix(codecs.BOM_UTF8).split(b"\n", 1)[0].rstrip(b"\r")


def _is_json_object(line: bytes) -> bool:
    """A whole record. Not any JSON value: a number cut in two (`12` + `3`) parses too."""
    try:
        return isinstance(_LINE_DECODER.decode(line), dict)
    except msgspec.DecodeError:
        return False


class _ChunkReader(io.RawIOBase):
    """A read-only binary stream over an iterator of byte chunks."""

    def __init__(self, chunks: t.Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        # Fills the whole buffer when it can, so a parser's `peek` sees as much as it asks for.
        filled, size = 0, len(buffer)
        while filled < size:
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._pending = memoryview(chunk)
            n = min(size - filled, len(self._pending))
            buffer[filled : filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        return filled
