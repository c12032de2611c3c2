"""Backstory export job requests: creation (with the fallback to a window ending today), adoption of a job an
earlier run made (from state, or from Backstory's job list), and polling; with no Singer inside.

`JobRequests` talks to the API for one `ExportJobs` pipeline (jobs.py), which decides when to call it."""

from __future__ import annotations

import datetime as dt
import logging
import re
import typing as t
from dataclasses import dataclass, field

from tap_backstory.client import (
    RETRIABLE_STATUSES,
    ApiClient,
    ApiError,
    BadAnswerError,
    TapBackstoryError,
    one_line,
    read_json,
)
from tap_backstory.formats import unwrap_list
from tap_backstory.fragments import check_job_id, job_path
from tap_backstory.polling import PollSchedule
from tap_backstory.windows import RETENTION, Clock, PendingJob, Window, format_timestamp, parse_timestamp

WAITING_STATES = frozenset({"Queued", "Running"})
FAILED_STATES = frozenset({"Failed", "Canceled"})
COMPLETED = "Completed"
KNOWN_STATES = {state.lower(): state for state in (*WAITING_STATES, *FAILED_STATES, COMPLETED)}
KNOWN_STATES["cancelled"] = "Canceled"  # both spellings are in use
REFUSED_REQUEST = frozenset({400, 422})
"""How Backstory may refuse a job's parameters (here: an end date after today, which the docs neither allow
nor forbid)."""
ORPHAN_CLOCK_SKEW = dt.timedelta(minutes=5)
"""A job in Backstory's list counts as the one an interrupted run requested if created at most this long
before the request time in state (the two clocks differ; `job_created_time` has whole seconds)."""


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
class Slot:
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


class JobRequests:
    """Creates, adopts and polls the jobs of one Backstory export API (`path`: `.../export/<kind>/jobs`)."""

    def __init__(
        self,
        api: ApiClient,
        path: str,
        *,
        poll_interval: float,
        clock: Clock,
        log: logging.Logger,
        on_requesting: t.Callable[[JobSpec, dt.datetime], None],
        on_created: t.Callable[[JobSpec, str, dt.datetime], None],
    ) -> None:
        self.api = api
        self.path = path
        self.poll_interval = poll_interval
        self.clock = clock
        self.log = log
        self.on_requesting = on_requesting
        self.on_created = on_created
        self._listed: list[dict] | None = None  # Backstory's job list, read once, only to find orphans

    def create(self, slot: Slot) -> bool:
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
                    return self.create(slot)
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
        info = job_answer(read_json(response, f"Backstory POST {self.path}"), f"Backstory POST {self.path}")
        if info.get("job_id") in (None, ""):
            raise BadAnswerError(f"Backstory POST {self.path}: the answer names no job_id")
        slot.job_id, slot.info = check_job_id(str(info["job_id"])), info
        slot.state = job_state(info) or "Queued"
        slot.jobs_created += 1
        slot.requested = False
        slot.poll.restart()
        slot.create_wait, slot.first_try = 0.0, None
        self.log.info("Window %s: created export job %s (%s)", slot.spec.progress, slot.job_id, slot.state)
        self.on_created(slot.spec, slot.job_id, self.clock.now())
        return True

    def _fall_back(self, slot: Slot, refusal: ApiError) -> None:
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

    def adopt(self, slot: Slot) -> bool:
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
            path = job_path(self.path, pending.job_id)
            info = job_answer(self.api.request_json("GET", path), f"Backstory GET {path}")
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

    def _adopt_orphan(self, slot: Slot, requested_at: dt.datetime) -> bool:
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
                body = self.api.request_json("GET", self.path)
                listed = unwrap_list(body, f"Backstory GET {self.path}", ("jobs", "data", "items", "results"))
            except (TapBackstoryError, ValueError) as exc:  # an API error or an unreadable list
                self.log.warning("Could not list Backstory's export jobs (%s)", one_line(exc))
                listed = []
            self._listed = [job for job in listed if isinstance(job, dict) and job.get("job_id") is not None]
        return self._listed

    def poll(self, slot: Slot) -> None:
        path = job_path(self.path, str(slot.job_id))
        info = job_answer(self.api.request_json("GET", path), f"Backstory GET {path}")
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


def job_answer(body: t.Any, where: str) -> dict:
    """A job's status answer: a JSON object (anything else is one data error naming the request)."""
    if not isinstance(body, dict):
        raise BadAnswerError(f"{where}: the answer is not a JSON object")
    return body
