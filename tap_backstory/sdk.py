"""Everything the tap takes from the Singer SDK beyond its public API, in one place.

The tap overrides two private SDK methods, calls two more, sets one private flag, reads private attributes and
copies a few pieces of SDK code. `SDK_CODE` and `PRIVATE_NAMES` below list all of them, with where the tap
uses each and why; `tests/test_sdk_surface.py` checks them against the installed SDK (fingerprints of the code
as of `RECORDED_FOR`, and that every private name still exists), so an SDK upgrade fails there, naming what
to re-check, instead of somewhere downstream. This is also the only module that imports `singer_sdk.helpers._*`;
the rest of the tap imports those names from here. How to port: docs/sdk-upgrade.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig
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
        "`conform_record_data_types` (a no-op at TYPE_CONFORMANCE_LEVEL NONE): port any other change "
        "(stream maps, version, time_extracted); tests/test_record_path.py",
        "af92c8cda1aa676266c7785d881d09cfb1cf010220f80892890b55f03541e4b9",
    ),
    SdkCode(
        "singer_sdk.plugin_base:PluginBase._validate_config",
        "overrides",
        "tap_backstory/tap.py TapBackstory._validate_config",
        "the override keeps its signature and return value, validates `self._config` with `JSONSchemaValidator` "
        "(which fills in setting defaults) after `append_builtin_config`, and must still be what "
        "PluginBase.__init__ calls; tests/test_config.py",
        "7e6908639fd159003bc674cfed0bfd4a6be3cb81bbc70575c8f76e26d8e31829",
    ),
    SdkCode(
        "singer_sdk.streams.core:Stream._write_state_message",
        "calls",
        "tap_backstory/streams/base.py TapStream.checkpoint",
        "checkpoint clears `state_manager.is_flushed` and calls this to emit a STATE now: it must still write "
        "the tap state when the flag is False; tests/test_reliability.py (kill and resume)",
        "939aa9b5e2a7872116af8837cd513bf3dedec34a0328090f952b8e6edd4a5334",
    ),
    SdkCode(
        "singer_sdk.streams.core:Stream._sync_records",
        "calls",
        "tap_backstory/streams/base.py TapStream.get_batches",
        "with write_messages=False it must still yield each selected record after counting it, advancing state "
        "and syncing child streams, and write no message; tests/test_batch.py",
        "4a3cd5eea11d14d2aa3e717694c763a46669be9f297897a0f06c097b79dd0085",
    ),
    SdkCode(
        "singer_sdk.streams.core:Stream._sync_batches",
        "relies on",
        "tap_backstory/streams/base.py TapStream.get_batches",
        "one BATCH message then one STATE per (encoding, manifest) the hook yields: get_batches reads the next "
        "record before yielding a file so the last STATE is final; tests/test_batch.py",
        "ac57633e07e86daabaf4b7c2fcbde1a9033e1fd136ace35b97f7be797193a9c1",
    ),
    SdkCode(
        "singer_sdk.streams.core:Stream.get_batches",
        "copies",
        "tap_backstory/streams/base.py TapStream.get_batches",
        "the override re-implements the default (its record source, non-jsonl formats handed back to it): port "
        "what changed; tests/test_batch.py",
        "d205c05ef04df69560316cc17ee52d518e5582e042d00cb7f65de797840f9fa3",
    ),
    SdkCode(
        "singer_sdk.contrib.batch_encoder_jsonl:JSONLinesBatcher.get_batches",
        "copies",
        "tap_backstory/streams/base.py TapStream.get_batches",
        "file names `{prefix}{tap}--{stream}-{uuid}-{n}.json.gz`, one file per `batch_size` records, one "
        "manifest per file: keep the tap's files like the SDK's; tests/test_batch.py",
        "abaea6b67e2d231ba71552d34d56aea40ba95e78d79232ca8c17e191257a87dd",
    ),
    SdkCode(
        "singer_sdk.streams.core:Stream.sync",
        "relies on",
        "tap_backstory/streams/base.py _PlannedStopIsNoError",
        "the filter drops the line 'An unhandled error occurred while syncing' logged from inside its `except` "
        "for the SDK's abort signals: keep the text and the place; tests/test_config.py (--test)",
        "f0bb73e353cb8e74dd3cca61a6006d4759e9968b79c18eaf567e8b0824165c26",
    ),
    SdkCode(
        "singer_sdk.helpers._catalog:pop_deselected_record_properties",
        "relies on",
        "tap_backstory/streams/base.py TapStream._generate_record_messages",
        "skipped when the catalog deselects nothing: it must still change nothing then; "
        "tests/test_record_path.py",
        "d5171276016725011308b8befffc9990f172537ce5f987b2c71597750edc3844",
    ),
    SdkCode(
        "singer_sdk.helpers._typing:conform_record_data_types",
        "relies on",
        "tap_backstory/streams/base.py TapStream._generate_record_messages",
        "never called: at TypeConformanceLevel.NONE it must still return the record untouched",
        "0165a604275ec564f079fa84153f548a03293563b2f532d6991adc974474ccc9",
    ),
    SdkCode(
        "singer_sdk.helpers._typing:_conform_record_data_types",
        "relies on",
        "tap_backstory/streams/base.py TapStream._generate_record_messages",
        "never called: at TypeConformanceLevel.NONE it must still return the record untouched",
        "194affa9037c404f0db65c53158f1385e8b2c2ba3685cf6ffb86cb1ce093db92",
    ),
    SdkCode(
        "singer_sdk.contrib.msgspec:MsgSpecWriter.write_message",
        "copies",
        "tap_backstory/writer.py BufferedMsgSpecWriter.write_message",
        "a copy that flushes only after non-RECORD messages: port any other change (encoding, target stream)",
        "c15cb0191e4a38a7bf9d3fee85ee988b177332beba5660858cf710baf698f1e8",
    ),
)

PRIVATE_NAMES = (
    PrivateName("stream", "_tap", "tap_backstory/streams/base.py TapStream.tap", "the stream's tap, typed"),
    PrivateName(
        "stream",
        "_stream_version",
        "tap_backstory/streams/base.py TapStream._generate_record_messages",
        "RECORD version, as in the SDK's copy",
    ),
    PrivateName(
        "stream.state_manager",
        "is_flushed",
        "tap_backstory/streams/base.py TapStream.checkpoint",
        "cleared so `_write_state_message` emits a mid-run STATE (the SDK has no public call for it)",
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
)
