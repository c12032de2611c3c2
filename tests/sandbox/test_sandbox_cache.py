"""`cache_exports_dir`: an export body is rendered once into a file, then served byte-identical from it."""

from __future__ import annotations

import requests

from tap_backstory_sandbox import Sandbox
from tests.sandbox.conftest import create_job, data_url, fast_sandbox, token, wait_job


def _download_all(sb: Sandbox, stream: str = "activities", **body) -> tuple[dict, list[bytes]]:
    headers = token(sb, "activity" if stream == "activities" else "object")
    job = wait_job(sb, headers, create_job(sb, headers, stream, **body).json()["job_id"], stream)
    assert job["state"] == "Completed"
    bodies = []
    for k in range(job["fragments"]):
        r = requests.get(data_url(sb, job["job_id"], stream), params={"fragment": k}, headers=headers, timeout=10)
        assert r.status_code == 200
        assert int(r.headers["Content-Length"]) == len(r.content)
        bodies.append(r.content)
    stitched = requests.get(data_url(sb, job["job_id"], stream), headers=headers, timeout=10)
    assert int(stitched.headers["Content-Length"]) == job["results_size"]
    if stream == "activities":
        assert stitched.content == b"".join(bodies)
    return job, bodies


def test_cached_bodies_equal_rendered_bodies_and_are_reused(tmp_path):
    with fast_sandbox(activities_per_day=50, fragments=4) as plain:
        _, expected = _download_all(plain)
    cache = tmp_path / "cache"
    with fast_sandbox(activities_per_day=50, fragments=4, cache_exports_dir=str(cache)) as sb:
        job, first = _download_all(sb)
        files = sorted(cache.iterdir())
        assert len(files) == 5  # four fragments and the stitched body
        stamps = {f: f.stat().st_mtime_ns for f in files}
        _, second = _download_all(sb)  # a second job for the same window: served from the same files
        assert sorted(cache.iterdir()) == files
        assert {f: f.stat().st_mtime_ns for f in files} == stamps
    assert first == second == expected
    assert job["results_size"] == sum(len(b) for b in expected)


def test_cache_key_follows_the_data_settings(tmp_path):
    cache = str(tmp_path)
    with fast_sandbox(activities_per_day=10, fragments=1, cache_exports_dir=cache) as sb:
        _, small = _download_all(sb)
        sb.configure(activities_per_day=20)
        _, bigger = _download_all(sb)
        sb.configure(extra_activity_fields=True)
        _, extra = _download_all(sb)
    assert len(small[0]) < len(bigger[0]) < len(extra[0])
    assert b'"sentiment"' in extra[0] and b'"sentiment"' not in bigger[0]


def test_cached_contacts_csv(tmp_path):
    with fast_sandbox(contacts_per_day=5, fragments=2) as plain:
        _, expected = _download_all(plain, "contacts", output_format="CSV")
    with fast_sandbox(contacts_per_day=5, fragments=2, cache_exports_dir=str(tmp_path)) as sb:
        _, cached = _download_all(sb, "contacts", output_format="CSV")
    assert cached == expected
