"""Backstory (People.ai) bulk API emulation, mounted under ``/backstory``.

Behaviour, with the vendor doc it follows (the vendor's API docs, kept outside this repository):

* ``POST /auth/v1/tokens`` (bulk-apis-overview, Authentication): form-encoded ``grant_type=client_credentials``,
  ``client_id``, ``client_secret``; the Content-Type must be ``application/x-www-form-urlencoded``. Returns
  ``{"access_token", "token_type": "bearer", "expires_in"}``. Each key pair is restricted to one API type:
  an Activity token is refused (401) on the contacts endpoints and an Object token on the activities ones.
  Re-requesting issues a new token; older tokens stay valid for the rest of their lifespan.
* ``POST /pull/v1/export/activities/jobs`` and ``POST /pull/v1/export/contacts/jobs`` create export jobs
  (200 with the job object). Use limits per org: at most 2 jobs Running, at most 10 Queued+Running (the 11th
  create gets 429 ``TooManyRequestsException``); files are kept 10 days, older jobs answer 404.
  Date ranges: delta ``end - start <= 14`` days, snapshot and contacts ``end - start <= 365`` days;
  no start_date after today; an end_date after today is taken (activities dated ahead, e.g. scheduled
  meetings, are in a snapshot) unless ``refuse_future_end_date`` is on. Enum values are matched
  case-insensitively (public code sends "Delta").
* ``GET .../jobs/{id}``: the same job object; ``GET .../jobs``: ``{"jobs": [...]}`` of the last 10 days.
* ``GET .../jobs/{id}/data[?fragment=N]``: fragments are 0-based; no fragment = all fragments stitched into one
  file. Activities are JSON Lines; contacts are CSV with a header row (every fragment is a standalone CSV
  file with its header) or JSON (JSON Lines, or an array per file with ``contacts_json_style="array"``).
  The docs only say fragments "are stitched together to form a single file", so ``fragment_layout="byte_range"``
  serves them as byte slices of that one file instead; ``gzip_bodies`` and ``body_encoding`` serve bodies
  gzip-compressed (no Content-Encoding) or in Latin-1 (``content_charset`` sets what Content-Type declares);
  ``fragment_param`` makes the server ignore or refuse ``?fragment=``.
* Errors: ``{"error": "<Name>Exception", "message": "..."}``; unsupported methods and unknown paths → 404
  ``{"error": "NotFoundException", "message": "HTTP 404 Not Found"}``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import secrets
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from . import data
from .settings import DEMO_CREDENTIALS
from .state import ApiError, Request, Response, SandboxState

EXACT_SIZE_LIMIT = 100_000  # records: exact results_size/Content-Length up to this, estimate beyond
CHUNK = 64 * 1024

_ERROR_NAMES = {400: "BadRequestException", 401: "UnauthorizedException", 403: "ForbiddenException",
                404: "NotFoundException", 429: "TooManyRequestsException", 502: "BadGatewayException",
                503: "ServiceUnavailableException"}


def error(status: int, message: str, name: str | None = None) -> Response:
    return Response.json(status, {"error": name or _ERROR_NAMES.get(status, "Exception"), "message": message})


@dataclass
class Job:
    job_id: str | int
    stream: str  # "activities" | "contacts"
    params: dict[str, Any]
    today: date  # the sandbox's today at creation: data as of that day
    created: datetime
    created_mono: float
    fate: str = "Completed"
    state: str = "Queued"
    started: datetime | None = None
    started_mono: float | None = None
    ended: datetime | None = None
    n_records: int = 0
    bounds: list[tuple[int, int]] = field(default_factory=list)  # (skip, count) per fragment
    fragment_sizes: list[int | None] = field(default_factory=list)
    results_size: int | None = None
    gone: bool = False  # fault `gone_jobs`: Completed, but its data answers 410
    exact: bool = True
    prepared: threading.Event = field(default_factory=threading.Event)

    def as_json(self, fragment_key: str, last_index: bool = False) -> dict[str, Any]:
        ts = (lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ") if d else None)  # noqa: E731
        done = self.state == "Completed"
        obj: dict[str, Any] = {"job_id": self.job_id, "state": self.state}
        if self.stream == "activities":
            obj.update(export_type=self.params["export_type"], output_format=self.params["output_format"],
                       activity_type=self.params["activity_type"],
                       start_date=self.params["start_date"].isoformat(),
                       end_date=self.params["end_date"].isoformat())
        else:
            obj["output_format"] = self.params["output_format"]
        obj.update(job_created_time=ts(self.created), job_start_time=ts(self.started),
                   job_end_time=ts(self.ended), results_size=self.results_size if done else None)
        obj[fragment_key] = (len(self.bounds) - last_index) if done else None
        return obj


class Backstory:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (key type, expiry monotonic)
        self.jobs: dict[str, Job] = {}  # by str(job_id), creation order
        # Unique across sandbox restarts, as real job ids are: a job id kept in a state file must never name
        # another job of a later sandbox (the demo restarts it between runs).
        self._next_job = int(time.time() * 1000)

    # ------------------------------------------------------------------------------------------------------
    # routing
    # ------------------------------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        try:
            return self._route(req)
        except ApiError as e:
            return error(e.status, e.message, e.name)

    def _route(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        if path == "/auth/v1/tokens" and req.method == "POST":
            return self.issue_token(req)
        m = re.fullmatch(r"/pull/v1/export/(activities|contacts)/jobs(?:/([^/]+)(/data)?)?", path)
        if not m:
            self.state.event("unrouted", method=req.method, path=req.path, query=req.query)
            return error(404, "HTTP 404 Not Found")
        stream, job_id, is_data = m.group(1), m.group(2), m.group(3)
        allowed = "POST" if job_id is None and req.method == "POST" else "GET"
        if req.method != allowed:
            return error(404, "HTTP 404 Not Found")
        self.authorize(req, "activity" if stream == "activities" else "object")
        if job_id is None:
            return self.create_job(req, stream) if req.method == "POST" else self.list_jobs(stream)
        job = self.find_job(stream, job_id)
        if is_data:
            return self.job_data(req, job)
        return Response.json(200, self.job_json(job))

    # ------------------------------------------------------------------------------------------------------
    # auth
    # ------------------------------------------------------------------------------------------------------
    def issue_token(self, req: Request) -> Response:
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            self.state.stats.token_requests["invalid"] += 1
            return error(400, "Content-Type must be application/x-www-form-urlencoded")
        form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type", "client_credentials") != "client_credentials":
            self.state.stats.token_requests["invalid"] += 1
            return error(400, "Unsupported grant_type: only client_credentials is supported")
        cid, secret = form.get("client_id", "").strip("'\""), form.get("client_secret", "").strip("'\"")
        kind = None
        if (cid, secret) == (DEMO_CREDENTIALS["activity_client_id"], DEMO_CREDENTIALS["activity_client_secret"]):
            kind = "activity"
        elif (cid, secret) == (DEMO_CREDENTIALS["object_client_id"], DEMO_CREDENTIALS["object_client_secret"]):
            kind = "object"
        if kind is None:
            self.state.stats.token_requests["invalid"] += 1
            self.state.event("auth_failed", api="backstory", reason="invalid client credentials")
            return error(401, "Invalid client credentials")
        ttl = int(self.state.settings.token_ttl_seconds)
        token = _jwt_like(cid, kind, ttl)
        with self.state.lock:
            self.tokens[token] = (kind, time.monotonic() + ttl)
            self.state.stats.token_requests[kind] += 1
        self.state.event("token_issued", key_type=kind, expires_in=ttl)
        return Response.json(200, {"access_token": token, "token_type": "bearer", "expires_in": ttl})

    def authorize(self, req: Request, needed: str) -> None:
        auth = req.headers.get("Authorization") or ""
        if not auth.lower().startswith("bearer "):
            raise ApiError(401, "Missing bearer token")
        entry = self.tokens.get(auth[7:].strip())
        if entry is None:
            raise ApiError(401, "Invalid token")
        kind, expires = entry
        if time.monotonic() >= expires:
            self.state.event("auth_failed", api="backstory", reason="token expired", key_type=kind)
            raise ApiError(401, "Token expired")
        if kind != needed:
            self.state.event("auth_failed", api="backstory", reason="wrong key type", key_type=kind)
            api = "Activity" if needed == "activity" else "Object"
            raise ApiError(401, f"Token of a {kind.capitalize()} API key is not valid for the {api} API")

    # ------------------------------------------------------------------------------------------------------
    # jobs
    # ------------------------------------------------------------------------------------------------------
    def create_job(self, req: Request, stream: str) -> Response:
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(400, "Content-Type must be application/json")
        try:
            body = req.json()
        except ValueError:
            raise ApiError(400, "Invalid request body: malformed JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid request body: expected a JSON object")
        today = self.state.today()
        params = (_activity_params if stream == "activities" else _contact_params)(
            body, today, self.state.settings.refuse_future_end_date)
        st = self.state
        if st.take("burst_429"):
            st.event("too_many_jobs", stream=stream, injected=True)
            raise ApiError(429, "Too many jobs: rate limit exceeded, retry later")
        with st.lock:
            self.tick()
            alive = sum(1 for j in self.jobs.values() if j.state in ("Queued", "Running"))
            if alive >= st.settings.max_alive_jobs:
                st.event("too_many_jobs", stream=stream, alive=alive)
                raise ApiError(429, f"Too many jobs: at most {st.settings.max_alive_jobs} export jobs may be "
                                    f"queued or running at once ({alive} are)")
            n = self._next_job
            self._next_job += 1
            job_id: str | int = n if st.settings.integer_job_ids else str(n)
            if st.settings.hostile_job_id:
                job_id = f"{st.settings.hostile_job_id}{n}"
            job = Job(job_id, stream, params, today, st.now(), time.monotonic())
            if st.take("fail_jobs"):
                job.fate = "Failed"
            elif st.take("cancel_jobs"):
                job.fate = "Canceled"
            job.gone = st.take("gone_jobs")
            self.jobs[str(job_id)] = job
            st.stats.jobs_created[stream] += 1
            st.stats.job_windows.append({
                "stream": stream, "export_type": params.get("export_type"),
                "activity_type": params.get("activity_type"),
                "start_date": params["start_date"].isoformat(), "end_date": params["end_date"].isoformat(),
                "job_id": job_id})
            st.stats.max_jobs_alive = max(st.stats.max_jobs_alive, alive + 1)
        st.event("job_created", stream=stream, job_id=job_id, start_date=params["start_date"].isoformat(),
                 end_date=params["end_date"].isoformat(), export_type=params.get("export_type"),
                 fate=job.fate, request=body)
        threading.Thread(target=self._prepare, args=(job,), daemon=True).start()
        if st.settings.job_create_answer_seconds > 0:
            time.sleep(st.settings.job_create_answer_seconds)
        return Response.json(200, self.job_json(job))

    def job_json(self, job: Job) -> dict[str, Any]:
        settings = self.state.settings
        obj = job.as_json(settings.fragment_count_key, settings.fragment_count_is_last_index)
        if settings.hostile_fragments and obj.get(settings.fragment_count_key) is not None:
            obj[settings.fragment_count_key] = settings.hostile_fragments
        return obj

    def list_jobs(self, stream: str) -> Response:
        with self.state.lock:
            self.tick()
            jobs = [self.job_json(j) for j in self.jobs.values() if j.stream == stream]
        return Response.json(200, {"jobs": jobs})

    def find_job(self, stream: str, job_id: str) -> Job:
        with self.state.lock:
            self.tick()
            job = self.jobs.get(unquote(job_id))  # the id is one path segment, quoted
        if job is None or job.stream != stream:
            raise ApiError(404, f"Job {job_id} not found")
        return job

    def tick(self) -> None:
        """Advance every job's lifecycle by wall time: Queued -> Running (<= 2 at once) -> final state."""
        st = self.state
        s = st.settings
        with st.lock:
            now_m = time.monotonic()
            cutoff = st.retention_cutoff()
            for key in [k for k, j in self.jobs.items() if j.created < cutoff]:
                job = self.jobs.pop(key)
                st.event("job_expired", job_id=job.job_id)
            running = 0
            for job in self.jobs.values():
                if job.state == "Running" and now_m - job.started_mono >= s.job_run_seconds and (
                        job.fate != "Completed" or job.prepared.is_set()):
                    self._set_state(job, job.fate)
                    job.ended = st.now()
                running += job.state == "Running"
            for job in self.jobs.values():
                if running >= s.max_running_jobs:
                    break
                if job.state == "Queued" and now_m - job.created_mono >= s.job_queue_seconds:
                    self._set_state(job, "Running")
                    job.started, job.started_mono = st.now(), now_m
                    running += 1
            st.stats.max_jobs_running = max(st.stats.max_jobs_running, running)

    def _set_state(self, job: Job, new: str) -> None:
        job.state = new
        self.state.event("job_state", job_id=job.job_id, stream=job.stream, state=new)

    # ------------------------------------------------------------------------------------------------------
    # data
    # ------------------------------------------------------------------------------------------------------
    def _prepare(self, job: Job) -> None:
        """Count the records and size every fragment (exactly up to EXACT_SIZE_LIMIT records)."""
        try:
            n = sum(1 for _ in self._records(job, 0, None, render=False))
            frags = max(1, min(self.state.settings.fragments, n))
            job.n_records = n
            job.bounds = [(k * n // frags, (k + 1) * n // frags - k * n // frags) for k in range(frags)]
            if n <= EXACT_SIZE_LIMIT or self.state.settings.cache_exports_dir:  # cached bodies: sizes are free
                job.fragment_sizes = [self._body_size(job, k) for k in range(frags)]
                job.results_size = (sum(job.fragment_sizes) if job.stream == "activities"
                                    else self._body_size(job, None))
            else:
                sample = list(self._records(job, 0, 1000))
                avg = sum(len(r.encode()) for r in sample) / max(1, len(sample))
                job.exact = False
                job.fragment_sizes = [None] * frags
                job.results_size = int(avg * n)
        finally:
            job.prepared.set()

    def _records(self, job: Job, skip: int, limit: int | None, render: bool = True) -> Iterator[str]:
        p = job.params
        if job.stream == "activities":
            if not render:
                for _ in data.iter_activity_keys(self.state.settings, p["start_date"], p["end_date"],
                                                 p["export_type"], p["activity_type"], job.today):
                    yield ""
                return
            lines = data.iter_activity_lines(self.state.settings, p["start_date"], p["end_date"],
                                             p["export_type"], p["activity_type"], job.today, skip, limit)
            yield from _reshaped(self.state.settings, lines, skip, "uid")
            return
        fmt = p["output_format"]
        array = fmt == "JSON" and self.state.settings.contacts_json_style == "array"
        taken = 0
        for n, rec in enumerate(data.iter_contacts(self.state.settings, p["start_date"], p["end_date"],
                                                   p["filters"], job.today)):
            if n < skip:
                continue
            if limit is not None and taken >= limit:
                return
            taken += 1
            keyless = dict(rec, email=None) if _keyless_after(self.state.settings, n) else None
            for one in (rec, keyless) if keyless else (rec,):
                if not render:
                    yield ""
                elif fmt == "CSV":
                    yield data.contact_csv_row(one)
                else:
                    yield data.contact_json(one) + ("" if array else "\n")

    def chunks(self, job: Job, fragment: int | None) -> Iterator[bytes]:
        """The body of one fragment (or of the stitched file) as byte chunks of about 64 KiB.

        With ``cache_exports_dir`` set, a body is rendered once into a file of that folder (keyed by everything
        its bytes depend on) and then read back, so serving it costs no CPU beyond the socket writes.
        """
        path = self._cache_path(job, fragment)
        if path is None:
            yield from self._render_chunks(job, fragment)
            return
        if not path.exists():
            part = path.with_name(f"{path.name}.{secrets.token_hex(4)}.part")
            with open(part, "wb") as out:
                for chunk in self._render_chunks(job, fragment):
                    out.write(chunk)
            os.replace(part, path)  # atomic: a concurrent reader sees the whole file or none
        with open(path, "rb") as body:
            while chunk := body.read(CHUNK):
                yield chunk

    def _body_size(self, job: Job, fragment: int | None) -> int:
        path = self._cache_path(job, fragment)
        if path is None:
            return sum(len(c) for c in self.chunks(job, fragment))
        if not path.exists():
            for _ in self.chunks(job, fragment):  # renders it into the cache
                break
        return path.stat().st_size

    def _cache_path(self, job: Job, fragment: int | None) -> Path | None:
        s = self.state.settings
        if not s.cache_exports_dir:
            return None
        skip, limit = (0, None) if fragment is None else job.bounds[fragment]
        p = job.params
        key = {"code": _data_code_hash(), "stream": job.stream, "today": job.today.isoformat(), "seed": s.seed,
               "skip": skip, "limit": limit, "params": {k: str(v) for k, v in sorted(p.items())}}
        if job.stream == "activities":
            key.update(per_day=s.activities_per_day, extra=s.extra_activity_fields, ahead=s.future_activity_days)
        else:
            key.update(per_day=s.contacts_per_day, json_style=s.contacts_json_style)
        key.update(layout=s.fragment_layout, gzip=s.gzip_bodies, encoding=s.body_encoding, shapes=s.record_shapes,
                   keyless=s.keyless_every)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        folder = Path(s.cache_exports_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{job.stream}-{digest}.body"

    def _render_chunks(self, job: Job, fragment: int | None) -> Iterator[bytes]:
        s = self.state.settings
        if fragment is None and s.gzip_bodies and s.fragment_layout == "standalone":
            # The fragments' gzip files back to back (one multi-member gzip file): the sizes add up.
            return itertools.chain.from_iterable(self._file_chunks(job, k) for k in range(len(job.bounds)))
        if fragment is None or s.fragment_layout != "byte_range":
            return self._file_chunks(job, fragment)
        # One file cut into consecutive byte slices: a header, a record or a character may straddle two.
        size, count = self._body_size(job, None), len(job.bounds)
        return _byte_slice(self._file_chunks(job, None), fragment * size // count, (fragment + 1) * size // count)

    def _file_chunks(self, job: Job, fragment: int | None) -> Iterator[bytes]:
        """One complete file as served: the text in the body encoding, gzip-compressed if asked."""
        s = self.state.settings
        chunks = self._text_chunks(job, fragment)
        if s.body_encoding != "utf-8":
            chunks = (chunk.decode().encode(s.body_encoding, "replace") for chunk in chunks)
        return _gzip(chunks) if s.gzip_bodies else chunks

    def _text_chunks(self, job: Job, fragment: int | None) -> Iterator[bytes]:
        if fragment is None:
            skip, limit = 0, None
        else:
            skip, limit = job.bounds[fragment]
        fmt = job.params["output_format"]
        array = fmt == "JSON" and self.state.settings.contacts_json_style == "array" and job.stream == "contacts"
        buf: list[str] = []
        size = 0
        if fmt == "CSV":
            buf.append(data.contact_csv_header())
        if array:
            buf.append("[")
        first = True
        for rec in self._records(job, skip, limit):
            if array:
                rec = ("\n" if first else ",\n") + rec
                first = False
            buf.append(rec)
            size += len(rec)
            if size >= CHUNK:
                yield "".join(buf).encode()
                buf, size = [], 0
        if array:
            buf.append("\n]\n")
        if buf:
            yield "".join(buf).encode()

    def job_data(self, req: Request, job: Job) -> Response:
        st = self.state
        if job.state != "Completed":
            if job.state in ("Failed", "Canceled"):
                raise ApiError(400, f"Job {job.job_id} ended in state {job.state}: no data is available")
            raise ApiError(400, f"Job {job.job_id} is not completed yet (state: {job.state}); "
                                "data can be retrieved only when the job is Completed")
        if job.gone:
            st.event("job_gone", job_id=job.job_id)
            raise ApiError(410, f"Job {job.job_id} results have expired and were deleted")
        frag_raw = req.query.get("fragment")
        fragment = None
        if frag_raw is not None and st.settings.fragment_param == "refuse":
            st.event("fragment_refused", job_id=job.job_id, fragment=frag_raw)
            raise ApiError(400, "Unknown query parameter: fragment")
        if frag_raw is not None and st.settings.fragment_param == "ignore":
            st.event("fragment_ignored", job_id=job.job_id, fragment=frag_raw)
            frag_raw = None
        if st.settings.hostile_data and job.stream == "activities":
            return hostile_body(st, job)
        if frag_raw is not None:
            try:
                fragment = int(frag_raw)
            except ValueError:
                raise ApiError(400, "Invalid parameter format: fragment") from None
            if not 0 <= fragment < len(job.bounds):
                raise ApiError(400, f"Fragment {fragment} out of range: job {job.job_id} has "
                                    f"{len(job.bounds)} fragments (0-{len(job.bounds) - 1})")
        with st.lock:
            st.stats.data_requests += 1
            if fragment is not None:
                st.stats.fragment_requests += 1
        length = (job.results_size if fragment is None else job.fragment_sizes[fragment]) if job.exact else None
        charset = st.settings.content_charset
        ctype = ("text/csv" if job.params["output_format"] == "CSV" else "application/x-ndjson") + (
            f"; charset={charset}" if charset else "")
        resp = Response(200, content_type=ctype, stream=self.chunks(job, fragment), content_length=length,
                        throttle=True)
        if st.take("drop_fragment"):
            full = length
            if full is None:  # estimated size (big export, chunked encoding)
                full = (job.results_size or 0) // (1 if fragment is None else len(job.bounds))
            resp.drop_after = full // 2
            st.event("fragment_dropped", job_id=job.job_id, fragment=fragment, after_bytes=resp.drop_after,
                     content_length=length)
        else:
            st.event("fragment_served", job_id=job.job_id, fragment=fragment, content_length=length)
        return resp


def _keyless_after(settings: Any, index: int) -> bool:
    return settings.keyless_every > 0 and index % settings.keyless_every == 0


def _reshaped(settings: Any, lines: Iterator[str], skip: int, key: str) -> Iterator[str]:
    """Activity lines under the ``record_shapes`` and ``keyless_every`` readings (unchanged by default)."""
    if settings.record_shapes == "objects" and not settings.keyless_every:
        yield from lines
        return
    for index, line in enumerate(lines, start=skip):
        if settings.record_shapes == "strings":
            record = json.loads(line)
            if record.get("campaigns"):
                record["campaigns"] = [item["name"] for item in record["campaigns"]]
            files = record.get("attachment_file_names")
            if isinstance(files, list) and len(files) == 1:
                record["attachment_file_names"] = files[0]
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        yield line
        if _keyless_after(settings, index):
            record = json.loads(line)
            del record[key]
            yield json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


HOSTILE_KINDS = ("gzip_bomb", "gzip_bomb_encoded", "endless_line", "deep_nesting", "huge_int", "huge_exponent")


def hostile_body(state: SandboxState, job: Job) -> Response:
    """The ``hostile_data`` fault: an activities data body no honest server sends."""
    kind, size = state.settings.hostile_data, state.settings.hostile_bytes
    if kind not in HOSTILE_KINDS:
        raise ApiError(400, f"unknown hostile_data {kind!r}")
    state.event("hostile_data", job_id=job.job_id, data=kind)
    ctype = "application/x-ndjson; charset=utf-8"
    if kind == "deep_nesting":
        return Response(200, b'{"uid":"x","a":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", content_type=ctype)
    if kind == "huge_int":
        return Response(200, b'{"uid":"x","a":' + b"9" * 5000 + b"}\n", content_type=ctype)
    if kind == "huge_exponent":
        return Response(200, b'{"uid":"x","a":1e999999}\n', content_type=ctype)

    def endless() -> Iterator[bytes]:
        piece = b'{"uid":"x","a":"' + b"x" * (CHUNK - 16)
        for _ in range(max(1, size // len(piece))):
            yield piece

    if kind == "endless_line":
        return Response(200, content_type=ctype, stream=endless())

    def blank_lines() -> Iterator[bytes]:  # compresses ~1000x; a reader that skips blank lines reads on
        for _ in range(max(1, size // CHUNK)):
            yield b"\n" * CHUNK

    headers = {"Content-Encoding": "gzip"} if kind == "gzip_bomb_encoded" else {}
    return Response(200, content_type=ctype, stream=_gzip(blank_lines()), headers=headers)


def _byte_slice(chunks: Iterator[bytes], start: int, end: int) -> Iterator[bytes]:
    offset = 0
    for chunk in chunks:
        if offset + len(chunk) > start:
            yield chunk[max(0, start - offset):end - offset]
        offset += len(chunk)
        if offset >= end:
            return


def _gzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(wbits=31)  # a gzip member with mtime 0: the same bytes every time
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()


# ----------------------------------------------------------------------------------------------------------
# request validation
# ----------------------------------------------------------------------------------------------------------
@cache
def _data_code_hash() -> str:
    """Cached bodies are only valid for the generator code that rendered them."""
    return hashlib.sha256(Path(data.__file__).read_bytes()).hexdigest()[:16]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


def _date(body: dict[str, Any], name: str) -> date:
    value = body.get(name)
    if value is None:
        raise ApiError(400, f"Missing required parameter: {_camel(name)}")
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ApiError(400, f"Invalid parameter format: {_camel(name)}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"Invalid parameter format: {_camel(name)}") from None


def _enum(body: dict[str, Any], name: str, allowed: dict[str, str], default: str | None) -> str:
    value = body.get(name)
    if value is None:
        value = default
    if value is None:
        raise ApiError(400, f"Missing required parameter: {_camel(name)}")
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ApiError(400, f"Invalid parameter format: {_camel(name)}")
    return allowed[value.lower()]


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        value = default
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ApiError(400, f"Invalid parameter format: {_camel(name)}")
    return value


def _range(start: date, end: date, today: date, max_days: int, label: str, refuse_future_end: bool) -> None:
    if end < start:
        raise ApiError(400, "Invalid date range: endDate is before startDate")
    if start > today or (refuse_future_end and end > today):
        raise ApiError(400, f"Invalid date range: dates must not be after today ({today.isoformat()})")
    if (end - start).days > max_days:
        raise ApiError(400, f"Invalid date range: the maximum date range for {label} is {max_days} days")


def _activity_params(body: dict[str, Any], today: date, refuse_future_end: bool) -> dict[str, Any]:
    start, end = _date(body, "start_date"), _date(body, "end_date")
    export_type = _enum(body, "export_type", {"snapshot": "snapshot", "delta": "delta"}, None)
    activity_type = _enum(body, "activity_type", {t: t for t in ("email", "meeting", "call", "all")}, "all")
    output_format = _enum(body, "output_format", {"jsonlines": "JSONLines"}, "JSONLines")
    if export_type == "delta":
        _range(start, end, today, 14, "delta exports", refuse_future_end)
    else:
        _range(start, end, today, 365, "snapshot exports", refuse_future_end)
    return {"start_date": start, "end_date": end, "export_type": export_type, "activity_type": activity_type,
            "output_format": output_format}


def _contact_params(body: dict[str, Any], today: date, refuse_future_end: bool) -> dict[str, Any]:
    start, end = _date(body, "start_date"), _date(body, "end_date")
    _range(start, end, today, 365, "contact exports", refuse_future_end)
    filters: dict[str, Any] = {
        "include_historical": _bool(body, "include_historical", True),
        "include_existing": _bool(body, "include_existing", True),
        "is_sourced_by_people_ai": _bool(body, "is_sourced_by_people_ai", False),
    }
    for name in ("country", "state"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"Invalid parameter format: {name}")
        if value:
            filters[name] = value
    output_format = _enum(body, "output_format", {"json": "JSON", "csv": "CSV"}, "CSV")
    return {"start_date": start, "end_date": end, "output_format": output_format, "filters": filters}


def _jwt_like(client_id: str, kind: str, ttl: int) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()

    now = int(time.time())
    payload = {"sub": client_id, "typ": kind, "iat": now, "exp": now + ttl, "jti": secrets.token_hex(8)}
    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(payload)}.{secrets.token_urlsafe(32)}"
