"""What every tap-backstory stream shares: schema from `schemas/`, `_extra` shaping, window checkpoints."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import sys
import typing as t
import uuid

import singer_sdk.singerlib as singer
from singer_sdk import Stream
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.schema.source import SchemaDirectory, StreamSchema

from tap_backstory import schemas
from tap_backstory.batch_files import publish, write_parquet
from tap_backstory.batchfile import BatchFileWriter, EncodedLines
from tap_backstory.formats import RecordShaper
from tap_backstory.line_workers import WORKERS_ENV_VAR, LineWorkers, worker_count
from tap_backstory.sdk import pop_deselected_record_properties, utc_now
from tap_backstory.writer import COUNT_EVERY, BufferedMsgSpecWriter, DirectRecordWriter

if t.TYPE_CHECKING:
    from singer_sdk.metrics import Counter

    from tap_backstory.sdk import BaseBatchFileEncoding, BatchConfig
    from tap_backstory.tap import TapBackstory

def flattened_columns(record: dict, flattened_schema: dict) -> dict:
    """A flattened record with the flattened SCHEMA's columns, each one (null where the record has none).

    The SDK flattens what the record holds, not what the SCHEMA declares: a null nested object stays under its
    own name (`pii: null`, where the SCHEMA has `pii__first_name`, ...) and an absent one adds no column. A key
    the SCHEMA lacks is dropped only when null; one with a value is kept, never dropped silently (the shaper
    already moved undeclared nested keys into `_extra`, so none is expected)."""
    columns = flattened_schema.get("properties", {})
    if record.keys() == columns.keys():
        return record
    shaped = {name: record.get(name) for name in columns}
    for key, value in record.items():
        if value is not None and key not in columns:
            shaped[key] = value
    return shaped


class TapStream(Stream):
    """Base stream. Records are shaped by `RecordShaper` (typed, undeclared keys in `_extra`), so the SDK's
    recursive per-record type conformance, the slowest step of its record path, is switched off."""

    schema = StreamSchema(SchemaDirectory(schemas))
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    _tap: TapBackstory
    sync_description = "incremental: date windows after the tap's own bookmark (docs/state.md)"
    """What a sync of this stream does, logged instead of the SDK's "in full_table mode" (see
    `replication_method`: FULL_TABLE only to keep the SDK out of the bookmarks)."""

    @property
    def tap(self) -> TapBackstory:
        return self._tap

    _sync_begun = False

    def log(self, message: str, *args: t.Any, level: int = logging.INFO, **kwargs: t.Any) -> None:
        if message.startswith("Beginning sync of '%s' in %s mode"):  # the SDK's line (0.54.9 `Stream.sync`)
            message = message.replace(" in %s mode", ": %s", 1)
            args = (args[0], self.sync_description, *args[2:])
            # A child stream is synced once per parent context (here: per enrichment batch): say it once.
            if self._sync_begun:
                level = logging.DEBUG
            self._sync_begun = True
        super().log(message, *args, level=level, **kwargs)

    @property
    def replication_method(self) -> str:
        """FULL_TABLE as far as the SDK is concerned, whatever a catalog asks.

        Runs are incremental, but by whole-day bookmarks the tap keeps itself (`bookmarks`), not by a
        per-record replication key: the SDK's INCREMENTAL path requires one and would fail on the first
        record (a class-level `forced_replication_method` does not help: the SDK resets it per instance).
        """
        return "FULL_TABLE"

    @functools.cached_property
    def _deselects_any(self) -> bool:
        """Whether the catalog deselects any property (the mask's default for unlisted ones is "selected")."""
        return any(selected is False for selected in self.mask.values())

    def _generate_record_messages(self, record: dict) -> t.Generator[singer.RecordMessage, None, None]:
        """The SDK's RECORD path (0.54.9 `Stream._generate_record_messages`) minus two no-ops per record.

        One of the two private SDK methods the tap overrides (every private SDK use is listed in
        `tap_backstory/sdk.py` and checked against the installed SDK by tests/test_sdk_surface.py).
        Identical output: `pop_deselected_record_properties` walks every nested key of every record (about
        20 % of the tap's time when profiled) and is skipped only when the catalog deselects nothing;
        `conform_record_data_types` returns the record untouched at TYPE_CONFORMANCE_LEVEL NONE. Stream maps,
        version and time_extracted are as in the SDK. One addition: under flattening, each record carries
        exactly the flattened SCHEMA's columns (`flattened_columns`).
        """
        if self._deselects_any:
            pop_deselected_record_properties(record, self.schema, self.mask)
        for stream_map in self.stream_maps:
            mapped_record = stream_map.transform(record)
            if mapped_record is not None:
                if stream_map.flattening_enabled:
                    mapped_record = flattened_columns(mapped_record, stream_map.transformed_schema)
                yield singer.RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped_record,
                    version=self._stream_version,
                    time_extracted=utc_now(),
                )

    def get_record_counter(self, **kwargs: t.Any) -> Counter:
        """The SDK's record counter for this sync, kept so that `direct_record_writer` counts into it."""
        self._record_counter = counter = super().get_record_counter(**kwargs)
        return counter

    def _sdk_record_steps_idle(self, context: dict | None) -> bool:
        """Whether the SDK's per-record steps (`Stream._sync_records`, 0.54.9) do nothing for this sync but
        write, count and yield each record.

        They are: property deselection and stream maps (the RECORD message), flattening, the dry-run record
        limit, `post_process`, partition keys and child contexts (`_process_record`), the bookmark (none:
        FULL_TABLE), the counter, and an unchanged STATE repeated every `STATE_MSG_FREQUENCY` records.
        """
        stream_map = self.stream_maps[0] if len(self.stream_maps) == 1 else None
        return not (
            context is not None
            or not self.selected
            or self.child_streams
            or self.partitions
            or self._deselects_any
            or self.ABORT_AT_RECORD_COUNT is not None
            or type(self).post_process is not Stream.post_process
            or type(stream_map) is not SameRecordTransform
            or stream_map.flattening_enabled
            or stream_map.stream_alias != self.name
        )

    def direct_record_writer(self, context: dict | None) -> DirectRecordWriter | None:
        """A writer of this stream's RECORD messages straight from `get_records`, or None where the SDK's
        record path has work to do (then `get_records` yields its records to it as usual).

        When the SDK's per-record steps are idle (`_sdk_record_steps_idle`), the direct writer does their work
        (minus the repeated STATE) at a fraction of the cost (issue 20, docs/performance.md). The SDK loop
        still runs around `get_records` (starting and final STATE, finalisation, sync timer); it simply
        receives no record. Not in BATCH mode: there the records go to `get_batches`.
        """
        if (
            not self._sdk_record_steps_idle(context)
            or self.get_batch_config(self.config)
        ):
            return None
        if not isinstance(self._tap.message_writer, BufferedMsgSpecWriter):
            return None

        def written() -> None:  # as the SDK's `_write_record_message`: a STATE is due at the end
            self.state_manager.is_flushed = False

        writer = self._tap.message_writer
        return DirectRecordWriter(writer, self.name, self._stream_version, self._record_counter, written)

    def batches_encode_records_directly(self, context: dict | None) -> bool:
        """Whether the JSON Lines BATCH writer takes this sync's records straight from `get_records` (the SDK's
        per-record steps idle, `_records_for_batches`): only msgspec sees them, as with the direct writer."""
        batch = self.get_batch_config(self.config)
        return batch is not None and batch.encoding.format == "jsonl" and self._sdk_record_steps_idle(context)

    def flush_records(self) -> None:
        """Hand the RECORD lines written so far to the target now (the reader is about to wait for bytes): the
        first record follows the first bytes of a slow download, not the end of a 1 MB buffer."""
        writer = self._tap.message_writer
        if isinstance(writer, BufferedMsgSpecWriter) and not self.get_batch_config(self.config):
            writer.flush_records()

    def _records_for_batches(self, context: dict | None) -> t.Iterator[dict]:
        """The records `get_batches` writes: what the SDK's `_sync_records(write_messages=False)` yields
        (counted, state advanced, child streams synced). When its per-record steps are idle, the same loop
        without them: the sync's bookkeeping as the SDK does it for a stream without partitions (starting
        value, finalised state, counter and timer), and each record passed straight through."""
        if not self._sdk_record_steps_idle(context):
            yield from self._sync_records(context, write_messages=False)
            return
        counter, timer = self.get_record_counter(), self.get_sync_timer()
        with counter, timer:
            counter.with_context({})
            timer.with_context({})
            self._write_starting_replication_value(None)
            count = counted = 0
            try:
                for record in self.get_records(None):  # or many records at once, from line workers
                    yield record
                    count += record.count if record.__class__ is EncodedLines else 1
                    if count - counted >= COUNT_EVERY:
                        counter.increment(count - counted)
                        counted = count
            finally:
                counter.increment(count - counted)
            self._finalize_state(self.get_context_state(None))
        self._finalize_state(self.stream_state)

    def get_batches(
        self, batch_config: BatchConfig, context: dict | None = None
    ) -> t.Iterator[tuple[BaseBatchFileEncoding, list[str]]]:
        """Batch files written as the records stream through: JSON Lines (gzip when configured), or parquet.

        The SDK's default holds each chunk of `batch_size` records in memory (~200 MB of dicts at 10,000
        activities), encodes with simplejson and compresses at level 9. Here `BatchFileWriter` encodes each
        record with msgspec into 4 MB chunks, gzip-compressed by ISA-L (level 2) on a thread of its own, so
        memory stays flat and compression runs beside the record path. Files, names and messages are as in the SDK:
        `{prefix}{tap}--{stream}-{uuid}-{n}.json.gz`, one BATCH message (then STATE) per file. The next
        record is read before a file is announced, so when the last file goes out the stream's state is final.
        Each file is written under a partial name and moved into place when complete (`publish`), so a BATCH
        message never names a missing or partial file, whatever child streams run while it is written.
        Parquet: `_parquet_batches`.
        """
        if batch_config.encoding.format == "parquet":
            yield from self._parquet_batches(batch_config, context)
            return
        if batch_config.encoding.format != "jsonl":
            yield from super().get_batches(batch_config, context)  # the SDK's error for an unknown format
            return
        with self._batch_line_workers(context):
            yield from self._jsonl_batches(batch_config, context)

    reads_json_lines = False
    """Whether `parse` reads JSON Lines through `line_workers` when they are set."""

    line_workers: LineWorkers | None = None
    """While a BATCH sync's JSON Lines are read by worker processes (`_batch_line_workers`): `parse` then gives
    `EncodedLines`, not records."""

    @contextlib.contextmanager
    def _batch_line_workers(self, context: dict | None) -> t.Iterator[None]:
        """Worker processes that read this BATCH sync's JSON Lines (`line_workers`), if its records are only
        encoded (`batches_encode_records_directly`), can be read without the SDK (`RecordShaper.fast_line`)
        and the machine has a core to spare (`line_workers.worker_count`)."""
        count = worker_count()
        if not (count and self.reads_json_lines and self.batches_encode_records_directly(context)
                and self.shaper.fast_line is not None):
            yield
            return
        self.logger.info("%s: JSON Lines read by %d worker processes for the BATCH files (%s)", self.name, count,
                         WORKERS_ENV_VAR)
        with LineWorkers(self.shaper, count) as self.line_workers:
            try:
                yield
            finally:
                self.line_workers = None

    def _jsonl_batches(
        self, batch_config: BatchConfig, context: dict | None
    ) -> t.Iterator[tuple[BaseBatchFileEncoding, list[str]]]:
        storage = batch_config.storage
        sync_id = f"{self.tap_name}--{self.name}-{uuid.uuid4()}"
        compress = batch_config.encoding.compression == "gzip"
        records = self._records_for_batches(context)
        record = next(records, None)
        # A file is published and announced once the next one is written: its last chunks compress meanwhile,
        # on the other core, instead of the parser waiting for them (issue 20).
        finishing: tuple[contextlib.ExitStack, str] | None = None
        try:
            for number in itertools.count(1):
                if record is None:
                    break
                filename = f"{storage.prefix or ''}{sync_id}-{number}.json" + (".gz" if compress else "")
                with contextlib.ExitStack() as stack:
                    # Not `storage.open`: a child stream synced while this file is written would end its
                    # transaction (tap_backstory/batch_files.py).
                    out = stack.enter_context(BatchFileWriter(stack.enter_context(publish(storage, filename)),
                                                              compress=compress))
                    record = out.write_records(record, records, batch_config.batch_size)
                    out.end_soon()
                    written = (stack.pop_all(), storage.get_url(filename))
                finished, finishing = finishing, written
                if record is None:
                    # The records ended, so the stream's state is final: the files still unannounced go out in
                    # one BATCH message, and the state the SDK writes after it is the first to be final.
                    done = [item for item in (finished, finishing) if item is not None]
                    finishing = None
                    for stack, _ in done:
                        stack.close()
                    yield batch_config.encoding, [url for _, url in done]
                elif finished is not None:
                    finished[0].close()
                    yield batch_config.encoding, [finished[1]]
        finally:
            if finishing is not None:  # an error in the next file: this one is not published either
                finishing[0].__exit__(*sys.exc_info())

    def _parquet_batches(
        self, batch_config: BatchConfig, context: dict | None
    ) -> t.Iterator[tuple[BaseBatchFileEncoding, list[str]]]:
        """Parquet batch files, named as the SDK names them (`{prefix}{tap}--{stream}-{uuid}={n}.parquet[.gz]`).

        Not the SDK's batcher: it builds each file's table with `pyarrow.Table.from_pylist`, which takes the
        columns from the file's *first* record, so every value of a top-level key that record lacks was lost.
        Here the columns are every key of every record in the file (nested objects too). A file holds one
        chunk of `batch_size` records in memory, as in the SDK (a table is built whole).
        """
        storage = batch_config.storage
        sync_id = f"{self.tap_name}--{self.name}-{uuid.uuid4()}"
        compress = batch_config.encoding.compression == "gzip"
        records = iter(self._sync_records(context, write_messages=False))
        record = next(records, None)
        for number in itertools.count(1):
            if record is None:
                return
            chunk = [record, *itertools.islice(records, batch_config.batch_size - 1)]
            record = next(records, None)  # read ahead: the last file goes out with the stream's final state
            filename = f"{storage.prefix or ''}{sync_id}={number}.parquet" + (".gz" if compress else "")
            with publish(storage, filename) as out:
                write_parquet(chunk, out, compression="gzip" if compress else None)
            yield batch_config.encoding, [storage.get_url(filename)]

    @functools.cached_property
    def shaper(self) -> RecordShaper:
        return RecordShaper(self.schema, self.name, flattening_depth=self.flattening_depth)

    @property
    def flattening_depth(self) -> int:
        """How deep the SDK flattens this stream's records (0: not at all), from its stream maps."""
        depths = [stream_map.flattening_options.max_level for stream_map in self.stream_maps
                  if stream_map.flattening_enabled and stream_map.flattening_options is not None]
        return max(depths, default=0)

    @property
    def bookmarks(self) -> dict:
        """This stream's mutable state (tap-owned keys; see docs/state.md)."""
        return self.get_context_state(None)

    def checkpoint(self) -> None:
        """Emit a STATE message now, so an interrupted run resumes from here.

        The SDK has no public call for this; 0.54 keeps the "already flushed" flag on `state_manager`
        (listed in `tap_backstory/sdk.py`, covered by the resume tests). In BATCH mode records reach the
        target after the stream ends, so a STATE emitted earlier would get ahead of them: skip it there.
        """
        if self.config.get("batch_config"):
            return
        self.state_manager.is_flushed = False
        self._write_state_message()
