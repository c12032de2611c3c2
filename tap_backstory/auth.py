"""Credentials: Backstory OAuth2 client-credentials tokens (one per key type) and the ContactBased API key."""

from __future__ import annotations

import threading
import time

import requests

from tap_backstory.client import (
    DEFAULT_TIMEOUT,
    LOGGER,
    RETRIABLE_STATUSES,
    TRANSPORT_ERRORS,
    ApiError,
    BadAnswerError,
    ConnectRetry,
    backoff_delay,
    connect_failure,
    read_bounded,
    read_json,
    register_secret,
    retry_after_seconds,
    server_message,
    with_timeout_cap,
)

TOKEN_PATH = "/auth/v1/tokens"
EXPIRY_MARGIN_FRACTION = 0.1
"""Renew when less than 10% of a token's lifetime (at most 5 minutes) is left: a request signed just
before expiry can still arrive after it, and exports poll for hours."""


class BackstoryTokenAuth:
    """Bearer tokens for one Backstory key pair (Activity or Object: each key works for one API type).

    Thread-safe: fragment downloads share it. Tokens are fetched lazily, renewed before they expire, and
    renewed once more when the API answers 401 (`invalidate`).
    """

    max_tries = 5

    def __init__(self, api_url: str, client_id: str, client_secret: str, key_type: str) -> None:
        self.token_url = api_url.rstrip("/") + TOKEN_PATH
        self._client_id = client_id
        self._client_secret = client_secret
        register_secret(client_secret)
        self.key_type = key_type
        self.settings_hint = f"{key_type.lower()}_client_id and {key_type.lower()}_client_secret"
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()
        self._session = requests.Session()
        self.request_count = 0

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self) -> None:
        LOGGER.info("Requesting a Backstory access token for the %s key", self.key_type)
        body = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        connect_retry = ConnectRetry(self.token_url, "api_url", "the Backstory token endpoint")
        attempt = 0
        while attempt < self.max_tries:
            self.request_count += 1  # under the lock of `token`
            try:
                response = self._session.post(
                    self.token_url, data=body, timeout=with_timeout_cap(DEFAULT_TIMEOUT), stream=True
                )
                read_bounded(response, "Backstory token request")
            except TRANSPORT_ERRORS as exc:
                reason = connect_failure(exc)
                if reason is not None:  # not counted as a try: bounded by time instead
                    connect_retry.wait_or_raise(reason)
                    continue
                failure, retry_after = f"failed: {type(exc).__name__}", None
            else:
                if response.ok:
                    payload = read_json(response, "Backstory token request")
                    token = payload.get("access_token") if isinstance(payload, dict) else None
                    if not isinstance(token, str) or not token:
                        raise BadAnswerError("Backstory token request: the answer holds no access_token")
                    self._token = token
                    register_secret(self._token)  # before anything can log or raise with it
                    try:
                        lifetime = max(1.0, float(payload.get("expires_in") or 7200))
                    except (TypeError, ValueError):  # not a number: the documented two hours
                        lifetime = 7200.0
                    margin = min(300.0, lifetime * EXPIRY_MARGIN_FRACTION)
                    self._renew_at = time.monotonic() + lifetime - margin
                    return
                if response.status_code not in RETRIABLE_STATUSES:
                    raise ApiError(
                        f"Backstory refused the {self.key_type} key pair ({response.status_code}: "
                        f"{server_message(response)}); check {self.key_type.lower()}_client_id and "
                        f"{self.key_type.lower()}_client_secret",
                        response.status_code,
                    )
                failure, retry_after = f"answered {response.status_code}", retry_after_seconds(response)
            delay = backoff_delay(attempt, retry_after)
            LOGGER.warning("Backstory token request %s; retrying in %.1fs", failure, delay)
            time.sleep(delay)
            attempt += 1
        raise ApiError(f"Backstory token request for the {self.key_type} key kept failing ({failure})")


class ApiKeyAuth:
    """ContactBased: the API key in the `X-API-Key` header (never in the URL, so it never reaches logs)."""

    settings_hint = "contactbased_api_key"

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key
        register_secret(api_key)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["X-API-Key"] = self._api_key
        return request
