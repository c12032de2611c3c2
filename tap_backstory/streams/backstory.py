"""Backstory bulk export streams, on the job engine in `tap_backstory.jobs`.

One base class does windows → jobs → records → bookmark; each stream states only what differs: which API
and key, the request body, how a file is parsed, and whether it has a `delta` export type.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

from tap_backstory.formats import DataError, read_csv_records, read_json_records
from tap_backstory.jobs import ExportJobs, JobSpec
from tap_backstory.streams.base import TapStream
from tap_backstory.windows import ExportState, Window, parse_day, plural

if t.TYPE_CHECKING:
    from tap_backstory.client import ApiClient


class BackstoryExportStream(TapStream):
    """A stream read through Backstory export jobs, one job per date window (see docs/state.md)."""

    kind: str  # "activities" | "contacts": the API path
    has_delta = False  # only activities have `export_type: delta`

    @property
    def api(self) -> ApiClient:
        raise NotImplementedError

    def request_body(self, window: Window, export_type: str) -> dict:
        raise NotImplementedError

    def parse(self, body: t.BinaryIO, source: str) -> t.Iterator[dict]:
        """Shaped records of one downloaded file (`map`: no Python frame of its own per record)."""
        return map(self.shaper.shape, read_json_records(body, source))

    def generate_child_contexts(self, record: dict, context: dict | None) -> t.Iterable[dict | None]:
        """No stream is a child of an export stream: hand nothing down (the SDK's default builds, copies and
        filter-checks a context for every record, then finds no child to sync)."""
        if self.child_streams:
            yield from super().generate_child_contexts(record, context)

    def get_records(self, context: dict | None) -> t.Iterable[dict]:
        config, today = self.config, self.tap.clock.today()
        end = parse_day(config["end_date"], "end_date") if config.get("end_date") else today
        state = ExportState(self.bookmarks)
        export_type, windows = state.plan(
            start_date=parse_day(config["start_date"], "start_date"),
            end_date=end,
            snapshot_window_days=int(config["snapshot_window_days"]),
            delta_window_days=int(config["delta_window_days"]) if self.has_delta else None,
            reach_future=not config.get("end_date"),  # a user's end_date is where the user wants it to end
        )
        # A window reaching past today falls back to ending today if Backstory refuses its end date.
        fallbacks = {window: Window(window.start, end) for window in windows if window.end > end}
        state.keep_pending([*windows, *fallbacks.values()], export_type)
        if not windows:
            self.logger.info("%s: nothing to do, the bookmark %s already reaches %s", self.name, state.bookmark, end)
            return
        self.logger.info(
            "%s: %d %s window(s) from %s to %s", self.name, len(windows), export_type, windows[0].start, end
        )
        for window in fallbacks:
            self.logger.info(
                "%s: the last snapshot window reaches %s, %s after today, for activities dated ahead "
                "(meetings) that were processed before the deltas start; those dated later are in no export",
                self.name,
                window.end,
                plural((window.end - end).days, "day"),
            )

        specs = [
            self._job_spec(window, export_type, state, fallbacks.get(window), number, len(windows))
            for number, window in enumerate(windows, start=1)
        ]
        direct = self.direct_record_writer(context)  # None: the records go through the SDK's loop
        for spec, job_id, records in self._engine(state).run(specs):
            try:
                if direct is None:
                    yield from records
                else:
                    direct.write(records)
            except DataError:
                # The job's file itself is unreadable (its download was complete): a resumed run must ask for a
                # new export rather than reuse this job and fail on the same file until its retention ends.
                state.forget_job(spec.window, export_type)
                self.checkpoint()
                self.logger.warning("Window %s: job %s is dropped from state; the next run creates a new one",
                                    spec, job_id)
                raise
            # `spec.window` may be a fallback ending earlier than the planned window: compare starts.
            state.window_done(spec.window, export_type, today, last=spec.window.start == windows[-1].start)
            self.checkpoint()

    def _engine(self, state: ExportState) -> ExportJobs:
        """The job engine, with every job request and creation written to state at once."""

        def on_requesting(spec: JobSpec, at: dt.datetime) -> None:
            # Announced before the request: a run killed before the answer looks for the job in Backstory's list.
            state.job_requested(spec.window, spec.export_type, at)
            self.checkpoint()

        def on_created(spec: JobSpec, job_id: str, created_at: dt.datetime) -> None:
            # Kept in state at once: a run killed from here on resumes with this job, not a new one.
            state.job_created(spec.window, spec.export_type, job_id, created_at)
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
            on_requesting=on_requesting,
            on_created=on_created,
        )

    def _job_spec(
        self, window: Window, export_type: str, state: ExportState, fallback: Window | None, number: int, count: int
    ) -> JobSpec:
        """Window `number` of `count`: its request, its job from state, and its fallback ending today."""

        def spec_of(window: Window) -> JobSpec:
            body = self.request_body(window, export_type)
            resume = state.pending_job(window, export_type)
            return JobSpec(window, export_type, body, resume, number=number, count=count)

        spec = spec_of(window)
        if fallback is None:
            return spec
        fallen_back = spec_of(fallback)
        if fallen_back.resume is not None and spec.resume is None:
            return fallen_back  # an interrupted run today fell back already: go on with its job
        return dataclasses.replace(spec, fallback=fallen_back)


class ActivitiesStream(BackstoryExportStream):
    """Raw activity data (emails, meetings, calls): `POST /pull/v1/export/activities/jobs`, JSON Lines."""

    name = "activities"
    primary_keys = ("uid",)
    kind = "activities"
    has_delta = True

    @property
    def api(self) -> ApiClient:
        return self.tap.activity_api

    def request_body(self, window: Window, export_type: str) -> dict:
        return {
            "start_date": window.start.isoformat(),
            "end_date": window.end.isoformat(),
            "activity_type": self.config["activity_type"],
            "output_format": "JSONLines",
            "export_type": export_type,
        }


class EnrichedContactsStream(BackstoryExportStream):
    """Enriched contacts: `POST /pull/v1/export/contacts/jobs`, JSON or CSV, typed the same either way."""

    name = "enriched_contacts"
    primary_keys = ("email",)
    kind = "contacts"

    @property
    def api(self) -> ApiClient:
        return self.tap.object_api

    def request_body(self, window: Window, export_type: str) -> dict:
        config = self.config
        body = {
            "include_historical": config["contacts_include_historical"],
            "include_existing": config["contacts_include_existing"],
            "output_format": config["contacts_output_format"],
            "start_date": window.start.isoformat(),
            "end_date": window.end.isoformat(),
            "is_sourced_by_people_ai": config["contacts_is_sourced_by_people_ai"],
        }
        for name in ("country", "state"):  # optional filters: absent means "any"
            if config.get(f"contacts_{name}"):
                body[name] = config[f"contacts_{name}"]
        return body

    def parse(self, body: t.BinaryIO, source: str) -> t.Iterator[dict]:
        # JSON omits empty keys and CSV has empty cells: both come out null (every declared property is in
        # every record), so both formats give the very same record.
        if self.config["contacts_output_format"] == "CSV":
            for line, row in read_csv_records(body, source):
                yield self.shaper.coerce(row, source, line)
        else:
            yield from super().parse(body, source)
