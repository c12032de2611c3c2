"""Both engines in-process, against fakes of the vendors (tests/fake_vendors.py) and a fake clock.

The engine code is the real one (`jobs.ExportJobs`, `intent.IntentFeeds`, `intent.ContactEnricher`, and the real
`ApiClient` under them); only the vendors and time are fake, so each test takes milliseconds. The end-to-end
tests (test_activities.py, test_reliability.py, ...) prove the same through the executable and the sandbox.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging

import pytest

from tap_backstory.client import TapBackstoryError
from tap_backstory.intent import ContactBasedOptions, ContactEnricher, IntentFeeds
from tap_backstory.jobs import ORPHAN_CLOCK_SKEW, ExportJobs, JobSpec
from tap_backstory.windows import RETENTION, PendingJob, Window
from tests.conftest import TODAY
from tests.fake_vendors import FakeBackstory, FakeClock, FakeContactBased, error, json_lines

LOG = logging.getLogger("test-engines")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(TODAY)


@pytest.fixture
def backstory(clock: FakeClock) -> FakeBackstory:
    return FakeBackstory(clock)


def window(n: int) -> Window:
    """The n-th 7-day window of January 2026."""
    start = dt.date(2026, 1, 1) + dt.timedelta(days=7 * n)
    return Window(start, start + dt.timedelta(days=6))


def body(w: Window) -> dict:
    return {"start_date": w.start.isoformat(), "end_date": w.end.isoformat(), "export_type": "snapshot"}


def spec(n: int, resume: PendingJob | None = None) -> JobSpec:
    return JobSpec(window(n), "snapshot", body(window(n)), resume)


def engine(service: FakeBackstory, clock: FakeClock, **options: object) -> ExportJobs:
    settings: dict = {
        "max_concurrent_jobs": 2,
        "fragment_concurrency": 2,
        "poll_interval": 5.0,
        "job_timeout": 3600.0,
        **options,
    }
    return ExportJobs(service.api(), "activities", parse=json_lines, clock=clock, log=LOG, **settings)


def read_all(jobs: ExportJobs, specs: list[JobSpec]) -> list[tuple[Window, str, list[dict]]]:
    return [(s.window, job_id, list(records)) for s, job_id, records in jobs.run(specs)]


def windows_of(records: list[dict]) -> set[str]:
    return {record["window"] for record in records}


# --- Backstory: slots, pipelining, order ----------------------------------------------------------------


@pytest.mark.parametrize("max_jobs", [1, 2, 3])
def test_our_jobs_never_exceed_max_concurrent_jobs_and_fill_every_slot(backstory, clock, max_jobs):
    durations = [50, 10, 80, 5, 5, 40, 20, 5]  # later windows often finish first
    backstory.run_seconds = lambda b: durations[(dt.date.fromisoformat(b["start_date"]) - window(0).start).days // 7]

    out = read_all(engine(backstory, clock, max_concurrent_jobs=max_jobs), [spec(n) for n in range(8)])

    assert [w for w, _, _ in out] == [window(n) for n in range(8)]
    alive_at_creation = [alive for _, alive in backstory.created_while]
    assert max(alive_at_creation) == max_jobs  # every slot used, never one more
    assert len(backstory.jobs) == 8


def test_output_is_in_window_order_and_the_next_job_runs_while_a_window_is_read(backstory, clock):
    backstory.run_seconds = lambda b: 100.0 if b["start_date"] == window(0).start.isoformat() else 10.0
    jobs = engine(backstory, clock, max_concurrent_jobs=1)
    seen = []
    for s, job_id, records in jobs.run([spec(n) for n in range(3)]):
        later_job_exists = [bool(backstory.jobs_of(window(n).start.isoformat())) for n in range(3)]
        rows = list(records)
        seen.append((s.window, later_job_exists))
        assert windows_of(rows) == {s.window.start.isoformat()}
        assert [(r["fragment"], r["row"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]  # fragment order
        assert {r["job"] for r in rows} == {job_id}

    # While window 0 was read, window 1's job was already created (pipelining); window 2's only after.
    assert seen == [
        (window(0), [True, True, False]),
        (window(1), [True, True, True]),
        (window(2), [True, True, True]),
    ]


def test_a_window_finishing_early_is_held_back_until_the_earlier_ones_are_out(backstory, clock):
    backstory.run_seconds = lambda b: {window(0).start.isoformat(): 300.0}.get(b["start_date"], 5.0)

    out = read_all(engine(backstory, clock, max_concurrent_jobs=3), [spec(n) for n in range(3)])

    assert [w for w, _, _ in out] == [window(0), window(1), window(2)]
    assert 300 <= clock.elapsed < 300 * 1.3  # the slow job is seen Completed within ~25 % of its run time


# --- Backstory: failed jobs, refusals, time-outs --------------------------------------------------------


def test_a_failed_job_is_replaced_by_a_new_one_for_the_same_window(backstory, clock):
    backstory.outcomes.extend([("Failed", "worker lost"), ("Canceled", "maintenance")])

    out = read_all(engine(backstory, clock, max_concurrent_jobs=1), [spec(0)])

    failed, canceled, completed = backstory.jobs_of(window(0).start.isoformat())
    assert (failed.outcome, canceled.outcome, completed.outcome) == ("Failed", "Canceled", "Completed")
    assert out[0][1] == completed.job_id and len(out[0][2]) == 4


def test_a_window_whose_jobs_keep_failing_fails_the_run_naming_the_job_and_message_after_the_earlier_windows(
    backstory, clock
):
    backstory.run_seconds = lambda b: 5.0 if b["start_date"] == window(0).start.isoformat() else 20.0
    emitted = []
    backstory.outcomes.append(("Completed", None))  # window 0
    backstory.outcomes.extend([("Failed", "out of disk")] * 3)  # window 1, all its tries

    with pytest.raises(TapBackstoryError) as raised:
        for s, _, records in engine(backstory, clock, max_concurrent_jobs=1).run([spec(0), spec(1)]):
            emitted.append((s.window, len(list(records))))

    last = backstory.jobs_of(window(1).start.isoformat())[-1]
    assert emitted == [(window(0), 4)]
    assert len(backstory.jobs_of(window(1).start.isoformat())) == 3  # the first job and two retries
    assert f"export job {last.job_id} for window {window(1)}" in str(raised.value)
    assert "ended Failed (out of disk); gave up after 3 jobs" in str(raised.value)


@pytest.mark.parametrize(("retry_after", "waited"), [("45", 45), ("600", 60)])
def test_a_429_on_creation_is_waited_out_for_its_retry_after_capped_like_a_poll(backstory, clock, retry_after, waited):
    backstory.refusals.append(error(429, "slow down", **{"Retry-After": retry_after}))

    out = read_all(engine(backstory, clock, poll_interval=5.0), [spec(0)])

    (refused_at, _), (created_at, _) = backstory.creation_attempts
    assert waited <= created_at - refused_at < waited + 1
    assert len(out[0][2]) == 4


def test_a_too_many_jobs_answer_is_waited_out_at_the_poll_interval_growing(backstory, clock):
    backstory.refusals.extend([error(400, "Too many concurrent export jobs")] * 3)

    read_all(engine(backstory, clock, poll_interval=10.0), [spec(0)])

    times = [at for at, _ in backstory.creation_attempts]
    assert [round(b - a, 1) for a, b in itertools.pairwise(times)] == [10.0, 15.0, 22.5]


def test_a_parameter_refusal_other_than_job_limits_fails_at_once(backstory, clock):
    backstory.refusals.append(error(400, "start_date is malformed"))

    with pytest.raises(TapBackstoryError, match="answered 400: Refused: start_date is malformed"):
        read_all(engine(backstory, clock), [spec(0)])
    assert len(backstory.creation_attempts) == 1


def test_creation_refused_until_job_timeout_fails_naming_the_setting(backstory, clock):
    backstory.refuse_forever = error(429, "slow down")

    with pytest.raises(TapBackstoryError, match=r"could not create an export job .* job_timeout_seconds=600"):
        read_all(engine(backstory, clock, job_timeout=600.0), [spec(0)])
    assert 600 < clock.elapsed < 700


def test_a_job_running_past_job_timeout_fails_with_its_last_state(backstory, clock):
    backstory.run_seconds = lambda b: 10_000.0

    with pytest.raises(TapBackstoryError) as raised:
        read_all(engine(backstory, clock, job_timeout=900.0), [spec(0)])

    (job,) = backstory.jobs.values()
    assert str(raised.value) == (
        f"export job {job.job_id} for window {window(0)} (snapshot) did not complete within "
        "job_timeout_seconds=900 (last state: Running)"
    )
    assert 900 < clock.elapsed <= 900 + 60  # noticed at the next poll at the latest
    assert max(clock.sleeps) <= 60  # a 5 s interval grows to the 60 s cap, not beyond


# --- Backstory: resume of a job in state --------------------------------------------------------------


def test_a_resumed_job_in_state_is_reused_without_creating_one(backstory, clock):
    earlier = backstory.add_job(body(window(0)), created_at=clock.now() - dt.timedelta(days=2), runs_for=30)
    pending = PendingJob(window(0), "snapshot", earlier.job_id, earlier.created_at)

    out = read_all(engine(backstory, clock), [spec(0, resume=pending)])

    assert backstory.creation_attempts == []
    assert out[0][1] == earlier.job_id and len(out[0][2]) == 4


@pytest.mark.parametrize(
    "why",
    ["past retention", "not retrievable", "ended Failed"],
)
def test_a_job_in_state_that_cannot_be_reused_gets_a_new_one(backstory, clock, why):
    age = RETENTION if why == "past retention" else dt.timedelta(days=1)
    earlier = backstory.add_job(
        body(window(0)), created_at=clock.now() - age, outcome="Failed" if why == "ended Failed" else "Completed"
    )
    job_id = "999" if why == "not retrievable" else earlier.job_id
    pending = PendingJob(window(0), "snapshot", job_id, earlier.created_at)

    out = read_all(engine(backstory, clock), [spec(0, resume=pending)])

    assert len(backstory.creation_attempts) == 1
    assert out[0][1] not in (earlier.job_id, "999")
    looked_up = [path for _, method, path in backstory.requests if method == "GET" and path.endswith(f"/{job_id}")]
    assert looked_up == ([] if why == "past retention" else [f"{backstory.path}/{job_id}"])


# --- Backstory: orphan adoption (a run killed while requesting its job) -------------------------------


def orphan_case(backstory: FakeBackstory, clock: FakeClock, **job: object) -> tuple[list, list, str]:
    """An earlier run announced window 0's request at `requested_at` and died; `job` is what Backstory lists."""
    requested_at = clock.now() - dt.timedelta(hours=1)
    listed = backstory.add_job(
        job.pop("body", body(window(0))),  # type: ignore[arg-type]
        created_at=requested_at + job.pop("created_after", dt.timedelta(seconds=2)),  # type: ignore[operator]
        **job,  # type: ignore[arg-type]
    )
    adopted: list = []
    jobs = engine(backstory, clock, on_created=lambda s, job_id, created: adopted.append((job_id, created)))
    out = read_all(jobs, [spec(0, resume=PendingJob(window(0), "snapshot", None, requested_at))])
    return out, adopted, listed.job_id


def test_an_orphan_job_matching_the_request_is_adopted(backstory, clock):
    out, adopted, listed = orphan_case(backstory, clock)

    assert backstory.creation_attempts == []
    assert out[0][1] == listed and adopted == [(listed, backstory.jobs[listed].created_at)]


def test_an_orphan_created_within_the_clock_skew_before_the_request_is_adopted(backstory, clock):
    out, _, listed = orphan_case(backstory, clock, created_after=-ORPHAN_CLOCK_SKEW + dt.timedelta(seconds=1))

    assert backstory.creation_attempts == [] and out[0][1] == listed


@pytest.mark.parametrize(
    "job",
    [
        {"body": {**body(window(0)), "end_date": "2026-01-08"}},
        {"body": {**body(window(0)), "export_type": "delta"}},
        {"created_after": -ORPHAN_CLOCK_SKEW - dt.timedelta(seconds=1)},
        {"outcome": "Failed"},
    ],
    ids=["other end date", "other export type", "created before the request less the skew", "failed"],
)
def test_a_listed_job_that_is_not_the_orphan_is_left_alone(backstory, clock, job):
    out, _, listed = orphan_case(backstory, clock, **job)

    assert len(backstory.creation_attempts) == 1
    assert out[0][1] != listed


def test_the_job_list_is_read_once_per_run(backstory, clock):
    requested_at = clock.now() - dt.timedelta(minutes=30)
    specs = [spec(n, resume=PendingJob(window(n), "snapshot", None, requested_at)) for n in range(3)]

    read_all(engine(backstory, clock), specs)

    assert [path for _, method, path in backstory.requests if method == "GET" and path == backstory.path] == [
        backstory.path
    ]
    assert len(backstory.creation_attempts) == 3


# --- ContactBased ---------------------------------------------------------------------------------------


def options(**changes: object) -> ContactBasedOptions:
    settings: dict = {
        "feed_ids": (),
        "lookback_days": None,
        "get_pii": False,
        "include_business_info": False,
        "require_contact_id": False,
        "max_rows": None,
        "poll_interval": 5.0,
        "job_timeout": 3600.0,
        "enrichment_sections": ("person",),
        "enrichment_batch_size": 100,
        **changes,
    }
    return ContactBasedOptions(**settings)


def test_search_export_and_pages_read_every_row_in_order(clock):
    vendor = FakeContactBased(clock, rows=5, page_size=2)
    feeds = IntentFeeds(vendor.api(), options(), clock, LOG)

    (feed,) = feeds.feeds()
    flight = feeds.search(feed, None)
    flight.update(feeds.export(feed, flight, resumed=False), next_page=1)
    pages = list(feeds.pages(feed["feed_id"], flight))

    assert (flight["window_start"], flight["window_end"]) == ((TODAY - dt.timedelta(days=29)).isoformat(), str(TODAY))
    assert [page for page, _ in pages] == [1, 2, 3]
    assert [row["row"] for _, rows in pages for row in rows] == [0, 1, 2, 3, 4]
    assert [path for _, path, _ in vendor.requests].count("/intent/feeds/exports") == 1


@pytest.mark.parametrize(("interval", "expected_waits"), [(5.0, [5.0, 5.0, 5.0, 5.0]), (90.0, [90.0, 90.0])])
def test_an_export_still_building_is_waited_on_the_shared_poll_schedule(clock, interval, expected_waits):
    vendor = FakeContactBased(clock)
    vendor.build_seconds = 150.0 if interval == 90 else 20.0
    feeds = IntentFeeds(vendor.api(), options(poll_interval=interval), clock, LOG)
    (feed,) = feeds.feeds()
    flight = feeds.search(feed, None)

    export = feeds.export(feed, flight, resumed=False)

    assert export["export_id"] == "export-1"
    assert clock.sleeps == expected_waits  # 90 s stays 90 s: an interval above 60 s is not capped


def test_a_resumed_flight_reuses_the_export_an_interrupted_run_made_with_the_same_options(clock):
    vendor = FakeContactBased(clock)
    feeds = IntentFeeds(vendor.api(), options(), clock, LOG)
    (feed,) = feeds.feeds()
    flight = feeds.search(feed, None)
    vendor.exports.append({"export_id": "other", "job_id": "search-0", "total_pages": 1, "page_size": 2})
    vendor.exports.append({"export_id": "pii", "job_id": "search-1", "get_pii": True, "total_pages": 1, "page_size": 2})
    made = {"export_id": "made", "job_id": "search-1", "get_pii": False, "total_pages": 3, "page_size": 2}
    vendor.exports.append(made)

    export = feeds.export(feed, flight, resumed=True)

    assert export == {"export_id": "made", "total_pages": 3, "page_size": 2, "total_rows": None}
    assert [path for _, path, _ in vendor.requests].count("/intent/feeds/exports") == 0  # no second export


def test_a_resumed_flight_without_a_matching_export_makes_one_and_a_first_flight_lists_nothing(clock):
    vendor = FakeContactBased(clock)
    feeds = IntentFeeds(vendor.api(), options(), clock, LOG)
    (feed,) = feeds.feeds()
    flight = feeds.search(feed, None)
    vendor.exports.append({"export_id": "pii", "job_id": "search-1", "get_pii": True, "total_pages": 1, "page_size": 2})

    assert feeds.export(feed, flight, resumed=True)["export_id"] == "export-1"
    assert feeds.export(feed, flight, resumed=False)["export_id"] == "export-1"
    paths = [path for _, path, _ in vendor.requests]
    assert paths.count("/intent/feeds/exports/list") == 1 and paths.count("/intent/feeds/exports") == 2


def test_an_export_building_past_job_timeout_fails(clock):
    vendor = FakeContactBased(clock)
    vendor.build_seconds = 10_000.0
    feeds = IntentFeeds(vendor.api(), options(job_timeout=300.0), clock, LOG)
    (feed,) = feeds.feeds()

    with pytest.raises(TapBackstoryError, match="export export-1 was still building after job_timeout_seconds=300"):
        feeds.export(feed, feeds.search(feed, None), resumed=False)


def test_the_quota_guard_refuses_an_export_larger_than_the_quota_left_before_spending_any(clock):
    vendor = FakeContactBased(clock, rows=50)
    vendor.feed.update(export_rows_remaining=20, export_row_limit=1000, export_rows_used=980)
    feeds = IntentFeeds(vendor.api(), options(), clock, LOG)
    (feed,) = feeds.feeds()
    flight = feeds.search(feed, None)

    with pytest.raises(TapBackstoryError) as raised:
        feeds.check_quota(feed, flight)

    assert str(raised.value) == (
        f"intent feed feed-1: the export of window {flight['window_start']}..{flight['window_end']} needs 50 rows "
        "of export quota but only 20 remain (limit 1000, used 980); set intent_max_rows to at most 20 to cap it"
    )
    feeds_capped = IntentFeeds(vendor.api(), options(max_rows=20), clock, LOG)
    feeds_capped.check_quota(feed, flight)  # intent_max_rows within the quota: allowed


def test_enrichment_halves_its_batches_on_413_down_to_what_the_server_takes(clock):
    vendor = FakeContactBased(clock)
    vendor.max_batch = 3
    enricher = ContactEnricher(vendor.api(), options(enrichment_batch_size=8), clock, LOG)
    ids = [f"c{n}" for n in range(9)]

    pairs = list(enricher.enrich(ids))

    assert [contact_id for contact_id, _ in pairs] == ids
    assert all(envelope["contact_id"] == contact_id for contact_id, envelope in pairs)
    sent = [len(b["contact_ids"]) for _, path, b in vendor.requests if path == "/enrich/contacts/batch"]
    assert sent == [8, 4, 2, 2, 2, 2, 1]
    assert enricher.ids_per_request == 2


def test_enrichment_refused_for_a_single_id_fails(clock):
    vendor = FakeContactBased(clock)
    vendor.max_batch = 0
    enricher = ContactEnricher(vendor.api(), options(enrichment_batch_size=2), clock, LOG)

    with pytest.raises(TapBackstoryError, match="answered 413"):
        list(enricher.enrich(["c1", "c2"]))


def test_a_refused_future_end_date_falls_back_to_the_window_ending_today_once(backstory, clock):
    future, ending_today = Window(TODAY, TODAY + dt.timedelta(days=30)), Window(TODAY, TODAY)
    fallback = JobSpec(ending_today, "snapshot", body(ending_today))
    backstory.refusals.append(error(400, "end_date must not be after today"))
    announced: list = []
    jobs = engine(backstory, clock, on_requesting=lambda s, at: announced.append((s.window, len(backstory.jobs))))

    out = read_all(jobs, [JobSpec(future, "snapshot", body(future), fallback=fallback)])

    assert [b["end_date"] for _, b in backstory.creation_attempts] == [str(future.end), str(TODAY)]
    assert out[0][0] == ending_today and len(out[0][2]) == 4
    assert announced == [(future, 0), (ending_today, 0)]  # each request announced in state before it is sent


def test_a_fragment_cut_off_mid_way_is_fetched_again_from_the_start_and_nothing_is_read_twice(backstory, clock):
    backstory.cut_bodies = 3  # one fragment cut three times (below FRAGMENT_TRIES), or several once each

    out = read_all(engine(backstory, clock, fragment_concurrency=1), [spec(0)])

    rows = [(r["fragment"], r["row"]) for r in out[0][2]]
    assert rows == [(0, 0), (0, 1), (1, 0), (1, 1)]
    data_requests = [path for _, _, path in backstory.requests if path.endswith("/data")]
    assert len(data_requests) == 2 + 3


def test_a_fragment_cut_off_at_every_try_fails_naming_it(backstory, clock):
    backstory.cut_bodies = 100

    with pytest.raises(TapBackstoryError, match=r"export job \d+ fragment 0 kept failing to download .* after 4 tries"):
        read_all(engine(backstory, clock, fragment_concurrency=1), [spec(0)])


def test_a_resumed_flight_reads_its_export_from_its_next_page_without_a_new_search_or_export(clock):
    vendor = FakeContactBased(clock, rows=5, page_size=2)
    feeds = IntentFeeds(vendor.api(), options(), clock, LOG)
    flight = {"export_id": "export-1", "total_pages": 3, "page_size": 2, "next_page": 2}

    pages = list(feeds.pages("feed-1", flight))

    assert [(page, [row["row"] for row in rows]) for page, rows in pages] == [(2, [2, 3]), (3, [4])]
    # Its layout is asked for once (a layout kept in state is not trusted over the server's), then the pages.
    paths = [path for _, path, _ in vendor.requests]
    assert paths == ["/intent/feeds/exports/get"] + ["/intent/feeds/exports/page"] * 2


@pytest.mark.parametrize(
    ("last_end_days_ago", "lookback", "lost"),
    [(None, 30, False), (0, 1, False), (5, 6, False), (40, 30, True)],
    ids=["first run: the cap", "same day", "from the last end day inclusive", "beyond the cap: warned"],
)
def test_the_lookback_of_the_next_window(clock, caplog, last_end_days_ago, lookback, lost):
    feeds = IntentFeeds(FakeContactBased(clock).api(), options(), clock, LOG)
    last_end = None if last_end_days_ago is None else str(TODAY - dt.timedelta(days=last_end_days_ago))

    assert feeds.lookback_days({"feed_id": "feed-1", "lookback_days": 30}, last_end) == lookback
    assert ("can no longer be fetched" in caplog.text) is lost
