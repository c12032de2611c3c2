"""The bare extractor: the floor any Backstory connector pays, in plain Python (stdlib `json` + requests).

    python benchmarks/bare.py CONFIG.json [--prewarm] [--msgspec] > /dev/null

token → create one snapshot export job → poll → download the fragments one by one (each into a temp file) →
`json.loads` each line → write one Singer RECORD line per record to stdout. No Singer SDK, no schema, no state,
no retries. `--msgspec`: the same loop with msgspec instead of `json`. Prints `records=N bytes=B` on stderr.
`--prewarm` stops once the job is Completed: a sandbox with `cache_exports_dir` has then rendered the export
into its cache.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import tempfile
import time

import msgspec
import requests


def main() -> None:
    with open(sys.argv[1]) as fh:
        config = json.load(fh)
    api = config["api_url"]
    session = requests.Session()
    token = session.post(
        f"{api}/auth/v1/tokens",
        data={
            "grant_type": "client_credentials",
            "client_id": config["activity_client_id"],
            "client_secret": config["activity_client_secret"],
        },
        timeout=30,
    ).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    jobs = f"{api}/pull/v1/export/activities/jobs"
    body = {
        "start_date": config["start_date"],
        "end_date": config["end_date"],
        "activity_type": "all",
        "output_format": "JSONLines",
        "export_type": "snapshot",
    }
    job = session.post(jobs, json=body, timeout=30).json()
    while job["state"] != "Completed":
        if job["state"] in ("Failed", "Canceled"):
            raise SystemExit(f"job {job['job_id']} ended {job['state']}")
        time.sleep(float(config.get("job_poll_interval_seconds", 0.1)))
        job = session.get(f"{jobs}/{job['job_id']}", timeout=30).json()

    if "--prewarm" in sys.argv:
        print("records=0 bytes=0", file=sys.stderr)
        return
    fast = "--msgspec" in sys.argv  # the same loop with msgspec: the floor with the fastest codec
    out = sys.stdout.buffer if fast else sys.stdout
    decode, encode = msgspec.json.Decoder().decode, msgspec.json.Encoder().encode
    records = total_bytes = 0
    for fragment in range(int(job.get("fragments") or 1)):
        with tempfile.TemporaryFile() as tmp:
            with session.get(f"{jobs}/{job['job_id']}/data", params={"fragment": fragment}, stream=True,
                             timeout=(10, 600)) as response:
                response.raise_for_status()
                shutil.copyfileobj(response.raw, tmp, 1 << 20)
            total_bytes += tmp.tell()
            tmp.seek(0)
            if fast:
                for line in tmp:
                    message = {
                        "type": "RECORD",
                        "stream": "activities",
                        "record": decode(line),
                        "time_extracted": dt.datetime.now(dt.timezone.utc),
                    }
                    out.write(encode(message) + b"\n")
                    records += 1
                continue
            for line in tmp:
                record = json.loads(line)
                message = {
                    "type": "RECORD",
                    "stream": "activities",
                    "record": record,
                    "time_extracted": dt.datetime.now(dt.timezone.utc).isoformat(),
                }
                out.write(json.dumps(message, separators=(",", ":")) + "\n")
                records += 1
    out.flush()
    print(f"records={records} bytes={total_bytes}", file=sys.stderr)


if __name__ == "__main__":
    main()
