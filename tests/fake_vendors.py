"""In-process fakes of the two VENDORS (not of the tap): scripted job services behind the real `ApiClient`.

`fake_api` gives a real `ApiClient` whose requests go to a Python function instead of a socket (a requests
transport adapter), so error classification, Retry-After and the client's messages are the project's own.
`FakeClock` is the engines' injected clock: it advances on `sleep`, so polling, backoff and time-outs run in
microseconds. Job states change with that fake time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import re
import threading
import typing as t
from collections import deque
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from tap_backstory.client import ApiClient
from tap_backstory.windows import Clock, format_timestamp

BASE_URL = "http://fake-vendor.invalid"

# What a fake service answers: (status, JSON body or raw bytes, headers).
Answer = tuple[int, t.Any, dict[str, str]]
Handler = t.Callable[[str, str, dict, t.Any], Answer]


class FakeClock(Clock):
    """Fake UTC time starting at noon of `today`; `sleep` moves it forward instead of waiting."""

    def __init__(self, today: dt.date) -> None:
        super().__init__(today)
        self.start = dt.datetime.combine(today, dt.time(12), tzinfo=dt.timezone.utc)
        self.elapsed = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()  # fragment downloads sleep in threads

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.elapsed += seconds


class _Transport(BaseAdapter):
    """Hands each prepared request to a fake service's handler and builds a real `requests.Response`."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.lock = threading.Lock()  # fragments download in threads; the fakes are plain Python

    def send(self, request: requests.PreparedRequest, stream: bool = False, **kwargs: t.Any) -> requests.Response:
        url = urlsplit(request.url)
        params = {key: values[0] for key, values in parse_qs(url.query).items()}
        body = json.loads(request.body) if request.body else None
        with self.lock:
            status, payload, headers = self.handler(request.method, url.path, params, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict({"Content-Length": str(len(data)), **headers})
        response.raw = io.BytesIO(data)
        response.url = request.url
        response.request = request
        response.reason = "fake"
        return response

    def close(self) -> None:
        pass


def fake_api(vendor: str, handler: Handler) -> ApiClient:
    """The project's real ApiClient, talking to `handler` instead of the network."""
    api = ApiClient(BASE_URL, lambda prepared: prepared, vendor=vendor, url_setting="api_url")
    api.session.mount(BASE_URL, _Transport(handler))
    return api


def error(status: int, message: str, **headers: str) -> Answer:
    return status, {"error": "Refused", "message": message}, headers


# --- Backstory export jobs ----------------------------------------------------------------------------


@dataclasses.dataclass
class FakeJob:
    job_id: str
    body: dict
    created: float  # fake monotonic seconds
    created_at: dt.datetime
    finishes: float
    outcome: str  # the state once finished: Completed, Failed or Canceled
    message: str | None = None
    fragments: tuple[bytes, ...] = ()


class FakeBackstory:
    """Backstory's export job API for one kind: jobs run `run_seconds(body)` of fake time, then end in the next
    scripted outcome (default Completed); creation answers the next scripted refusal first, if any."""

    def __init__(self, clock: FakeClock, *, kind: str = "activities", fragments_per_job: int = 2) -> None:
        self.clock = clock
        self.path = f"/pull/v1/export/{kind}/jobs"
        self.fragments_per_job = fragments_per_job
        self.run_seconds: t.Callable[[dict], float] = lambda body: 30.0
        self.outcomes: deque[tuple[str, str | None]] = deque()  # (state, message) of the next jobs created
        self.refusals: deque[Answer] = deque()  # answers to the next creation attempts
        self.refuse_forever: Answer | None = None
        self.cut_bodies = 0  # the next N fragment bodies stop half-way (their Content-Length says more)
        self.jobs: dict[str, FakeJob] = {}
        self.creation_attempts: list[tuple[float, dict]] = []
        self.created_while: list[tuple[str, int]] = []  # (job_id, jobs Queued/Running once it was made)
        self.requests: list[tuple[float, str, str]] = []
        self._next_id = 100

    def api(self) -> ApiClient:
        return fake_api("Backstory", self.handle)

    # the script
    def add_job(
        self, body: dict, *, created_at: dt.datetime, job_id: str | None = None, outcome: str = "Completed",
        runs_for: float = 0.0,
    ) -> FakeJob:
        """A job an earlier run created (`created_at` in the past), finishing `runs_for` seconds from now."""
        job = self._make(body, outcome, None, created_at, runs_for)
        if job_id is not None:
            del self.jobs[job.job_id]
            job.job_id = job_id
            self.jobs[job_id] = job
        return job

    def state(self, job: FakeJob) -> str:
        now = self.clock.monotonic()
        if now >= job.finishes:
            return job.outcome
        return "Queued" if now < job.created + 1 else "Running"

    def alive(self) -> int:
        return sum(self.state(job) in ("Queued", "Running") for job in self.jobs.values())

    def jobs_of(self, start_date: str) -> list[FakeJob]:
        return [job for job in self.jobs.values() if job.body["start_date"] == start_date]

    # the API
    def handle(self, method: str, path: str, params: dict, body: t.Any) -> Answer:
        self.requests.append((self.clock.monotonic(), method, path))
        if path == self.path and method == "POST":
            return self._create(body)
        if path == self.path:
            return 200, {"jobs": [self._info(job) for job in self.jobs.values()]}, {}
        match = re.fullmatch(re.escape(self.path) + r"/(\w+)(/data)?", path)
        job = self.jobs.get(match.group(1)) if match else None
        if job is None:
            return error(404, "no such job")
        if not match.group(2):
            return 200, self._info(job), {}
        if self.state(job) != "Completed":
            return error(409, "job is not Completed")
        number = int(params.get("fragment", 0))
        if number >= len(job.fragments):
            return error(404, "no such fragment")
        fragment = job.fragments[number]
        if self.cut_bodies:
            self.cut_bodies -= 1
            return 200, fragment[: len(fragment) // 2], {"Content-Length": str(len(fragment))}
        return 200, fragment, {}

    def _create(self, body: dict) -> Answer:
        self.creation_attempts.append((self.clock.monotonic(), body))
        if self.refusals:
            return self.refusals.popleft()
        if self.refuse_forever:
            return self.refuse_forever
        outcome, message = self.outcomes.popleft() if self.outcomes else ("Completed", None)
        job = self._make(body, outcome, message, self.clock.now(), self.run_seconds(body))
        self.created_while.append((job.job_id, self.alive()))
        return 200, self._info(job), {}

    def _make(self, body: dict, outcome: str, message: str | None, created_at: dt.datetime, runs_for: float) -> FakeJob:
        job_id = str(self._next_id)
        self._next_id += 1
        fragments = tuple(
            b"".join(
                json.dumps({"window": body["start_date"], "job": job_id, "fragment": n, "row": row}).encode() + b"\n"
                for row in range(2)
            )
            for n in range(self.fragments_per_job)
        )
        now = self.clock.monotonic()
        job = FakeJob(job_id, dict(body), now, created_at, now + runs_for, outcome, message, fragments)
        self.jobs[job_id] = job
        return job

    def _info(self, job: FakeJob) -> dict:
        info = {
            **job.body,
            "job_id": job.job_id,
            "state": self.state(job),
            "job_created_time": format_timestamp(job.created_at),
        }
        if info["state"] == "Completed":
            info.update(fragments=len(job.fragments), results_size=sum(map(len, job.fragments)))
        if job.message and info["state"] in ("Failed", "Canceled"):
            info["message"] = job.message
        return info


def json_lines(body: t.BinaryIO, source: str) -> t.Iterator[dict]:
    """The fake fragments' format: one JSON object a line."""
    for line in body:
        yield json.loads(line)


# --- ContactBased ---------------------------------------------------------------------------------------


class FakeContactBased:
    """ContactBased: one feed, searches, exports building for `build_seconds` of fake time, pages, enrichment
    refusing (413) any batch larger than `max_batch`."""

    def __init__(self, clock: FakeClock, *, rows: int = 5, page_size: int = 2) -> None:
        self.clock = clock
        self.feed = {"feed_id": "feed-1", "lookback_days": 30}
        self.rows = rows
        self.page_size = page_size
        self.build_seconds = 0.0
        self.max_batch = 1000
        self.requests: list[tuple[float, str, t.Any]] = []
        self._export_ready_at = 0.0
        self.exports: list[dict] = []  # what `/intent/feeds/exports/list` answers

    def api(self) -> ApiClient:
        return fake_api("ContactBased", self.handle)

    def handle(self, method: str, path: str, params: dict, body: t.Any) -> Answer:
        now = self.clock.monotonic()
        self.requests.append((now, path, body))
        pages = -(-self.rows // self.page_size)
        summary = {"export_id": "export-1", "total_rows": self.rows, "total_pages": pages, "page_size": self.page_size}
        building = {"status": "building" if now < self._export_ready_at else "ready"}
        if path == "/organization/feeds":
            return 200, {"data": [self.feed]}, {}
        if path == "/intent/feeds/search":
            return 200, {"job_id": "search-1", "total_records": self.rows, "records_with_contact_id": self.rows}, {}
        if path == "/intent/feeds/exports":
            self._export_ready_at = now + self.build_seconds
            options = {key: value for key, value in body.items() if key != "max_rows"}
            self.exports.append({**summary, **options})
            return 200, {**summary, "status": "building" if self.build_seconds else "ready"}, {}
        if path == "/intent/feeds/exports/list":
            return 200, {"exports": [e for e in self.exports if e["job_id"] == body.get("job_id")]}, {}
        if path == "/intent/feeds/exports/get":
            return 200, {**summary, **building}, {}
        if path == "/intent/feeds/exports/page":
            first = (body["page"] - 1) * self.page_size
            return 200, {"data": [{"row": n} for n in range(first, min(first + self.page_size, self.rows))]}, {}
        if path == "/enrich/contacts/batch":
            ids = body["contact_ids"]
            if len(ids) > self.max_batch:
                return 413, {"detail": "too many contact_ids"}, {}
            results = [{"contact_id": contact_id, "person": {"name": contact_id}} for contact_id in ids]
            return 200, {"results": results}, {}
        return 404, {"detail": "not found"}, {}
