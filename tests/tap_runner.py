"""Run the real `tap-backstory` executable and read what it wrote (used by every end-to-end test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import typing as t
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tap_backstory_sandbox import Sandbox

TAP_EXE = str(Path(sys.executable).with_name("tap-backstory"))
# The settings that hold each stream's credentials (the base URLs are always given).
CREDENTIALS = {
    "activities": ("activity_client_id", "activity_client_secret"),
    "enriched_contacts": ("object_client_id", "object_client_secret"),
    "intent_feed_exports": ("contactbased_api_key",),
    "enriched_contact_records": ("contactbased_api_key",),
}


def tap_env(env: dict | None) -> dict:
    """The tap's environment: ours plus `env`, with a bytecode cache as a normal install has. A shell exporting
    PYTHONDONTWRITEBYTECODE would make every tap start recompile the SDK and the tap (~1 s of CPU each)."""
    merged = {**os.environ, **(env or {})}
    merged.pop("PYTHONDONTWRITEBYTECODE", None)
    return merged


@dataclass
class TapRun:
    returncode: int
    stdout: str
    stderr: str
    messages: list[dict] = field(default_factory=list)

    def records(self, stream: str) -> list[dict]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream]

    @property
    def states(self) -> list[dict]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def final_state(self) -> dict:
        return self.states[-1] if self.states else {}

    @property
    def error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.startswith("tap-backstory: error:")]
        return lines[-1] if lines else ""


def run_tap(
    config: dict,
    *args: str,
    state: dict | None = None,
    catalog: dict | None = None,
    env: dict | None = None,
    timeout: float = 300,
) -> TapRun:
    """Run `tap-backstory --config ... [--state ...] [--catalog ...] *args` to completion."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [TAP_EXE, "--config", _write(tmp, "config.json", config)]
        if state is not None:
            argv += ["--state", _write(tmp, "state.json", state)]
        if catalog is not None:
            argv += ["--catalog", _write(tmp, "catalog.json", catalog)]
        argv += list(args)
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=tap_env(env), check=False
        )
    messages = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return TapRun(proc.returncode, proc.stdout, proc.stderr, messages)


def tap_config(sb: Sandbox, *streams: str, **overrides: t.Any) -> dict:
    """A config for `sb`: both base URLs, the credentials of `streams` only (of all streams if none is named, so
    only those are discovered), then `overrides`."""
    every = sb.tap_config()
    keys = {key for stream in streams or CREDENTIALS for key in CREDENTIALS[stream]}
    return {
        "api_url": every["api_url"],
        "contactbased_api_url": every["contactbased_api_url"],
        **{key: every[key] for key in sorted(keys)},
        **overrides,
    }


def today_env(sb: Sandbox, env: dict | None = None) -> dict:
    """The tap's clock on the sandbox's day (what TAP_BACKSTORY_TODAY sets), then `env`."""
    return {"TAP_BACKSTORY_TODAY": sb.settings.current_day().isoformat(), **(env or {})}


def run(
    sb: Sandbox,
    config: dict,
    *args: str,
    state: dict | None = None,
    catalog: dict | None = None,
    env: dict | None = None,
    timeout: float = 120,
    check: bool = False,
) -> TapRun:
    """`run_tap` against `sb` with the tap's clock on its day; `check` asserts the run succeeded."""
    result = run_tap(config, *args, state=state, catalog=catalog, env=today_env(sb, env), timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_until(
    sb: Sandbox,
    config: dict,
    stop: Callable[[dict, list[dict]], bool],
    *,
    state: dict | None = None,
    catalog: dict | None = None,
    env: dict | None = None,
) -> TapRun:
    """Start the tap with its clock on the sandbox's day, read its messages until `stop(message, messages so far)`
    holds, then SIGKILL it.

    The TapRun holds what was read up to and including that message (what a target would have received),
    the raw stdout of those lines and everything the tap wrote to stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [TAP_EXE, "--config", _write(tmp, "config.json", config)]
        if state is not None:
            argv += ["--state", _write(tmp, "state.json", state)]
        if catalog is not None:
            argv += ["--catalog", _write(tmp, "catalog.json", catalog)]
        stderr_path = Path(tmp, "stderr.txt")
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=tap_env(today_env(sb, env))
            )
        lines: list[str] = []
        messages: list[dict] = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                messages.append(json.loads(line))
                if stop(messages[-1], messages):
                    break
            else:
                raise AssertionError("the tap ended before the kill point")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()  # type: ignore[union-attr]
        return TapRun(proc.returncode, "".join(lines), stderr_path.read_text(), messages)


def _write(folder: str, name: str, payload: dict) -> str:
    path = Path(folder, name)
    path.write_text(json.dumps(payload))
    return str(path)


def discover(config: dict) -> dict:
    """The catalog `tap-backstory --discover` writes for `config`."""
    proc = subprocess.run([TAP_EXE, "--config", "/dev/stdin", "--discover"], input=json.dumps(config),
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)
