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
import keyword
import logging
import math
import os
import re
import typing as t
import zlib
from dataclasses import dataclass
from typing import ClassVar

import msgspec

from tap_backstory.client import TapBackstoryError

LOGGER = logging.getLogger("tap-backstory")
EXTRA_KEY = "_extra"
_LINE_DECODER = msgspec.json.Decoder()
"""JSON Lines are decoded with msgspec (about 2x `json.loads` on activity lines; same dicts, ints, floats)."""
_RECORD_DECODER = msgspec.json.Decoder(dict)
"""The same, refusing anything but a JSON object (so the line loop checks no type)."""


class DataError(TapBackstoryError):
    """The server sent data the tap cannot read correctly (`line`: the line of the export it was found on)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


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


def read_json_records(
    stream: t.BinaryIO,
    source: str,
    shape: t.Callable[[dict], t.Any] | None = None,
    fast: t.Callable[[bytes], t.Any] | None = None,
) -> t.Iterator[t.Any]:
    """Records of a JSON Lines body, or of a body holding one JSON array (or an object wrapping one), each
    passed through `shape` when given.

    `fast` (`RecordShaper.fast_line`): reads a JSON line straight into a shaped record, or raises for a line it
    does not take as it is (an undeclared key, a blank line, bad data); such a line is read the usual way.

    Not a generator itself: the body's first bytes are read at the call, and each record then comes from the
    reader of its kind without a frame of this function in between (issue 20)."""
    if not hasattr(stream, "peek"):
        stream = io.BufferedReader(stream)  # type: ignore[arg-type]
    kind = body_kind(stream)
    if kind == "lines":
        return read_json_lines(stream, source, shape, fast)
    if kind == "empty":
        return iter(())
    records = _read_json_document(stream, source)
    return records if shape is None else map(shape, records)


def body_kind(stream: t.BinaryIO) -> str:
    """"lines" (JSON Lines), "document" (one JSON array, or an object wrapping one) or "empty", from the first
    bytes of a buffered body (it has `peek`); the whitespace before them is consumed."""
    first = _peek_first_byte(stream)
    if first == b"":
        return "empty"
    return "document" if first in (b"[", b"{") and _looks_like_single_document(stream, first) else "lines"


def read_json_lines(
    lines: t.Iterable[bytes],
    source: str,
    shape: t.Callable[[dict], t.Any] | None = None,
    fast: t.Callable[[bytes], t.Any] | None = None,
) -> t.Iterator[t.Any]:
    """The JSON Lines part of `read_json_records`: one record per line (blank lines skipped), numbered from 1."""
    decode = _RECORD_DECODER.decode
    for number, line in enumerate(lines, start=1):
        if fast is not None:
            try:
                shaped = fast(line)
            except FAST_REFUSALS:
                pass  # read below: the usual path says what is wrong, or moves undeclared keys into `_extra`
            else:
                yield shaped
                continue
        try:
            record = decode(line)  # a JSON object, or an error: no type check left for the usual line
        except UnicodeDecodeError as exc:
            raise DataError(f"{source}: line {number} {_not_utf8(exc)}", line=number) from None
        except (msgspec.DecodeError, RecursionError) as exc:
            # Rare: a blank line, or what msgspec refuses and `json` reads (NaN), or bad data.
            if not line.strip():
                continue
            record = _decode_refused_line(line, exc, source, number)
        yield record if shape is None else shape(record)


FAST_REFUSALS = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)
"""What `RecordShaper.fast_line` raises for a line it leaves to the usual path (ValidationError is a DecodeError)."""

MAX_NUMBER_DIGITS = 100
"""The longest number (in characters) a record may hold: msgspec reads integers up to 64 bits and floats up to
1.8e308; the `json` fallback gets the same bounds (no 5000-digit integer, no 1e999999 read as infinity)."""


def _decode_refused_line(line: bytes, refusal: Exception, source: str, number: int) -> t.Any:
    """A line msgspec refused: nesting beyond its depth limit and numbers out of range are data errors; any other
    refusal (NaN, a line that is not an object, bad data) gets a second reading by `json` (it takes NaN), within
    the same number bounds."""
    where = f"{source}: line {number}"
    try:
        line.decode()
    except UnicodeDecodeError as exc:  # `json` would call it invalid JSON
        raise DataError(f"{where} {_not_utf8(exc)}", line=number) from None
    if isinstance(refusal, RecursionError):
        raise DataError(f"{where} is nested deeper than the JSON decoder allows", line=number) from None
    if isinstance(refusal, msgspec.ValidationError) and "out of range" in str(refusal):
        # "Integer value out of range", "Number out of range"
        raise DataError(f"{where} holds a number out of range ({str(refusal).split(' - ')[0]})", line=number) from None
    try:
        record = json.loads(line, parse_int=_bounded_int, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        reason = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        raise DataError(
            f"{where} is not valid JSON ({reason}); the export is truncated or corrupt", line=number
        ) from None
    if not isinstance(record, dict):  # the record decoder takes objects only: `[1]` or `"x"` lands here
        raise DataError(f"{where} is not a JSON object", line=number)
    return record


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a {len(text)}-digit integer")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text) if len(text) <= MAX_NUMBER_DIGITS else math.inf
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]}... is out of range" if len(text) > 20 else f"{text} is out of range")
    return value


def _peek_first_byte(stream: t.BinaryIO) -> bytes:
    """The first byte that is not whitespace (b"" for an empty body), the whitespace before it consumed: a body
    opening with many blank lines is not an empty body."""
    while True:
        data = stream.peek(64)  # type: ignore[attr-defined]
        if not data:
            return b""
        stripped = data.lstrip()
        stream.read(len(data) - len(stripped))
        if stripped:
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
    line = head[:line_end]
    try:
        _LINE_DECODER.decode(line)
        return False
    except (msgspec.ValidationError, RecursionError):
        return False  # a whole line, out of bounds: the line reader says so
    except msgspec.DecodeError:
        pass
    try:
        json.loads(line)  # what msgspec refuses and `json` reads (NaN)
    except RecursionError:
        return False
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
        except (ValueError, RecursionError):
            if len(buffer) - position > MAX_LINE_BYTES:
                raise DataError(
                    f"{source}: a record near byte {position} is longer than {MAX_LINE_BYTES} bytes (MAX_LINE_BYTES) "
                    "or not valid JSON"
                ) from None
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
    except UnicodeDecodeError as exc:  # the byte layer checks CSV bodies; this is the parser's own guard
        raise DataError(f"{source}: near line {reader.line_num + 1} {_not_utf8(exc)}") from None


class DeclaredObject:
    """The keys an object property of a schema declares, and its own object properties that flattening splits.

    Under flattening, keys the API sends inside such an object that it does not declare are moved out, the way
    undeclared top-level keys are: the SDK would turn them into columns no SCHEMA declares (issue 24). Only the
    objects flattening splits into columns are walked (`depth` levels; deeper ones become one JSON column, where
    any key is fine), and none without flattening: the per-record path stays as it was."""

    __slots__ = ("children", "declared")

    def __init__(self, properties: dict, depth: int) -> None:
        self.declared = frozenset(properties)
        self.children = tuple(
            (name, DeclaredObject(spec["properties"], depth - 1))
            for name, spec in properties.items()
            if depth > 0 and isinstance(spec.get("properties"), dict) and "object" in _types(spec)
        )

    def pop_undeclared(self, value: dict) -> dict | None:
        """Remove the undeclared keys of `value` (at every declared depth); returned nested as they were, or None.

        On the per-record path: builds nothing when every key is declared (the usual case)."""
        moved = None
        if not self.declared.issuperset(value):
            moved = {key: value.pop(key) for key in value.keys() - self.declared}
        for name, child in self.children:
            inner = value.get(name)
            if inner.__class__ is dict and (inner_moved := child.pop_undeclared(inner)):
                if moved is None:
                    moved = {}
                moved[name] = inner_moved
        return moved


def _paths(moved: dict, prefix: str = "") -> t.Iterator[str]:
    """`a.b` paths of the leaves of what `DeclaredObject.pop_undeclared` moved (for the log line)."""
    for key, value in moved.items():
        if isinstance(value, dict) and value:
            yield from _paths(value, f"{prefix}{key}.")
        else:
            yield prefix + key


class RecordStruct(msgspec.Struct):
    """A shaped record as `RecordShaper.fast_line` reads it: one field per declared property, in schema order,
    null by default, so msgspec encodes it to the very JSON of `RecordShaper.shape`'s dict. It reads and writes
    by property name like a dict (`get`, `[]`), for the streams' `normalize` hooks."""

    attributes: ClassVar[dict[str, str]] = {}  # `ClassVar` by that name: msgspec reads the annotation
    """Property name -> field name (a property that is no usable Python name gets `field_<n>`)."""

    def get(self, key: str, default: t.Any = None) -> t.Any:
        name = self.attributes.get(key)
        return default if name is None else getattr(self, name)

    def __getitem__(self, key: str) -> t.Any:
        return getattr(self, self.attributes[key])

    def __setitem__(self, key: str, value: t.Any) -> None:
        setattr(self, self.attributes[key], value)


def record_struct(properties: dict) -> type[RecordStruct]:
    """The `RecordStruct` type of a schema's properties: an undeclared key makes decoding fail."""
    taken = set(dir(RecordStruct))
    attributes = {
        name: name
        if name.isidentifier() and not name.startswith("_") and not keyword.iskeyword(name) and name not in taken
        else f"field_{number}"
        for number, name in enumerate(properties)
    }
    return msgspec.defstruct(
        "Record",
        [(attributes[name], t.Any, None) for name in properties],
        bases=(RecordStruct,),
        forbid_unknown_fields=True,
        rename={field: name for name, field in attributes.items() if field != name},
        namespace={"attributes": attributes},
    )


class RecordShaper:
    """Makes a raw API record match its stream schema.

    - Every top-level property the schema declares is in every record, null where the API sent nothing
      (classic targets take their columns from a stream's first record); nested objects stay as sent.
    - Top-level keys the schema does not declare move into `_extra` (logged once per stream), so new API
      fields are never dropped silently. Under flattening (`flattening_depth` > 0), undeclared keys inside an
      object that flattening splits into columns (e.g. `pii.street2`) move into `_extra` under the same path
      (`_extra.pii.street2`), logged once too.
    - Date-time strings without an offset (Backstory sends `2022-07-11T00:00:00`, in UTC) get a `Z`.
    - `coerce()` types the all-string cells of a CSV row by the schema: integers, numbers, booleans,
      date-times, and empty cells as null.
    """

    def __init__(
        self,
        schema: dict,
        stream_name: str,
        flattening_depth: int = 0,
        *,
        primary_key: str | None = None,
        normalize: t.Callable[[dict], None] | None = None,
    ) -> None:
        self.stream_name = stream_name
        self.primary_key = primary_key
        """When set, a record without it is counted in `keyless` and shaped to None (never emitted with a null
        key: it could not be merged or deduplicated; docs/decisions.md, "Records without a primary key")."""
        self.keyless = 0
        self.normalize = normalize
        """Brings fields the API sends in more than one shape to the schema's, in place, before shaping."""
        self.properties: dict = schema.get("properties", {})
        self.declared = frozenset(self.properties)
        self.template = dict.fromkeys(self.properties)
        """Every declared property, null, in schema order: a record is merged into it in one C-level pass."""
        self.datetime_fields = tuple(
            name for name, spec in self.properties.items() if spec.get("format") == "date-time"
        )
        self._warned_extra = False
        self.objects = DeclaredObject(self.properties, flattening_depth).children  # none without flattening
        self._warned_nested_extra = False
        self._converters = {name: _converter_for(spec) for name, spec in self.properties.items()}
        self.shape: t.Callable[[dict], dict | None] = self._shape_function()
        """A new dict: the declared properties (schema order, null when absent), then `_extra` if needed; None
        for a record without its primary key (when one is set)."""
        self.fast_line: t.Callable[[bytes], RecordStruct | None] | None = (
            None if self.objects else self._fast_line_function()
        )
        """One JSON line read straight into its shaped record, a `RecordStruct` (None: no primary key); raises
        FAST_REFUSALS for a line holding an undeclared key, or anything but a plain JSON object, which
        `read_json_records` then reads the usual way (decoded into a dict, then `shape`). Only for records no
        one but msgspec sees (they are not dicts); none under flattening."""

    def _shape_function(self) -> t.Callable[[dict], dict | None]:
        """`shape`, as a closure over this shaper's settings: it runs once per record, and locals are found
        faster than attributes (issue 20)."""
        normalize, template, key, objects = self.normalize, self.template, self.primary_key, self.objects
        declared_count, datetime_fields = len(self.template), self.datetime_fields

        def shape(record: dict) -> dict | None:
            if normalize is not None:
                normalize(record)
            shaped = {**template, **record}
            if key is not None and shaped[key] is None:
                return self._skip_keyless()
            if len(shaped) != declared_count:  # only an undeclared key makes it longer
                self._move_extra(shaped)
            for name, declared in objects:  # only under flattening (docs/decisions.md)
                value = shaped[name]
                if value.__class__ is dict and (moved := declared.pop_undeclared(value)):
                    self._move_nested_extra(shaped, name, moved)
            for name in datetime_fields:
                value = shaped[name]
                if value.__class__ is str and len(value) == 19 and value[10] == "T":
                    shaped[name] = value + "Z"
            return shaped

        return shape

    def _fast_line_function(self) -> t.Callable[[bytes], RecordStruct | None]:
        """`fast_line`: issue 20. Decoding into a struct of the declared properties (null by default, an
        undeclared key refused) is `shape`'s merge for free, and it decodes and encodes faster than a dict;
        what is left per record is the primary key and the date-times, as in `shape`."""
        record_type = record_struct(self.properties)
        decode = msgspec.json.Decoder(record_type).decode
        attribute = record_type.attributes
        normalize, key = self.normalize, attribute.get(self.primary_key) if self.primary_key else None
        datetime_attributes = tuple(attribute[name] for name in self.datetime_fields)

        def fast_line(line: bytes) -> RecordStruct | None:
            record = decode(line)
            if normalize is not None:
                normalize(record)  # type: ignore[arg-type]  # a RecordStruct reads and writes like a dict
            if key is not None and getattr(record, key) is None:
                return self._skip_keyless()
            for name in datetime_attributes:
                value = getattr(record, name)
                if value.__class__ is str and len(value) == 19 and value[10] == "T":
                    setattr(record, name, value + "Z")
            return record

        return fast_line

    def _skip_keyless(self) -> None:
        if not self.keyless:
            LOGGER.warning(
                "%s: the export holds a record without `%s`; skipping such records (counted at the end)",
                self.stream_name,
                self.primary_key,
            )
        self.keyless += 1

    def report_keyless(self) -> None:
        if self.keyless:
            LOGGER.warning("%s: %d record(s) without `%s` skipped", self.stream_name, self.keyless, self.primary_key)

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

    def _move_nested_extra(self, record: dict, name: str, moved: dict) -> None:
        extra = record.get(EXTRA_KEY) if isinstance(record.get(EXTRA_KEY), dict) else {}
        extra[name] = moved
        record[EXTRA_KEY] = extra
        if not self._warned_nested_extra:
            self._warned_nested_extra = True
            LOGGER.warning(
                "%s: the API sent fields inside objects this schema does not declare (%s); they are kept in "
                "`_extra` under the same path",
                self.stream_name,
                ", ".join(sorted(_paths({name: moved}))),
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


MAX_LINE_BYTES = 32 * 1024 * 1024
"""The longest record line (JSON Lines, CSV) or JSON-array item, in bytes: a longer one is a data error, not a
line held in memory without end (activity and contact lines are a few kB)."""
MAX_INFLATE_RATIO = 200
INFLATE_SLACK = 64 * 1024 * 1024
"""Compressed bodies may decode to at most ratio x the bytes received + slack (exports compress 5-30x): a
decompression bomb is refused early, whether it came gzip by magic bytes or by Content-Encoding."""
MAX_DECODED_BYTES = 64 * 1024**3
"""The most bytes one fragment (or whole file) may decode to."""
MAX_DECODED_ENV_VAR = "TAP_BACKSTORY_MAX_DECODED_BYTES"
"""Overrides MAX_DECODED_BYTES (tests; unset in production)."""
CONTENT_ENCODINGS = ("", "identity", "gzip", "x-gzip", "deflate")
"""What the data requests accept (requests sends `Accept-Encoding: gzip, deflate`)."""


@dataclass(frozen=True)
class Part:
    """One fragment file: its binary body as received, its label for errors, and how its answer said it is
    encoded (Content-Type charset, Content-Encoding)."""

    body: t.BinaryIO
    label: str
    charset: str | None = None
    encoding: str = ""


def read_export(
    files: t.Iterable[Part | tuple[t.BinaryIO, str]],
    parse: t.Callable[[t.BinaryIO, str], t.Iterator[dict]],
    source: str,
) -> t.Iterator[dict]:
    """Records of one export's fragment files (`Part`s or `(file, label)`, in fragment order; each is closed
    once read).

    The files are chained into one binary stream handed to `parse` once: gzip bodies (by magic bytes or
    Content-Encoding) are decompressed within bounds, whether each fragment is a gzip file or one gzip file was
    cut into slices; text is decoded by its declared charset (UTF-8 if none); and each boundary is normalised
    (see `_Stitcher`). Memory holds a chunk and a line, never a whole file. A `DataError` found on a line is
    told with the fragment that line came from."""
    parts = (part if isinstance(part, Part) else Part(*part) for part in files)
    # JSON Lines are read by msgspec, which refuses invalid UTF-8 itself (line by line): once the data shows it
    # is JSON Lines, the byte layer stops checking what the parser checks anyway (issue 20).
    stitcher = _Stitcher(_decoded(parts, parser_checks_utf8=lambda: stitcher.kind == "lines"))
    stream = io.BufferedReader(_ChunkReader(stitcher.chunks()), STITCH_CHUNK)
    try:
        yield from parse(stream, source)
    except DataError as exc:
        if exc.line is None or not stitcher.file_starts or stitcher.file_starts[-1][1] == source:
            raise
        first_line, label = stitcher.fragment_of(exc.line)
        raise DataError(f"{exc} (line {exc.line - first_line + 1} of {label})", exc.line) from None


def _max_decoded_bytes() -> int:
    return int(os.environ.get(MAX_DECODED_ENV_VAR) or MAX_DECODED_BYTES)


def _decoded(
    parts: t.Iterable[Part], parser_checks_utf8: t.Callable[[], bool] = lambda: False
) -> t.Iterator[tuple[bool, bytes, str]]:
    """(starts a new file, bytes, label) of the files as UTF-8 text: gzip members decompressed, text decoded
    from its declared charset or checked as UTF-8.

    A gzip member may run on into the next fragments (one gzip file cut into slices): only a member's end
    starts a new file there. Anything undecodable, or decoding past the bounds, raises `DataError` naming the
    fragment."""
    check: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder("utf-8")()  # None: the parser checks
    transcode: codecs.IncrementalDecoder | None = None  # from a declared charset other than UTF-8
    charset_name = "utf-8"
    member = None  # the gzip member being decompressed
    received = decoded_total = 0  # over the whole export, for the ratio
    ceiling = _max_decoded_bytes()
    label, offset = "the export", 0  # offset: in the text of the current fragment, for messages
    for part in parts:
        label = part.label
        charset = _codec_name(part.charset, label)
        if charset != charset_name:  # the previous fragments' text must have ended whole
            if transcode is not None:
                _transcode(transcode, b"", label, charset_name, final=True)
            elif check is not None:
                _check_utf8(check, b"", label, offset, final=True)
            charset_name = charset
            transcode = None if charset == "utf-8" else codecs.getincrementaldecoder(charset)()
        encoding = part.encoding.strip().lower()
        if encoding not in CONTENT_ENCODINGS:
            raise DataError(f"{label}: sent with Content-Encoding {encoding!r}, which the tap cannot read")
        deflate = encoding == "deflate"
        with part.body as body:
            offset = decoded = 0
            chunk = body.read(STITCH_CHUNK)
            received += len(chunk)
            if deflate:
                member = zlib.decompressobj()
            is_gzip = member is not None or _starts_gzip(chunk)  # continues a member or starts one
            if encoding in ("gzip", "x-gzip") and not is_gzip and chunk:
                raise DataError(f"{label}: sent as Content-Encoding gzip but not a gzip file")
            new_file = member is None or deflate
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
                        what = "deflate body" if deflate else "gzip file"
                        raise DataError(f"{label}: not a readable {what} ({exc})") from None
                    chunk = member.unconsumed_tail or member.unused_data
                    if member.eof:
                        member = None
                    decoded_total += len(text)
                    if decoded_total > MAX_INFLATE_RATIO * received + INFLATE_SLACK:
                        raise DataError(
                            f"{label}: decompresses to more than {MAX_INFLATE_RATIO} times the {received} bytes "
                            f"received (MAX_INFLATE_RATIO); refusing it as a decompression bomb"
                        )
                decoded += len(text)
                if decoded > ceiling:
                    raise DataError(f"{label}: decodes to more than {ceiling} bytes (MAX_DECODED_BYTES); refusing it")
                if transcode is not None:
                    text = _transcode(transcode, text, label, charset_name)
                elif check is not None:
                    if parser_checks_utf8():
                        check = None
                    else:
                        _check_utf8(check, text, label, offset)
                offset += len(text)
                yield new_file, text, label
                new_file = False
                if not chunk:
                    chunk = body.read(STITCH_CHUNK)
                    received += len(chunk)
            if deflate:
                if member is not None and not member.eof:
                    raise DataError(f"{label}: its deflate body ends early; the export is truncated")
                member = None
    if member is not None:
        raise DataError(f"{label}: its gzip file ends before the gzip end marker; the export is truncated")
    if transcode is not None:
        _transcode(transcode, b"", label, charset_name, final=True)
    elif check is not None:
        _check_utf8(check, b"", label, offset, final=True)


def _codec_name(charset: str | None, label: str) -> str:
    """Python's codec for a declared charset ("utf-8" when none, or an alias of UTF-8 / US-ASCII)."""
    if not charset:
        return "utf-8"
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        raise DataError(f"{label}: the server declared charset {charset!r}, which the tap does not know") from None
    return "utf-8" if name in ("utf-8", "ascii") else name


def _transcode(decoder: codecs.IncrementalDecoder, text: bytes, label: str, charset: str, final: bool = False) -> bytes:
    try:
        return decoder.decode(text, final).encode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{label}: not valid {charset} text, the charset its Content-Type declares ({exc.reason})"
        ) from None


def _starts_gzip(chunk: bytes) -> bool:
    return bool(chunk) and GZIP_MAGIC.startswith(chunk[:2])  # a one-byte slice may hold half the magic


def _not_utf8(error: UnicodeDecodeError) -> str:
    return (
        f"is not valid UTF-8 ({error.reason}); the tap reads UTF-8 text, or the charset a Content-Type declares"
    )


def _check_utf8(decoder: codecs.IncrementalDecoder, text: bytes, label: str, offset: int, final: bool = False) -> None:
    pending = len(decoder.getstate()[0])
    try:
        decoder.decode(text, final)
    except UnicodeDecodeError as exc:
        raise DataError(f"{label}: byte {offset - pending + exc.start} {_not_utf8(exc)}") from None


class _Stitcher:
    """Joins consecutive files into one, deciding at each boundary how they fit together:

    - CSV (the first file does not start with `{` or `[`): a later file starting with the first file's header
      line is standalone, so that line is dropped; otherwise it continues the previous file's bytes.
    - JSON Lines: a file ending without a newline ends with either a record cut in two (its last line is not
      a JSON object: the next file's first bytes complete it) or a whole record lacking its final newline (one
      is inserted).
    - JSON array: a file ending in `]` followed by one starting with `[` continues the array (`] [` → `,`).
    """

    def __init__(self, parts: t.Iterator[tuple[bool, bytes, str]]) -> None:
        self.parts = parts
        self.kind: str | None = None  # "csv" | "lines" | "array", from the first bytes
        self.header = b""  # CSV: the first file's first line, without BOM and line end
        self.tail = b""  # the end of the previous file, held back until the next file shows how they join
        self.label = "the export"  # the file being read, for errors
        self.lines = 0  # newlines handed on so far
        self.file_starts: list[tuple[int, str]] = []  # (number of its first line in the export, label)

    def fragment_of(self, line: int) -> tuple[int, str]:
        """(first line number, label) of the file holding this line of the export."""
        found = self.file_starts[0]
        for start in self.file_starts:
            if start[0] > line:
                break
            found = start
        return found

    def chunks(self) -> t.Iterator[bytes | memoryview]:
        """The export's bytes, in pieces (a piece may be a view into a chunk: the bulk of each chunk is handed
        on without being copied)."""
        yield from self._joined()
        if self.tail:
            self.lines += newlines(self.tail, 0, len(self.tail))
            yield self.tail

    def _joined(self) -> t.Iterator[bytes | memoryview]:
        head: bytearray | None = None  # the start of a new file, gathered up to its first newline
        for new_file, data, label in self.parts:
            if new_file:
                if head is not None:  # the previous file ended within its head
                    yield from self._begin(bytes(head))
                head = bytearray()
            self.label = label
            if head is None:
                yield from self._hold_back(data)
                continue
            head += data
            if b"\n" in head or len(head) >= HEAD_LIMIT:
                yield from self._begin(bytes(head))
                head = None
        if head is not None:
            yield from self._begin(bytes(head))

    def _hold_back(self, data: bytes) -> t.Iterator[bytes | memoryview]:
        """`data` handed on after the held-back tail, keeping back the new tail: for a JSON array its last bytes
        (for a closing `]`), else its last line, whole or not (whether it ends in a newline decides the
        boundary). `lines` counts the newlines handed on."""
        if self.kind == "array":
            data = self.tail + data if self.tail else data
            cut = max(0, len(data) - ARRAY_TAIL)
            self.tail = data[cut:]
            if cut:
                self.lines += newlines(data, 0, cut)
                yield memoryview(data)[:cut]
        else:
            cut = data.rfind(b"\n") + 1
            start = 0
            if cut and self.tail:  # the tail and the rest of its line: the only bytes copied
                start = data.find(b"\n") + 1
                self.lines += 1
                yield self.tail + data[:start]
            if cut > start:
                self.lines += newlines(data, start, cut)
                yield memoryview(data)[start:cut]
            self.tail = data[cut:] if cut else self.tail + data
        if len(self.tail) > MAX_LINE_BYTES:
            raise DataError(
                f"{self.label}: a line longer than {MAX_LINE_BYTES} bytes (MAX_LINE_BYTES); the export is corrupt",
                line=self.lines + 1,
            )

    def _begin(self, head: bytes) -> t.Iterator[bytes]:
        """The bytes joining the previous file (its held-back tail) to a new file starting with `head`."""
        if not head:
            return
        if self.kind is None:
            self.kind = _kind(head)
            if self.kind == "csv":
                self.header = _first_line(head)
            self.file_starts.append((1, self.label))
            yield from self._hold_back(head)
            return
        tail, self.tail = self.tail, b""
        # The file's first line: the next one, or the one after the tail when the tail is a whole line lacking
        # its newline (a record cut in two is the first line of both files).
        if self.kind == "csv":
            if _first_line(head) == self.header:  # a standalone file: its header is the first file's
                self.file_starts.append((self.lines + 1 + bool(tail), self.label))
                head = head[head.find(b"\n") + 1 :] if b"\n" in head else b""
                yield from self._hold_back(tail + b"\n" + head if tail else head)  # tail: a last row, no newline
                return
        elif self.kind == "lines" and tail and _is_json_object(tail):
            tail += b"\n"  # a whole record lacking its final newline, not one cut in two
        elif self.kind == "array":
            before, after = tail.rstrip(), head.lstrip()
            if before.endswith(b"]") and after.startswith(b"["):
                tail, head = before[:-1] + b",", after[1:]  # the parser skips stray commas
        self.file_starts.append((self.lines + 1 + tail.endswith(b"\n"), self.label))
        yield from self._hold_back(tail + head)


def newlines(data: bytes, start: int, end: int) -> int:
    """The line breaks in `data[start:end]`. Not `bytes.count`, which looks at one byte at a time (0.55 ms a MB
    here): `replace` finds them with memchr, 0.06-0.1 ms a MB with the copies, which saves about 0.6 s of the
    parsing thread per 1M activities (issue 20)."""
    piece = data if start == 0 and end == len(data) else data[start:end]
    return len(piece) - len(piece.replace(b"\n", b""))


def _kind(head: bytes) -> str:
    first = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    return "array" if first == b"[" else "lines" if first == b"{" else "csv"


def _first_line(head: bytes) -> bytes:
    return head.removeprefix(codecs.BOM_UTF8).split(b"\n", 1)[0].rstrip(b"\r")


def _is_json_object(line: bytes) -> bool:
    """A whole record. Not any JSON value: a number cut in two (`12` + `3`) parses too."""
    try:
        return isinstance(_LINE_DECODER.decode(line), dict)
    except (msgspec.DecodeError, RecursionError):
        return False


class _ChunkReader(io.RawIOBase):
    """A read-only binary stream over an iterator of byte chunks."""

    def __init__(self, chunks: t.Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        # Hands on what one chunk holds, not waiting for more: records are parsed while the bytes arrive. The
        # first chunk holds at least the first line (see `_Stitcher`), which is all a parser's `peek` needs.
        filled, size = 0, len(buffer)
        while filled < size:
            if not self._pending:
                if filled:
                    break
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._pending = memoryview(chunk)
            n = min(size - filled, len(self._pending))
            buffer[filled : filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        return filled
