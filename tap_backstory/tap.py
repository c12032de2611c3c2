"""tap-backstory: settings, config checks, stream discovery and stream order."""

from __future__ import annotations

import difflib
import functools
import importlib.util
import logging
import os
import signal
import stat
import sys
import typing as t
from urllib.parse import urlsplit

import click
import singer_sdk.singerlib as singer
from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.helpers.capabilities import PluginCapabilities, TapCapabilities

from tap_backstory import malloc
from tap_backstory.auth import ApiKeyAuth, BackstoryTokenAuth
from tap_backstory.batch_files import PARQUET_NEEDS_PYARROW
from tap_backstory.client import (
    LOGGER,
    ApiClient,
    ConfigError,
    TapBackstoryError,
    is_loopback,
    register_secret,
    safe_text,
)
from tap_backstory.names import ENRICHMENT_SECTIONS, STREAM_CREDENTIALS, STREAM_ORDER
from tap_backstory.state_check import check_state
from tap_backstory.stopping import STOP, exit_now, signal_cause
from tap_backstory.windows import Clock, parse_day, plural
from tap_backstory.writer import BufferedMsgSpecWriter

if t.TYPE_CHECKING:
    from types import FrameType

    from singer_sdk.streams import Stream

# The Backstory key type each Backstory stream needs (its settings: `names.STREAM_CREDENTIALS`).
BACKSTORY_KEY_TYPES = {"activities": "Activity", "enriched_contacts": "Object"}
SECRET_SETTINGS = ("activity_client_secret", "object_client_secret", "contactbased_api_key")

CONFIG_SCHEMA = th.PropertiesList(
    # --- Backstory -----------------------------------------------------------------------------------
    th.Property(
        "api_url",
        th.StringType,
        default="https://api.people.ai",
        title="Backstory API URL",
        description="Base URL of the Backstory (People.ai) API. Credentials are only sent over HTTPS, "
        "except to loopback hosts (the bundled sandbox).",
    ),
    th.Property(
        "activity_client_id",
        th.StringType,
        title="Activity API key",
        description="Key of an Activity-type Backstory API key pair (Settings > API Key Management). "
        "Enables the `activities` stream.",
    ),
    th.Property(
        "activity_client_secret",
        th.StringType,
        secret=True,
        title="Activity API secret",
        description="Secret of the Activity-type key pair.",
    ),
    th.Property(
        "object_client_id",
        th.StringType,
        title="Object API key",
        description="Key of an Object-type Backstory API key pair. Enables the `enriched_contacts` stream "
        "(each Backstory key works for one API type only).",
    ),
    th.Property(
        "object_client_secret",
        th.StringType,
        secret=True,
        title="Object API secret",
        description="Secret of the Object-type key pair.",
    ),
    th.Property(
        "start_date",
        th.DateType,
        title="Start date",
        description="First UTC day (YYYY-MM-DD) to extract for the Backstory streams. Moved earlier after a run, "
        "the next run backfills the days added first (docs/state.md). Required when a Backstory key pair is set.",
    ),
    th.Property(
        "end_date",
        th.DateType,
        title="End date",
        description="Last UTC day to extract, inclusive (YYYY-MM-DD). Default: today (UTC).",
    ),
    th.Property(
        "activity_type",
        th.StringType,
        default="all",
        allowed_values=["all", "email", "meeting", "call"],
        title="Activity type",
        description="Which activities to export: all, email, meeting or call. Widened after a run, the next run "
        "backfills the types added over the days already extracted first (docs/state.md).",
    ),
    th.Property(
        "snapshot_window_days",
        th.IntegerType(minimum=1, maximum=365),
        default=365,
        title="Snapshot window (days)",
        description="Longest date range of one snapshot export job (first runs, and every "
        "`enriched_contacts` run). Backstory allows at most one year.",
    ),
    th.Property(
        "delta_window_days",
        th.IntegerType(minimum=1, maximum=14),
        default=14,
        title="Delta window (days)",
        description="Longest date range of one delta export job (incremental `activities` runs). "
        "Backstory allows at most 14 days.",
    ),
    th.Property(
        "contacts_output_format",
        th.StringType,
        default="JSON",
        allowed_values=["JSON", "CSV"],
        title="Contacts export format",
        description="File format Backstory produces for `enriched_contacts`; the records are typed the "
        "same either way.",
    ),
    th.Property(
        "contacts_include_historical",
        th.BooleanType,
        default=True,
        title="Include historical contacts",
        description="Include contacts not matched to an account or opportunity.",
    ),
    th.Property(
        "contacts_include_existing",
        th.BooleanType,
        default=True,
        title="Include existing contacts",
        description="Include contacts that already exist in your CRM.",
    ),
    th.Property(
        "contacts_is_sourced_by_people_ai",
        th.BooleanType,
        default=False,
        title="Only contacts sourced by Backstory",
        description="Include only contacts created by Backstory and generated candidates.",
    ),
    th.Property(
        "contacts_country",
        th.StringType,
        title="Contacts country filter",
        description='Only contacts of this country, e.g. "United States".',
    ),
    th.Property(
        "contacts_state",
        th.StringType,
        title="Contacts state filter",
        description='Only contacts of this state, e.g. "New York".',
    ),
    th.Property(
        "max_concurrent_jobs",
        th.IntegerType(minimum=1, maximum=2),
        default=2,
        title="Concurrent export jobs",
        description="Most export jobs of this tap queued or running at once (Backstory allows 2 per "
        "organization; use 1 when another process shares the limit).",
    ),
    th.Property(
        "fragment_concurrency",
        th.IntegerType(minimum=1, maximum=16),
        default=4,
        title="Parallel fragment downloads",
        description=(
            "The most fragments of a completed export downloaded at once: downloads start one at a time and "
            "widen up to this many while the tap waits for bytes (a link slower than parsing)."
        ),
    ),
    th.Property(
        "fragment_mode",
        th.StringType,
        allowed_values=["auto", "fragments", "whole"],
        default="auto",
        title="Fragment downloads",
        description="How a completed export's files are downloaded: `auto` asks for each fragment "
        "(`?fragment=N`) and falls back to one plain download, with a warning, when the server refuses or "
        "ignores the parameter; `fragments` only asks for fragments (a refusal or a repeated file is an error); "
        "`whole` makes one plain download per export.",
    ),
    th.Property(
        "job_poll_interval_seconds",
        th.NumberType(exclusive_minimum=0, maximum=3600),  # not minimum=0.1: Decimal("0.1") < 0.1
        default=10,
        title="Job poll interval (s)",
        description="First wait between job status checks; it grows up to 60 s (or this value if larger) "
        "while a job stays queued or running. Also paces the checks of a ContactBased export that is still "
        "building.",
    ),
    th.Property(
        "job_timeout_seconds",
        th.IntegerType(minimum=1),
        default=10800,
        title="Job time-out (s)",
        description="Give up on an export job (or a ContactBased export still building) that has not "
        "completed after this many seconds.",
    ),
    # --- ContactBased --------------------------------------------------------------------------------
    th.Property(
        "contactbased_api_url",
        th.StringType,
        default="https://api.contactbased.com",
        title="ContactBased API URL",
        description="Base URL of the ContactBased Data APIs.",
    ),
    th.Property(
        "contactbased_api_key",
        th.StringType,
        secret=True,
        title="ContactBased API key",
        description="ContactBased API key (sent in the X-API-Key header). Enables `intent_feed_exports` "
        "and `enriched_contact_records`.",
    ),
    th.Property(
        "intent_feed_ids",
        th.ArrayType(th.StringType),
        title="Intent feed ids",
        description="Feeds to export. Default: every feed listed by GET /organization/feeds.",
    ),
    th.Property(
        "intent_lookback_days",
        th.IntegerType(minimum=1),
        title="First-run lookback (days)",
        description="Days of intent data to export on the first run, ending today. Default and maximum: "
        "each feed's lookback cap (learned from the server when the feed list gives none).",
    ),
    th.Property(
        "intent_get_pii",
        th.BooleanType,
        default=False,
        title="Export PII",
        description="Include PII fields (name, address, demographics) on every row; the feed must allow it.",
    ),
    th.Property(
        "intent_include_business_info",
        th.BooleanType,
        default=False,
        title="Export business info",
        description="Include business-info fields (e.g. linkedin_url); the feed must allow it.",
    ),
    th.Property(
        "intent_require_contact_id",
        th.BooleanType,
        default=False,
        title="Only rows with a contact_id",
        description="Export only rows that resolved to a stable contact_id.",
    ),
    th.Property(
        "intent_max_rows",
        th.IntegerType(minimum=1),
        title="Max rows per export",
        description="Cap each export at this many rows; the export quota spent never exceeds it. Without "
        "it, an export larger than the feed's remaining quota fails instead of spending it silently.",
    ),
    th.Property(
        "enrichment_sections",
        th.ArrayType(th.StringType),
        title="Enrichment sections",
        description="Sections fetched for each contact: any of pii, emails, phones. Default: all three.",
    ),
    th.Property(
        "enrichment_batch_size",
        th.IntegerType(minimum=1, maximum=1000),
        default=1000,
        title="Enrichment batch size",
        description="Contact ids per POST /enrich/contacts/batch request (the API allows 1000).",
    ),
).to_dict()


def check_config(config: t.Mapping[str, t.Any], clock: Clock) -> None:
    """Checks jsonschema cannot express; each raises ConfigError naming the setting."""
    configured = False
    for stream, key_type in BACKSTORY_KEY_TYPES.items():
        setting_id, setting_secret = STREAM_CREDENTIALS[stream]
        has_id, has_secret = bool(config.get(setting_id)), bool(config.get(setting_secret))
        if has_id != has_secret:
            missing = setting_secret if has_id else setting_id
            raise ConfigError(f"{missing} is missing: the {key_type} key pair needs both its id and secret")
        configured |= has_id
    backstory = configured
    configured |= bool(config.get("contactbased_api_key"))
    if not configured:
        raise ConfigError(
            "no stream is configured: set activity_client_id/activity_client_secret, "
            "object_client_id/object_client_secret or contactbased_api_key"
        )
    if backstory:
        if not config.get("start_date"):
            raise ConfigError("start_date is required when a Backstory key pair is set (YYYY-MM-DD)")
        start = parse_day(config["start_date"], "start_date")
        end = parse_day(config["end_date"], "end_date") if config.get("end_date") else clock.today()
        if end < start:
            raise ConfigError(f"end_date {end} is before start_date {start}")
        if end > clock.today():
            raise ConfigError(f"end_date {end} is in the future (today is {clock.today()} UTC)")
    for setting in SECRET_SETTINGS:  # before anything can echo them (server texts, errors, logs)
        register_secret(config.get(setting))
    for setting in ("api_url", "contactbased_api_url"):
        check_api_url(setting, config.get(setting, ""))
    sections = config.get("enrichment_sections")
    if sections is not None:
        unknown = sorted(set(sections) - set(ENRICHMENT_SECTIONS))
        if unknown or not sections:
            raise ConfigError(f"enrichment_sections must be a non-empty subset of {list(ENRICHMENT_SECTIONS)}")
    batch_format = ((config.get("batch_config") or {}).get("encoding") or {}).get("format")
    if batch_format == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(PARQUET_NEEDS_PYARROW)


ENV_PREFIX = "TAP_BACKSTORY_"
OWN_ENV_VARS = frozenset(
    {"TODAY", "READ_TIMEOUT_SECONDS", "HEARTBEAT_SECONDS", "PROGRESS_SECONDS", "MAX_DECODED_BYTES", "BATCH_WORKERS",
     "LOGLEVEL"}
)
"""TAP_BACKSTORY_* variables that are not settings: the tap's clock and test knobs, the decoded-size ceiling
(formats.py), the BATCH line workers (line_workers.py), the SDK's log level."""


def warn_unknown_env_vars(settings: t.Iterable[str], environ: t.Mapping[str, str]) -> list[str]:
    """One WARNING per TAP_BACKSTORY_* variable that names no setting (a typo is otherwise silently ignored, under
    `--config ENV` and under Meltano alike), with the nearest setting's variable. Meltano's own variables
    (`TAP_BACKSTORY__SELECT`, ...: a double underscore) are not settings and are left alone, and so are the
    variables of plugins that inherit from this one (`TAP_BACKSTORY_ACME_API_URL` for `tap-backstory-acme`, as in
    orchestration/meltano.yml): a name ending in `_<setting>`. Returns the names."""
    known = {name.upper() for name in settings}
    unknown = sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX)
        and not name.startswith(f"{ENV_PREFIX}_")
        and name[len(ENV_PREFIX) :] not in known | OWN_ENV_VARS
        and not any(name.endswith(f"_{setting}") for setting in known)
    )
    for name in unknown:
        nearest = difflib.get_close_matches(name[len(ENV_PREFIX) :], sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {ENV_PREFIX}{nearest[0]}?" if nearest else "`tap-backstory --about` lists the settings"
        LOGGER.warning("Environment variable %s is not a tap-backstory setting and is ignored (%s)", name, hint)
    return unknown


def check_api_url(setting: str, url: str) -> None:
    """http(s) with a host, schemes compared case-insensitively; plain http only to a loopback host (an IP
    literal in 127.0.0.0/8, ::1, or `localhost`): credentials go over HTTPS everywhere else."""
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
    except ValueError:
        scheme, host = "", None
    if scheme not in ("https", "http") or not host:
        raise ConfigError(f"{setting} must be an http(s) URL, got {safe_text(repr(url))}")
    if scheme == "http" and not is_loopback(url):
        raise ConfigError(f"{setting} must use https:// (plain http is only allowed for loopback hosts)")


def describe_schema_error(error: t.Any) -> str:
    """One line naming the setting; never echoes the value of a secret."""
    setting = str(error.path[0]) if error.path else "config"
    if setting in SECRET_SETTINGS:
        return f"{setting} is invalid: it must be a non-empty string"
    if error.validator == "additionalProperties":
        return error.message
    return f"{setting} is invalid: {error.message}"


class TapBackstory(Tap):
    """Singer tap for Backstory bulk exports and ContactBased intent data."""

    name = "tap-backstory"
    config_jsonschema = CONFIG_SCHEMA
    dynamic_catalog = True  # the catalog depends on which credentials are configured
    capabilities: t.ClassVar = [
        TapCapabilities.CATALOG,
        TapCapabilities.DISCOVER,
        TapCapabilities.STATE,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.BATCH,
    ]
    message_writer_class = BufferedMsgSpecWriter

    def __init__(self, *, state: t.Any = None, **kwargs: t.Any) -> None:
        # The SDK takes a falsy state (e.g. `[]`) for "no state" and any other non-dict for a file path.
        if state is not None and not isinstance(state, dict | str | os.PathLike):
            check_state(state)
        super().__init__(state=state, **kwargs)
        self._quiet_metrics()

    def _quiet_metrics(self) -> None:
        """The SDK logs a `METRIC: {json}` line at INFO for every stream, child context and request timer: noise
        to a reader of the run. They show at TAP_BACKSTORY_LOGLEVEL=DEBUG, or wherever a logging config
        (SINGER_SDK_LOG_CONFIG, the SDK's documented way) gives the `singer_sdk.metrics` logger handlers of its
        own. Meltano always sets SINGER_SDK_LOG_CONFIG, with a root handler only: that does not count."""
        if self.metrics_logger.getEffectiveLevel() > logging.DEBUG and not self.metrics_logger.handlers:
            self.metrics_logger.setLevel(logging.WARNING)

    @classmethod
    def get_singer_command(cls) -> click.Command:
        """The SDK's CLI, with `--test` described as what it does here (not the SDK's "sync a single record")."""
        command = super().get_singer_command()
        for param in command.params:
            if param.name == "test" and isinstance(param, click.Option):
                param.help = TEST_HELP
        return command

    def run_connection_test(self) -> bool:
        """`--test` (and `meltano config test`): prove each configured API's credentials and reachability
        with read-only calls: no export job (it would hold one of the org's two slots), no ContactBased search
        or export (an export spends quota, and a test keeps no state to reuse it)."""
        try:
            checked = [self._check_stream_connection(stream) for stream in self.streams.values()]
        finally:
            self._log_request_counts()
        # `meltano config test` passes only when it reads a RECORD: one line saying what was checked.
        schema = {"type": "object", "properties": {"stream": {"type": "string"}, "checked": {"type": "string"}}}
        self.message_writer.write_message(singer.SchemaMessage(CONNECTION_TEST_STREAM, schema, []))
        for name, checked_what in checked:
            record = {"stream": name, "checked": checked_what}
            self.message_writer.write_message(singer.RecordMessage(CONNECTION_TEST_STREAM, record))
        sys.stdout.flush()
        return True

    def _check_stream_connection(self, stream: Stream) -> tuple[str, str]:
        kind = getattr(stream, "kind", None)
        if kind is not None:  # a Backstory export stream: the token, then the job list (creates nothing)
            path = f"/pull/v1/export/{kind}/jobs"
            stream.api.request("GET", path)  # type: ignore[attr-defined]
            checked = f"the {BACKSTORY_KEY_TYPES[stream.name]} key got a token and read GET {path}; no job created"
        elif stream.name == "intent_feed_exports":  # the key, the feeds and their options
            feeds = [feed["feed_id"] for feed in stream.intent.feeds()]  # type: ignore[attr-defined]
            checked = f"the ContactBased key read GET /organization/feeds ({', '.join(feeds)}); no search or export"
        else:
            checked = "uses the ContactBased key of intent_feed_exports"
        LOGGER.info("Connection test: %s: %s", stream.name, checked)
        return stream.name, checked

    def sync_all(self) -> None:
        if meltano_config_test():
            LOGGER.info(
                "stdout and stderr are one pipe, as under `meltano config test`: running the connection test "
                "(tap-backstory --test) instead of a sync"
            )
            self.run_connection_test()
            return
        try:
            super().sync_all()
        finally:
            self._log_request_counts()

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT (installed by the SDK's `PluginBase._setup_signal_handlers`): exit 143/130 after the
        last STATE written, in one line, instead of the SDK's exit 0 with the current, possibly half-window,
        state (see `stopping`; listed in tap_backstory/sdk.py)."""
        writer = getattr(self, "message_writer", None)  # a signal may come while PluginBase.__init__ runs
        STOP.on_signal(signum, writer if isinstance(writer, BufferedMsgSpecWriter) else None)

    def _log_request_counts(self) -> None:
        for name in ("activity_api", "object_api", "contactbased_api"):
            api = self.__dict__.get(name)  # only the clients this run created (cached properties)
            if api is not None:
                tokens = getattr(api.auth, "request_count", None)
                LOGGER.info(
                    "HTTP requests to %s: %d%s",
                    api.vendor,
                    api.request_count,
                    "" if tokens is None else f" (and {plural(tokens, 'token request')})",
                )

    @functools.cached_property
    def clock(self) -> Clock:
        return Clock()

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        # The SDK's own validator: it also fills in the defaults of missing settings.
        from tap_backstory.sdk import JSONSchemaValidator

        self.append_builtin_config(self.config_jsonschema)
        errors = sorted(
            JSONSchemaValidator(self.config_jsonschema).iter_errors(self._config), key=lambda e: list(e.path)
        )
        messages = [describe_schema_error(error) for error in errors]
        if not messages:
            try:
                check_config(self.config, self.clock)
            except (ConfigError, ValueError) as exc:
                messages = [str(exc)]
        if messages and raise_errors:
            raise ConfigError(messages[0])
        known = self.config_jsonschema["properties"]
        for key in sorted(self._config):
            if key not in known and not key.startswith("_"):  # `_...`: Meltano's extras
                LOGGER.warning("Unknown setting %r is ignored (a typo? `tap-backstory --about` lists them)", key)
        warn_unknown_env_vars(known, os.environ)
        return messages

    def load_state(self, state: dict[str, t.Any]) -> None:
        """Refuse, before any request, a state file this tap did not write (see `state_check`)."""
        check_state(state, today=self.clock.today())
        super().load_state(state)

    # --- API clients, one per credential, shared by the streams that use it ---------------------------
    @functools.cached_property
    def activity_api(self) -> ApiClient:
        return self._backstory_client("activity_client_id", "activity_client_secret", "Activity")

    @functools.cached_property
    def object_api(self) -> ApiClient:
        return self._backstory_client("object_client_id", "object_client_secret", "Object")

    def _backstory_client(self, id_setting: str, secret_setting: str, key_type: str) -> ApiClient:
        url = self.config["api_url"]
        auth = BackstoryTokenAuth(url, self.config[id_setting], self.config[secret_setting], key_type)
        pool = self.config["fragment_concurrency"] + 2
        return ApiClient(url, auth, vendor=f"Backstory ({key_type} key)", url_setting="api_url", pool_size=pool)

    @functools.cached_property
    def contactbased_api(self) -> ApiClient:
        auth = ApiKeyAuth(self.config["contactbased_api_key"])
        url_setting = "contactbased_api_url"
        return ApiClient(self.config[url_setting], auth, vendor="ContactBased", url_setting=url_setting)

    # --- Streams ---------------------------------------------------------------------------------------
    def discover_streams(self) -> list[Stream]:
        from tap_backstory.streams import available_streams

        return [stream_class(tap=self) for stream_class in available_streams(self.config)]

    def load_streams(self) -> list[Stream]:
        """Sync in dependency order, not the SDK's alphabetical order (see `names.STREAM_ORDER`)."""
        streams = super().load_streams()
        self._check_catalog_credentials({stream.name for stream in streams})
        return sorted(streams, key=lambda stream: STREAM_ORDER.index(stream.name))

    def _check_catalog_credentials(self, available: set[str]) -> None:
        """A stream selected in the input catalog whose credentials are not configured is a config error,
        not a stream silently left out of the run."""
        if self.input_catalog is None:
            return
        for entry in self.input_catalog.values():
            name = entry.tap_stream_id
            root = entry.metadata.root
            selected = root.selected if root.selected is not None else root.selected_by_default
            if selected and name in STREAM_ORDER and name not in available:
                setting = "/".join(STREAM_CREDENTIALS[name])
                raise ConfigError(f"stream {name} is selected in the catalog, but {setting} is not set")


TEST_HELP = (
    "Use --test for a free connection test: per configured key, get a token and read a job list or the feed list "
    "(no export job, search or export; no quota spent), then write one connection_test RECORD per stream. "
    "Use --test=schema to write the SCHEMA messages only."
)
CONNECTION_TEST_STREAM = "connection_test"
"""The one stream a connection test writes: a RECORD per checked stream (not data of any real stream)."""


def meltano_config_test() -> bool:
    """`meltano config test` runs the tap like a sync (no `--test`) and stops it at its first RECORD; all that
    tells it apart is that it reads stdout and stderr from one pipe (Meltano 4.4.1 `ExtractorTestService`).
    No sync can use that set-up anyway: log lines would be mixed into the Singer messages."""
    try:
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    one_pipe = (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)
    return one_pipe and (stat.S_ISFIFO(out.st_mode) or stat.S_ISSOCK(out.st_mode))


def describe_failure(exc: Exception) -> str:
    """The one line a failed run ends with."""
    if isinstance(exc, TapBackstoryError):
        return str(exc)
    if type(exc).__name__ == "JSONDecodeError":  # json's and simplejson's
        return f"a JSON input file (config, state or catalog) is malformed: {exc}"
    if isinstance(exc, FileNotFoundError):
        return str(exc) if exc.filename is None else f"file not found: {exc.filename}"
    return f"unexpected {type(exc).__name__}: {exc}"


def quiet_discovery() -> None:
    """Discovery logs warnings only. Meltano discovers before it syncs (until the catalog is cached), and both
    invocations logged the same set-up lines (version, env parsing, child streams): the sync says them once.
    TAP_BACKSTORY_LOGLEVEL=DEBUG keeps everything."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: record.levelno >= logging.WARNING)


def main() -> None:
    """Console entry point: the SDK CLI, with every failure reduced to one line on stderr and exit 1."""
    malloc.tune()  # before any thread starts
    try:
        command = TapBackstory.cli  # sets up the SDK's console logging
        if "--discover" in sys.argv[1:]:
            quiet_discovery()
        command()
    except KeyboardInterrupt:  # Ctrl-C before the tap installed its handler (while starting up)
        exit_now(130, signal_cause(signal.SIGINT, 0))
    except Exception as exc:
        if os.environ.get("TAP_BACKSTORY_LOGLEVEL", os.environ.get("LOGLEVEL", "")).upper() == "DEBUG":
            logging.getLogger("tap-backstory").exception("the run failed")
        print(f"tap-backstory: error: {safe_text(describe_failure(exc))}", file=sys.stderr, flush=True)
        sys.exit(1)
