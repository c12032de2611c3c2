"""Backstory bulk export streams, on the job engine in `tap_backstory.jobs`.

One base class does windows → jobs → records → bookmark; each stream states only what differs: which API
and key, the request body, how a file is parsed, and whether it has a `delta` export type.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import typing as t

from tap_backstory.activity_shapes import normalize_activity_shapes
from tap_backstory.client import TapBackstoryError
from tap_backstory.coverage import ActivitySelector, ContactSelector, Coverage, Selector, plan_backfill
from tap_backstory.formats import DataError, RecordShaper, read_csv_records, read_json_records
from tap_backstory.fragments import JobGone
from tap_backstory.jobs import ExportJobs, JobSpec
from tap_backstory.streams.base import TapStream
from tap_backstory.windows import ExportState, Selection, Window, parse_day, plural

if t.TYPE_CHECKING:
    from tap_backstory.client import ApiClient


class BackstoryExportStream(TapStream):
    """A stream read through Backstory export jobs, one job per date window (see docs/state.md)."""

    kind: str  # "activities" | "contacts": the API path
    has_delta = False  # only activities have `export_type: delta`

    @property
    def api(self) -> ApiClient:
        raise NotImplementedError

    def request_body(self, window: Window, export_type: str, selection: Selection) -> dict:
        raise NotImplementedError

    normalize_shapes: t.Callable[[dict], None] | None = None
    """Brings fields the API sends in more than one shape to the schema's (in place, before shaping)."""

    @functools.cached_property
    def shaper(self) -> RecordShaper:
        """The base class's, plus: records without the primary key are left out, fields normalised."""
        return RecordShaper(
            self.schema,
            self.name,
            flattening_depth=self.flattening_depth,
            primary_key=self.primary_keys[0],
            normalize=self.normalize_shapes,
        )

    records_are_encoded_directly = False
    """Set for a sync whose records only msgspec sees (the direct writer, or
    `TapStream.batches_encode_records_directly`): they are then read as `RecordStruct`s
    (`RecordShaper.fast_line`), not dicts."""

    reads_json_lines = True

    def parse(self, body: t.BinaryIO, source: str) -> t.Iterator[dict]:
        """Shaped records of one downloaded file, those without their primary key left out (the shaper answers
        None for them, counted: `RecordShaper.keyless`). `filter`: no Python frame of its own per record."""
        if self.line_workers is not None:  # a BATCH sync: `EncodedLines`
            return self.line_workers.records(body, source, self._parse_here)
        return self._parse_here(body, source)

    def _parse_here(self, body: t.BinaryIO, source: str) -> t.Iterator[dict]:
        fast = self.shaper.fast_line if self.records_are_encoded_directly else None
        return filter(None, read_json_records(body, source, self.shaper.shape, fast))

    def generate_child_contexts(self, record: dict, context: dict | None) -> t.Iterable[dict | None]:
        """No stream is a child of an export stream: hand nothing down (the SDK's default builds, copies and
        filter-checks a context for every record, then finds no child to sync)."""
        if self.child_streams:
            yield from super().generate_child_contexts(record, context)

    @functools.cached_property
    def selector(self) -> Selector:
        """The settings that decide what a window holds (kept in state as its coverage; `coverage.py`)."""
        raise NotImplementedError

    def get_records(self, context: dict | None) -> t.Iterable[dict]:
        try:
            yield from self._records(context)
        except TapBackstoryError as exc:  # every error line names the stream
            raise TapBackstoryError(f"{self.name}: {exc}") from None

    def _records(self, context: dict | None) -> t.Iterator[dict]:
        config, today = self.config, self.tap.clock.today()
        end = parse_day(config["end_date"], "end_date") if config.get("end_date") else today
        start_date = parse_day(config["start_date"], "start_date")
        reach_future = not config.get("end_date")  # a user's end_date is where the user wants it to end
        state, coverage = ExportState(self.bookmarks), Coverage(self.bookmarks, self.selector)
        backfill = plan_backfill(
            coverage,
            start_date=start_date,
            snapshot_window_days=int(config["snapshot_window_days"]),
            stretch=reach_future and self.has_delta and bool(self.bookmarks.get("snapshot_done")),
            log=self.logger,
            stream=self.name,
        )
        export_type, windows = state.plan(
            start_date=start_date,
            end_date=end,
            snapshot_window_days=int(config["snapshot_window_days"]),
            delta_window_days=int(config["delta_window_days"]) if self.has_delta else None,
            reach_future=reach_future,
        )
        selection, parts = self.selector.selection(), self.selector.parts()
        planned = [_Planned(window, "snapshot", chosen, filled) for chosen, filled, window in backfill]
        planned += [_Planned(window, export_type, selection, parts, main=True) for window in windows]
        # A window reaching past today falls back to ending today if Backstory refuses its end date.
        fallbacks = {item.window: Window(item.window.start, end) for item in planned if item.window.end > end}
        windows_of = [(item, item.window) for item in planned]
        windows_of += [(item, fallbacks[item.window]) for item in planned if item.window in fallbacks]
        state.keep_pending([(window, item.export_type, item.selection) for item, window in windows_of])
        if not planned:
            self.logger.info("%s: nothing to do, the bookmark %s already reaches %s", self.name, state.bookmark, end)
            return
        if windows:
            # The range the windows really cover: past today when the last one is stretched (explained next).
            self.logger.info(
                "%s: %s from %s to %s",
                self.name,
                plural(len(windows), f"{export_type} window"),
                windows[0].start,
                windows[-1].end,
            )
        else:
            self.logger.info("%s: no new window, the bookmark %s already reaches %s", self.name, state.bookmark, end)
        for window in {item.window for item in planned if item.window in fallbacks}:
            self.logger.info(
                "%s: the last snapshot window reaches %s, %s after today, for activities dated ahead "
                "(meetings) that were processed before the deltas start; those dated later are in no export",
                self.name,
                window.end,
                plural((window.end - end).days, "day"),
            )

        specs = [
            self._job_spec(item, state, fallbacks.get(item.window), number, len(planned))
            for number, item in enumerate(planned, start=1)
        ]
        last_start = windows[-1].start if windows else None
        direct = self.direct_record_writer(context)  # None: the records go through the SDK's loop
        self.records_are_encoded_directly = direct is not None or self.batches_encode_records_directly(context)
        for item, (spec, job_id, records) in zip(planned, self._engine(state).run(specs), strict=True):
            try:
                if direct is None:
                    yield from records
                else:
                    direct.write(records)
            except (DataError, JobGone):
                # The job's file itself is unreadable (its download was complete), or gone after some of its
                # records were read: a resumed run must ask for a new export rather than reuse this job and fail
                # on the same file until its retention ends.
                state.forget_job(spec.window, item.export_type, item.selection)
                self.checkpoint()
                self.logger.warning("Window %s: job %s is dropped from state; the next run creates a new one",
                                    spec, job_id)
                raise
            if item.main:
                # `spec.window` may be a fallback ending earlier than the planned window: compare starts.
                last = spec.window.start == last_start
                state.window_done(spec.window, item.export_type, today, last=last, selection=item.selection)
                coverage.extend(item.parts, spec.window.start)  # the first window starts the coverage
            else:  # a backfill window: its parts are covered from its start on; the bookmark stays
                state.forget_job(spec.window, item.export_type, item.selection)
                coverage.extend(item.parts, spec.window.start)
            self.checkpoint()
        self.shaper.report_keyless()

    def _engine(self, state: ExportState) -> ExportJobs:
        """The job engine, with every job request and creation written to state at once."""

        def on_requesting(spec: JobSpec, at: dt.datetime) -> None:
            # Announced before the request: a run killed before the answer looks for the job in Backstory's list.
            state.job_requested(spec.window, spec.export_type, at, self.selector.of_body(spec.body))
            self.checkpoint()

        def on_created(spec: JobSpec, job_id: str, created_at: dt.datetime) -> None:
            # Kept in state at once: a run killed from here on resumes with this job, not a new one.
            state.job_created(spec.window, spec.export_type, job_id, created_at, self.selector.of_body(spec.body))
            self.checkpoint()

        config = self.config
        return ExportJobs(
            self.api,
            self.kind,
            parse=self.parse,
            # The SDK reads config numbers as Decimal.
            max_concurrent_jobs=int(config["max_concurrent_jobs"]),
            fragment_concurrency=int(config["fragment_concurrency"]),
            poll_interval=float(config["job_poll_interval_seconds"]),
            job_timeout=float(config["job_timeout_seconds"]),
            clock=self.tap.clock,
            log=self.logger,
            fragment_mode=str(config.get("fragment_mode") or "auto"),
            on_idle=self.flush_records,
            on_requesting=on_requesting,
            on_created=on_created,
        )

    def _job_spec(
        self, item: _Planned, state: ExportState, fallback: Window | None, number: int, count: int
    ) -> JobSpec:
        """Window `number` of `count`: its request, its job from state, and its fallback ending today."""

        def spec_of(window: Window) -> JobSpec:
            body = self.request_body(window, item.export_type, item.selection)
            resume = state.pending_job(window, item.export_type, item.selection)
            return JobSpec(window, item.export_type, body, resume, number=number, count=count)

        spec = spec_of(item.window)
        if fallback is None:
            return spec
        fallen_back = spec_of(fallback)
        if fallen_back.resume is not None and spec.resume is None:
            return fallen_back  # an interrupted run today fell back already: go on with its job
        return dataclasses.replace(spec, fallback=fallen_back)


@dataclasses.dataclass(frozen=True)
class _Planned:
    """One window of a run: a gap backfill's (`main` False) or one going on from the bookmark."""

    window: Window
    export_type: str
    selection: Selection  # what the request asks for
    parts: list[Selection]  # the parts of coverage it fills
    main: bool = False


class ActivitiesStream(BackstoryExportStream):
    """Raw activity data (emails, meetings, calls): `POST /pull/v1/export/activities/jobs`, JSON Lines."""

    name = "activities"
    primary_keys = ("uid",)
    kind = "activities"
    has_delta = True

    @property
    def api(self) -> ApiClient:
        return self.tap.activity_api

    normalize_shapes = staticmethod(normalize_activity_shapes)

    def request_body(self, window: Window, export_type: str, selection: Selection) -> dict:
        return {
            "start_date": window.start.isoformat(),
            "end_date": window.end.isoformat(),
            "activity_type": selection["activity_type"],
            "output_format": "JSONLines",
            "export_type": export_type,
        }

    @functools.cached_property
    def selector(self) -> Selector:
        return ActivitySelector(self.config)


class EnrichedContactsStream(BackstoryExportStream):
    """Enriched contacts: `POST /pull/v1/export/contacts/jobs`, JSON or CSV, typed the same either way."""

    name = "enriched_contacts"
    primary_keys = ("email",)
    kind = "contacts"

    @property
    def api(self) -> ApiClient:
        return self.tap.object_api

    def request_body(self, window: Window, export_type: str, selection: Selection) -> dict:
        body = {
            "include_historical": selection["contacts_include_historical"],
            "include_existing": selection["contacts_include_existing"],
            "output_format": self.config["contacts_output_format"],
            "start_date": window.start.isoformat(),
            "end_date": window.end.isoformat(),
            "is_sourced_by_people_ai": selection["contacts_is_sourced_by_people_ai"],
        }
        for name in ("country", "state"):  # optional filters: absent means "any"
            if selection[f"contacts_{name}"]:
                body[name] = selection[f"contacts_{name}"]
        return body

    @functools.cached_property
    def selector(self) -> Selector:
        return ContactSelector(self.config)

    @property
    def reads_json_lines(self) -> bool:  # type: ignore[override]
        return self.config["contacts_output_format"] != "CSV"

    def parse(self, body: t.BinaryIO, source: str) -> t.Iterator[dict]:
        # JSON omits empty keys and CSV has empty cells: both come out null (every declared property is in
        # every record), so both formats give the very same record.
        if self.config["contacts_output_format"] == "CSV":
            for line, row in read_csv_records(body, source):
                record = self.shaper.coerce(row, source, line)
                if record is not None:  # None: no primary key (`RecordShaper.primary_key`)
                    yield record
        else:
            yield from super().parse(body, source)

