"""Download of a Completed Backstory export job's result fragments, with no Singer inside.

`FragmentReader(...).files(job_id, info)` yields the job's fragments as open binary files, in fragment order,
while the next ones download in parallel (bounded look-ahead, so disk holds at most a few fragments beyond the
one being read). Each file is anonymous (no name on disk, so not even a killed run leaves it behind) and is
closed when the reader moves on. A body cut off mid-way is fetched again from byte 0, so no record is read twice.
"""

from __future__ import annotations

import http.client
import logging
import math
import tempfile
import threading
import typing as t
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import urllib3.exceptions

from tap_backstory.client import TRANSPORT_ERRORS, ApiClient, ApiError, TapBackstoryError, backoff_delay, one_line
from tap_backstory.windows import Clock

FRAGMENT_TRIES = 4
CHUNK_SIZE = 1 << 20
BYTES_PER_TIMEOUT_STEP = 20 * 1024 * 1024
SECONDS_PER_TIMEOUT_STEP = 60
"""Backstory: "the maximum timeout for data retrieval ... is 60 seconds per 20mb of data"."""
NO_SUCH_FRAGMENT = frozenset({400, 404, 416, 422})

# A body cut off mid-way surfaces as one of these (requests wraps most; raw urllib3/http.client leak through).
DROPPED_BODY_ERRORS = (
    *TRANSPORT_ERRORS,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    http.client.IncompleteRead,
)


@dataclass(frozen=True)
class Fragment:
    """One downloaded fragment: `body` is open at byte 0 until the reader moves on."""

    body: t.BinaryIO
    source: str  # names the fragment in errors: "export job 42 fragment 3"


class _Retry(Exception):
    """A fragment download to start again from byte 0."""


class _Stopped(Exception):
    """The reader stopped early; abandon the download."""


class FragmentReader:
    """Reads the fragments of one job (`files`), then tells how many bytes they held (`bytes_read`)."""

    def __init__(self, api: ApiClient, jobs_path: str, concurrency: int, log: logging.Logger, clock: Clock) -> None:
        self.api = api
        self.jobs_path = jobs_path
        self.concurrency = concurrency
        self.log = log
        self.clock = clock
        self.bytes_read = 0

    def files(self, job_id: str, info: dict, window: object = None) -> t.Iterator[Fragment]:
        """The fragments `info` (the Completed job's status) announces, in order (`window` only names the job
        in the log).

        The activities doc calls `fragment` a "Count of fragments ... (0-based)", which a server may mean as
        the last fragment's number. Only when the announced fragments fell short of `results_size` is the next
        one asked for too (one at a time); a refusal (no such fragment) or an empty body ends the job as usual."""
        count = info.get("fragments", info.get("fragment"))
        announced: list[int | None] = list(range(int(count))) if count else [None]  # None: the stitched file
        size = int(info.get("results_size") or 0)
        read_timeout = SECONDS_PER_TIMEOUT_STEP * max(1, math.ceil(size / BYTES_PER_TIMEOUT_STEP))
        self.log.info(
            "Export job %s (window %s): downloading %d fragment(s), %s bytes",
            job_id,
            window,
            len(announced),
            size or "unknown",
        )
        todo = deque(announced)
        next_unannounced = len(announced)
        downloads: deque[tuple[int | None, Future]] = deque()
        stop = threading.Event()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"job-{job_id}")

        def download_ahead() -> None:
            while todo and len(downloads) < 2 * self.concurrency:
                number = todo.popleft()
                downloads.append((number, pool.submit(self._download, job_id, number, read_timeout, stop)))

        try:
            download_ahead()
            while downloads:
                number, future = downloads.popleft()
                probed = number is not None and number >= len(announced)
                try:
                    body, nbytes = future.result()
                except ApiError as exc:
                    if probed and exc.status in NO_SUCH_FRAGMENT:
                        return
                    raise
                download_ahead()
                with body:
                    if probed:
                        if not nbytes:
                            return
                        self.log.warning(
                            "Export job %s: %d bytes of %d after fragments 0..%d; fragment %d exists too, reading it",
                            job_id,
                            self.bytes_read,
                            size,
                            number - 1,
                            number,
                        )
                    self.bytes_read += nbytes
                    body.seek(0)
                    yield Fragment(body, _name(job_id, number))
                if not downloads and count and self.bytes_read < size:
                    todo.append(next_unannounced)
                    next_unannounced += 1
                    download_ahead()
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            for _, future in downloads:  # downloaded but never read (the reader stopped early)
                if future.done() and not future.cancelled() and future.exception() is None:
                    future.result()[0].close()

    def _download(
        self, job_id: str, fragment: int | None, read_timeout: float, stop: threading.Event
    ) -> tuple[t.BinaryIO, int]:
        """One fragment into an anonymous temp file; a dropped body is fetched again from byte 0."""
        params = None if fragment is None else {"fragment": fragment}
        what = _name(job_id, fragment, whole="data")
        out = tempfile.TemporaryFile(prefix="tap-backstory-")  # noqa: SIM115 - `files` closes it
        try:
            for attempt in range(FRAGMENT_TRIES):
                out.seek(0)
                out.truncate()
                try:
                    written = self._fetch_into(out, f"{self.jobs_path}/{job_id}/data", params, read_timeout, stop)
                except (_Retry, *DROPPED_BODY_ERRORS) as exc:
                    if attempt + 1 == FRAGMENT_TRIES:
                        raise TapBackstoryError(
                            f"{what} kept failing to download ({one_line(exc)}) after {FRAGMENT_TRIES} tries"
                        ) from None
                    delay = backoff_delay(attempt)
                    self.log.warning(
                        "%s: download interrupted (%s); fetching it again from the start in %.1fs",
                        what,
                        one_line(exc),
                        delay,
                    )
                    self.clock.sleep(delay)
                    continue
                return out, written
        except BaseException:
            out.close()
            raise
        raise AssertionError("unreachable")

    def _fetch_into(
        self, out: t.BinaryIO, path: str, params: dict | None, read_timeout: float, stop: threading.Event
    ) -> int:
        response = self.api.request("GET", path, params=params, stream=True, timeout=(10, read_timeout))
        with response:
            written = 0
            for chunk in response.iter_content(CHUNK_SIZE):
                if stop.is_set():
                    raise _Stopped
                out.write(chunk)
                written += len(chunk)
            # Content-Length counts encoded bytes: compare only when the body was not compressed.
            expected = response.headers.get("Content-Length")
            if expected and not response.headers.get("Content-Encoding") and written != int(expected):
                raise _Retry(f"short body: {written} of {expected} bytes")
        return written


def _name(job_id: str, fragment: int | None, whole: str = "") -> str:
    """"export job 42 fragment 3"; the stitched file (no fragments) is "export job 42" (`whole` appended)."""
    if fragment is not None:
        return f"export job {job_id} fragment {fragment}"
    return f"export job {job_id} {whole}".rstrip()
