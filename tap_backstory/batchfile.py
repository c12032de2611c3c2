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

_ENCODE_INTO = msgspec.json.Encoder(enc_hook=str, decimal_format="number").encode_into


class BatchFileWriter:
    """Writes records as JSON Lines into `raw` (an open binary file), gzip-compressed when `compress`.

    Use as a context manager: leaving it writes what is buffered and ends the gzip stream (it does not close
    `raw`). An error while compressing or writing is raised in the caller's thread, at the next chunk or at
    the end."""

    def __init__(self, raw: t.BinaryIO, *, compress: bool, level: int = GZIP_LEVEL) -> None:
        self._raw = raw
        self._buffer = bytearray()
        self._gzip = igzip.IGzipFile(fileobj=raw, mode="wb", compresslevel=level) if compress else None
        self._chunks: queue.Queue[bytearray | None] = queue.Queue(QUEUED_CHUNKS)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._ending = False
        if self._gzip is not None:
            self._thread = threading.Thread(target=self._compress, name="batch-gzip", daemon=True)
            self._thread.start()

    def write_records(self, first: t.Any, records: t.Iterator[t.Any], limit: int) -> t.Any | None:
        """Write `first`, then records of `records` up to `limit` in all; the record after them, read ahead
        (None at the end). One loop over the records, no call per record (issue 20)."""
        encode_into, buffer = _ENCODE_INTO, self._buffer
        for record in itertools.chain((first,), itertools.islice(records, limit - 1)):
            encode_into(record, buffer, len(buffer))
            buffer += b"\n"
            if len(buffer) >= CHUNK:
                self._hand_off()
                buffer = self._buffer
        return next(records, None)

    def _hand_off(self) -> None:
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
