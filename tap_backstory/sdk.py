"""Everything the tap takes from the Singer SDK beyond its public API, in one place.

The tap overrides three private SDK methods, calls four more, sets one private flag, reads private attributes and
copies a few pieces of SDK code. `SDK_CODE` and `PRIVATE_NAMES` below list all of them, with where the tap
uses each and why; `tests/test_sdk_surface.py` checks them against the installed SDK (fingerprints of the code
as of `RECORDED_FOR`, and that every private name still exists), so an SDK upgrade fails there, naming what
to re-check, instead of somewhere downstream. This is also the only module that imports `singer_sdk.helpers._*`;
the rest of the tap imports those names from here. How to port: docs/sdk-upgrade.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig, StorageTarget
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers._util import utc_now
from singer_sdk.plugin_base import JSONSchemaValidator

__all__ = [
    "PRIVATE_NAMES",
    "RECORDED_FOR",
    "SDK_CODE",
    "BaseBatchFileEncoding",
    "BatchConfig",
    "JSONSchemaValidator",
    "PrivateName",
    "SdkCode",
    "StorageTarget",
    "pop_deselected_record_properties",
    "utc_now",
]

RECORDED_FOR = "0.54.9"
"""The singer-sdk version whose code the fingerprints below were taken from (and the tap was tested on)."""


@dataclass(frozen=True)
class SdkCode:
    """A piece of SDK code the tap overrides, copies or depends on the inner workings of."""

    sdk: str  # "module:Qualified.name" of the SDK function
    how: str  # "overrides" | "copies" | "calls" | "relies on": what the tap does with it
    tap: str  # the tap's place that depends on it
    recheck: str  # what to re-check in the tap when the SDK's code changed
    fingerprint: str  # sha256 of the code at RECORDED_FOR, docstrings and comments left out (see the test)


@dataclass(frozen=True)
class PrivateName:
    """A private (or undocumented) name the tap reads or sets: it must still exist."""

    owner: str  # "tap", "stream", "stream.state_manager" (on an instance), or an SDK module
    name: str
    tap: str  # the tap's place that uses it
    why: str


SDK_CODE = (
    SdkCode(
        "singer_sdk.streams.core:Stream._generate_record_messages",
        "overrides",
        "tap_backstory/streams/base.py TapStream._generate_record_messages",
        "it is a copy of this method minus `pop_deselected_record_properties` when nothing is deselected and "
        "`conform_record_data_types` (a no-op at TYPE_CONFORMANCE_LEVEL NONE), plus `flattened_columns` on "
        "flattened records: port any other change (stream maps, version, time_extracted); "
        "tests/test_record_path.py, tests/test_flattening.py",
        "a1b0c088a3e90304f5d5ce26fb37436157eeae44dd0918d2c1a1dbff34305a27",
    ),
    SdkCode(
        "singer_sdk.plugin_base:PluginBase._validate_config",
        "overrides",
        "tap_backstory/tap.py TapBackstory._validate_config",
        "the override keeps its signature and return value, validates `self._config` with `JSONSchemaValidator` "
        "(which fills in setting defaults) after `append_builtin_config`, and must still be what "
        "PluginBase.__init__ calls; tests/test_config.py",
        "ee3e4974921c6386de72aa0778c1c8ca2f829605d9c6892dae07738c99bc4ace",
    ),
    SdkCode(
        "singer_sdk.tap_base:Tap._handle_termination",
        "overrides",
        "tap_backstory/tap.py TapBackstory._handle_termination (tap_backstory/stopping.py)",
        "the SDK's handler writes the current state (possibly half a window) and exits 0 through "
        "PluginBase._handle_termination; the override writes nothing more and exits 143/130 with one line. If "
        "the SDK's handler now does something a stop needs (drains, closes), port it; tests/test_stopping.py",
        "52eaa9b63d3c9927187676e718cde297da9609b07f2d046efeab1ccfea41c46b",
    ),
    SdkCode(
        "singer_sdk.plugin_base:PluginBase._handle_termination",
        "overrides",
        "tap_backstory/tap.py TapBackstory._handle_termination (tap_backstory/stopping.py)",
        "not called by the override (it logs 'Gracefully shutting down...' and exits 0); tests/test_stopping.py",
        "599a0e95e7233b7b37501b20e83f37d7a009bb696d48635915b88a0907f5c928",
    ),
    SdkCode(
        "singer_sdk.plugin_base:PluginBase._setup_signal_handlers",
        "relies on",
        "tap_backstory/tap.py TapBackstory._handle_termination",
        "it must still install `self._handle_termination` for SIGINT and SIGTERM when the tap is built in the "
        "main thread; tests/test_sdk_surface.py::test_the_sdk_installs_the_taps_termination_handler, "
        "tests/test_stopping.py",
        "3e1fd71ecb58c2beb2e9456729087b0dd9bbe235302b5a106fea2f64b7d410d7",
    ),
    SdkCode(
        "singer_sdk.streams.core:Stream._write_state_message",
        "calls",
        "tap_backstory/streams/base.py TapStream.checkpoint",
        "checkpoint clears `state_manager.is_flushed` and calls this to emit a STATE now: it must still write "
        "the tap state when the flag is False; tests/test_reliability.py (kill and resume)",
        "f645eaadc584842a4d58249a30b80453a95a76e978da0d28c8b01f1422a0372d",
    ),
    SdkCode(
        "singer_sdk.streams.core:Stream._sync_records",
        "copies",
        "tap_backstory/streams/base.py TapStream._sdk_record_steps_idle, direct_record_writer, "
        "_records_for_batches (and get_batches, which calls it)",
        "the per-record steps `_sdk_record_steps_idle` lists must still be all it does per record (else a "
        "direct writer or the lean BATCH loop would skip new work); `_records_for_batches` copies the "
        "bookkeeping around the loop for a stream without partitions (counter and timer, "
        "`_write_starting_replication_value(None)`, `_finalize_state` of the context state then of the stream "
        "state); with write_messages=False it must still yield each selected record after counting it, "
        "advancing state and syncing child streams, and write no message; tests/test_batch.py, "
        "tests/test_record_path.py, tests/test_every_property.py",
        "9e41ee821016f586f9bf8e35500401891b266523ecd7a54dfa9a7277fe1300ed",
    ),
    SdkCode(
        "singer_sdk.streams.core:Stream._write_record_message",
        "copies",
        "tap_backstory/writer.py DirectRecordWriter (through TapStream.direct_record_writer)",
        "after the RECORD messages it clears `state_manager.is_flushed` (so the final STATE is written): the "
        "direct writer does the same once per window; port any other step",
        "e14be0c0d78c5e9b2697464e54987befef725242c2d115c68aa5287f025c8a58",
    ),
    SdkCode(
        "singer_sdk.singerlib.encoding.simple:RecordMessage.to_dict",
        "copies",
        "tap_backstory/writer.py DirectRecordWriter",
        "the RECORD message's keys and their order (type, stream, record, version when set, time_extracted); "
        "the direct writer encodes the same dict with an encoder configured as "
        "`singer_sdk.contrib.msgspec.encoder` (enc_hook, decimal_format): keep both the same",
        "069e3a7f7871ae24cb15ee072f6e8437fe82c798829ffbd707882ac896dbfe7e",
    ),
    SdkCode(
        "singer_sdk.mapper:SameRecordTransform.transform",
        "relies on",
        "tap_backstory/streams/base.py TapStream._sdk_record_steps_idle",
        "without flattening the default stream map must still return the record unchanged (then no map is "
        "applied on the direct and lean BATCH paths)",
        "3de0aec9fb6736831b872014eb1146e82f156706915ef364342e976766a3220c",
    ),
    SdkCode(
        "singer_sdk.streams.core:Stream._sync_batches",
        "relies on",
        "tap_backstory/streams/base.py TapStream.get_batches",
        "one BATCH message then one STATE per (encoding, manifest) the hook yields: get_batches reads the next "
        "record before yielding a file so the last STATE is final; tests/test_batch.py",
        "96afcb111a134b929d0f9785fbd5b33ddbd71b1cd2824cf8f43e742d1debbea0",
    ),
    SdkCode(
        "singer_sdk.streams.core:Stream.get_batches",
        "copies",
        "tap_backstory/streams/base.py TapStream.get_batches",
        "the override re-implements the default (its record source; formats other than jsonl and parquet handed "
        "back to it): port what changed; tests/test_batch.py",
        "24a107f9e734c48d5a2fc70b51a9a2222e06a026d2f2bb0d6c8cb8f8ffb1bf9b",
    ),
    SdkCode(
        "singer_sdk.contrib.batch_encoder_jsonl:JSONLinesBatcher.get_batches",
        "copies",
        "tap_backstory/streams/base.py TapStream.get_batches",
        "file names `{prefix}{tap}--{stream}-{uuid}-{n}.json.gz`, one file per `batch_size` records, one "
        "manifest per file: keep the tap's files like the SDK's; tests/test_batch.py",
        "d4b71884fea81bda500ce3cb31f83ad079d4efa29bc4216039725542d9104a75",
    ),
    SdkCode(
        "singer_sdk.helpers._batch:StorageTarget.get_url",
        "relies on",
        "tap_backstory/batch_files.py publish",
        "a local storage root must still give a `file://` URL of the file's final path (publish renames the "
        "finished file there; the BATCH message names that URL); tests/test_batch.py",
        "67b486f6b08ad3138fc6982f60f94fc73150f6aa78309ca646f032f12bb54ece",
    ),
    SdkCode(
        "singer_sdk.helpers._batch:StorageTarget.open",
        "relies on",
        "tap_backstory/batch_files.py publish",
        "kept out of record reading: its fsspec transaction is per filesystem, so a child stream's transaction "
        "replaced the parent's (issue 21). publish only copies a finished file through it for non-local storage; "
        "if the SDK makes it safe to hold open across child streams, publish may go back to it; "
        "tests/test_batch.py",
        "a5c692a717a77d78fddb385648decb0d9a91e34cbf5cdec0c75a5077563dd74b",
    ),
    SdkCode(
        "singer_sdk.helpers._batch:StorageTarget._fs",
        "relies on",
        "tap_backstory/batch_files.py publish",
        "the transaction that `StorageTarget.open` writes through (see its entry); tests/test_batch.py",
        "68af844f988d69e6d9ac6475dd5831c3b673a53f97ed6789e23ad6b0822e1476",
    ),
    SdkCode(
        "singer_sdk.contrib.batch_encoder_parquet:ParquetBatcher.get_batches",
        "copies",
        "tap_backstory/streams/base.py TapStream._parquet_batches",
        "file names `{prefix}{tap}--{stream}-{uuid}={n}.parquet[.gz]`, gzip or the default codec, one file per "
        "`batch_size` records; the tap's table has a column for every key of every record (the SDK's takes the "
        "first record's keys only): port what else changed; tests/test_batch.py",
        "cf326b03c878dfdb46722b47dc6c8e064430b161a62a281dd3fd34ffa875b226",
    ),
    SdkCode(
        "singer_sdk.streams.core:Stream.sync",
        "relies on",
        "tap_backstory/streams/base.py TapStream.log",
        "the override rewrites its line \"Beginning sync of '%s' in %s mode\" (FULL_TABLE only keeps the SDK out "
        "of the bookmarks) into what the run does: keep the text it matches; tests/test_operations.py",
        "ca47855e5a382528fa5a0cd8440289a5a86877729de56e9853a3332a16a7a7e3",
    ),
    SdkCode(
        "singer_sdk.helpers._catalog:pop_deselected_record_properties",
        "relies on",
        "tap_backstory/streams/base.py TapStream._generate_record_messages",
        "skipped when the catalog deselects nothing: it must still change nothing then; "
        "tests/test_record_path.py",
        "6aa66c444a2aaaa81fc00e2cbfdb00ffb29e8157fef5da12d49cfa162ac4a048",
    ),
    SdkCode(
        "singer_sdk.helpers._typing:conform_record_data_types",
        "relies on",
        "tap_backstory/streams/base.py TapStream._generate_record_messages",
        "never called: at TypeConformanceLevel.NONE it must still return the record untouched",
        "1f4f879610e243bb807cc1b98ca3336fe4a85a854df867c9f6a78ae023f0ae4d",
    ),
    SdkCode(
        "singer_sdk.helpers._typing:_conform_record_data_types",
        "relies on",
        "tap_backstory/streams/base.py TapStream._generate_record_messages",
        "never called: at TypeConformanceLevel.NONE it must still return the record untouched",
        "3a4f39f5880febf4fa4de528f97c05806c6c088ec1f42f7d1a0fc34b71784f3e",
    ),
    SdkCode(
        "singer_sdk.helpers._flattening:_flatten_record",
        "relies on",
        "tap_backstory/streams/base.py flattened_columns; tap_backstory/formats.py DeclaredObject",
        "it flattens what a record holds, not what the flattened SCHEMA declares: a null object stays under its "
        "own name and undeclared nested keys become columns; the tap moves those keys into `_extra` and gives "
        "each record the SCHEMA's columns. If the SDK now does either itself, the tap's steps may go; "
        "tests/test_flattening.py",
        "051e295bb7dfd86af974915dc5380aa937ee40db964b7228442595b2d526d7f8",
    ),
    SdkCode(
        "singer_sdk.helpers._flattening:_flatten_schema",
        "relies on",
        "tap_backstory/formats.py DeclaredObject",
        "an object with `properties` above the depth limit becomes one column per property, any other object "
        "or array one JSON string column: the shaper walks the objects with properties; tests/test_flattening.py",
        "084d9df42446e929ebe3ccf2cbc1659b07b30348acf0ed7a35d4d5f02e9c53d6",
    ),
    SdkCode(
        "singer_sdk.contrib.msgspec:MsgSpecWriter.write_message",
        "copies",
        "tap_backstory/writer.py BufferedMsgSpecWriter.write_message",
        "a copy that flushes only after non-RECORD messages: port any other change (encoding, target stream)",
        "a3a047d10296ab631408adcf6fe22d29bc1e95d214f3871cd1e5430c89148abb",
    ),
)

PRIVATE_NAMES = (
    PrivateName("stream", "_tap", "tap_backstory/streams/base.py TapStream.tap", "the stream's tap, typed"),
    PrivateName(
        "stream",
        "_stream_version",
        "tap_backstory/streams/base.py TapStream._generate_record_messages, TapStream.direct_record_writer",
        "RECORD version, as in the SDK's copy",
    ),
    PrivateName(
        "stream",
        "_write_starting_replication_value",
        "tap_backstory/streams/base.py TapStream._records_for_batches",
        "the lean BATCH loop does the SDK's bookkeeping around its record loop",
    ),
    PrivateName(
        "stream",
        "_finalize_state",
        "tap_backstory/streams/base.py TapStream._records_for_batches",
        "the lean BATCH loop does the SDK's bookkeeping around its record loop",
    ),
    PrivateName(
        "stream.state_manager",
        "is_flushed",
        "tap_backstory/streams/base.py TapStream.checkpoint, TapStream.direct_record_writer",
        "cleared so `_write_state_message` emits a mid-run STATE (the SDK has no public call for it), and "
        "after records written directly, as the SDK's `_write_record_message` clears it",
    ),
    PrivateName(
        "tap",
        "_config",
        "tap_backstory/tap.py TapBackstory._validate_config",
        "the raw config, validated (and given defaults) in place, as the SDK's own validation does",
    ),
    PrivateName(
        "singer_sdk.plugin_base",
        "JSONSchemaValidator",
        "tap_backstory/tap.py TapBackstory._validate_config",
        "the SDK's validator that fills in setting defaults (undocumented)",
    ),
    PrivateName(
        "singer_sdk.helpers._catalog",
        "pop_deselected_record_properties",
        "tap_backstory/streams/base.py TapStream._generate_record_messages",
        "the SDK's property deselection, called only when something is deselected",
    ),
    PrivateName(
        "singer_sdk.helpers._util",
        "utc_now",
        "tap_backstory/streams/base.py TapStream._generate_record_messages",
        "RECORD time_extracted, as in the SDK's copy",
    ),
    PrivateName(
        "singer_sdk.helpers._batch",
        "BatchConfig",
        "tap_backstory/streams/base.py TapStream.get_batches",
        "type of the hook's argument (no public home in 0.54)",
    ),
    PrivateName(
        "singer_sdk.helpers._batch",
        "BaseBatchFileEncoding",
        "tap_backstory/streams/base.py TapStream.get_batches",
        "type of what the hook yields (no public home in 0.54)",
    ),
    PrivateName(
        "singer_sdk.helpers._batch",
        "StorageTarget",
        "tap_backstory/batch_files.py publish",
        "type of `BatchConfig.storage` (no public home in 0.54)",
    ),
)
