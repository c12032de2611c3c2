"""The tap's main-thread record path, in process, against the bare decode + encode loop over the same lines.

    uv run python benchmarks/record_path.py EXPORT.body [--n 150000] [--rounds 7]

EXPORT.body: a JSON Lines activities export, e.g. one the benchmark's sandbox rendered into its cache
(`bench.py --cache-dir /tmp/perf-cache`, then the largest `/tmp/perf-cache/activities-*.body`). Its first N
lines are cut into 4 fragments held in memory and read through the tap's own `read_export` → `RecordShaper`
(`fast_line`, as for the direct writer) → `DirectRecordWriter` into a buffer that is dropped at each hand-over,
so no download, disk or stdout is measured. The floor: msgspec decoding each line and encoding a RECORD message
around it, as `bare.py --msgspec` does. CPU time of this thread, best of `--rounds`, alternating the two.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import time
from pathlib import Path

import msgspec

from tap_backstory.formats import Part, RecordShaper, read_export, read_json_records
from tap_backstory.streams.backstory import normalize_activity_shapes
from tap_backstory.writer import ENCODER, DirectRecordWriter

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "tap_backstory/schemas/activities.json").read_text())


class DroppingWriter:
    """What `DirectRecordWriter` needs of the message writer: the buffer, emptied at each hand-over."""

    def __init__(self) -> None:
        self.pending = bytearray()

    def write_pending(self, *, flush: bool = False) -> None:
        self.pending = bytearray()


class NoCounter:
    def increment(self, count: int) -> None:
        return None


def tap_path(fragments: list[bytes]) -> tuple[float, int]:
    shaper = RecordShaper(SCHEMA, "activities", primary_key="uid", normalize=normalize_activity_shapes)

    def parse(body: io.BufferedReader, source: str):  # as `BackstoryExportStream.parse` with the direct writer
        return filter(None, read_json_records(body, source, shaper.shape, shaper.fast_line))

    parts = [Part(io.BytesIO(fragment), f"fragment {number}") for number, fragment in enumerate(fragments)]
    writer = DirectRecordWriter(DroppingWriter(), "activities", None, NoCounter(), lambda: None)  # type: ignore[arg-type]
    started = time.thread_time()
    count = writer.write(read_export(parts, parse, "export job 1"))
    return time.thread_time() - started, count


def bare_loop(fragments: list[bytes]) -> tuple[float, int]:
    decode, encode_into = msgspec.json.Decoder().decode, ENCODER.encode_into
    message = {"type": "RECORD", "stream": "activities", "record": None, "time_extracted": None}
    buffer, count = bytearray(), 0
    started = time.thread_time()
    for fragment in fragments:
        for line in io.BytesIO(fragment):
            message["record"] = decode(line)
            message["time_extracted"] = dt.datetime.now(dt.timezone.utc)
            encode_into(message, buffer, len(buffer))
            buffer += b"\n"
            count += 1
            if len(buffer) >= 1 << 20:
                buffer = bytearray()
    return time.thread_time() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("--n", type=int, default=150_000, help="lines of the export to read (default 150000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the best of each is kept (default 7)")
    args = parser.parse_args()
    with args.export.open("rb") as body:
        lines = [line for _, line in zip(range(args.n), body, strict=False)]
    quarter = len(lines) // 4
    fragments = [b"".join(lines[number * quarter : (number + 1) * quarter]) for number in range(4)]
    del lines
    tap, bare = [], []
    for _ in range(args.rounds):
        seconds, count = tap_path(fragments)
        tap.append(seconds / count * 1e6)
        seconds, count = bare_loop(fragments)
        bare.append(seconds / count * 1e6)
    print(f"tap path {min(tap):.2f} µs per activity, bare loop {min(bare):.2f} µs, ratio {min(tap) / min(bare):.2f}")


if __name__ == "__main__":
    main()
