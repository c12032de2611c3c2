"""Download of a Completed Backstory export job's result fragments, with no Singer inside.

`FragmentReader(...).files(job_id, info)` yields the job's fragments in fragment order as binary streams that
can be read while their bytes arrive (the first record follows the first bytes, not the end of a fragment),
while the next fragments download in parallel (bounded look-ahead: at most 2 x `fragment_concurrency`
downloads beyond the one being read). Each fragment is spooled, as received (still compressed if it came so),
into an anonymous temp file (no name on disk, so not even a killed run leaves it behind), closed when the
reader moves on.

A body cut off mid-way is fetched again from byte 0: the bytes already spooled are compared with the new
ones (not written again, so a reader behind them never sees a byte twice), and a body that changed between
tries is an error. The downloads prove themselves (docs/decisions.md, "Fragments"): a server that refuses
`?fragment=` (4xx on fragment 0) or ignores it (answers the whole file for every fragment) is read through
one plain `/data` download instead, with one WARNING; a job whose files are gone (404/410) raises `JobGone`.
"""

from __future__ import annotations

import http.client
import logging
import math
import os
import tempfile
import threading
import typing as t
import urllib.parse
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import urllib3.exceptions
import urllib3.response

from tap_backstory.client import TRANSPORT_ERRORS, ApiClient, ApiError, TapBackstoryError, backoff_delay, one_line
from tap_backstory.windows import Clock

FRAGMENT_TRIES = 4
CHUNK_SIZE = 1 << 20
ARRIVING_CHUNK = 64 * 1024
"""Without urllib3's `read1`, bytes are handed on in blocks of this size (the first record waits for one)."""
BYTES_PER_TIMEOUT_STEP = 20 * 1024 * 1024
SECONDS_PER_TIMEOUT_STEP = 60
"""Backstory: "the maximum timeout for data retrieval ... is 60 seconds per 20mb of data"."""
NO_SUCH_FRAGMENT = frozenset({400, 404, 416, 422})
GONE = frozenset({404, 410})
"""A job's files that answer these are gone (retention over, whatever our own 10-day clock says)."""
FRAGMENT_MODES = ("auto", "fragments", "whole")
"""`fragment_mode`: auto = `?fragment=N`, checked, with the whole-file fallback; fragments = `?fragment=N`
only (a refusal or a duplicate is an error); whole = one plain `/data` download per job."""
MAX_FRAGMENTS = 100_000
"""The most fragments a job may announce (and never more than its `results_size` in bytes)."""
DOWNLOAD_SIZE_FACTOR = 2
DOWNLOAD_SIZE_SLACK = 64 * 1024 * 1024
"""One download may hold at most `results_size` x factor + slack bytes as received (a server that sends more
than it announced is refused, not written to disk without end)."""
MAX_DOWNLOAD_BYTES = 64 * 1024**3
"""The ceiling of one download when the job states no `results_size`."""
SAME_START_BYTES = 64 * 1024
"""Fragment k > 0 whose first bytes (this many, or all of fragment 0 if shorter) are fragment 0's is the whole
file again: the server ignores `?fragment=`."""
PROGRESS_SECONDS = 20.0
"""While an export downloads, one INFO line (bytes, rate, percent of `results_size`) this often. The promise is
"at least every 30 s": the check runs on each read and each WAIT_STEP_SECONDS of waiting, so 20 s leaves room
for a slow step without the log going silent past 30 s."""
PROGRESS_ENV_VAR = "TAP_BACKSTORY_PROGRESS_SECONDS"
"""Overrides PROGRESS_SECONDS (tests; unset in production)."""
WIDEN_AFTER_WAITING = 0.25
"""Seconds the reader waits for bytes, in all, before one more fragment may download at once (`_Gate`)."""
WAIT_STEP_SECONDS = 1.0
"""A reader waiting for bytes wakes up this often (to log progress)."""

# A body cut off mid-way surfaces as one of these (requests wraps most; raw urllib3/http.client leak through).
DROPPED_BODY_ERRORS = (
    *TRANSPORT_ERRORS,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    urllib3.exceptions.DecodeError,
    http.client.IncompleteRead,
)


class JobGone(ApiError):
    """The job's files answer 404/410: its export must be made again."""


@dataclass(frozen=True)
class Fragment:
    """One fragment: `body` reads its bytes from byte 0, as received, waiting for those still to come."""

    body: t.BinaryIO
    source: str  # names the fragment in errors: "export job 42 fragment 3"
    charset: str | None = None  # from Content-Type
    encoding: str = ""  # Content-Encoding, lower case ("" = none)


class _Retry(Exception):
    """A fragment download to start again from byte 0."""


class _Stopped(Exception):
    """The reader stopped early, or no longer wants this download; abandon it."""


def job_path(jobs_path: str, job_id: str) -> str:
    """`jobs_path/<job_id>` with the server-given id as ONE path segment (`../x` or `a?b` cannot leave it)."""
    check_job_id(job_id)
    return f"{jobs_path}/{urllib.parse.quote(job_id, safe='')}"


def check_job_id(job_id: str) -> str:
    """A job id the tap may use: not empty, no control characters, not a dot segment."""
    if not job_id or job_id in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in job_id):
        raise TapBackstoryError(f"Backstory sent an unusable export job id {job_id!r}; refusing to use it")
    return job_id


def _progress_seconds() -> float:
    return float(os.environ.get(PROGRESS_ENV_VAR) or PROGRESS_SECONDS)


class _Spool:
    """One download's bytes on disk as they arrive: a download thread appends, the reader reads behind it."""

    def __init__(self, number: int | None, name: str, ticket: int) -> None:
        self.number = number
        self.name = name
        self.ticket = ticket  # its turn at the `_Gate`
        self.file: t.BinaryIO | None = None
        self.size = 0  # bytes on disk
        self.headers: dict[str, str] | None = None  # of the first answer
        self.done = False
        self.error: BaseException | None = None
        self.cancelled = False
        self.cond = threading.Condition()

    # --- the download thread ---
    def answered(self, headers: t.Mapping[str, str]) -> None:
        with self.cond:
            if self.headers is None:
                self.headers = {key.lower(): value for key, value in headers.items()}
                self.cond.notify_all()

    def put(self, offset: int, data: bytes) -> None:
        """Bytes at `offset` of this try: below `size` they must be the spooled ones, beyond they are added."""
        if offset < self.size:
            overlap = min(len(data), self.size - offset)
            assert self.file is not None
            if os.pread(self.file.fileno(), overlap, offset) != data[:overlap]:
                raise TapBackstoryError(f"{self.name}: the body changed between two download tries")
            data, offset = data[overlap:], offset + overlap
        if data:
            if self.file is None:
                self.file = tempfile.TemporaryFile(prefix="tap-backstory-", buffering=0)  # noqa: SIM115
            os.pwrite(self.file.fileno(), data, offset)
            with self.cond:
                self.size = offset + len(data)
                self.cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.done, self.error = True, error
            self.cond.notify_all()

    # --- the reader ---
    def wait(self, ready: t.Callable[[], bool], tick: t.Callable[[], None]) -> None:
        """Until `ready()` or the download ended; raises the download's error."""
        with self.cond:
            while not ready() and not self.done:
                self.cond.wait(WAIT_STEP_SECONDS)
                tick()
            if self.error is not None and not ready():
                raise self.error

    def wait_answer(self, tick: t.Callable[[], None]) -> dict[str, str]:
        self.wait(lambda: self.headers is not None, tick)
        if self.headers is None:  # ended without an answer and without an error: cannot happen
            raise TapBackstoryError(f"{self.name}: no answer")
        return self.headers

    def read_at(self, offset: int, size: int) -> bytes:
        if self.file is None:  # nothing arrived yet, or an empty body (an export with no records)
            return b""
        return os.pread(self.file.fileno(), size, offset)

    def close(self) -> None:
        self.cancelled = True
        with self.cond:
            if self.file is not None and self.done:
                self.file.close()


class _Gate:
    """When downloads may start: in the order they were asked for, at most `allowed` at once, `allowed` growing
    by one (up to `most`, `fragment_concurrency`) for every WIDEN_AFTER_WAITING seconds the reader waited for
    bytes (`widen`).

    Parallel fragments are for links slower than parsing. On a faster one (a nearby server, loopback) one
    download at a time keeps the reader fed, and every extra one only costs CPU: its thread takes the GIL from
    the parsing thread for every chunk received (issue 20: 4 at once cost about 2 s of CPU per 1M activities
    against 1, for the same bytes). A slow link widens it to `most` within the first waits."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.allowed = 1
        self.running = 0
        self.next_ticket = 0
        self.tickets = 0
        self.closed = False
        self.cond = threading.Condition()

    def ticket(self) -> int:
        """The turn of a download being asked for (on the reader's thread, in order)."""
        self.tickets += 1
        return self.tickets - 1

    def enter(self, ticket: int, cancelled: t.Callable[[], bool]) -> bool:
        """Wait for this download's turn; False when it is no longer wanted (its turn then passes on)."""
        with self.cond:
            while not self.closed and not (ticket == self.next_ticket and (self.running < self.allowed or cancelled())):
                self.cond.wait()
            if self.closed:
                return False
            self.next_ticket += 1
            self.cond.notify_all()
            if cancelled():
                return False
            self.running += 1
            return True

    def leave(self) -> None:
        with self.cond:
            self.running -= 1
            self.cond.notify_all()

    def widen(self) -> None:
        if self.allowed < self.most:
            with self.cond:
                self.allowed += 1
                self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class _SpoolStream:
    """A readable binary stream over a `_Spool`, blocking until bytes arrive; EOF once the download ended."""

    def __init__(
        self,
        spool: _Spool,
        tick: t.Callable[[], None],
        idle: t.Callable[[], None],
        resumed: t.Callable[[], None],
    ) -> None:
        self.spool = spool
        self.tick = tick
        self.idle = idle
        self.resumed = resumed
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        spool = self.spool
        if spool.size <= self.position and not spool.done:
            self.idle()  # about to wait for bytes: whoever holds parsed records lets them go first
            spool.wait(lambda: spool.size > self.position, self.tick)
            self.resumed()
        if spool.error is not None and spool.size <= self.position:
            raise spool.error
        available = spool.size - self.position
        if not available:
            return b""
        data = spool.read_at(self.position, available if size < 0 else min(size, available))
        self.position += len(data)
        self.tick()
        return data

    def __enter__(self) -> _SpoolStream:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FragmentReader:
    """Reads the fragments of one job (`files`), then tells how many bytes they held (`bytes_read`)."""

    def __init__(
        self,
        api: ApiClient,
        jobs_path: str,
        concurrency: int,
        log: logging.Logger,
        clock: Clock,
        mode: str = "auto",
        on_idle: t.Callable[[], None] = lambda: None,
    ) -> None:
        self.api = api
        self.on_idle = on_idle
        """Called on the reading thread just before it waits for bytes still on the way (first record at first
        byte: the caller flushes records it buffered)."""
        self.jobs_path = jobs_path
        self.concurrency = concurrency
        self.log = log
        self.clock = clock
        self.mode = mode
        self.bytes_read = 0
        self._received = 0  # by every download of the job, for progress lines
        self._lock = threading.Lock()
        self._started = 0.0
        self._last_progress = 0.0
        self._size = 0
        self._job_id = ""
        self._gate = _Gate(concurrency)
        self._wait_started = self._waited = 0.0

    def files(self, job_id: str, info: dict, window: object = None) -> t.Iterator[Fragment]:
        """The fragments `info` (the Completed job's status) announces, in order (`window` only names the job
        in the log).

        The activities doc calls `fragment` a "Count of fragments ... (0-based)", which a server may mean as
        the last fragment's number. Only when the announced fragments fell short of `results_size` is the next
        one asked for too (one at a time); a refusal (no such fragment) or an empty body ends the job as usual."""
        size = _results_size(info, job_id)
        count = _fragment_count(info, job_id, size)
        whole = self.mode == "whole" or not count
        announced = 1 if whole else count
        self._size, self._job_id = size, job_id
        self._started = self._last_progress = self.clock.monotonic()
        read_timeout = SECONDS_PER_TIMEOUT_STEP * max(1, math.ceil(size / BYTES_PER_TIMEOUT_STEP))
        limit = size * DOWNLOAD_SIZE_FACTOR + DOWNLOAD_SIZE_SLACK if size else MAX_DOWNLOAD_BYTES
        self.log.info(
            "Export job %s (window %s): downloading %s, %s bytes",
            job_id,
            window,
            "the whole file" if whole else f"{count} fragment(s)",
            size or "unknown",
        )
        next_number = 0  # the next fragment to download (lazy: a huge count costs nothing)
        last_wanted = announced - 1
        downloads: deque[_Spool] = deque()
        spools: list[_Spool] = []
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"job-{job_id}")
        first_bytes = b""  # fragment 0's first SAME_START_BYTES
        first_size = 0

        def start(number: int | None) -> _Spool:
            spool = _Spool(number, _name(job_id, number, whole="data"), self._gate.ticket())
            spools.append(spool)
            pool.submit(self._download, spool, read_timeout, limit)
            return spool

        def download_ahead() -> None:
            nonlocal next_number
            while next_number <= last_wanted and len(downloads) < 2 * self.concurrency:
                downloads.append(start(None if whole else next_number))
                next_number += 1

        def warn_fall_back(reason: str) -> None:
            self.log.warning(
                "Export job %s: %s; reading it as ONE file from a plain GET of its data (fragment_mode=whole "
                "skips this check)",
                job_id,
                reason,
            )

        def fall_back() -> _Spool:
            nonlocal last_wanted
            last_wanted = -1
            for spool in downloads:
                spool.close()
            downloads.clear()
            return start(None)

        try:
            download_ahead()
            while downloads:
                spool = downloads.popleft()
                number = spool.number
                probed = number is not None and number >= count
                try:
                    headers = spool.wait_answer(self._progress)
                except ApiError as exc:
                    if probed and exc.status in NO_SUCH_FRAGMENT:
                        return
                    if number == 0 and self.mode == "auto" and exc.status is not None and 400 <= exc.status < 500:
                        reason = f"fragment 0 was refused ({one_line(exc)})"
                        if not isinstance(exc, JobGone):  # a gone job: say nothing unless its plain file is there
                            warn_fall_back(reason)
                        spool, number = fall_back(), None
                        headers = spool.wait_answer(self._progress)  # JobGone if the whole file is gone too
                        if isinstance(exc, JobGone):
                            warn_fall_back(reason)
                    else:
                        raise
                if number == 0 and count > 1 and size and _content_length(headers) >= size:
                    if self.mode != "auto":
                        raise TapBackstoryError(
                            f"export job {job_id}: fragment 0 alone is the whole export ({size} bytes): the server "
                            "ignores ?fragment=; set fragment_mode to auto or whole"
                        )
                    self._ignore_warning(job_id, f"fragment 0 alone is {_content_length(headers)} bytes")
                    last_wanted = 0
                    for other in downloads:
                        other.close()
                    downloads.clear()
                if number is not None and number > 0 and self._repeats(spool, first_bytes, first_size):
                    if self.mode != "auto":
                        raise TapBackstoryError(
                            f"export job {job_id}: fragment {number} repeats fragment 0: the server ignores "
                            "?fragment=; set fragment_mode to auto or whole"
                        )
                    self._ignore_warning(job_id, f"fragment {number} starts with fragment 0's bytes")
                    return  # fragment 0, read already, was the whole file
                download_ahead()
                if probed:
                    spool.wait(lambda s=spool: s.size > 0, self._progress)
                    if not spool.size:
                        return
                    self.log.warning(
                        "Export job %s: %d bytes of %d after fragments 0..%d; fragment %d exists too, reading it",
                        job_id,
                        self.bytes_read,
                        size,
                        number - 1,
                        number,
                    )
                yield Fragment(
                    _SpoolStream(spool, self._progress, self._waiting, self._resumed),
                    _name(job_id, number),
                    _charset(headers.get("content-type", "")),
                    headers.get("content-encoding", "").strip().lower(),
                )
                spool.wait(lambda: False, self._progress)  # the reader read it to its end: so did the download
                self.bytes_read += spool.size
                if number == 0:
                    first_bytes, first_size = spool.read_at(0, SAME_START_BYTES), spool.size
                    if count > 1 and size and spool.size >= size and self.mode == "auto" and last_wanted > 0:
                        self._ignore_warning(job_id, f"fragment 0 alone held {spool.size} bytes")
                        return
                spool.close()
                if not downloads and count and not whole and last_wanted >= 0 and self.bytes_read < size:
                    last_wanted = max(last_wanted, next_number)  # one more, unannounced (see above)
                    download_ahead()
        finally:
            for spool in spools:
                spool.cancelled = True
            self._gate.close()
            pool.shutdown(wait=True, cancel_futures=True)
            for spool in spools:
                spool.done = True
                spool.close()

    def _waiting(self) -> None:
        """The reader is about to wait for bytes still on the way."""
        self._wait_started = self.clock.monotonic()
        self.on_idle()

    def _resumed(self) -> None:
        """Bytes came: every WIDEN_AFTER_WAITING seconds of waiting in all, one more download may run (the link,
        not the first answer's latency, is slower than parsing)."""
        self._waited += self.clock.monotonic() - self._wait_started
        if self._waited >= WIDEN_AFTER_WAITING:
            self._waited = 0.0
            self._gate.widen()

    def _ignore_warning(self, job_id: str, evidence: str) -> None:
        self.log.warning(
            "Export job %s: %s of the %d-byte export: the server ignores ?fragment= and answers the whole file; "
            "reading that one file, once (fragment_mode=whole asks for it directly)",
            job_id,
            evidence,
            self._size,
        )

    def _repeats(self, spool: _Spool, first_bytes: bytes, first_size: int) -> bool:
        """Whether this fragment starts as fragment 0 did (the whole file again)."""
        if not first_size:
            return False
        wanted = min(first_size, SAME_START_BYTES)
        spool.wait(lambda: spool.size >= wanted, self._progress)
        if spool.size < wanted or spool.read_at(0, wanted) != first_bytes[:wanted]:
            return False
        if first_size > SAME_START_BYTES:
            return True
        # A short fragment 0 (a CSV header alone, say) may be a prefix of a real fragment: only all of it counts.
        spool.wait(lambda: spool.size > first_size, self._progress)
        return spool.size == first_size

    def _progress(self) -> None:
        now = self.clock.monotonic()
        if now - self._last_progress < _progress_seconds():
            return
        self._last_progress = now
        elapsed = max(now - self._started, 1e-9)
        received = self._received
        percent = f" ({100 * received / self._size:.0f}% of {self._size})" if self._size else ""
        self.log.info(
            "Export job %s: %d bytes received%s in %.0fs, %.0f kB/s",
            self._job_id,
            received,
            percent,
            elapsed,
            received / elapsed / 1000,
        )

    def _download(self, spool: _Spool, read_timeout: float, limit: int) -> None:
        """One fragment into its spool; a dropped body is fetched again from byte 0."""
        params = None if spool.number is None else {"fragment": spool.number}
        path = f"{job_path(self.jobs_path, self._job_id)}/data"
        error: BaseException | None = None
        if not self._gate.enter(spool.ticket, lambda: spool.cancelled):
            spool.finish(_Stopped())
            return
        try:
            for attempt in range(FRAGMENT_TRIES):
                try:
                    self._fetch_into(spool, path, params, read_timeout, limit)
                    break
                except (_Retry, *DROPPED_BODY_ERRORS) as exc:
                    if attempt + 1 == FRAGMENT_TRIES:
                        raise TapBackstoryError(
                            f"{spool.name} kept failing to download ({one_line(exc)}) after {FRAGMENT_TRIES} tries"
                        ) from None
                    delay = backoff_delay(attempt)
                    self.log.warning(
                        "%s: download interrupted (%s); fetching it again from the start in %.1fs",
                        spool.name,
                        one_line(exc),
                        delay,
                    )
                    self.clock.sleep(delay)
        except ApiError as exc:
            gone = exc.status in GONE
            error = JobGone(f"{spool.name} is gone ({one_line(exc)})", exc.status) if gone else exc
        except BaseException as exc:  # handed to the reader, raised there
            error = exc
        finally:
            self._gate.leave()
        spool.finish(error)

    def _fetch_into(self, spool: _Spool, path: str, params: dict | None, read_timeout: float, limit: int) -> None:
        response = self.api.request("GET", path, params=params, stream=True, timeout=(10, read_timeout))
        with response:
            spool.answered(response.headers)
            written = 0
            # As received: a Content-Encoding body is decoded by the parser (formats), within its bounds.
            for chunk in _arriving(response.raw):
                if spool.cancelled:
                    raise _Stopped
                if written + len(chunk) > limit:
                    raise TapBackstoryError(
                        f"{spool.name}: the server sent more than {limit} bytes for a {self._size or 'unknown'}-byte "
                        "export; refusing the rest"
                    )
                spool.put(written, chunk)
                written += len(chunk)
                with self._lock:
                    self._received += len(chunk)
            expected = response.headers.get("Content-Length")
            if expected and expected.isdigit() and written != int(expected):
                raise _Retry(f"short body: {written} of {expected} bytes")
            if written < spool.size:
                raise TapBackstoryError(f"{spool.name}: the body changed between two download tries (shorter)")


def _arriving(raw: t.Any) -> t.Iterator[bytes]:
    """A body's bytes as they arrive (not in whole CHUNK_SIZE blocks: the parser reads them at once), undecoded."""
    if not isinstance(raw, urllib3.response.BaseHTTPResponse):  # a plain file object (a test's fake response)
        yield from iter(lambda: raw.read(CHUNK_SIZE), b"")
    elif hasattr(raw, "read1"):  # urllib3 >= 2.3
        while chunk := raw.read1(CHUNK_SIZE, decode_content=False):
            yield chunk
    else:
        yield from raw.stream(ARRIVING_CHUNK, decode_content=False)


def _results_size(info: dict, job_id: str) -> int:
    value = info.get("results_size")
    if value in (None, ""):
        return 0
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = -1
    if size < 0 or isinstance(value, bool):
        raise TapBackstoryError(f"export job {job_id}: results_size {value!r} is not a byte count")
    return size


def _fragment_count(info: dict, job_id: str, size: int) -> int:
    """The announced fragment count, within bounds: at most MAX_FRAGMENTS and no more than `results_size` bytes."""
    value = info.get("fragments", info.get("fragment"))
    if value in (None, "", 0):
        return 0
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    ceiling = min(MAX_FRAGMENTS, max(1, size)) if size else MAX_FRAGMENTS
    if isinstance(value, bool) or not 0 <= count <= ceiling:
        raise TapBackstoryError(
            f"export job {job_id}: {value!r} fragments is not a fragment count for a {size or 'unknown'}-byte "
            f"export (at most {ceiling})"
        )
    return count


def _content_length(headers: dict[str, str]) -> int:
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else -1


def _charset(content_type: str) -> str | None:
    """The `charset` parameter of a Content-Type, if any."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def _name(job_id: str, fragment: int | None, whole: str = "") -> str:
    """"export job 42 fragment 3"; the stitched file (no fragments) is "export job 42" (`whole` appended)."""
    if fragment is not None:
        return f"export job {job_id} fragment {fragment}"
    return f"export job {job_id} {whole}".rstrip()
