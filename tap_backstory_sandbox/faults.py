"""Fault injection shared by both APIs.

Faults are plain settings (see ``settings.SandboxSettings``), changeable at run time:

=========================  ============================================================================
``error_rate``             fraction of non-auth, non-admin requests answered 502/503 before any handling
                           (seeded RNG: the same request sequence always fails the same way)
``slow_seconds``           delay before answering every non-admin request
``fail_jobs``              the next N created Backstory jobs end ``Failed``
``cancel_jobs``            the next N created Backstory jobs end ``Canceled``
``burst_429``              the next N job creations get 429 ``TooManyRequestsException``
``drop_fragment``          the next N Backstory data responses announce the full Content-Length, send about
                           half of the bytes, then close the connection
``bandwidth_bytes_per_sec`` per-connection cap on Backstory data downloads
``page_errors``            the next N ``/intent/feeds/exports/page`` requests get 502
``enrich_errors``          the next N ``/enrich/contacts/batch`` requests get 502
``token_ttl_seconds``      lifetime of newly issued Backstory tokens (expiry → 401 "Token expired")
=========================  ============================================================================

A fault never turns a client mistake into a 500: injected errors are 502/503/429 with the vendor's error body.
"""

from __future__ import annotations

import time

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
