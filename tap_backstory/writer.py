"""The tap's Singer message writers: msgspec, without a flush after every RECORD, and RECORD lines written
straight from the record dicts for the hot streams."""

from __future__ import annotations

import datetime as dt
import sys
import typing as t

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecWriter, enc_hook
from singer_sdk.singerlib import SingerMessageType
from singer_sdk.singerlib.encoding.simple import Message

from tap_backstory.stopping import STOP

if t.TYPE_CHECKING:
    from singer_sdk.metrics import Counter


class BufferedMsgSpecWriter(MsgSpecWriter):
    """`MsgSpecWriter` flushes stdout after every message: one `write` system call per record.

    Here RECORD messages go through stdout's buffer and every other message (SCHEMA, STATE, BATCH,
    ACTIVATE_VERSION) flushes it, so a target has every record before the STATE that covers it, and records
    never wait longer than the next checkpoint (each window ends with one). Same bytes, same order.
    Measured (docs/performance.md): 300k activities 13.2 s -> 11.1 s to /dev/null, 17.6 s -> 15.3 s through
    a pipe. No effect when PYTHONUNBUFFERED is set: stdout then has no buffer.

    It also tells a stop (`stopping.Stop`) whether a message is half written, and ends the run in one line
    when the target stopped reading (a broken pipe).

    `pending` holds RECORD lines a `DirectRecordWriter` encoded and has not handed to stdout yet; any message
    written here goes after them. A stop does not write them: they all come after the last STATE (every message
    written here drains them first), so a rerun sends them again anyway.
    """

    writing = False
    states_written = 0
    after_message: t.Callable[[], None] | None = None

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending = bytearray()

    def write_pending(self, *, flush: bool = False) -> None:
        """RECORD lines gathered so far to stdout's buffer (and through it, with `flush`)."""
        if self.pending or flush:
            self.writing = True
            try:
                self._drain_pending()
                if flush:
                    sys.stdout.flush()
            except BrokenPipeError:
                STOP.on_target_gone()
            finally:
                self.writing = False
            self._after_message()

    def write_message(self, message: Message) -> None:
        self.writing = True
        try:
            if self.pending:
                self._drain_pending()
            sys.stdout.buffer.write(self.format_message(message))
            if message.type != SingerMessageType.RECORD:
                sys.stdout.flush()
                self.states_written += message.type == SingerMessageType.STATE
        except BrokenPipeError:
            STOP.on_target_gone()
        finally:
            self.writing = False
        self._after_message()

    def flush_records(self) -> None:
        self.write_pending(flush=True)

    def _after_message(self) -> None:
        if self.after_message is not None:  # a termination signal arrived while this message was written
            self.after_message()

    def _drain_pending(self) -> None:
        pending = self.pending
        # Under PYTHONUNBUFFERED, stdout's binary layer is the raw file, which may write only part of a large write
        # (a signal in the middle of a write to a pipe): write the rest, never drop it.
        written = sys.stdout.buffer.write(pending)
        while written < len(pending):
            written += sys.stdout.buffer.write(pending[written:])
        pending.clear()


ENCODER = msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="number")
"""Configured as the SDK's msgspec writer's encoder (`singer_sdk.contrib.msgspec.encoder`): the same bytes."""

COUNT_EVERY = 1000
"""Records between two increments of the SDK's record counter: it reads the clock at every increment."""

PENDING_BYTES = 1 << 18
"""RECORD lines gathered (256 KB, about 150 activities) before they go to stdout in one write. Each write to
the OS lets the download threads take the GIL, and the main thread then waits to get it back: stdout's own
8 KB buffer did that every five activities."""


class DirectRecordWriter:
    """Writes one stream's RECORD messages to stdout straight from the record dicts.

    The bytes are those `BufferedMsgSpecWriter` writes for `RecordMessage(stream, record, version,
    time_extracted=now)` (same keys in the same order, same encoder, `time_extracted` taken per record),
    gathered in that writer's `pending` buffer, so the order with every other message is kept. What it leaves
    out is the SDK's per-record chain (about 10 Python calls, a message object and a dict per record), which
    did nothing for such a stream: `TapStream.direct_record_writer` hands one out only when no stream map,
    flattening, deselected property, record limit, `post_process`, partition or child stream is in play.
    """

    def __init__(
        self,
        writer: BufferedMsgSpecWriter,
        stream: str,
        version: int | None,
        counter: Counter,
        on_written: t.Callable[[], None],
    ) -> None:
        self._writer = writer
        self._message: dict[str, t.Any] = {"type": "RECORD", "stream": stream, "record": None}
        if version is not None:
            self._message["version"] = version
        self._message["time_extracted"] = None
        self._counter = counter
        self._on_written = on_written

    def write(self, records: t.Iterable[dict]) -> int:
        """Write every record of `records` (in order); how many were written, also when `records` raises.
        They are in stdout's buffer when this returns (flushed by the next STATE, or at exit)."""
        message, encode_into, pending = self._message, ENCODER.encode_into, self._writer.pending
        now, utc = dt.datetime.now, dt.timezone.utc
        written = 0
        try:
            for record in records:
                message["record"] = record
                message["time_extracted"] = now(utc)
                encode_into(message, pending, len(pending))
                pending += b"\n"
                written += 1
                if len(pending) >= PENDING_BYTES:
                    self._writer.write_pending()
                if written % COUNT_EVERY == 0:
                    self._counter.increment(COUNT_EVERY)
        finally:
            message["record"] = None
            self._writer.write_pending()
            if written:
                self._counter.increment(written % COUNT_EVERY)
                self._on_written()
        return written
