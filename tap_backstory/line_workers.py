"""BATCH JSON Lines decoded, shaped and encoded by worker processes, on the machine's other cores (issue 20).

In a BATCH run, decoding each record and encoding it again hold Python's GIL for most of the run, so a second
thread cannot help. Here the tap's process keeps the download, the stitching and the compression; it cuts the
export's stitched bytes into chunks of whole lines and hands each chunk to a worker process, which reads the
lines exactly as the tap's own `formats.read_json_lines` does (the same `RecordShaper`: the same records,
`_extra`, keyless records and errors) and answers with them encoded as the BATCH file's JSON Lines
(`batchfile.BATCH_ENCODER`). The answers come back in chunk order, as `EncodedLines`.

A worker is the tap's own interpreter running `line_workers.main`, speaking on its stdin and stdout:
first the shaper's settings (a frame of JSON), then per chunk a request frame (the source's name, the lines)
answered by a reply frame (JSON: records, lines, keyless records, log lines, error; then the encoded lines).
It holds no setting but the stream's schema and gets no TAP_BACKSTORY_* variable: no secret reaches it. It
ends when its stdin closes, and ignores the terminal's interrupts (the tap decides when it stops).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import importlib
import io
import logging
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import typing as t
from pathlib import Path

import msgspec

from tap_backstory import malloc
from tap_backstory.batchfile import BATCH_ENCODER, EncodedLines
from tap_backstory.client import TapBackstoryError
from tap_backstory.formats import LOGGER, DataError, RecordShaper, body_kind, newlines, read_json_lines

WORKERS_ENV_VAR = "TAP_BACKSTORY_BATCH_WORKERS"
"""How many worker processes read a BATCH run's JSON Lines; 0 reads them in the tap's own process. Unset: two,
or none on a machine with a single core (docs/performance.md, "BATCH")."""

CHUNK_BYTES = 2 << 20
"""Bytes of lines per chunk (plus the rest of the line a chunk ends in): large enough that a chunk's round trip
costs little, small enough to keep both workers busy and memory low."""

CHUNKS_PER_WORKER = 2
"""Chunks handed to a worker before its first answer is taken: one being read while the other is answered."""

CLOSE_SECONDS = 5
"""How long a worker may take to end once its stdin is closed (it has nothing left to do) before it is killed."""

PIPE_BYTES = 1 << 20
"""The pipes' kernel buffer asked for (Linux allows 1 MB without privileges): fewer, larger reads and writes."""

_FRAME = struct.Struct("<IQ")  # the lengths of a frame's two parts
_F_SETPIPE_SZ = 1031  # fcntl command (Linux); not in Python 3.11's fcntl module


def worker_count() -> int:
    """Worker processes for a BATCH run's JSON Lines (0: read in the tap's own process)."""
    value = os.environ.get(WORKERS_ENV_VAR, "").strip()
    if value:
        try:
            return max(0, int(value))
        except ValueError:
            raise TapBackstoryError(f"{WORKERS_ENV_VAR} must be a whole number, got {value!r}") from None
    return 2 if len(os.sched_getaffinity(0)) > 1 else 0


class LineWorkers:
    """Worker processes reading one stream's JSON Lines into BATCH lines, for as long as the stream syncs.

    Use as a context manager: leaving it ends the workers. `records` reads one export's body."""

    def __init__(self, shaper: RecordShaper, count: int, chunk_bytes: int = CHUNK_BYTES) -> None:
        if shaper.objects or shaper.fast_line is None:
            raise ValueError("line workers read records the SDK does not touch: no flattening")
        self._shaper = shaper
        self._chunk_bytes = chunk_bytes
        normalize = shaper.normalize
        spec = {
            "properties": shaper.properties,
            "stream": shaper.stream_name,
            "primary_key": shaper.primary_key,
            "normalize": None if normalize is None else f"{normalize.__module__}:{normalize.__qualname__}",
        }
        self._logged: set[str] = set()
        self._workers: list[_Worker] = []
        try:
            for _ in range(count):
                self._workers.append(_Worker(msgspec.json.encode(spec)))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> LineWorkers:
        return self

    def __exit__(self, *_: t.Any) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.close()

    def records(
        self,
        body: t.BinaryIO,
        source: str,
        in_process: t.Callable[[t.BinaryIO, str], t.Iterator[t.Any]],
    ) -> t.Iterator[EncodedLines]:
        """The records of one buffered body (it has `peek`) as `EncodedLines`: JSON Lines from the workers, any
        other body (one JSON document) read by `in_process`, one record at a time."""
        if body_kind(body) != "lines":
            return map(EncodedLines.of, in_process(body, source))
        return self._encoded(body, source)

    def _encoded(self, body: t.BinaryIO, source: str) -> t.Iterator[EncodedLines]:
        workers, in_flight = self._workers, collections.deque[_Worker]()
        name = source.encode()
        lines_before = 0  # lines in the chunks answered so far: a worker numbers its lines from 1
        carry = b""  # the start of the line the previous read ended in
        turn = 0
        try:
            while True:
                data = body.read(self._chunk_bytes)
                if data:
                    cut = data.rfind(b"\n") + 1
                    if not cut:  # a line longer than a chunk (the stitcher bounds it): read on
                        carry += data
                        continue
                    lines, carry = (carry, memoryview(data)[:cut]), data[cut:]
                else:  # the end: the last line, if it lacks its newline
                    lines, carry = (carry,), b""
                if any(lines):
                    worker = workers[turn % len(workers)]
                    turn += 1
                    worker.send(name, *lines)
                    in_flight.append(worker)
                # Answers are taken in chunk order, once every worker holds its chunks (at the end: all of them).
                while len(in_flight) >= (len(workers) * CHUNKS_PER_WORKER if data else 1):
                    encoded, lines_before = self._answer(in_flight.popleft(), source, lines_before)
                    if encoded.count:
                        yield encoded
                if not data:
                    return
        finally:
            for worker in in_flight:  # an error, or the reader stopped early: their answers are dropped
                worker.drop_answer()

    def _answer(self, worker: _Worker, source: str, lines_before: int) -> tuple[EncodedLines, int]:
        meta, data = worker.answer()
        for level, template, args in meta["logs"]:
            if template not in self._logged:  # once per stream, as one shaper would say it
                self._logged.add(template)
                LOGGER.log(level, template, *args)
        self._shaper.keyless += meta["keyless"]
        if meta["error"] is not None:
            line, message = meta["error"]
            local = f"{source}: line {line}"
            if message.startswith(local):  # every line error starts so (`formats.read_json_lines`)
                message = f"{source}: line {lines_before + line}{message[len(local):]}"
            raise DataError(message, lines_before + line)
        return EncodedLines(data, meta["count"]), lines_before + meta["lines"]


_WORKER_MAIN = "import sys; del sys.path[0]; from tap_backstory.line_workers import main; main()"
"""A worker's program: `-c` puts the working directory first on the import path, which is taken out again, so
the worker imports only what the tap imports."""


def _worker_environment() -> dict[str, str]:
    """The tap's environment without its TAP_BACKSTORY_* variables (a secret may be among them), and with the
    folder the tap's own package was imported from first on the import path."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TAP_BACKSTORY_")}
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (package_parent, env.get("PYTHONPATH"))))
    return env


class _Worker:
    """One worker process, fed by a thread of its own: the parent never waits to write a chunk while the worker
    waits for the parent to take an answer."""

    def __init__(self, spec: bytes) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_MAIN],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=_worker_environment(),
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
        self._in, self._out = self.process.stdin, io.BufferedReader(self.process.stdout, PIPE_BYTES)
        self._requests: queue.SimpleQueue[tuple[bytes | memoryview, ...] | None] = queue.SimpleQueue()
        self._feeder = threading.Thread(target=self._feed, name="batch-line-feeder", daemon=True)
        self._feeder.start()
        self._requests.put((_FRAME.pack(len(spec), 0), spec))

    unanswered = 0
    """Chunks sent and not answered yet."""

    def send(self, source: bytes, *lines: bytes | memoryview) -> None:
        size = sum(len(piece) for piece in lines)
        self._requests.put((_FRAME.pack(len(source), size), source, *lines))
        self.unanswered += 1

    def _feed(self) -> None:
        while (pieces := self._requests.get()) is not None:
            try:
                for piece in pieces:
                    _write_all(self._in, piece)
            except (OSError, ValueError):  # the worker is gone (or stopped): `answer` says so
                break
        with contextlib.suppress(OSError):
            self._in.close()

    def answer(self) -> tuple[dict, bytes]:
        self.unanswered -= 1
        head = _read_exactly(self._out, _FRAME.size)
        if head is None:
            code = self.process.wait()
            raise TapBackstoryError(f"a BATCH line worker ended unexpectedly (exit code {code}); see the lines above")
        meta_size, data_size = _FRAME.unpack(head)
        meta, data = _read_exactly(self._out, meta_size), _read_exactly(self._out, data_size)
        if meta is None or data is None:
            raise TapBackstoryError("a BATCH line worker ended in the middle of an answer")
        return msgspec.json.decode(meta), data

    def drop_answer(self) -> None:
        """Take an answer no one wants (its chunk's reader stopped), so that the next answer is the next chunk's;
        a worker that cannot give it is stopped."""
        try:
            self.answer()
        except (TapBackstoryError, OSError, ValueError, msgspec.DecodeError):
            self.process.kill()

    def close(self) -> None:
        """Stop the worker: at once if it still holds chunks (the sync ended in an error), else by closing its
        stdin, which ends it."""
        if self.unanswered:
            self.process.kill()
        self._requests.put(None)
        try:
            self.process.wait(timeout=CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self._out.close()


def _write_all(pipe: t.BinaryIO, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[pipe.write(view) :]


def _read_exactly(pipe: t.BinaryIO, size: int) -> bytes | None:
    """`size` bytes from a buffered pipe (one copy, no zero-filled buffer); None if it ends first (a worker, or
    the tap, gone)."""
    data = pipe.read(size)
    return data if len(data) == size else None


# The worker's side.


class _LogLines(logging.Handler):
    """The shaper's log lines, handed to the tap with the answer (the tap says each once per stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str, tuple]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, str(record.msg), tuple(record.args or ())))


def serve(requests: t.BinaryIO, answers: t.BinaryIO) -> None:
    """Answer chunks until `requests` ends."""
    head = _read_exactly(requests, _FRAME.size)
    if head is None:
        return
    spec = msgspec.json.decode(_read_exactly(requests, _FRAME.unpack(head)[0]) or b"")
    normalize = None
    if spec["normalize"]:
        module, _, name = spec["normalize"].partition(":")
        normalize = getattr(importlib.import_module(module), name)
    shaper = RecordShaper({"properties": spec["properties"]}, spec["stream"], primary_key=spec["primary_key"],
                          normalize=normalize)
    log = _LogLines()
    LOGGER.addHandler(log)
    LOGGER.propagate = False
    encode_into = BATCH_ENCODER.encode_into
    while (head := _read_exactly(requests, _FRAME.size)) is not None:
        source_size, size = _FRAME.unpack(head)
        source, data = (_read_exactly(requests, source_size) or b"").decode(), _read_exactly(requests, size) or b""
        out, count, error, keyless = bytearray(), 0, None, shaper.keyless
        try:
            for record in read_json_lines(io.BytesIO(data), source, shaper.shape, shaper.fast_line):
                if record is not None:  # None: a record without its primary key
                    encode_into(record, out, len(out))
                    out += b"\n"
                    count += 1
        except DataError as exc:
            error = (exc.line, str(exc))
        lines = newlines(data, 0, len(data)) + (not data.endswith(b"\n") and bool(data))
        meta = msgspec.json.encode(
            {"count": count, "lines": lines, "keyless": shaper.keyless - keyless, "logs": log.lines, "error": error}
        )
        log.lines = []
        for piece in (_FRAME.pack(len(meta), len(out)), meta, out):
            _write_all(answers, piece)


def main() -> None:
    malloc.tune()  # chunks of megabytes, read and answered one after another: reuse the same pages
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the tap stops its workers itself (closing their stdin)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Answers unbuffered: each goes to the tap as it is written. Requests through a buffer: fewer reads.
    with open(0, "rb", buffering=PIPE_BYTES) as requests, open(1, "wb", buffering=0) as answers, \
            contextlib.suppress(BrokenPipeError):  # the tap is gone
        serve(requests, answers)


if __name__ == "__main__":
    main()
