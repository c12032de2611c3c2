"""BATCH line workers (tap_backstory/line_workers.py): real worker processes read JSON Lines exactly as the tap's
own process does, chunk after chunk, in order: the same records, `_extra`, keyless records, warnings and errors.

Each case reads one body twice: through `LineWorkers` (small chunks, so a body is many chunks over two workers)
and through `read_json_records` in this process, the path every record took before the workers (and still
takes in RECORD mode). The end-to-end BATCH runs, with and without workers, are in tests/test_batch.py.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from pathlib import Path

import pytest

from tap_backstory.activity_shapes import normalize_activity_shapes
from tap_backstory.batchfile import BATCH_ENCODER, EncodedLines
from tap_backstory.client import TapBackstoryError
from tap_backstory.formats import DataError, RecordShaper, read_json_records
from tap_backstory.line_workers import LineWorkers, _worker_environment, worker_count
from tap_backstory_sandbox.data import iter_activity_lines
from tap_backstory_sandbox.settings import SandboxSettings

SCHEMA = json.loads((Path(__file__).parent.parent / "tap_backstory/schemas/activities.json").read_text())
SOURCE = "export job 7"


def new_shaper() -> RecordShaper:
    return RecordShaper(SCHEMA, "activities", primary_key="uid", normalize=normalize_activity_shapes)


def activity_lines(days: int = 10, **settings) -> list[bytes]:
    sandbox = SandboxSettings(activities_per_day=20, **settings)
    start = dt.date(2026, 3, 1)
    lines = iter_activity_lines(sandbox, start, start + dt.timedelta(days=days - 1), "snapshot")
    return [line.encode() for line in lines]


def reader(body: bytes) -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(body))


def in_process(shaper: RecordShaper):
    def parse(body, source):
        return filter(None, read_json_records(body, source, shaper.shape, shaper.fast_line))

    return parse


def expected_lines(body: bytes) -> tuple[bytes, int, RecordShaper]:
    """The BATCH lines this process makes of `body`, how many, and its shaper (keyless count)."""
    shaper = new_shaper()
    records = list(in_process(shaper)(reader(body), SOURCE))
    return b"".join(BATCH_ENCODER.encode(record) + b"\n" for record in records), len(records), shaper


def through_workers(workers: LineWorkers, body: bytes, shaper: RecordShaper) -> tuple[bytes, int, list[int]]:
    blocks = list(workers.records(reader(body), SOURCE, in_process(shaper)))
    assert all(type(block) is EncodedLines for block in blocks)
    return b"".join(bytes(block.data) for block in blocks), sum(block.count for block in blocks), [
        block.count for block in blocks
    ]


@pytest.fixture
def shaper() -> RecordShaper:
    return new_shaper()


@pytest.fixture
def workers(shaper):
    with LineWorkers(shaper, 2, chunk_bytes=4096) as pool:
        yield pool


def test_workers_give_the_very_bytes_of_the_in_process_reader_over_many_chunks(workers, shaper):
    lines = activity_lines(record_shapes="strings")  # campaigns and attachments normalised on the way
    # A blank line, a line much longer than a chunk, and a last line without its newline.
    long = json.loads(lines[5])
    long["subject"] = "x" * 20_000
    lines[5] = json.dumps(long).encode() + b"\n"
    body = b"".join(lines[:100]) + b"\n" + b"".join(lines[100:]).rstrip(b"\n")
    expected, count, _ = expected_lines(body)

    data, got, blocks = through_workers(workers, body, shaper)

    assert count == len(lines) == 200 and got == count
    assert len(blocks) > 20  # many chunks, answered by both workers in turn
    assert data == expected
    assert all(json.loads(line)["timestamp"].endswith("Z") for line in data.splitlines())


def test_undeclared_keys_and_keyless_records_are_handled_and_told_once(workers, shaper, caplog):
    lines = activity_lines(extra_activity_fields=True)  # every record holds `sentiment`
    keyless = [json.dumps({k: v for k, v in json.loads(line).items() if k != "uid"}).encode() + b"\n"
               for line in lines[::40]]
    body = b"".join(lines[:60] + keyless + lines[60:])
    expected, count, reference = expected_lines(body)
    caplog.clear()  # the in-process reader's own warnings

    with caplog.at_level(logging.WARNING, logger="tap-backstory"):
        data, got, _ = through_workers(workers, body, shaper)

    assert data == expected and got == count == len(lines)
    assert all("sentiment" in json.loads(line)["_extra"] for line in data.splitlines())
    assert shaper.keyless == reference.keyless == len(keyless)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("does not declare (sentiment)" in w for w in warnings) == 1  # both workers met it: said once
    assert sum("without `uid`" in w for w in warnings) == 1


@pytest.mark.parametrize(
    ("bad", "reason"),
    [(b'{"uid": "A-1", "subject": "cut', "is not valid JSON"), (b'{"uid": "A-2", "duration": 1e999}', "out of range")],
)
def test_a_bad_line_fails_with_the_in_process_message_and_line_number(workers, shaper, bad, reason):
    lines = activity_lines()
    body = b"".join(lines[:150]) + bad + b"\n" + b"".join(lines[150:])
    with pytest.raises(DataError) as here:
        expected_lines(body)
    with pytest.raises(DataError) as there:
        through_workers(workers, body, shaper)
    assert str(there.value) == str(here.value)
    assert there.value.line == here.value.line == 151
    assert f"{SOURCE}: line 151 " in str(there.value) and reason in str(there.value)


def test_a_read_stopped_early_leaves_the_workers_answering_the_next_body_in_order(workers, shaper):
    lines = activity_lines()
    first = workers.records(reader(b"".join(lines)), SOURCE, in_process(shaper))
    next(first)  # some chunks are still with the workers
    first.close()
    body = b"".join(reversed(lines))
    assert through_workers(workers, body, shaper)[0] == expected_lines(body)[0]


def test_a_json_document_is_read_in_process_as_one_record_per_block(workers, shaper):
    records = [json.loads(line) for line in activity_lines(days=1)]
    body = json.dumps(records).encode()
    data, count, blocks = through_workers(workers, body, shaper)
    assert data == expected_lines(body)[0] and count == len(records) and set(blocks) == {1}


def test_a_worker_that_dies_ends_the_read_in_one_line(shaper):
    with LineWorkers(shaper, 2, chunk_bytes=4096) as pool:
        pool._workers[1].process.kill()
        with pytest.raises(TapBackstoryError) as error:
            through_workers(pool, b"".join(activity_lines()), shaper)
    assert "a BATCH line worker ended" in str(error.value) and "\n" not in str(error.value)
    assert all(worker.process.poll() is not None for worker in pool._workers)


def test_workers_end_with_the_pool_and_get_no_tap_variable(shaper, monkeypatch):
    monkeypatch.setenv("TAP_BACKSTORY_CLIENT_SECRET", "s3cr3t-value")
    assert "TAP_BACKSTORY_CLIENT_SECRET" not in _worker_environment()
    with LineWorkers(shaper, 2) as pool:
        processes = [worker.process for worker in pool._workers]
        assert all(process.poll() is None for process in processes)
    assert all(process.returncode == 0 for process in processes)


def test_worker_count_reads_its_variable(monkeypatch):
    monkeypatch.setenv("TAP_BACKSTORY_BATCH_WORKERS", "0")
    assert worker_count() == 0
    monkeypatch.setenv("TAP_BACKSTORY_BATCH_WORKERS", "3")
    assert worker_count() == 3
    monkeypatch.setenv("TAP_BACKSTORY_BATCH_WORKERS", "two")
    with pytest.raises(TapBackstoryError, match="TAP_BACKSTORY_BATCH_WORKERS must be a whole number"):
        worker_count()
