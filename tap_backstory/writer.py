"""The tap's Singer message writers: msgspec, without a flush after every RECORD, and RECORD lines written
straight from the record dicts for the hot streams."""

from __future__ import annotations

import atexit
import contextlib
import queue
import sys
import threading
import time
import typing as t

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecWriter, enc_hook
from singer_sdk.singerlib import SingerMessageType
from singer_sdk.singerlib.encoding.simple import Message

from tap_backstory.sdk import utc_now
from tap_backstory.stopping import FLUSH_GRACE_SECONDS, STOP, flush_stdout

if t.TYPE_CHECKING:
    from singer_sdk.metrics import Counter


class BufferedMsgSpecWriter(MsgSpecWriter):
    """`MsgSpecWriter` flushes stdout after every message: one `write` system call per record.

    Here RECORD lines gather in `pending` and go to stdout in 1 MB blocks, written by an output thread
    (`OutputThread`): the main thread goes on parsing while the operating system copies a block into the pipe
    or file, which took about a fifth of its time (issue 20). Every other message (SCHEMA, STATE, BATCH,
    ACTIVATE_VERSION) first waits for the blocks before it to be written, then is written and flushed, so a
    target has every record before the STATE that covers it. Same bytes, same order.

    It also tells a stop (`stopping.Stop`) whether a message is half written, and ends the run in one line
    when the target stopped reading (a broken pipe, on whichever thread meets it).

    `pending` holds RECORD lines not handed to the output thread yet (a `DirectRecordWriter` encodes into it).
    A stop writes what was handed over and what is pending (`drain_for_exit`), within its grace period: they
    all come after the last STATE, so a rerun sends them again anyway.
    """

    writing = False
    states_written = 0
    after_message: t.Callable[[], None] | None = None

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending = bytearray()
        self._output: OutputThread | None = None
        atexit.register(self._drain_at_exit)

    def _drain_at_exit(self) -> None:
        """An exit that no STATE preceded (an error, `--test`): the record lines still go out, as a plain
        buffered stdout would have written them."""
        if self.pending or self._output is not None:
            self.drain_for_exit(FLUSH_GRACE_SECONDS)

    def write_pending(self, *, flush: bool = False) -> None:
        """Hand the RECORD lines gathered so far to the output thread (`flush`: it flushes stdout after them,
        so they reach the target while the tap waits for more bytes)."""
        if self.pending or flush:
            if self._output is None:
                self._output = OutputThread()
            block, self.pending = self.pending, bytearray()
            self._output.put(block, flush=flush)

    def write_message(self, message: Message) -> None:
        data = self.format_message(message)
        if message.type == SingerMessageType.RECORD:  # the SDK's record path: in order with the direct writer's
            self.pending += data
            if len(self.pending) >= PENDING_BYTES:
                self.write_pending()
            return
        if self.pending:
            self.write_pending()
        if self._output is not None:
            self._output.wait_written()
        self.writing = True
        try:
            write_all(data)
            sys.stdout.flush()
            self.states_written += message.type == SingerMessageType.STATE
        except BrokenPipeError:
            STOP.on_target_gone()
        finally:
            self.writing = False
        if self.after_message is not None:  # a termination signal arrived while this message was written
            self.after_message()

    def flush_records(self) -> None:
        self.write_pending(flush=True)

    def drain_for_exit(self, timeout: float) -> None:
        """Write every record line handed over or pending, then flush stdout; give up after `timeout` seconds
        (a target that reads no more). For a stop (from a signal handler: it takes no lock the interrupted main
        thread may hold) and at interpreter exit."""
        deadline = time.monotonic() + timeout
        if self._output is not None and not self._output.wait_idle(deadline):
            return  # still writing: the target does not read; what is left would wait for it just the same
        if self.pending:
            with contextlib.suppress(OSError, ValueError):
                write_all(self.pending)
            self.pending = bytearray()
        flush_stdout(max(0.0, deadline - time.monotonic()))


OUTPUT_BLOCKS = 2
"""Blocks of RECORD lines (each about PENDING_BYTES) waiting for the output thread: with the block being
written and the one being filled, at most about 4 MB of lines in memory; a slow target makes the main
thread wait here. When the kernel's write-back slows the writes to a file, the queue fills: 4 blocks made
peak RSS at 1M activities 68-74 MB against 62 MB at 100k, 2 blocks 65-67 MB, at the same speed
(docs/performance.md, round five)."""


class OutputThread:
    """Writes blocks of whole lines to stdout, in order, on a thread of its own (a daemon: a stop or the
    interpreter's exit waits for it first, `BufferedMsgSpecWriter.drain_for_exit`)."""

    def __init__(self) -> None:
        self._blocks: queue.Queue[tuple[bytearray, bool]] = queue.Queue(OUTPUT_BLOCKS)
        self._thread = threading.Thread(target=self._run, name="stdout-writer", daemon=True)
        self._thread.start()

    def put(self, block: bytearray, *, flush: bool = False) -> None:
        self._blocks.put((block, flush))

    def wait_written(self) -> None:
        """Until every block handed over is written (stdout's own buffer included)."""
        self._blocks.join()

    def wait_idle(self, deadline: float) -> bool:
        """Whether every block handed over is written by `deadline` (`time.monotonic()`). Polls rather than
        joining the queue: a signal handler may call this while the main thread holds the queue's lock."""
        while self._blocks.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def _run(self) -> None:
        while True:
            block, flush = self._blocks.get()
            try:
                write_all(block)
                if flush or self._blocks.empty():  # nothing more to write soon: let the target have them
                    sys.stdout.flush()
            except BrokenPipeError:
                STOP.on_target_gone()
            except (OSError, ValueError) as exc:  # stdout closed under us: nothing can reach the target
                STOP.on_output_failed(exc)
            finally:
                self._blocks.task_done()


def write_all(data: bytes | bytearray) -> None:
    """All of `data` to stdout's binary layer. Under PYTHONUNBUFFERED that layer is the raw file, which may
    write only part of a large write (a signal in the middle of a write to a pipe): write the rest, never drop
    it."""
    written = sys.stdout.buffer.write(data)
    while written < len(data):
        written += sys.stdout.buffer.write(memoryview(data)[written:])


ENCODER = msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="number")
"""Configured as the SDK's msgspec writer's encoder (`singer_sdk.contrib.msgspec.encoder`): the same bytes."""

_SLOT = b"\x00"
"""Where the record goes in an encoded RECORD message: a NUL byte, which encoded JSON never holds (msgspec
escapes it in strings), marks the cut between the message's head and tail."""

COUNT_EVERY = 1000
"""Records between two increments of the SDK's record counter: it reads the clock at every increment."""

PENDING_BYTES = 1 << 20
"""RECORD lines gathered (1 MB, about 600 activities) before they go to the output thread as one block, written
to stdout in one write. Each block costs a GIL hand-over between the threads: stdout's own 8 KB buffer wrote
every five activities, 256 KB blocks measured slower than 1 MB ones."""


class DirectRecordWriter:
    """Writes one stream's RECORD messages to stdout straight from the record dicts.

    The bytes are those `BufferedMsgSpecWriter` writes for `RecordMessage(stream, record, version,
    time_extracted=now)` (same keys in the same order, same encoder), gathered in that writer's `pending`
    buffer, so the order with every other message is kept. The message around the record is encoded once per
    block of lines (`_frame`): `time_extracted` is read when a block starts (the records of one 1 MB block,
    about 600 activities, are read within milliseconds; a block is handed on before the reader waits for
    bytes, so no record carries a time from before a wait). What it leaves
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
        self._message: dict[str, t.Any] = {"type": "RECORD", "stream": stream, "record": msgspec.Raw(_SLOT)}
        if version is not None:
            self._message["version"] = version
        self._counter = counter
        self._on_written = on_written

    def _frame(self) -> tuple[bytes, bytes]:
        """The bytes of a RECORD message before and after its record, `time_extracted` read now."""
        head, _, tail = ENCODER.encode({**self._message, "time_extracted": utc_now()}).partition(_SLOT)
        return head, tail + b"\n"

    def write(self, records: t.Iterable[dict]) -> int:
        """Write every record of `records` (in order); how many were written, also when `records` raises.
        They are with the output thread when this returns (written before the next STATE, or at exit)."""
        writer, encode_into = self._writer, ENCODER.encode_into
        pending, head, tail = writer.pending, *self._frame()
        written = 0
        try:
            for record in records:
                if writer.pending is not pending:  # handed over (below, or flushed while `records` waited)
                    pending, (head, tail) = writer.pending, self._frame()
                pending += head
                encode_into(record, pending, len(pending))
                pending += tail
                written += 1
                if len(pending) >= PENDING_BYTES:
                    writer.write_pending()
                if written % COUNT_EVERY == 0:
                    self._counter.increment(COUNT_EVERY)
        finally:
            writer.write_pending()
            if written:
                self._counter.increment(written % COUNT_EVERY)
                self._on_written()
        return written
