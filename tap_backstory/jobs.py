"""Backstory bulk export jobs: create → poll → download fragments → parse, with no Singer inside.

The vocabulary is that of a declarative async retriever: a *creation* request per window, a *polling*
request with a status mapping (Queued/Running → wait, Completed → download, Failed/Canceled → retry with a
new job, too slow → time-out), and a *download* of the result fragments.

`ExportJobs.run(specs)` yields `(spec, job_id, records)` strictly in window order. While the caller reads
window k, the jobs of the next windows may already be queued or running (pipelining), but never more than
`max_concurrent_jobs` of ours at once: a job holds a slot until we have seen it Completed/Failed/Canceled.
Creating, adopting and polling a job is `job_requests.JobRequests`; polling follows `polling.PollSchedule`; the
download of a Completed job's fragments is `fragments.FragmentReader`, and `parse_in_order` is the one place the
ordered fragment files meet the parser.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import typing as t
from collections import deque

from tap_backstory.batchfile import EncodedLines
from tap_backstory.client import ApiClient, ApiError, TapBackstoryError, one_line
from tap_backstory.formats import Part, read_export
from tap_backstory.fragments import Fragment, FragmentReader, JobGone
from tap_backstory.job_requests import (  # noqa: F401 - ORPHAN_CLOCK_SKEW, job_state, _is_temporary: re-exported
    COMPLETED,
    FAILED_STATES,
    ORPHAN_CLOCK_SKEW,
    JobRequests,
    JobSpec,
    Slot,
    _is_temporary,
    job_state,
)
from tap_backstory.polling import PollSchedule
from tap_backstory.windows import Clock

MAX_JOB_RETRIES = 2
"""A window whose job ends Failed/Canceled gets this many new jobs before the run fails."""
HEARTBEAT_SECONDS = 120.0
"""While a window's job is Queued/Running (for hours, at times), one INFO line at least this often."""
HEARTBEAT_ENV_VAR = "TAP_BACKSTORY_HEARTBEAT_SECONDS"
"""Overrides HEARTBEAT_SECONDS (tests; unset in production)."""
Parser = t.Callable[[t.BinaryIO, str], t.Iterator[dict]]


class ExportJobs:
    """Runs the export jobs of one Backstory API (`kind` "activities" or "contacts")."""

    def __init__(
        self,
        api: ApiClient,
        kind: str,
        *,
        parse: Parser,
        max_concurrent_jobs: int,
        fragment_concurrency: int,
        poll_interval: float,
        job_timeout: float,
        clock: Clock,
        log: logging.Logger,
        fragment_mode: str = "auto",
        on_idle: t.Callable[[], None] = lambda: None,
        on_requesting: t.Callable[[JobSpec, dt.datetime], None] = lambda spec, at: None,
        on_created: t.Callable[[JobSpec, str, dt.datetime], None] = lambda spec, job_id, created_at: None,
    ) -> None:
        self.api = api
        self.path = f"/pull/v1/export/{kind}/jobs"
        self.parse = parse
        self.max_concurrent_jobs = max_concurrent_jobs
        self.fragment_concurrency = fragment_concurrency
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout
        self.clock = clock
        self.log = log
        self.fragment_mode = fragment_mode
        self.on_idle = on_idle  # before the reader waits for bytes (FragmentReader.on_idle)
        self._todo: deque[JobSpec] = deque()
        self._ahead: deque[Slot] = deque()
        self.requests = JobRequests(
            api,
            self.path,
            poll_interval=poll_interval,
            clock=clock,
            log=log,
            on_requesting=on_requesting,
            on_created=on_created,
        )

    # --- the pipeline ----------------------------------------------------------------------------------
    def run(self, specs: t.Iterable[JobSpec]) -> t.Iterator[tuple[JobSpec, str, t.Iterator[dict]]]:
        """Yield each window's records in order; the caller must read them before asking for the next."""
        self._todo = todo = deque(specs)
        self._ahead = ahead = deque()
        while todo or ahead:
            self._look_ahead(ahead)
            head = ahead[0]
            self._wait_completed(head, ahead)
            ahead.popleft()
            # The head no longer holds a slot: start the next windows' jobs before reading this one.
            self._start_jobs(ahead)
            self.log.info("Window %s: reading export job %s", head.spec.progress, head.job_id)
            yield head.spec, str(head.job_id), self._records(head)

    def _look_ahead(self, ahead: deque[Slot]) -> None:
        """Queue the next windows: enough to fill every free slot, even when a later job has already
        Completed and waits to be read (it holds no slot). At most 2 x max_concurrent_jobs + 1 windows."""
        todo = self._todo
        while (
            todo
            and len(ahead) < 2 * self.max_concurrent_jobs + 1
            and sum(slot.state != COMPLETED for slot in ahead) < self.max_concurrent_jobs + 1
        ):
            ahead.append(Slot(todo.popleft(), PollSchedule(self.poll_interval, self.job_timeout, self.clock)))

    def _wait_completed(self, head: Slot, ahead: deque[Slot]) -> None:
        while True:
            if head.error is not None:
                raise head.error
            if head.state in FAILED_STATES and head.jobs_created > MAX_JOB_RETRIES:
                message = head.info.get("message") or head.info.get("error") or "no message from the server"
                raise TapBackstoryError(
                    f"export job {head.job_id} for window {head.spec} ended {head.state} ({message}); "
                    f"gave up after {head.jobs_created} jobs for this window"
                )
            self._start_jobs(ahead)
            if head.state == COMPLETED:
                return
            now = self.clock.monotonic()
            if head.job_id is None:
                if head.first_try is not None and now - head.first_try > self.job_timeout:
                    raise TapBackstoryError(
                        f"could not create an export job for window {head.spec} within job_timeout_seconds="
                        f"{self.job_timeout:g}: Backstory kept refusing new jobs (last answer: {head.refusal})"
                    )
                self.clock.sleep(max(0.05, head.not_before - now))
                continue
            if head.poll.timed_out:
                raise TapBackstoryError(
                    f"export job {head.job_id} for window {head.spec} did not complete within "
                    f"job_timeout_seconds={self.job_timeout:g} (last state: {head.state})"
                )
            head.poll.wait()
            for slot in ahead:  # also notice the later jobs finishing, which frees slots
                if slot.alive:
                    self.requests.poll(slot)
            now = self.clock.monotonic()
            if head.state != COMPLETED and now - max(head.poll.started, head.heartbeat_at) >= _heartbeat_seconds():
                head.heartbeat_at = now
                self.log.info(
                    "Window %s: export job %s is still %s, %.0fs after it was created",
                    head.spec.progress,
                    head.job_id,
                    head.state,
                    head.poll.age,
                )

    def _start_jobs(self, ahead: deque[Slot]) -> None:
        """Create (or adopt from state) jobs for the windows in order, while we hold a free slot."""
        self._look_ahead(ahead)
        for slot in ahead:
            if slot.state in FAILED_STATES:
                if slot.jobs_created > MAX_JOB_RETRIES:
                    return  # its error is raised in its turn, after the earlier windows are emitted
                self.log.warning(
                    "Export job %s for window %s ended %s (%s); creating a new job",
                    slot.job_id,
                    slot.spec,
                    slot.state,
                    slot.info.get("message") or "no message from the server",
                )
                slot.job_id, slot.state, slot.info = None, None, {}
            if slot.job_id is not None:
                continue
            if not slot.resume_checked:
                slot.resume_checked = True
                if slot.spec.resume and self.requests.adopt(slot):
                    continue
            slots_full = sum(s.alive for s in ahead) >= self.max_concurrent_jobs
            if slot.error or slots_full or self.clock.monotonic() < slot.not_before:
                return  # windows get their jobs in order: never skip one
            try:
                if not self.requests.create(slot):
                    return
            except ApiError as exc:
                # Fatal for this window, but the earlier windows' records must come out first.
                slot.error = exc
                return

    # --- download --------------------------------------------------------------------------------------
    def _records(self, slot: Slot) -> t.Iterator[dict]:
        """Records of a Completed job: fragments downloaded in parallel, parsed in order, then deleted. A job
        whose files are gone before its first record is made again, once a run (docs/decisions.md)."""
        job_id, started, rows = str(slot.job_id), self.clock.monotonic(), 0
        reader = FragmentReader(
            self.api,
            self.path,
            self.fragment_concurrency,
            self.log,
            self.clock,
            mode=self.fragment_mode,
            on_idle=self.on_idle,
        )
        try:
            for record in parse_in_order(reader.files(job_id, slot.info, slot.spec), self.parse, job_id):
                rows += record.count if record.__class__ is EncodedLines else 1  # many, from line workers
                yield record
        except JobGone as exc:
            if rows or slot.remade:
                raise
            self.log.warning(
                "Window %s: the files of export job %s are gone (%s); creating a new job for the same window",
                slot.spec,
                job_id,
                one_line(exc),
            )
            self._remake(slot)
            yield from self._records(slot)
            return
        elapsed = self.clock.monotonic() - started
        self.log.info(
            "Window %s: %d rows, %d bytes from job %s in %.1fs (%.0f rows/s)",
            slot.spec,
            rows,
            reader.bytes_read,
            job_id,
            elapsed,
            rows / elapsed if elapsed else rows,
        )

    def _remake(self, slot: Slot) -> None:
        """A new job for this window, waited on as the head of the pipeline."""
        slot.remade, slot.resume_checked = True, True
        slot.job_id, slot.state, slot.info = None, None, {}
        self._ahead.appendleft(slot)
        self._wait_completed(slot, self._ahead)
        self._ahead.popleft()
        self._start_jobs(self._ahead)


def parse_in_order(fragments: t.Iterable[Fragment], parse: Parser, job_id: str) -> t.Iterator[dict]:
    """The records of a job's fragment files, handed over in fragment order and read as ONE file: the docs say
    fragments "are stitched together to form a single file", not that each is a whole file (`formats.read_export`
    tells byte slices from standalone files by the data)."""
    parts = (Part(fragment.body, fragment.source, fragment.charset, fragment.encoding) for fragment in fragments)
    return read_export(parts, parse, f"export job {job_id}")


def _heartbeat_seconds() -> float:
    return float(os.environ.get(HEARTBEAT_ENV_VAR) or HEARTBEAT_SECONDS)
