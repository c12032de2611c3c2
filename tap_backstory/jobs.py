"""Backstory bulk export jobs: create → poll → download fragments → parse, with no Singer inside.

The vocabulary is that of a declarative async retriever: a *creation* request per window, a *polling*
request with a status mapping (Queued/Running → wait, Completed → download, Failed/Canceled → retry with a
new job, too slow → time-out), and a *download* of the result fragments.

`ExportJobs.run(specs)` yields `(spec, job_id, records)` strictly in window order. While the caller reads
window k, the jobs of the next windows may already be queued or running (pipelining), but never more than
`max_concurrent_jobs` of ours at once: a job holds a slot until we have seen it Completed/Failed/Canceled.
Polling follows `polling.PollSchedule`; the download of a Completed job's fragments is `fragments.FragmentReader`,
and `parse_in_order` is the one place the ordered fragment files meet the parser.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import typing as t
from collections import deque
from dataclasses import dataclass, field

from tap_backstory.client import RETRIABLE_STATUSES, ApiClient, ApiError, TapBackstoryError, one_line
from tap_backstory.formats import Part, read_export, unwrap_list
from tap_backstory.fragments import Fragment, FragmentReader, JobGone, check_job_id, job_path
from tap_backstory.polling import PollSchedule
from tap_backstory.windows import RETENTION, Clock, PendingJob, Window, format_timestamp, parse_timestamp

WAITING_STATES = frozenset({"Queued", "Running"})
FAILED_STATES = frozenset({"Failed", "Canceled"})
COMPLETED = "Completed"
KNOWN_STATES = {state.lower(): state for state in (*WAITING_STATES, *FAILED_STATES, COMPLETED)}
KNOWN_STATES["cancelled"] = "Canceled"  # both spellings are in use
MAX_JOB_RETRIES = 2
"""A window whose job ends Failed/Canceled gets this many new jobs before the run fails."""
REFUSED_REQUEST = frozenset({400, 422})
"""How Backstory may refuse a job's parameters (here: an end date after today, which the docs neither allow
nor forbid)."""
HEARTBEAT_SECONDS = 120.0
"""While a window's job is Queued/Running (for hours, at times), one INFO line at least this often."""
HEARTBEAT_ENV_VAR = "TAP_BACKSTORY_HEARTBEAT_SECONDS"
"""Overrides HEARTBEAT_SECONDS (tests; unset in production)."""
ORPHAN_CLOCK_SKEW = dt.timedelta(minutes=5)
"""A job in Backstory's list counts as the one an interrupted run requested if created at most this long
before the request time in state (the two clocks differ; `job_created_time` has whole seconds)."""

Parser = t.Callable[[t.BinaryIO, str], t.Iterator[dict]]


@dataclass(frozen=True)
class JobSpec:
    """One window's export request."""

    window: Window
    export_type: str  # "snapshot" | "delta"; the state key (contacts send no export_type in the body)
    body: dict
    resume: PendingJob | None = None  # a job created by an earlier run for this very window
    fallback: JobSpec | None = None  # the same window ending today, if Backstory refuses an end date after it
    number: int = 1  # this window's place in the run: `number` of `count`
    count: int = 1

    def __str__(self) -> str:
        return f"{self.window} ({self.export_type})"

    @property
    def progress(self) -> str:
        return f"{self.number} of {self.count}: {self}"


@dataclass
class _Slot:
    """The job (or successive jobs, after failures) of one window."""

    spec: JobSpec
    poll: PollSchedule  # restarted for each job of the window
    job_id: str | None = None
    state: str | None = None
    info: dict = field(default_factory=dict)
    jobs_created: int = 0
    first_try: float | None = None  # monotonic: first attempt to create a job for this window
    not_before: float = 0.0  # monotonic: no creation attempt before (after a 429 / too many jobs)
    create_wait: float = 0.0
    refusal: str = ""  # why the last job-creation request was not taken
    heartbeat_at: float = 0.0  # monotonic: the last "still waiting" line
    resume_checked: bool = False
    remade: bool = False  # its job's files were gone and a new job was made (once a run)
    requested: bool = False  # the request of this window's next job is announced in state
    error: Exception | None = None  # a refusal to create this window's job, raised when its turn comes

    @property
    def alive(self) -> bool:
        """Holds one of our job slots: created and not yet seen in a final state."""
        return self.job_id is not None and self.state not in FAILED_STATES and self.state != COMPLETED


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
        self.on_requesting = on_requesting
        self.on_created = on_created
        self._todo: deque[JobSpec] = deque()
        self._ahead: deque[_Slot] = deque()
        self._listed: list[dict] | None = None  # Backstory's job list, read once, only to find orphans

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

    def _look_ahead(self, ahead: deque[_Slot]) -> None:
        """Queue the next windows: enough to fill every free slot, even when a later job has already
        Completed and waits to be read (it holds no slot). At most 2 x max_concurrent_jobs + 1 windows."""
        todo = self._todo
        while (
            todo
            and len(ahead) < 2 * self.max_concurrent_jobs + 1
            and sum(slot.state != COMPLETED for slot in ahead) < self.max_concurrent_jobs + 1
        ):
            ahead.append(_Slot(todo.popleft(), PollSchedule(self.poll_interval, self.job_timeout, self.clock)))

    def _wait_completed(self, head: _Slot, ahead: deque[_Slot]) -> None:
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
                    self._poll(slot)
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

    def _start_jobs(self, ahead: deque[_Slot]) -> None:
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
                if slot.spec.resume and self._adopt(slot):
                    continue
            slots_full = sum(s.alive for s in ahead) >= self.max_concurrent_jobs
            if slot.error or slots_full or self.clock.monotonic() < slot.not_before:
                return  # windows get their jobs in order: never skip one
            try:
                if not self._create(slot):
                    return
            except ApiError as exc:
                # Fatal for this window, but the earlier windows' records must come out first.
                slot.error = exc
                return

    # --- creation, adoption, polling -------------------------------------------------------------------
    def _create(self, slot: _Slot) -> bool:
        """POST a new job; False when Backstory refuses for now (429 / too many jobs: waited out)."""
        now = self.clock.monotonic()
        if slot.first_try is None:
            slot.first_try = now
        if not slot.requested:
            # Announced before the request: a run killed before the answer arrives leaves a job Backstory made
            # but the state never named; the announcement lets the next run find it instead of making another.
            self.on_requesting(slot.spec, self.clock.now())
            slot.requested = True
        try:
            response = self.api.request("POST", self.path, json=slot.spec.body, retry=False)
        except ApiError as exc:
            if not _is_temporary(exc):
                if exc.status in REFUSED_REQUEST and slot.spec.fallback is not None:
                    self._fall_back(slot, exc)
                    return self._create(slot)
                raise
            retry_after = getattr(exc, "retry_after", None)
            slot.create_wait = min(max(slot.create_wait * 1.5, self.poll_interval), slot.poll.cap)
            # The server's Retry-After, capped like a poll wait (as ApiClient caps it) so job_timeout still holds.
            wait = min(retry_after, slot.poll.cap) if retry_after is not None else slot.create_wait
            slot.not_before = now + wait
            slot.refusal = one_line(exc)
            self.log.info(
                "Backstory did not take the job for window %s now (%s); retrying in %.1fs",
                slot.spec,
                one_line(exc),
                wait,
            )
            return False
        info = response.json()
        slot.job_id, slot.info = check_job_id(str(info["job_id"])), info
        slot.state = job_state(info) or "Queued"
        slot.jobs_created += 1
        slot.requested = False
        slot.poll.restart()
        slot.create_wait, slot.first_try = 0.0, None
        self.log.info("Window %s: created export job %s (%s)", slot.spec.progress, slot.job_id, slot.state)
        self.on_created(slot.spec, slot.job_id, self.clock.now())
        return True

    def _fall_back(self, slot: _Slot, refusal: ApiError) -> None:
        """Ask for the window ending today instead; the slot keeps it for its retries, so Backstory is asked
        about the future end date once a run."""
        fallback = slot.spec.fallback
        assert fallback is not None
        today = fallback.window.end
        self.log.warning(
            "Window %s: Backstory refused the end date %s after today (%s); asking for %s instead: activities "
            "dated after %s and processed before it are in no export (the deltas start at today's processing date)",
            slot.spec,
            slot.spec.window.end,
            one_line(refusal),
            fallback.window,
            today,
        )
        slot.spec, slot.requested = fallback, False

    def _adopt(self, slot: _Slot) -> bool:
        """Reuse the job an earlier run created for this window, if Backstory still has it usable."""
        pending = slot.spec.resume
        assert pending is not None
        age = pending.age(self.clock.now())
        if age >= RETENTION:
            self.log.info(
                "Window %s: job %s in state is %s old, past the %d-day retention; creating a new job",
                slot.spec,
                pending.job_id or "requested",
                age,
                RETENTION.days,
            )
            return False
        if pending.job_id is None:
            return self._adopt_orphan(slot, pending.created_at)
        try:
            info = self.api.request("GET", job_path(self.path, pending.job_id)).json()
        except ApiError as exc:
            self.log.info(
                "Window %s: job %s in state is not retrievable (%s); creating a new job",
                slot.spec,
                pending.job_id,
                one_line(exc),
            )
            return False
        state = job_state(info)
        if state in FAILED_STATES:
            self.log.info("Window %s: job %s in state ended %s; creating a new job", slot.spec, pending.job_id, state)
            return False
        slot.job_id, slot.info, slot.state = pending.job_id, info, state
        slot.poll.restart()
        self.log.info("Window %s: resuming export job %s from state (%s)", slot.spec, pending.job_id, state)
        return True

    def _adopt_orphan(self, slot: _Slot, requested_at: dt.datetime) -> bool:
        """An earlier run was killed while requesting this window's job: find the job Backstory may have made.

        A listed job qualifies when it echoes every field of our request with the same value, was created no
        earlier than that request (less the clock skew) and did not fail. Contacts jobs do not echo their
        dates or filters, so for them this finds nothing and a new job is made: never the wrong data."""
        for info in self._job_list():
            created = parse_timestamp(info.get("job_created_time"))
            if created is not None and created.tzinfo is None:
                created = created.replace(tzinfo=dt.timezone.utc)  # the docs' times are UTC
            if (
                created is not None
                and created >= requested_at - ORPHAN_CLOCK_SKEW
                and all(_same(info.get(key), value) for key, value in slot.spec.body.items())
                and job_state(info) not in FAILED_STATES
            ):
                slot.job_id, slot.info, slot.state = check_job_id(str(info["job_id"])), info, job_state(info)
                slot.poll.restart()
                self.log.info(
                    "Window %s: adopting export job %s (%s) from Backstory's job list: an interrupted run "
                    "requested it at %s",
                    slot.spec,
                    slot.job_id,
                    slot.state,
                    format_timestamp(requested_at),
                )
                self.on_created(slot.spec, slot.job_id, created)
                return True
        self.log.info(
            "Window %s: an interrupted run was requesting its job; none in Backstory's job list; creating one",
            slot.spec,
        )
        return False

    def _job_list(self) -> list[dict]:
        """The jobs of the last 10 days (`GET .../jobs`), read at most once a run; empty if unavailable."""
        if self._listed is None:
            try:
                body = self.api.request("GET", self.path).json()
                listed = unwrap_list(body, f"Backstory GET {self.path}", ("jobs", "data", "items", "results"))
            except (TapBackstoryError, ValueError) as exc:  # an API error or an unreadable list
                self.log.warning("Could not list Backstory's export jobs (%s)", one_line(exc))
                listed = []
            self._listed = [job for job in listed if isinstance(job, dict) and job.get("job_id") is not None]
        return self._listed

    def _poll(self, slot: _Slot) -> None:
        info = self.api.request("GET", job_path(self.path, str(slot.job_id))).json()
        state = job_state(info)
        slot.info = info
        if state != slot.state:
            self.log.info(
                "Export job %s (window %s): %s -> %s after %.1fs",
                slot.job_id,
                slot.spec,
                slot.state,
                state,
                slot.poll.age,
            )
            if state not in WAITING_STATES | FAILED_STATES | {COMPLETED}:
                self.log.warning("Export job %s has an unknown state %r; still waiting", slot.job_id, state)
        slot.state = state

    # --- download --------------------------------------------------------------------------------------
    def _records(self, slot: _Slot) -> t.Iterator[dict]:
        """Records of a Completed job: fragments downloaded in parallel, parsed in order, then deleted. A job
        whose files are gone before its first record is made again, once a run (docs/decisions.md)."""
        job_id, started, rows = str(slot.job_id), self.clock.monotonic(), 0
        reader = FragmentReader(
            self.api, self.path, self.fragment_concurrency, self.log, self.clock, mode=self.fragment_mode
        )
        try:
            for record in parse_in_order(reader.files(job_id, slot.info, slot.spec), self.parse, job_id):
                rows += 1
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

    def _remake(self, slot: _Slot) -> None:
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


def job_state(info: dict) -> str | None:
    """The job's state in the docs' spelling ("Queued", "Running", "Completed", "Failed", "Canceled"),
    whatever its case; an unknown state is kept as sent (and waited on)."""
    state = info.get("state")
    return KNOWN_STATES.get(state.lower(), state) if isinstance(state, str) else state


JOB_LIMIT_MESSAGE = re.compile(r"too ?many|(concurrent|queued) (export )?jobs|queue is full|job limit", re.IGNORECASE)
"""How a server may word the use limits (2 running, 10 queued) when it answers them with a 4xx other than 429."""


def _is_temporary(exc: ApiError) -> bool:
    """A job-creation refusal to wait out: 429, 5xx, a dropped connection, or a job-limit message."""
    return exc.status is None or exc.status in RETRIABLE_STATUSES or bool(JOB_LIMIT_MESSAGE.search(str(exc)))


def _same(sent: t.Any, wanted: t.Any) -> bool:
    """A request field as the job echoes it: strings compared without case ("Delta" was seen to work)."""
    if isinstance(sent, str) and isinstance(wanted, str):
        return sent.lower() == wanted.lower()
    return sent == wanted and type(sent) is type(wanted)

