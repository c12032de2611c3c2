"""CLI of the local emulator used by the tests and the demo (not a data source):
``tap-backstory-sandbox --port 0 [--host 127.0.0.1] [--today YYYY-MM-DD] ... [--faults FILE.json]``.

Prints, one per line and flushed, the tap settings to use it under the tap's own setting names: ``api_url=...``,
``contactbased_api_url=...``, each demo credential as ``name=value``, a ``start_date``, then ``ready``; runs
until SIGINT/SIGTERM. ``--config-out FILE`` writes the same settings as a complete tap config (JSON).
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import threading
from dataclasses import fields
from datetime import date, timedelta
from typing import Any

from .server import Sandbox
from .settings import SandboxSettings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tap-backstory-sandbox",
        usage="%(prog)s [--port PORT] [--today YYYY-MM-DD] [setting and fault options]",
        description="A local emulator for tap-backstory's tests and demos, not a data source: it serves "
                    "generated data, never your Backstory or ContactBased data. It emulates the Backstory bulk "
                    "APIs (under /backstory) and the ContactBased Data APIs (under /contactbased), with "
                    "deterministic data and injectable faults. Admin: GET /_sandbox/stats, GET /_sandbox/events, "
                    "POST /_sandbox/configure, POST /_sandbox/reset-stats.")
    p.add_argument("--host", default="127.0.0.1", help="Interface to bind. Default: 127.0.0.1.")
    p.add_argument("--port", type=int, default=0, help="Port to listen on; 0 picks a free one, printed on start. "
                   "Default: 0.")
    p.add_argument("--faults", metavar="FILE.json",
                   help="JSON object of setting and fault overrides applied at start (the names below).")
    p.add_argument(
        "--config-out",
        metavar="FILE",
        help="Writes a complete tap config as JSON (both URLs, the demo credentials, a start_date "
        f"{CONFIG_START_DAYS} days before the sandbox's today): `tap-backstory --config FILE` runs with it.",
    )
    defaults = SandboxSettings()
    for f in fields(SandboxSettings):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        # Whole sentences: the setting's docstring, then its default.
        help_text = f"{_field_doc(f.name)} Default: {'the real UTC date' if f.name == 'today' else default}."
        if f.name == "today":
            p.add_argument(flag, type=date.fromisoformat, metavar="YYYY-MM-DD", help=help_text)
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = float if isinstance(default, float) else (int if "int" in str(f.type) else str)

            def conv(v: str, k: type = kind) -> Any:
                return None if v.lower() in ("none", "null") else k(v)

            p.add_argument(flag, type=conv, default=None, metavar=kind.__name__.upper(), help=help_text)
    return p


def _field_doc(name: str) -> str:
    """The setting's docstring in settings.py, on one line (every setting has one)."""
    import ast
    import inspect

    from . import settings as mod

    body = ast.parse(inspect.getsource(mod.SandboxSettings)).body[0].body  # type: ignore[attr-defined]
    for node, after in itertools.pairwise(body):
        is_setting = isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name
        if is_setting and isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant):
            return " ".join(str(after.value.value).split())
    raise ValueError(f"sandbox setting {name} has no docstring")


CONFIG_START_DAYS = 30


def tap_config(sb: Sandbox) -> dict[str, Any]:
    """A tap config that runs as is: `Sandbox.tap_config()` (URLs, credentials) plus the `start_date` the Backstory
    streams require. The tap's "today" is the real UTC date: with `--today`, set TAP_BACKSTORY_TODAY to the same day."""
    start = sb.settings.current_day() - timedelta(days=CONFIG_START_DAYS)
    return {**sb.tap_config(), "start_date": start.isoformat()}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = SandboxSettings()
    overrides: dict[str, Any] = {}
    if args.faults:
        with open(args.faults, encoding="utf-8") as fh:
            loaded = json.load(fh)
        if not isinstance(loaded, dict):
            print(f"error: {args.faults} must hold a JSON object", file=sys.stderr)
            return 2
        overrides.update(loaded)
    for f in fields(SandboxSettings):
        value = getattr(args, f.name, None)
        if f.name != "extra" and value is not None:
            overrides[f.name] = value
    try:
        settings.apply(overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sb = Sandbox(settings, host=args.host, port=args.port).start()
    config = tap_config(sb)
    if args.config_out:
        with open(args.config_out, "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    lines = [*(f"{k}={v}" for k, v in config.items()), "ready"]
    for line in lines:
        print(line, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
