"""Fault injection shared by both APIs.

Faults are plain settings (see ``settings.SandboxSettings``), changeable at run time:

=========================  ============================================================================
``error_rate``             fraction of non-auth, non-admin requests answered 502/503 before any handling
                           (seeded RNG: the same request sequence always fails the same way)
``slow_seconds``           delay before answering every non-admin request
``job_create_answer_seconds`` delay the answer to a Backstory job creation after the job exists
``export_create_answer_seconds`` delay the answer to a ContactBased export creation after the export exists
``fail_jobs``              the next N created Backstory jobs end ``Failed``
``cancel_jobs``            the next N created Backstory jobs end ``Canceled``
``burst_429``              the next N job creations get 429 ``TooManyRequestsException``
``drop_fragment``          the next N Backstory data responses announce the full Content-Length, send about
                           half of the bytes, then close the connection
``bandwidth_bytes_per_sec`` per-connection cap on Backstory data downloads
``quota_spent_elsewhere``  rows of each capped feed's quota another client spends right after the next
                           ``/organization/feeds`` answer (one-shot, then 0)
``page_errors``            the next N ``/intent/feeds/exports/page`` requests get 502
``enrich_errors``          the next N ``/enrich/contacts/batch`` requests get 502
``token_ttl_seconds``      lifetime of newly issued Backstory tokens (expiry → 401 "Token expired")
``corrupt_jsonl``          the Nth activities data response from now has its second JSON line cut in half
``corrupt_csv``            the Nth CSV contacts data response from now has ``total_inbound`` = ``12x`` in
                           its second data row
``unexpected_envelope``    the Nth ``/intent/feeds/exports/page`` response from now holds its rows under
                           ``records`` (a key the docs do not name)
``export_gone``            the Nth ``/intent/feeds/exports/page`` request from now finds its export gone
                           (410, then 404); with ``search_gone_with_export`` its saved search goes too
``hostile_error_text``     every error body echoes the request's credentials and holds ESC/BEL bytes
``gone_jobs``              the next N created Backstory jobs end Completed but their data answers 410
``hostile_data``           activities data bodies replaced by hostile content (gzip bombs by magic bytes or
                           Content-Encoding, an endless line, deep nesting, huge numbers)
``hostile_fragments``      Completed jobs announce this many fragments (e.g. 1000000000)
``hostile_job_id``         new jobs get ids starting with this text (e.g. ``../../auth/v1/tokens?job=``)
=========================  ============================================================================

The three bad-data faults are *position* faults: they hit one response, then reset to 0. A corrupted body
is served whole with its exact Content-Length, so only parsing it can tell.

A fault never turns a client mistake into a 500: injected errors are 502/503/429 with the vendor's error body.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus

from .state import Response, SandboxState


def maybe_inject_error(state: SandboxState, api: str, path: str) -> Response | None:
    """``error_rate``: answer 502 or 503 with the API's error body, or None to handle the request normally."""
    rate = state.settings.error_rate
    if rate <= 0:
        return None
    with state.lock:
        hit = state.rng.random() < rate
        status = 502 if state.rng.random() < 0.5 else 503
        if hit:
            state.stats.faults_injected["error_rate"] += 1
    if not hit:
        return None
    state.event("injected_error", status=status, api=api, path=path)
    text = "Bad gateway (injected fault)" if status == 502 else "Service temporarily unavailable (injected fault)"
    if api == "backstory":
        name = "BadGatewayException" if status == 502 else "ServiceUnavailableException"
        return Response.json(status, {"error": name, "message": text})
    return Response.json(status, {"detail": text})


def slow_down(state: SandboxState) -> None:
    if state.settings.slow_seconds > 0:
        time.sleep(state.settings.slow_seconds)


class Throttle:
    """Token-bucket-free pacing: after each write, sleep until ``bytes_sent / rate`` seconds have passed."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    def chunk_size(self) -> int:
        return max(1024, self.rate // 20) if self.rate > 0 else 64 * 1024

    def account(self, n: int) -> None:
        if self.rate <= 0:
            return
        self.sent += n
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


POSITION_FAULTS = ("corrupt_jsonl", "corrupt_csv", "unexpected_envelope", "export_gone")
_DATA_PATH = re.compile(r"/pull/v1/export/(activities|contacts)/jobs/[^/]+/data/?")


def position_hit(state: SandboxState, name: str) -> bool:
    """A position fault's hit, for the API modules (see ``_position_hit``)."""
    return _position_hit(state, name)


def _position_hit(state: SandboxState, name: str) -> bool:
    """Count one response of this fault's kind; True (and the fault turns off) when it is the Nth."""
    with state.lock:
        target = getattr(state.settings, name)
        if target <= 0:
            return False
        state.fault_seen[name] += 1
        if state.fault_seen[name] < target:
            return False
        setattr(state.settings, name, 0)
        state.fault_seen[name] = 0
        state.stats.faults_injected[name] += 1
        return True


def maybe_corrupt(state: SandboxState, api: str, method: str, path: str, resp: Response) -> Response:
    """The bad-data faults: a successful response of the right kind, corrupted (or ``resp`` unchanged)."""
    if resp.status != 200:
        return resp
    match = _DATA_PATH.fullmatch(path) if api == "backstory" and method == "GET" else None
    if match and resp.stream is not None and resp.drop_after is None:
        if match.group(1) == "activities" and _position_hit(state, "corrupt_jsonl"):
            return _corrupt_json_line(state, path, resp)
        if match.group(1) == "contacts" and resp.content_type.startswith("text/csv") and _position_hit(
                state, "corrupt_csv"):
            return _corrupt_csv_number(state, path, resp)
        return resp
    if (api == "contactbased" and method == "POST" and path.rstrip("/") == "/intent/feeds/exports/page"
            and _position_hit(state, "unexpected_envelope")):
        page = json.loads(resp.body)
        rows = page.pop(state.settings.page_envelope)
        page["records"] = rows
        state.event("data_corrupted", fault="unexpected_envelope", export_id=page.get("export_id"),
                    page=page.get("page"))
        return Response(200, json.dumps(page).encode(), headers=resp.headers)
    return resp


def _whole(resp: Response, body: bytes) -> Response:
    return Response(200, body, content_type=resp.content_type, headers=resp.headers)


def _corrupt_json_line(state: SandboxState, path: str, resp: Response) -> Response:
    assert resp.stream is not None
    lines = b"".join(resp.stream).split(b"\n")
    k = 1 if len(lines) > 2 else 0  # the second line (the body ends with a newline: last item is empty)
    lines[k] = lines[k][: len(lines[k]) // 2]
    state.event("data_corrupted", fault="corrupt_jsonl", path=path, line=k + 1)
    return _whole(resp, b"\n".join(lines))


def _corrupt_csv_number(state: SandboxState, path: str, resp: Response) -> Response:
    assert resp.stream is not None
    rows = list(csv.reader(io.StringIO(b"".join(resp.stream).decode("utf-8"), newline="")))
    column = rows[0].index("total_inbound")
    k = 2 if len(rows) > 2 else len(rows) - 1  # the second data row (the first if there is only one)
    rows[k][column] = "12x"
    out = io.StringIO()
    writer = csv.writer(out)
    for n, row in enumerate(rows):
        writer.writerow(row)
        if n == k:  # the physical line where that record ends (cells may hold newlines)
            line = out.getvalue().count("\n")
    state.event("data_corrupted", fault="corrupt_csv", path=path, line=line, column="total_inbound", value="12x")
    return _whole(resp, out.getvalue().encode("utf-8"))


def maybe_hostile(state: SandboxState, headers: Any, body: bytes, resp: Response) -> Response:
    """``hostile_error_text``: an error body whose message echoes the request's credentials (raw, %-encoded,
    form-encoded) wrapped in ESC/BEL control bytes (or ``resp`` unchanged)."""
    if not state.settings.hostile_error_text or resp.status < 400 or resp.stream is not None:
        return resp
    try:
        payload = json.loads(resp.body)
    except ValueError:
        return resp
    if not isinstance(payload, dict):
        return resp
    secrets = [headers.get("X-API-Key") or "", (headers.get("Authorization") or "")[len("Bearer "):]]
    form = parse_qs(body.decode("utf-8", "replace")) if b"client_secret=" in body else {}
    secrets += form.get("client_secret", [])
    echo = " ".join(f"{s} {quote(s, safe='')} {quote_plus(s)}" for s in secrets if s)
    key = "message" if "message" in payload else "detail"
    payload[key] = f"\x1b[2J\x1b[31m{payload.get(key)}\x07 (request credentials: {echo})\x1b[0m\n\x1b]0;pwned\x07"
    state.stats.faults_injected["hostile_error_text"] += 1
    return Response(resp.status, json.dumps(payload).encode(), content_type=resp.content_type, headers=resp.headers)
