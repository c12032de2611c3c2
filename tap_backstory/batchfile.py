"""One BATCH file's bytes: records encoded as JSON Lines, gzip-compressed with ISA-L on a thread of its own.

`TapStream.get_batches` decides which records go into which file; this only turns records into the file's
bytes, as fast as the record path allows (issue 20; docs/performance.md "BATCH").
"""

from __future__ import annotations

import itertools
import queue
import threading
import typing as t

import msgspec
from isal import igzip

GZIP_LEVEL = 2
"""ISA-L's default level (`isal.igzip`, it has 0 to 3), a standard gzip file. On activity JSON it compresses at
about 0.9 GB/s, 7.8x, where zlib gives 0.24 GB/s, 7.3x at level 1 and 0.1 GB/s, 11.5x at level 6 (the SDK's 9:
0.04 GB/s, 12.3x); docs/performance.md "BATCH". A BATCH run is the choice for big loads, so compression must not
be its bottleneck."""

CHUNK = 4 << 20
"""Bytes of JSON Lines handed to the compressing thread at once: ISA-L releases the GIL while it compresses a
chunk, so the records of the next chunk are read and encoded meanwhile, on the other core. Each chunk costs a
GIL hand-over between the threads: 4 MB ones measured faster than 1 MB ones."""

QUEUED_CHUNKS = 4
"""Chunks waiting for compression at most: memory stays bounded (about 20 MB) when compression is the slower
side."""

BATCH_ENCODER = msgspec.json.Encoder(enc_hook=str, decimal_format="number")
"""How a record becomes its line in a BATCH file (here, and in `line_workers`)."""


class EncodedLines(t.NamedTuple):
    """`count` records already encoded as BATCH lines (`BATCH_ENCODER`, each line ending in a newline)."""

    data: bytes | bytearray | memoryview
    count: int

    def split(self, count: int) -> tuple[EncodedLines, EncodedLines]:
        """The first `count` records, and the rest (encoded JSON holds no raw newline: each line is a record)."""
        data = bytes(self.data) if isinstance(self.data, memoryview) else self.data  # the rest of a split: rare
        end = 0
        for _ in range(count):
            end = data.index(b"\n", end) + 1
        view = memoryview(data)
        return EncodedLines(view[:end], count), EncodedLines(view[end:], self.count - count)

    @classmethod
    def of(cls, record: t.Any) -> EncodedLines:
        """One record, encoded."""
        return cls(BATCH_ENCODER.encode(record) + b"\n", 1)


class BatchFileWriter:
    """Writes records as JSON Lines into `raw` (an open binary file), gzip-compressed when `compress`.

    Use as a context manager: leaving it writes what is buffered and ends the gzip stream (it does not close
    `raw`). An error while compressing or writing is raised in the caller's thread, at the next chunk or at
    the end."""

    def __init__(self, raw: t.BinaryIO, *, compress: bool, level: int = GZIP_LEVEL) -> None:
        self._raw = raw
        self._buffer = bytearray()
        self._gzip = igzip.IGzipFile(fileobj=raw, mode="wb", compresslevel=level) if compress else None
        self._chunks: queue.Queue[bytes | bytearray | memoryview | None] = queue.Queue(QUEUED_CHUNKS)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._ending = False
        if self._gzip is not None:
            self._thread = threading.Thread(target=self._compress, name="batch-gzip", daemon=True)
            self._thread.start()

    def write_records(self, first: t.Any, records: t.Iterator[t.Any], limit: int) -> t.Any | None:
        """Write `first`, then records of `records` up to `limit` in all; the record after them, read ahead
        (None at the end). One loop over the records, no call per record (issue 20).

        Records may also come already encoded, many at once (`EncodedLines`, from `line_workers`): they are
        counted as the records they hold, and one that would pass `limit` is split there."""
        if first.__class__ is EncodedLines:
            return self._write_encoded(first, records, limit)
        encode_into, buffer = BATCH_ENCODER.encode_into, self._buffer
        for record in itertools.chain((first,), itertools.islice(records, limit - 1)):
            encode_into(record, buffer, len(buffer))
            buffer += b"\n"
            if len(buffer) >= CHUNK:
                self._hand_off()
                buffer = self._buffer
        return next(records, None)

    def _write_encoded(self, first: EncodedLines, records: t.Iterator[EncodedLines], limit: int) -> t.Any | None:
        room, encoded = limit, first
        while encoded is not None:
            rest = None
            if encoded.count > room:
                encoded, rest = encoded.split(room)
            if len(encoded.data) >= CHUNK // 2:  # a worker's chunk: handed over as it came, no copy
                if self._buffer:
                    self._hand_off()
                self._hand_off(encoded.data)
            else:
                self._buffer += encoded.data
                if len(self._buffer) >= CHUNK:
                    self._hand_off()
            room -= encoded.count
            if rest is not None:
                return rest
            encoded = next(records, None)
            if not room:
                return encoded
        return None

    def _hand_off(self, chunk: bytes | bytearray | memoryview | None = None) -> None:
        if chunk is None:
            chunk, self._buffer = self._buffer, bytearray()  # handed over as it is: no 4 MB copy
        if self._gzip is None:
            self._raw.write(chunk)
            return
        self._raise_error()
        self._chunks.put(chunk)

    def end_soon(self) -> None:
        """No more records: hand on what is buffered and let the compressing thread end on its own, without
        waiting for it (leaving the block waits). The next file's records are encoded meanwhile."""
        if self._buffer:
            self._hand_off()
        if self._thread is not None and not self._ending:
            self._ending = True
            self._chunks.put(None)

    def _compress(self) -> None:
        assert self._gzip is not None
        while (chunk := self._chunks.get()) is not None:
            if self._error is None:  # after an error, only drain the queue so the producer never blocks
                try:
                    self._gzip.write(chunk)
                except BaseException as exc:  # handed to the producer's thread
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BatchFileWriter:
        return self

    def __exit__(self, exc_type: t.Any, *_: t.Any) -> None:
        if exc_type is None and self._buffer:
            self._hand_off()
        if self._thread is not None:
            if not self._ending:
                self._chunks.put(None)
            self._thread.join()
        if self._gzip is not None:
            self._gzip.close()  # the gzip trailer; `raw` stays open
        if exc_type is None:
            self._raise_error()
