"""Shared HTTP base for both vendors: one session, retries with backoff, API-aware errors without secrets."""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import re
import threading
import time
import typing as t
from urllib.parse import quote, quote_plus, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

LOGGER = logging.getLogger("tap-backstory")

RETRIABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
DEFAULT_TIMEOUT = (10, 300)  # (connect, read) seconds
CONNECT_RETRY_SECONDS = 25.0
"""How long a host that cannot be connected to (refused, DNS, TLS, connect time-out) is retried before the run
fails: long enough for a blip, short enough that a wrong URL is named within half a minute, not hours."""
MAX_BACKOFF_SECONDS = 60.0
LOOPBACK_NAMES = frozenset({"localhost"})
"""Host names that mean loopback; any other name (even `127.0.0.1.nip.io`) is resolved by DNS, so it is not."""
SERVER_TEXT_LIMIT = 300
"""Characters of a server's error text kept in an error line."""
MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""The most (decoded) bytes of an answer read into memory: a JSON object, a page of rows, an error body. Export
files are streamed by their callers (`stream=True`) and bounded there; this bounds everything else."""
READ_TIMEOUT_ENV_VAR = "TAP_BACKSTORY_READ_TIMEOUT_SECONDS"
"""Caps every read time-out at this many seconds (tests and slow-network drills; unset in production)."""


class TapBackstoryError(Exception):
    """An error the user can act on; its message is one line and carries no secret."""


class ConfigError(TapBackstoryError):
    """The config is invalid; raised before any request."""


class ApiError(TapBackstoryError):
    """The API refused a request (the message holds the method, the path and the server's message)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetriableError(ApiError):
    """A transient failure (429, 5xx, dropped connection): worth waiting and trying again."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


def one_line(exc: BaseException) -> str:
    """An error as one log line (server texts may hold newlines), redacted and with control bytes escaped."""
    return safe_text(str(exc)) or type(exc).__name__


# --- What the tap never repeats: secrets, and control bytes a server sent ---------------------------------
# Every server text (error bodies, messages, ids and values quoted in logs) goes through `safe_text` before it
# reaches an error or a log line: this is the one place the whole tap redacts (docs/reliability.md).

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 6
"""Shorter values are not redacted: replacing every "abc" in a text would hide more than it protects."""
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_pattern: re.Pattern[str] | None = None
_CONTROL_BYTES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0 (but tab and newline, which `safe_text` folds into spaces), DEL, C1, and the line/bidi controls that can
rewrite how a terminal shows a line."""


def register_secret(value: str | None) -> None:
    """Never let `value` (a configured secret, or a token the tap holds) reach a log or an error, in any of the
    forms a server may echo it: as is, URL-encoded (%-quoted or form-encoded), upper or lower hex."""
    global _secret_pattern
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), quote(value, safe="").lower()}
    forms |= {quote(form, safe="") for form in list(forms)}  # encoded twice (a query holding a URL)
    with _secrets_lock:
        if forms <= _secrets:
            return
        _secrets.update(forms)
        ordered = sorted(_secrets, key=len, reverse=True)  # the longest form first: no half-redacted leftovers
        _secret_pattern = re.compile("|".join(re.escape(form) for form in ordered), re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `REDACTED`."""
    pattern = _secret_pattern
    return text if pattern is None else pattern.sub(REDACTED, text)


def escape_controls(text: str) -> str:
    """Control characters shown as `\\xNN` / `\\uNNNN` escapes, so that no server text can drive a terminal."""
    return _CONTROL_BYTES.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def safe_text(text: str, limit: int | None = None) -> str:
    """A text from outside (a server, a file) fit for a log or an error: secrets redacted, whitespace folded into
    single spaces, control characters escaped, cut at `limit` characters. Redaction runs before the folding and
    again after it (the fold may join what a server split)."""
    folded = " ".join(redact(text).split())
    safe = escape_controls(redact(folded))
    return safe if limit is None or len(safe) <= limit else safe[:limit] + "..."


class RedactingFilter(logging.Filter):
    """Applies `safe_text` to every log record of the tap's logger (messages built from server texts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Folded into one line too: a server text with a newline could otherwise forge a log line of its own.
        record.msg, record.args = safe_text(record.getMessage()), None
        return True


LOGGER.addFilter(RedactingFilter())


def path_segment(value: t.Any, what: str) -> str:
    """A server-given id as ONE path segment: %-quoted (no `/`, `?`, `#`, `%` survive), never `.`/`..`,
    and refused when empty or holding control characters (an id no API would make)."""
    text = str(value)
    if not text or text in (".", "..") or _CONTROL_BYTES.search(text) or any(c in text for c in "\t\n\r"):
        shown = text[:80].encode("unicode_escape").decode("ascii")
        raise ApiError(f"{what} '{shown}' is not a usable id (empty, '.', '..' or control characters)")
    return quote(text, safe="")


class UnreachableError(TapBackstoryError):
    """The API's host could not be connected to, within `CONNECT_RETRY_SECONDS`."""


def connect_failure(exc: BaseException) -> str | None:
    """Why a request never reached the server (refused, DNS, TLS, connect time-out), or None when it may have
    (a connection dropped after the request went out, a read time-out): those are not safe to just resend."""
    if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.ConnectTimeout):
        return f"{type(exc).__name__}: {_root_text(exc)}"
    reason = getattr(exc.args[0], "reason", None) if isinstance(exc, requests.ConnectionError) and exc.args else None
    if isinstance(reason, urllib3.exceptions.NewConnectionError):  # refused, unreachable, DNS (NameResolutionError)
        return f"{type(reason).__name__}: {str(reason).split('connection: ')[-1]}"
    return None


def _root_text(exc: BaseException) -> str:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return " ".join(str(reason or exc).split())[:300]


class ConnectRetry:
    """The retry budget of one request against a host that cannot be connected to: backoff until
    `CONNECT_RETRY_SECONDS` have passed since the first failure, then one error naming the URL setting."""

    def __init__(self, url: str, url_setting: str, vendor: str) -> None:
        self.where = f"{vendor} at {urlsplit(url).netloc}"
        self.url_setting = url_setting
        self.first_failure: float | None = None
        self.tries = 0

    def wait_or_raise(self, reason: str) -> None:
        now = time.monotonic()
        self.first_failure = self.first_failure if self.first_failure is not None else now
        self.tries += 1
        left = self.first_failure + CONNECT_RETRY_SECONDS - now
        if left <= 0:
            raise UnreachableError(
                f"cannot connect to {self.where} (check {self.url_setting}): {reason} "
                f"({self.tries} tries in {now - self.first_failure:.0f}s)"
            )
        delay = min(backoff_delay(self.tries - 1), left)
        LOGGER.warning("Cannot connect to %s (%s); retrying in %.1fs", self.where, reason, delay)
        time.sleep(delay)


def is_loopback(url: str) -> bool:
    """True when the URL's host is an IP literal in 127.0.0.0/8 or ::1, or the name `localhost` (any case).
    A DNS name that merely starts with `127.` is resolved elsewhere, so it is not loopback."""
    try:
        host = (urlsplit(url).hostname or "").lower()  # hostname: lower-cased, [::1] brackets removed
    except ValueError:  # a malformed netloc (e.g. an unclosed bracket)
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_message(response: requests.Response) -> str:
    """The vendor's error text: Backstory `{"error","message"}`, ContactBased `{"detail"}`, else the body."""
    return safe_text(_raw_server_message(response), SERVER_TEXT_LIMIT) or "no message"


def _raw_server_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[: SERVER_TEXT_LIMIT * 4] or str(response.reason or "")
    except RecursionError:  # a hostile, deeply nested error body
        return "an error body nested too deeply to read"
    if isinstance(body, dict):
        detail = body.get("message") or body.get("detail")
        if isinstance(detail, list):  # FastAPI validation errors: [{"loc", "msg", "type"}]
            detail = "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail)
        name = body.get("error")
        if detail and name:
            return f"{name}: {detail}"
        if detail or name:
            return str(detail or name)
    return str(body)[: SERVER_TEXT_LIMIT * 4]


def read_json(response: requests.Response, where: str) -> t.Any:
    """An answer's JSON; a body that is not JSON, or nested too deeply to parse, is one data error naming
    `where` (never "unexpected")."""
    try:
        return response.json()
    except RecursionError:
        raise BadAnswerError(f"{where}: the answer is JSON nested too deeply to read") from None
    except ValueError as exc:
        raise BadAnswerError(f"{where}: the answer is not JSON ({safe_text(str(exc), 120)})") from None


def read_bounded(response: requests.Response, where: str) -> None:
    """Read a streamed answer whole into `response.content`, refusing one past `MAX_ANSWER_BYTES` (decoded: a
    gzip bomb counts by what it expands to)."""
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            response.close()
            raise ApiError(
                f"{where}: the answer ({response.status_code}) is larger than {MAX_ANSWER_BYTES} bytes "
                "(MAX_ANSWER_BYTES); not reading it",
                response.status_code,
            )
        chunks.append(chunk)
    response._content = b"".join(chunks)  # what `.content`, `.text` and `.json()` read


class BadAnswerError(TapBackstoryError):
    """A successful answer whose body cannot be read (not JSON, nested too deeply)."""


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def with_timeout_cap(timeout: float | tuple[float, float]) -> float | tuple[float, float]:
    """`timeout` with its read part capped by TAP_BACKSTORY_READ_TIMEOUT_SECONDS, when that is set."""
    cap = os.environ.get(READ_TIMEOUT_ENV_VAR)
    if not cap:
        return timeout
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    return connect, min(read, float(cap))


def backoff_delay(attempt: int, retry_after: float | None = None, base: float = 1.0) -> float:
    """Seconds to wait before try `attempt + 1`: the server's Retry-After, else exponential with jitter."""
    if retry_after is not None:
        return min(retry_after, MAX_BACKOFF_SECONDS)
    return min(MAX_BACKOFF_SECONDS, base * 2**attempt) * random.uniform(0.5, 1.0)


class _CannotConnect(Exception):
    """A request that never reached the server; its message is the reason."""


class ApiClient:
    """One vendor's HTTP API: base URL, authentication, retries and error classification.

    `auth` is a callable that adds credentials to a prepared request (headers only, never the URL) and may
    expose `invalidate()`; a 401 then renews the credential once before failing.
    """

    max_tries = 6

    def __init__(self, base_url: str, auth: t.Any, *, vendor: str, url_setting: str, pool_size: int = 8) -> None:
        scheme, rest = base_url.split(":", 1)
        self.base_url = f"{scheme.lower()}:{rest}".rstrip("/")  # `HTTPS://...` is https
        self.url_setting = url_setting
        self.auth = auth
        self.vendor = vendor
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 2))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "tap-backstory"
        self._lock = threading.Lock()  # fragment downloads share the client
        self.request_count = 0
        """Requests sent (every try counts), for the per-API line at the end of a run."""

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json: t.Any = None,
        params: dict | None = None,
        stream: bool = False,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        retry: bool = True,
    ) -> requests.Response:
        """Send one request, retrying transient failures; return the successful response.

        `retry=False` leaves 429/5xx/dropped connections to the caller; a request that never reached the server
        (refused, DNS, TLS) is still retried, within `CONNECT_RETRY_SECONDS`."""
        attempt = 0
        renewed = False
        connect_retry = ConnectRetry(self.base_url, self.url_setting, self.vendor)
        while True:
            try:
                return self._send_once(method, path, json=json, params=params, stream=stream, timeout=timeout)
            except _CannotConnect as exc:
                connect_retry.wait_or_raise(str(exc))
            except RetriableError as exc:
                attempt += 1
                if not retry or attempt >= self.max_tries:
                    # Keeps its Retry-After: a caller that retries on its own (job creation) waits it out.
                    message = f"{exc} (gave up after {attempt} tries)"
                    raise RetriableError(message, exc.status, exc.retry_after) from None
                delay = backoff_delay(attempt - 1, exc.retry_after)
                LOGGER.warning("%s; retrying in %.1fs (try %d of %d)", exc, delay, attempt + 1, self.max_tries)
                time.sleep(delay)
            except ApiError as exc:
                if exc.status == 401 and not renewed and hasattr(self.auth, "invalidate"):
                    renewed = True
                    LOGGER.info("%s %s answered 401; renewing the credential once", method, path)
                    self.auth.invalidate()
                    continue
                raise

    def request_json(self, method: str, path: str, **kwargs: t.Any) -> t.Any:
        """`request`, then the answer's JSON (`read_json`: a body that is not JSON is one data error)."""
        return read_json(self.request(method, path, **kwargs), f"{self.vendor} {method} {path}")

    def _send_once(self, method: str, path: str, **kwargs: t.Any) -> requests.Response:
        request = requests.Request(method, self.url(path), json=kwargs["json"], params=kwargs["params"])
        prepared = self.session.prepare_request(request)
        prepared = self.auth(prepared)
        with self._lock:
            self.request_count += 1
        try:
            # Always streamed: the body is read here, within MAX_ANSWER_BYTES, unless the caller streams it.
            response = self.session.send(prepared, stream=True, timeout=with_timeout_cap(kwargs["timeout"]))
            if not kwargs["stream"] or response.status_code >= 400:
                read_bounded(response, f"{self.vendor} {method} {path}")
        except TRANSPORT_ERRORS as exc:
            reason = connect_failure(exc)
            if reason is not None:
                raise _CannotConnect(reason) from None
            raise RetriableError(f"{method} {path} failed: {type(exc).__name__}") from None
        self.validate_response(response, method, path)
        return response

    def validate_response(self, response: requests.Response, method: str, path: str) -> None:
        """Classify a response: success passes; 429/5xx are retriable; other errors are fatal and explained."""
        if response.status_code < 400:
            return
        message = server_message(response)
        response.close()
        where = f"{self.vendor} {method} {path}"
        if response.status_code in RETRIABLE_STATUSES:
            raise RetriableError(
                f"{where} answered {response.status_code}: {message}",
                response.status_code,
                retry_after_seconds(response),
            )
        hint = {
            401: f"check {getattr(self.auth, 'settings_hint', 'the credentials')}",
            403: "the account is not allowed to do this",
            404: "not found",
            413: "payload too large",
        }.get(response.status_code)
        suffix = f" ({hint})" if hint else ""
        raise ApiError(f"{where} answered {response.status_code}: {message}{suffix}", response.status_code)
