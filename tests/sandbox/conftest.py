"""Fixtures: an in-process Sandbox per test (fast job lifecycle) and small HTTP helpers."""

from __future__ import annotations

import functools
import time

import pytest
import requests

from tap_backstory_sandbox import DEMO_CREDENTIALS, Sandbox
from tests import conftest

# A job lifecycle of a few hundredths of a second.
fast_sandbox = functools.partial(conftest.sandbox, job_queue_seconds=0.02, job_run_seconds=0.02)


@pytest.fixture
def sb():
    with fast_sandbox() as sandbox:
        yield sandbox


def token(sb: Sandbox, kind: str = "activity") -> dict[str, str]:
    r = requests.post(sb.backstory_url + "/auth/v1/tokens", timeout=10, data={
        "grant_type": "client_credentials", "client_id": DEMO_CREDENTIALS[f"{kind}_client_id"],
        "client_secret": DEMO_CREDENTIALS[f"{kind}_client_secret"]})
    assert r.status_code == 200, r.text
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def create_job(sb: Sandbox, headers, stream: str = "activities", **body) -> requests.Response:
    if stream == "activities":
        body = {"start_date": "2026-02-01", "end_date": "2026-02-07", "export_type": "snapshot",
                "activity_type": "all", "output_format": "JSONLines", **body}
    else:
        body = {"start_date": "2026-02-01", "end_date": "2026-02-07", **body}
    return requests.post(f"{sb.backstory_url}/pull/v1/export/{stream}/jobs", json=body, headers=headers,
                         timeout=10)


def wait_job(sb: Sandbox, headers, job_id, stream: str = "activities", until=("Completed", "Failed", "Canceled"),
             timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = requests.get(f"{sb.backstory_url}/pull/v1/export/{stream}/jobs/{job_id}", headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        if r.json()["state"] in until or time.monotonic() > deadline:
            return r.json()
        time.sleep(0.02)


def data_url(sb: Sandbox, job_id, stream: str = "activities") -> str:
    return f"{sb.backstory_url}/pull/v1/export/{stream}/jobs/{job_id}/data"


def cb(sb: Sandbox, method: str, path: str, json=None, key: str | None = None, **kw) -> requests.Response:
    headers = {"X-API-Key": key if key is not None else DEMO_CREDENTIALS["contactbased_api_key"]}
    return requests.request(method, sb.contactbased_url + path, json=json, headers=headers, timeout=20, **kw)
