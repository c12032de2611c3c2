"""Shared sandbox state: settings, clock, statistics, event log, and the request/response value types."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from .settings import SandboxSettings


@dataclass
class Request:
    method: str
    path: str  # path below the API prefix, e.g. "/pull/v1/export/activities/jobs"
    query: dict[str, str]
    headers: Any  # email.message.Message (case-insensitive .get)
    body: bytes

    def json(self) -> Any:
        """Parsed JSON body; raises ValueError on malformed JSON."""
        if not self.body.strip():
            raise ValueError("empty body")
        return json.loads(self.body)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    stream: Iterator[bytes] | None = None
    content_length: int | None = None  # for streams; None = chunked transfer encoding
    drop_after: int | None = None  # fault: close the connection after this many body bytes
    throttle: bool = False  # apply bandwidth_bytes_per_sec
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any) -> Response:
        return cls(status, json.dumps(obj).encode())


class ApiError(Exception):
    """Raised by handlers; the API module turns it into its vendor's error body."""

    def __init__(self, status: int, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.name = status, message, name


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.jobs_created: Counter[str] = Counter()
        self.max_jobs_alive = 0
        self.max_jobs_running = 0
        self.job_windows: list[dict[str, Any]] = []
        self.fragment_requests = 0
        self.data_requests = 0
        self.data_bytes_sent = 0
        self.data_streams = 0  # Backstory data bodies being sent right now
        self.max_data_streams = 0  # the most at once: how many fragment downloads a client ran in parallel
        self.token_requests: Counter[str] = Counter()
        self.searches_created = 0
        self.previews = 0
        self.exports_created = 0
        self.quota_spent: Counter[str] = Counter()
        self.page_requests = 0
        self.enrich_batches: list[int] = []
        self.enrich_ids_sent = 0
        self.enrich_single_requests = 0
        self.requests_by_status: Counter[str] = Counter()
        self.requests_total = 0
        self.requests_by_api: Counter[str] = Counter()  # "backstory" / "contactbased": which API a run touched
        self.faults_injected: Counter[str] = Counter()

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs_created": {"activities": self.jobs_created["activities"],
                             "contacts": self.jobs_created["contacts"]},
            "max_jobs_alive": self.max_jobs_alive,
            "max_jobs_running": self.max_jobs_running,
            "job_windows": list(self.job_windows),
            "fragment_requests": self.fragment_requests,
            "data_requests": self.data_requests,
            "data_bytes_sent": self.data_bytes_sent,
            "max_data_streams": self.max_data_streams,
            "token_requests": dict(self.token_requests),
            "searches_created": self.searches_created,
            "previews": self.previews,
            "exports_created": self.exports_created,
            "quota_spent": dict(self.quota_spent),
            "page_requests": self.page_requests,
            "enrich_batches": list(self.enrich_batches),
            "enrich_ids_sent": self.enrich_ids_sent,
            "enrich_single_requests": self.enrich_single_requests,
            "requests_by_status": {str(k): v for k, v in sorted(self.requests_by_status.items())},
            "requests_total": self.requests_total,
            "requests_by_api": dict(self.requests_by_api),
            "faults_injected": dict(self.faults_injected),
        }


class SandboxState:
    """Everything mutable, guarded by one re-entrant lock."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self.stats = Stats()
        self.events: deque[dict[str, Any]] = deque(maxlen=20000)
        self.rng = random.Random(settings.seed)  # drives error_rate
        self.fault_seen: Counter[str] = Counter()  # responses counted by the position faults

    # --- clock ---------------------------------------------------------------------------------------------
    def today(self) -> date:
        return self.settings.current_day()

    def now(self) -> datetime:
        """Sandbox wall clock: the real UTC time of day on the sandbox's 'today'."""
        real = datetime.now(timezone.utc)
        return datetime.combine(self.today(), real.time().replace(microsecond=0), tzinfo=timezone.utc)

    def iso_now(self) -> str:
        return self.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    # --- stats/events --------------------------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> None:
        ev = {"t": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "kind": kind, **fields}
        with self.lock:
            self.events.append(ev)

    def take(self, counter: str) -> bool:
        """Consume one unit of a counter fault (e.g. ``fail_jobs``); True if it fired."""
        with self.lock:
            left = getattr(self.settings, counter)
            if left and left > 0:
                setattr(self.settings, counter, left - 1)
                self.stats.faults_injected[counter] += 1
                return True
            return False

    def retention_cutoff(self) -> datetime:
        return self.now() - timedelta(days=self.settings.retention_days)
